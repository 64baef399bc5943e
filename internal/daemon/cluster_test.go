package daemon_test

import (
	"context"
	"net/smtp"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"hubd/hub/ops"
	"hubd/internal/admin"
	"hubd/internal/daemon"
	"hubd/policy"
)

// TestJetStreamHubAdmin: a hub on the JetStream queue engine, alone on its
// embedded node (one replica), serves the admin API's queue half through
// the cluster's queue (internal/clusterops): its messages are listed with
// their node, and act on; status has the queue engine's section with the
// quorum, and /v1/cluster the node, its streams and the live hubs.
func TestJetStreamHubAdmin(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hubd.hcl")
	hcl := `
hub {
  hostname  = "hub-a.example.test"
  spool_dir = "spool"
}
queue {
  engine   = "jetstream"
  node     = "a"
  replicas = 1
  sync     = "always"
}
accepted_domain "example.test" {}
receive_connector "in" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["127.0.0.1"]
  tarpit_interval  = "0s"
  permissions { anonymous = ["submit", "relay"] }
}
send_connector "out" {
  address_spaces = ["*"]
  smart_hosts    = ["[127.0.0.1]:9"]
  tls            = "none"
}
`
	if err := os.WriteFile(path, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := policy.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := daemon.Start(ctx, cfg, daemon.Options{ConfigPath: path, Version: "test", SMTPDialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Shutdown(sctx, time.Second); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}()
	c := admin.NewClient(d.AdminSocket(), "")

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if q := st.Queue; q.Engine != admin.EngineJetStream || q.Node != "a" || q.Quorum == nil || !*q.Quorum ||
		q.Since.IsZero() || q.Error != "" {
		t.Errorf("status queue: %+v", q)
	}
	cs, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cs.Engine != admin.EngineJetStream || cs.Node != "a" || cs.Mode != "embedded" || !cs.Connected || !cs.Quorum ||
		cs.MetaLeader != "a" || !slices.Equal(cs.Hubs, []string{"a"}) || len(cs.Streams) != 2 {
		t.Fatalf("cluster: %+v", cs)
	}
	for i, name := range []string{"HUBD_MSGS", "KV_hubd_state"} {
		if s := cs.Streams[i]; s.Name != name || s.Replicas != 1 || s.Leader != "a" || !s.Quorum || s.Error != "" {
			t.Errorf("stream %d: %+v", i, s)
		}
	}

	// A message for a next hop that refuses: it stays queued.
	if err := smtp.SendMail(d.Addrs()["127.0.0.1:0"].String(), nil, "s@example.test", []string{"r@remote.test"},
		[]byte("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	var l ops.MessageList
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(10 * time.Second); ; <-tick.C {
		if l, err = c.Messages(ctx, ops.MessageFilter{}); err != nil {
			t.Fatal(err)
		}
		if len(l.Messages) == 1 || time.Now().After(deadline) {
			break
		}
	}
	if len(l.Messages) != 1 || l.Messages[0].Node != "a" || l.Unanswered != nil {
		t.Fatalf("listing: %+v", l)
	}
	id := l.Messages[0].ID
	md, err := c.Message(ctx, id)
	if err != nil || md.Node != "a" {
		t.Fatalf("message %s: node %q, %v", id, md.Node, err)
	}
	res, err := c.MessageAction(ctx, "hold", []string{id, "nosuch"}, false)
	if err != nil || len(res) != 2 || !res[0].OK || res[1].OK {
		t.Fatalf("hold: %+v, %v", res, err)
	}
	if res[1].Error != `not found: no message "nosuch" in the queue` {
		t.Errorf("hold of an unknown id: %q", res[1].Error)
	}
	qs, err := c.Queues(ctx)
	if err != nil || len(qs) < 3 || qs[len(qs)-1].Name != "poison" {
		t.Fatalf("queues: %+v, %v", qs, err)
	}
}
