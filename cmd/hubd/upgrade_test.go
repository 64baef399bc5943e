package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/queue"
	"hubd/internal/hubtest"
)

// TestUpgradeFromDiskSpool: a hubd started on a spool of the earlier
// format (one file per message, queue.DiskStore, exactly as the releases
// before the log spool wrote it: a message mid-retry, one with the active
// mark of a process that died delivering it) imports it and delivers every
// message once; a SIGKILL after that and a restart deliver nothing again.
func TestUpgradeFromDiskSpool(t *testing.T) {
	const n = 40
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	old, err := queue.OpenDisk(queue.DiskOptions{Dir: spool})
	if err != nil {
		t.Fatal(err)
	}
	var ids []hub.QueueID
	for i := range n {
		rcpt := hub.Recipient{Address: "m1@example.test"}
		m := &queue.Message{Envelope: hub.Envelope{From: "a@example.test", Recipients: []hub.Recipient{rcpt}, Connector: "in"},
			Arrived: time.Now(), State: queue.State{Recipients: []queue.RecipientState{{Address: rcpt.Address, DSN: rcpt, Status: queue.Queued}}}}
		body := fmt.Sprintf("Subject: upgrade %d\r\n\r\nmessage n=%d.\r\n", i, i)
		if err := old.Put(context.Background(), m, strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	retried := queue.State{Recipients: []queue.RecipientState{{Address: "m1@example.test", DSN: hub.Recipient{Address: "m1@example.test"},
		Status: queue.Deferred, Attempts: 1, NextAttempt: time.Now().Add(-time.Minute),
		LastReply: queue.Reply{Code: 451, Enhanced: "4.3.0", Text: "try again"}}}}
	if err := old.Update(context.Background(), ids[1], retried); err != nil {
		t.Fatal(err)
	}
	if err := old.MarkActive(ids[2], queue.Mark{NotBefore: time.Now()}); err != nil {
		t.Fatal(err)
	}
	old.Close() // the mark stays: that process died delivering ids[2]

	addr := freePort(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`
hub {
  hostname             = "upgrade.example.test"
  spool_dir            = "spool"
  quick_retry_interval = "1s"
}
accepted_domain "example.test" {}
mailbox "m1@example.test" { maildir = "mail/m1" }
receive_connector "in" {
  bind             = [%q]
  remote_ip_ranges = ["127.0.0.1"]
}
`, addr))
	p := startHubd(t, cfg, addr)
	mails := hubtest.WaitMaildir(t, filepath.Join(dir, "mail", "m1"), n, 20*time.Second)
	waitEmptyQueue(t, spool, 20*time.Second)
	if !strings.Contains(p.out.String(), "imported the disk spool into the log") {
		t.Errorf("no import logged:\n%s", p.out.String())
	}
	if entries, _ := os.ReadDir(filepath.Join(spool, "queue")); len(entries) != 0 {
		t.Errorf("the old spool's queue/ still holds %d files", len(entries))
	}
	p.kill()
	startHubd(t, cfg, addr)
	waitEmptyQueue(t, spool, 20*time.Second)
	mails = hubtest.WaitMaildir(t, filepath.Join(dir, "mail", "m1"), n, time.Second)
	seen := map[string]int{}
	for _, m := range mails {
		i := strings.Index(m, "message n=")
		if i < 0 {
			t.Fatalf("unexpected mail:\n%s", m)
		}
		seen[m[i:strings.IndexByte(m[i:], '.')+i]]++
	}
	for i := range n {
		if c := seen[fmt.Sprintf("message n=%d", i)]; c != 1 {
			t.Errorf("message %d delivered %d times", i, c)
		}
	}
	if len(mails) != n {
		t.Errorf("%d mails delivered, want %d", len(mails), n)
	}
}
