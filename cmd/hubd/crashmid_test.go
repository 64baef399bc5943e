package main

import (
	"context"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"testing"
	"time"

	"hubd/hub/queue"
	"hubd/internal/hubtest"
	"hubd/internal/smtpsink"
)

// TestCrashMidMultiRecipientDelivery: a message for two local mailboxes and
// one remote recipient. The mailboxes get their copies; the remote MTA
// accepts the connection and hangs. hubd is killed (SIGKILL) right then.
// After a restart, with the remote MTA answering again, the remote
// recipient gets the message once and neither mailbox gets a second copy.
func TestCrashMidMultiRecipientDelivery(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)

	// The remote MTA, first as a listener that accepts and never answers.
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	remote := hang.Addr().String()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()

	cfg := writeConfig(t, dir, fmt.Sprintf(`
hub {
  hostname             = "crash.example.test"
  spool_dir            = "spool"
  quick_retry_interval = "1s"
}
accepted_domain "example.test" {}
mailbox "m1@example.test" { maildir = "mail/m1" }
mailbox "m2@example.test" { maildir = "mail/m2" }
receive_connector "in" {
  bind             = [%q]
  remote_ip_ranges = ["127.0.0.1"]
  permissions { anonymous = ["submit", "relay"] }
}
send_connector "out" {
  address_spaces = ["*"]
  smart_hosts    = ["[127.0.0.1]:%s"]
  tls            = "none"
}
`, addr, portOf(t, remote)))
	p := startHubd(t, cfg, addr)
	msg := "Subject: three recipients\r\n\r\nonce each\r\n"
	if err := smtp.SendMail(addr, nil, "a@example.test", []string{"m1@example.test", "m2@example.test", "r@remote.test"},
		[]byte(msg)); err != nil {
		t.Fatal(err)
	}
	hubtest.WaitMaildir(t, filepath.Join(dir, "mail", "m1"), 1, 10*time.Second)
	hubtest.WaitMaildir(t, filepath.Join(dir, "mail", "m2"), 1, 10*time.Second)
	var stuck net.Conn
	select {
	case stuck = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("hubd never connected to the remote MTA")
	}
	p.kill()
	stuck.Close()
	hang.Close()

	// The remote MTA comes back on the same address.
	sink := smtpsink.Start(t, smtpsink.Options{Addr: remote})
	startHubd(t, cfg, addr)
	got := sink.WaitFor(t, 1, 20*time.Second)
	if len(got) != 1 || len(got[0].To) != 1 || got[0].To[0] != "r@remote.test" {
		t.Fatalf("remote got %+v", got)
	}
	waitEmptyQueue(t, filepath.Join(dir, "spool"), 20*time.Second)
	for _, mb := range []string{"m1", "m2"} {
		entries, _ := os.ReadDir(filepath.Join(dir, "mail", mb, "new"))
		if len(entries) != 1 {
			t.Errorf("%s has %d copies, want 1", mb, len(entries))
		}
	}
	if n := len(sink.Messages()); n != 1 {
		t.Errorf("remote got %d copies, want 1", n)
	}
}

func portOf(t *testing.T, hostport string) string {
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// waitEmptyQueue polls until the spool holds no message, read beside the
// hubd that owns it (queue.Inspect).
func waitEmptyQueue(t *testing.T, spool string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		snap, err := queue.Inspect(context.Background(), spool)
		if err == nil && len(snap.Messages) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("queue not empty after %v: %v", timeout, err)
			}
			t.Fatalf("queue not empty after %v: %d messages, first %s", timeout, len(snap.Messages), snap.Messages[0].ID)
		}
		<-tick.C
	}
}
