package hubtest

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hubd/hub/ops"
	"hubd/hub/transport"
	"hubd/internal/certgen"
	"hubd/internal/logbuf"
	"hubd/internal/smtpsink"
)

// TestEndToEndSmartHostAuth535: a smart host that wants STARTTLS and AUTH
// refuses the configured password with 535. The message is not bounced:
// its recipient stays deferred, the next hop's queue is in Retry with the
// server's reply, and the log says so at Error. With the password fixed
// and the configuration reloaded, a retry of the queue delivers it,
// authenticated, and the sender never gets a DSN.
func TestEndToEndSmartHostAuth535(t *testing.T) {
	// The smart host's certificate is its own CA: the send connector
	// verifies it against ca_file (tls is "required" with auth).
	tlsCfg, certPEM, err := certgen.ServerPEM("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "smarthost-ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	sink := smtpsink.Start(t, smtpsink.Options{TLSConfig: tlsCfg, RequireAuth: true,
		Auth: &smtpsink.AuthOptions{Users: map[string]string{"hub@example.test": "right-password"}}})
	pwFile := filepath.Join(t.TempDir(), "relay.password")
	if err := os.WriteFile(pwFile, []byte("wrong-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs logbuf.Buffer
	h := Start(t, fmt.Sprintf(`
hub {
  hostname  = "hub.example.test"
  spool_dir = "{{dir}}/spool"
}
accepted_domain "example.test" {}
mailbox "sender@example.test" { maildir = "{{dir}}/mail/sender" }
receive_connector "apps" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["127.0.0.1"]
  permissions { anonymous = ["submit", "relay"] }
}
send_connector "relay" {
  address_spaces = ["*"]
  smart_hosts    = [%q]
  ca_file        = %q
  auth {
    username      = "hub@example.test"
    password_file = %q
  }
}
`, sink.Addr(), caFile, pwFile), Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	send(t, h.Addr(t, "apps"), "sender@example.test", "rcpt@remote.test")

	queue := "smtp:relay[[127.0.0.1]:" + strings.TrimPrefix(sink.Addr(), "127.0.0.1:") + "]"
	reason := "127.0.0.1 refused AUTH PLAIN for hub@example.test: 535 5.7.8 Authentication credentials invalid"
	var q transport.QueueInfo
	waitUntil(t, 10*time.Second, func() bool {
		for _, q = range h.Transport.DeliveryQueues() {
			if q.Name == queue && q.State == transport.StateRetry {
				return true
			}
		}
		return false
	}, "the next hop's queue in Retry")
	if !strings.Contains(q.LastError, "451 4.7.8 "+reason) {
		t.Errorf("queue last error %q, want the 535 quoted", q.LastError)
	}
	var rcpt ops.RecipientSummary
	waitUntil(t, 10*time.Second, func() bool {
		list, err := h.Transport.Messages(ctxTimeout(t, 5*time.Second), ops.MessageFilter{})
		if err != nil || len(list.Messages) != 1 || len(list.Messages[0].Recipients) != 1 {
			return false
		}
		rcpt = list.Messages[0].Recipients[0]
		return rcpt.LastReply != ""
	}, "the recipient's deferral recorded")
	// The attempt's own reply, or the queue's Retry quoting it when the
	// message was deferred again behind the queue in Retry.
	if rcpt.Status != "deferred" || !strings.Contains(rcpt.LastReply, "451 4.7.8 "+reason) {
		t.Errorf("recipient %+v, want deferred with 451 4.7.8 %s", rcpt, reason)
	}
	if n := logs.Count("level=ERROR", "smart host authentication failed", "535 5.7.8 Authentication credentials invalid"); n != 1 {
		t.Errorf("%d error lines carrying the 535, want 1:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "wrong-password") {
		t.Error("the password is in the log")
	}
	if len(sink.Messages()) != 0 {
		t.Fatalf("delivered without authentication: %v", sink.Messages())
	}

	// The operator fixes the password: reload, retry the queue.
	if err := os.WriteFile(pwFile, []byte("right-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if res, err := h.Reload(ctxTimeout(t, 5*time.Second)); err != nil || !res.Applied {
		t.Fatalf("reload: %+v %v", res, err)
	}
	if _, err := h.Transport.RetryQueue(ctxTimeout(t, 5*time.Second), queue, true); err != nil {
		t.Fatal(err)
	}
	m := sink.WaitFor(t, 1, 10*time.Second)[0]
	if m.AuthUser != "hub@example.test" || !m.TLS || strings.Join(m.To, ",") != "rcpt@remote.test" {
		t.Errorf("arrived %v as %q tls %v", m, m.AuthUser, m.TLS)
	}
	if err := h.Transport.WaitIdle(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if dir := filepath.Join(h.Dir, "mail/sender/new"); hasFiles(dir) {
		t.Errorf("the sender got a DSN in %s", dir)
	}
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func hasFiles(dir string) bool {
	ents, _ := os.ReadDir(dir)
	return len(ents) > 0
}
