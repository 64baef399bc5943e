package hubtest

import (
	"fmt"
	"net/smtp"
	"strings"
	"testing"
	"time"
)

// waitFolder polls a Dovecot folder until it holds n messages.
func waitFolder(t *testing.T, dv *dovecot, usr, folder string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		msgs := dv.folder(t, usr, folder)
		if len(msgs) >= n {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%q holds %d messages, want %d", usr, folder, len(msgs), n)
		}
		<-tick.C
	}
}

// TestDovecotLMTP delivers through a whole hub to a real Dovecot over LMTP
// (RFC 2033): a subaddressed recipient reaches Dovecot as addressed, so
// Dovecot files it into the folder named by the detail
// (lmtp_save_to_detail_mailbox) and writes it in Delivered-To; one message
// to two tagged addresses and the plain one makes three copies; and
// messages share LMTP connections, counted by a proxy in front of Dovecot
// and in Dovecot's own log.
func TestDovecotLMTP(t *testing.T) {
	dv := startDovecot(t, "alice", "bob")
	proxy := startCountingProxy(t, dv.socket)
	h := Start(t, fmt.Sprintf(`
hub {
  hostname  = "hub.example.test"
  spool_dir = "{{dir}}/spool"
}
accepted_domain "example.test" {}
mailbox "alice@example.test" {
  lmtp      = "unix:%[1]s"
  addresses = ["a.liddell@example.test"]
}
mailbox "bob@example.test" { lmtp = "unix:%[1]s" }
alias "news@example.test" { to = ["alice+news@example.test", "bob@example.test"] }
receive_connector "in" { bind = ["127.0.0.1:0"] }
`, proxy.path), Options{})
	addr := h.Addr(t, "in")

	// One recipient, subaddressed: the news folder, Delivered-To as addressed.
	send(t, addr, "someone@remote.test", "alice+news@example.test")
	msgs := waitFolder(t, dv, "alice", "news", 1)
	if !strings.Contains(msgs[0], "Delivered-To: alice+news@example.test\r\n") && !strings.Contains(msgs[0], "Delivered-To: alice+news@example.test\n") {
		t.Errorf("news folder holds\n%s", msgs[0])
	}

	// Two tagged addresses and the plain one (through an extra address)
	// in one message: three copies, in three folders.
	send(t, addr, "someone@remote.test", "alice+misc@example.test", "alice+news@example.test", "a.liddell@example.test")
	waitFolder(t, dv, "alice", "misc", 1)
	waitFolder(t, dv, "alice", "news", 2)
	waitFolder(t, dv, "alice", "", 1)

	// An alias target keeps its tag; bob gets his copy too.
	send(t, addr, "someone@remote.test", "news@example.test")
	waitFolder(t, dv, "alice", "news", 3)
	waitFolder(t, dv, "bob", "", 1)
	if err := h.Transport.WaitIdle(ctxTimeout(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := len(dv.folder(t, "alice", "")); n != 1 {
		t.Errorf("INBOX holds %d messages, want 1 (tagged copies went elsewhere)", n)
	}

	// Connection reuse: many messages, few connections.
	const bulk = 60
	before := proxy.count()
	for i := range bulk {
		body := fmt.Sprintf("From: <someone@remote.test>\r\nSubject: bulk %d\r\n\r\nhello\r\n", i)
		if err := smtp.SendMail(addr, nil, "someone@remote.test", []string{"bob+bulk@example.test"}, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	waitFolder(t, dv, "bob", "bulk", bulk)
	if err := h.Transport.WaitIdle(ctxTimeout(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	conns := proxy.count() - before
	t.Logf("%d messages over %d LMTP connections (%d in all, Dovecot logged %d)", bulk, conns, proxy.count(), dv.connects(t))
	// At most one connection per delivery running at once (20 per next
	// hop), never one per message.
	if conns > bulk/3 {
		t.Errorf("%d LMTP connections for %d messages", conns, bulk)
	}
	if got := dv.connects(t); got != proxy.count() {
		t.Errorf("Dovecot logged %d connections, the proxy counted %d", got, proxy.count())
	}
}
