package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"hubd/hub/ops"
	"hubd/hub/tracking"
	"hubd/internal/admin"
	"hubd/internal/smtpsink"
)

// Three hubds, each with an embedded NATS node, clustered on loopback and
// sharing one R3 queue (docs/cluster.md). They relay to a sink in the
// test, which is limited to 2 connections by the hubs' configuration.

// clusterNode is one hubd of the cluster.
type clusterNode struct {
	name, dir, smtp, route string
	cfg                    string
	p                      *hubdProcess
}

// startCluster writes the three configurations and starts the hubds
// together (each waits for the cluster's quorum before it listens). The
// next hop (the sink) is limited to 2 connections.
func startCluster(t testing.TB, sink *smtpsink.Sink) []*clusterNode {
	return startClusterLimit(t, sink, 2)
}

func startClusterLimit(t testing.TB, sink *smtpsink.Sink, limit int) []*clusterNode {
	t.Helper()
	names := []string{"a", "b", "c"}
	nodes := make([]*clusterNode, len(names))
	for i, n := range names {
		nodes[i] = &clusterNode{name: n, dir: t.TempDir(), smtp: freePort(t), route: freePort(t)}
	}
	for _, n := range nodes {
		var routes []string
		for _, o := range nodes {
			if o != n {
				routes = append(routes, fmt.Sprintf("%q", "nats://"+o.route))
			}
		}
		queue := fmt.Sprintf(`
queue {
  engine   = "jetstream"
  node     = %q
  cluster {
    name   = "hubs"
    listen = %q
    routes = [%s]
  }
}`, n.name, n.route, strings.Join(routes, ", "))
		n.cfg = writeConfig(t, n.dir, relayHubConfig(n.name, n.smtp, sink.Port(), limit, queue))
	}
	for _, n := range nodes {
		n.start(t)
	}
	for _, n := range nodes {
		n.waitListening(t)
	}
	return nodes
}

// relayHubConfig is a hub that relays everything from 127.0.0.1 to the
// sink on sinkPort, at most limit connections at once, with queue (a
// queue block, or "" for the local spool).
func relayHubConfig(name, smtpAddr string, sinkPort, limit int, queue string) string {
	return fmt.Sprintf(`
hub {
  hostname             = "hub-%[1]s.example.test"
  spool_dir            = "spool"
  quick_retry_interval     = "1s"
  transient_retry_interval = "1s"
  retry_interval           = "1s"
  max_per_domain_outbound_connections = %[4]d
}
%[5]s
accepted_domain "example.test" {}
receive_connector "in" {
  bind             = [%[2]q]
  remote_ip_ranges = ["127.0.0.1"]
  permissions { anonymous = ["submit", "relay"] }
  max_inbound_connections_per_source = 100
}
send_connector "out" {
  address_spaces = ["*"]
  smart_hosts    = ["[127.0.0.1]:%[3]d"]
  tls            = "none"
}
`, name, smtpAddr, sinkPort, limit, queue)
}

// start starts n's hubd without waiting: a node listens only once the
// cluster has its quorum.
func (n *clusterNode) start(t testing.TB) {
	n.p = startHubd(t, n.cfg)
}

func (n *clusterNode) waitListening(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !dialable(n.smtp) {
		if time.Now().After(deadline) {
			t.Fatalf("hub %s not listening after 60s\n%s", n.name, n.p.out.String())
		}
		select {
		case <-n.p.done:
			t.Fatalf("hub %s exited: %v\n%s", n.name, n.p.err, n.p.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dialable reports whether something accepts TCP connections on addr.
func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

var (
	clusterIDRe  = regexp.MustCompile(`(?m)^X-Cluster-ID: (\S+)`)
	receivedByRe = regexp.MustCompile(`by hub-(\w+)\.example\.test`)
)

// sendRelay sends one message to r@remote.test through addr and returns
// nil only on 250 at the end of DATA.
func sendRelay(addr, id string) error {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	// A hub killed mid-session must not hang its client for ever.
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	c, err := smtp.NewClient(nc, "127.0.0.1")
	if err != nil {
		nc.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("cluster-client.example.test"); err != nil {
		return err
	}
	if err := c.Mail("sender@example.test"); err != nil {
		return err
	}
	if err := c.Rcpt("r@remote.test"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: sender@example.test\r\nTo: r@remote.test\r\nSubject: %s\r\nMessage-ID: <%s@cluster.test>\r\nX-Cluster-ID: %s\r\n\r\n", id, id, id)
	w.Write([]byte(strings.Repeat("cluster test body line\r\n", 40)))
	if err := w.Close(); err != nil {
		return err
	}
	c.Quit()
	return nil
}

// clusterLoad is the parallel clients: two per hub, each sending to its
// hub while it answers and to the next live one when it does not. They
// keep at most maxOutstanding messages acknowledged and not yet at the
// sink, so that what was acknowledged before a kill can be waited for
// while the load goes on (the cluster accepts faster than a next hop
// limited to 2 connections takes).
type clusterLoad struct {
	mu    sync.Mutex
	acked map[string]string // X-Cluster-ID → the hub that acknowledged it
	tried int
	stop  chan struct{}
	wg    sync.WaitGroup
}

const maxOutstanding = 150

func startLoad(nodes []*clusterNode, sink *smtpsink.Sink) *clusterLoad {
	l := &clusterLoad{acked: map[string]string{}, stop: make(chan struct{})}
	seq := 0
	for c := 0; c < 2*len(nodes); c++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for k := c; ; k++ {
				select {
				case <-l.stop:
					return
				default:
				}
				l.mu.Lock()
				outstanding := len(l.acked) - len(sink.Messages())
				l.mu.Unlock()
				if outstanding > maxOutstanding {
					select {
					case <-l.stop:
						return
					case <-tick.C:
					}
					continue
				}
				n := nodes[k%len(nodes)]
				l.mu.Lock()
				seq++
				id := fmt.Sprintf("m%d", seq)
				l.tried++
				l.mu.Unlock()
				if err := sendRelay(n.smtp, id); err == nil {
					l.mu.Lock()
					l.acked[id] = n.name
					l.mu.Unlock()
				}
			}
		}()
	}
	return l
}

func (l *clusterLoad) halt() {
	close(l.stop)
	l.wg.Wait()
}

func (l *clusterLoad) snapshot() map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]string, len(l.acked))
	for k, v := range l.acked {
		out[k] = v
	}
	return out
}

// delivered counts the copies the sink received of each X-Cluster-ID.
func delivered(sink *smtpsink.Sink) map[string]int {
	got := map[string]int{}
	for _, m := range sink.Messages() {
		if s := clusterIDRe.FindSubmatch(m.Data); s != nil {
			got[string(s[1])]++
		}
	}
	return got
}

// waitAllDelivered polls until every message of acked reached the sink.
func waitAllDelivered(t *testing.T, sink *smtpsink.Sink, acked map[string]string, timeout time.Duration, why string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		got := delivered(sink)
		var missing []string
		for id := range acked {
			if got[id] == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			by := map[string]int{}
			for _, id := range missing {
				by[acked[id]]++
			}
			t.Fatalf("%s: %d of %d acknowledged messages not delivered after %v (e.g. %v; acknowledged by %v)",
				why, len(missing), len(acked), timeout, missing[:min(5, len(missing))], by)
		}
		<-tick.C
	}
}

func TestClusterKillANodeLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	sink := smtpsink.Start(t, smtpsink.Options{})
	nodes := startCluster(t, sink)
	load := startLoad(nodes, sink)
	defer func() {
		select {
		case <-load.stop:
		default:
			load.halt()
		}
	}()
	waitCount := func(n int, why string) {
		t.Helper()
		waitWithin(t, 60*time.Second, 20*time.Millisecond, func() bool { return len(load.snapshot()) >= n },
			fmt.Sprintf("%d messages acknowledged %s", n, why))
	}
	waitCount(200, "before the first kill")

	for _, victim := range []*clusterNode{nodes[1], nodes[2]} {
		victim.p.kill()
		killedAt := len(sink.Messages())
		t.Logf("SIGKILLed hub %s with %d acknowledged, %d delivered", victim.name, len(load.snapshot()), killedAt)
		// The survivors go on delivering, and take over what the dead
		// hub had acknowledged: everything acknowledged so far arrives
		// while it is down.
		before := load.snapshot()
		waitAllDelivered(t, sink, before, 60*time.Second, "with hub "+victim.name+" down")
		if len(sink.Messages()) <= killedAt {
			t.Fatalf("nothing delivered while hub %s was down", victim.name)
		}
		victim.start(t)
		victim.waitListening(t)
		waitCount(len(load.snapshot())+100, "after hub "+victim.name+" came back")
	}
	load.halt()
	acked := load.snapshot()
	waitAllDelivered(t, sink, acked, 60*time.Second, "at the end")
	got := delivered(sink)
	dups, copies := 0, 0
	for id := range acked {
		copies += got[id]
		if got[id] > 1 {
			dups++
		}
	}
	if dups > 0 {
		// Which hubs delivered the copies: the first Received: field of
		// each names the hub that sent it.
		byHub := map[string][]string{}
		for _, m := range sink.Messages() {
			id := clusterIDRe.FindSubmatch(m.Data)
			by := receivedByRe.FindSubmatch(m.Data)
			if id != nil && by != nil && got[string(id[1])] > 1 {
				byHub[string(id[1])] = append(byHub[string(id[1])], string(by[1]))
			}
		}
		n := 0
		for id, hubs := range byHub {
			if n++; n > 5 {
				break
			}
			t.Logf("delivered more than once: %s by %v (acknowledged by %s)", id, hubs, acked[id])
		}
	}
	peak := sink.PeakOpenConnections()
	t.Logf("cluster: %d messages tried, %d acknowledged, %d delivered copies, %d lost, %d delivered more than once; peak connections at the sink %d",
		load.tried, len(acked), copies, 0, dups, peak)
	if peak > 2 {
		t.Errorf("the sink saw %d connections at once; the cluster-wide limit is 2", peak)
	}

	// One story across nodes: a message acknowledged by b and delivered
	// by another hub is tracked by both, each naming itself.
	assertTakeOverTracked(t, nodes)
}

// assertTakeOverTracked finds a message received by one hub and taken over
// (RESUBMIT) and delivered (SEND) by another in their tracking logs.
func assertTakeOverTracked(t *testing.T, nodes []*clusterNode) {
	t.Helper()
	received := map[string]string{} // queue id → node
	type takeOver struct{ node, from string }
	resubmitted := map[string]takeOver{}
	sent := map[string]string{}
	for _, n := range nodes {
		err := tracking.Search(filepath.Join(n.dir, "log", "tracking"), tracking.Filter{}, func(e tracking.Event) bool {
			if e.Node != n.name {
				t.Errorf("hub %s logged an event naming node %q", n.name, e.Node)
			}
			switch e.Event {
			case tracking.Receive:
				received[e.QueueID] = e.Node
			case tracking.Resubmit:
				resubmitted[e.QueueID] = takeOver{e.Node, e.Reference}
			case tracking.Send:
				sent[e.QueueID] = e.Node
			}
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for id, to := range resubmitted {
		if received[id] == to.from && sent[id] == to.node && to.node != to.from {
			t.Logf("one story: %s received by %s, taken over and sent by %s", id, to.from, to.node)
			return
		}
	}
	t.Errorf("no message received by one hub and sent by another after a RESUBMIT (%d take-overs)", len(resubmitted))
}

func TestClusterWithoutQuorumRefuses(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	sink := smtpsink.Start(t, smtpsink.Options{})
	nodes := startCluster(t, sink)
	a := nodes[0]
	if err := sendRelay(a.smtp, "before"); err != nil {
		t.Fatal(err)
	}
	nodes[1].p.kill()
	nodes[2].p.kill()
	// Two of three gone: a cannot have the message stored twice, so it
	// must not say 250.
	err := sendRelay(a.smtp, "no-quorum")
	var te *textproto.Error
	if !errors.As(err, &te) || te.Code != 451 || !strings.HasPrefix(te.Msg, "4.3.0 ") {
		t.Fatalf("without quorum: %v, want 451 4.3.0", err)
	}
	waitLog(t, a.p, "queue cluster did not acknowledge", "hub a's log does not say why it refused")
	// hubctl status says so too, with the reason (it follows the
	// heartbeat, a few seconds behind).
	client := admin.NewClient(filepath.Join(a.dir, "admin.sock"), "")
	waitWithin(t, 30*time.Second, 100*time.Millisecond, func() bool {
		st, err := client.Status(context.Background())
		if err == nil && st.Queue.Quorum != nil && !*st.Queue.Quorum && st.Queue.Error != "" {
			t.Logf("hubctl status without quorum: %s", st.Queue.Error)
			return true
		}
		return false
	}, "hub a's status to show no quorum, with the reason")
	// Quorum back: a accepts again, and everything it acknowledged is
	// delivered.
	nodes[1].start(t)
	waitWithin(t, 60*time.Second, 200*time.Millisecond, func() bool { return sendRelay(a.smtp, "after") == nil },
		"hub a to accept again once the quorum returned")
	waitAllDelivered(t, sink, map[string]string{"before": "a", "after": "a"}, 60*time.Second, "after quorum returned")
	if delivered(sink)["no-quorum"] != 0 {
		t.Error("the refused message was delivered")
	}
}

// waitLog polls p's output until it contains want (the child's log
// reaches the test through a pipe, after its reply).
func waitLog(t *testing.T, p *hubdProcess, want, why string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(p.out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s (no %q):\n%s", why, want, p.out.String())
		}
		<-tick.C
	}
}

// clusterStatus asks hub n's admin API (its default socket, admin.sock
// beside the spool) for GET /v1/cluster.
func clusterStatus(t *testing.T, n *clusterNode) admin.ClusterStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := admin.NewClient(filepath.Join(n.dir, "admin.sock"), "").Cluster(ctx)
	if err != nil {
		t.Fatalf("hub %s: cluster status: %v", n.name, err)
	}
	return st
}

// From any hub, the admin API (hubctl, mailq) shows and acts on the whole
// queue, and the cluster status names every hub and replica.
func TestClusterQueueFromAnyHub(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test skipped in -short mode")
	}
	var open atomic.Bool // the sink defers everything until opened
	sink := smtpsink.Start(t, smtpsink.Options{Data: func(string, []string, []byte) error {
		if open.Load() {
			return nil
		}
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "not yet"}
	}})
	nodes := startCluster(t, sink)
	for _, n := range nodes {
		for i := 0; i < 2; i++ {
			if err := sendRelay(n.smtp, fmt.Sprintf("%s-%d", n.name, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	st := clusterStatus(t, nodes[0])
	if !st.Quorum || strings.Join(st.Hubs, ",") != "a,b,c" {
		t.Errorf("cluster status from a: quorum %v, hubs %v", st.Quorum, st.Hubs)
	}
	for _, s := range st.Streams {
		if s.Replicas != 3 || s.Leader == "" {
			t.Errorf("stream %s: %d replicas, leader %q", s.Name, s.Replicas, s.Leader)
		}
	}

	// Hub a lists the six messages of the three hubs, each with its owner.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a := admin.NewClient(filepath.Join(nodes[0].dir, "admin.sock"), "")
	var list ops.MessageList
	waitWithin(t, 30*time.Second, 50*time.Millisecond, func() bool {
		var err error
		if list, err = a.Messages(ctx, ops.MessageFilter{}); err != nil {
			t.Fatal(err)
		}
		return len(list.Messages) == 6
	}, "hub a to list the six messages of the three hubs")
	owners := map[string]int{}
	var ofC string
	for _, m := range list.Messages {
		owners[m.Node]++
		if m.Node == "c" {
			ofC = m.ID
		}
	}
	if len(list.Messages) != 6 || owners["a"] != 2 || owners["b"] != 2 || owners["c"] != 2 {
		t.Fatalf("hub a lists %d messages by owner %v, want 2 of each hub", len(list.Messages), owners)
	}
	// Hub a holds one of c's messages: c has it held.
	res, err := a.MessageAction(ctx, "hold", []string{ofC}, false)
	if err != nil || len(res) != 1 || !res[0].OK {
		t.Fatalf("hold of c's message from a: %+v %v", res, err)
	}
	c := admin.NewClient(filepath.Join(nodes[2].dir, "admin.sock"), "")
	d, err := c.Message(ctx, ofC)
	if err != nil || d.State != ops.StateHeld || d.Node != "c" {
		t.Fatalf("c's view of the message a held: state %q node %q, %v", d.State, d.Node, err)
	}
	open.Store(true)
	if res, err := a.MessageAction(ctx, "release", []string{ofC}, false); err != nil || !res[0].OK {
		t.Fatalf("release from a: %+v %v", res, err)
	}
	for _, n := range nodes {
		if res, err := a.MessageAction(ctx, "retry", idsOf(list, n.name), false); err != nil {
			t.Fatalf("retry from a: %+v %v", res, err)
		}
	}
	want := map[string]string{}
	for _, n := range nodes {
		for i := 0; i < 2; i++ {
			want[fmt.Sprintf("%s-%d", n.name, i)] = n.name
		}
	}
	waitAllDelivered(t, sink, want, 60*time.Second, "after the sink opened")
}

// idsOf is the ids of list's messages owned by node.
func idsOf(list ops.MessageList, node string) []string {
	var ids []string
	for _, m := range list.Messages {
		if m.Node == node {
			ids = append(ids, m.ID)
		}
	}
	return ids
}
