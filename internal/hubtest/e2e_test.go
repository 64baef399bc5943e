package hubtest

import (
	"context"
	"fmt"
	"net/smtp"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"hubd/internal/smtpsink"
)

// TestEndToEndSplitAcrossNextHops: one message with recipients that resolve
// to two Maildirs (one of them twice, through an alias), a partner smart host
// and the default smart host is split into one delivery per next hop, and
// each next hop gets exactly its recipients, once.
func TestEndToEndSplitAcrossNextHops(t *testing.T) {
	partner := smtpsink.Start(t, smtpsink.Options{})
	outbound := smtpsink.Start(t, smtpsink.Options{})
	h := Start(t, fmt.Sprintf(`
hub {
  hostname  = "hub.example.test"
  spool_dir = "{{dir}}/spool"
}
accepted_domain "example.test" {}
mailbox "alice@example.test" { maildir = "{{dir}}/mail/alice" }
mailbox "bob@example.test"   { maildir = "{{dir}}/mail/bob" }
alias "team@example.test" { to = ["alice@example.test", "bob@example.test", "carol@remote.test"] }
receive_connector "apps" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["127.0.0.0/8"]
  permissions { anonymous = ["submit", "relay"] }
}
send_connector "partner" {
  address_spaces = ["partner.test"]
  smart_hosts    = [%q]
  tls            = "none"
}
send_connector "outbound" {
  address_spaces = ["*"]
  smart_hosts    = [%q]
  tls            = "none"
}
`, partner.Addr(), outbound.Addr()), Options{})

	rcpts := []string{"alice@example.test", "team@example.test", "dave@partner.test", "erin@other.test"}
	body := "From: sender@example.test\r\nSubject: split\r\n\r\nhello\r\n"
	if err := smtp.SendMail(h.Addr(t, "apps"), nil, "sender@example.test", rcpts, []byte(body)); err != nil {
		t.Fatal(err)
	}

	alice := WaitMaildir(t, filepath.Join(h.Dir, "mail/alice"), 1, 10*time.Second)
	bob := WaitMaildir(t, filepath.Join(h.Dir, "mail/bob"), 1, 10*time.Second)
	for _, m := range append(alice, bob...) {
		if !strings.Contains(m, "Subject: split") || !strings.Contains(m, "Received: from") {
			t.Errorf("local copy:\n%s", m)
		}
	}
	p := partner.WaitFor(t, 1, 10*time.Second)
	if got := strings.Join(p[0].To, ","); got != "dave@partner.test" {
		t.Errorf("partner smart host got recipients %s", got)
	}
	o := outbound.WaitFor(t, 1, 10*time.Second)
	to := append([]string(nil), o[0].To...)
	sort.Strings(to)
	if got := strings.Join(to, ","); got != "carol@remote.test,erin@other.test" {
		t.Errorf("outbound smart host got recipients %s (want both in one transaction)", got)
	}
	if o[0].From != "sender@example.test" {
		t.Errorf("outbound MAIL FROM %q", o[0].From)
	}
	// Nothing more arrives: alice got one copy although she was named twice.
	if err := h.Transport.WaitIdle(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n := len(WaitMaildir(t, filepath.Join(h.Dir, "mail/alice"), 1, time.Second)); n != 1 {
		t.Errorf("alice has %d copies, want 1", n)
	}
	if n := len(partner.Messages()) + len(outbound.Messages()); n != 2 {
		t.Errorf("smart hosts got %d messages, want 2", n)
	}
}

// TestEndToEndSmartHostRetry: a smart host that answers 451 to the first
// attempt gets the message on a later one.
func TestEndToEndSmartHostRetry(t *testing.T) {
	var mu sync.Mutex
	attempts := 0
	sink := smtpsink.Start(t, smtpsink.Options{
		Data: func(from string, to []string, data []byte) error {
			mu.Lock()
			defer mu.Unlock()
			attempts++
			if attempts == 1 {
				return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "try later"}
			}
			return nil
		},
	})
	h := Start(t, fmt.Sprintf(`
hub {
  hostname       = "hub.example.test"
  spool_dir      = "{{dir}}/spool"
  quick_retry_interval = "100ms"
}
receive_connector "apps" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["127.0.0.1"]
  permissions { anonymous = ["submit", "relay"] }
}
send_connector "out" {
  address_spaces = ["*"]
  smart_hosts    = [%q]
  tls            = "none"
}
`, sink.Addr()), Options{})
	if err := smtp.SendMail(h.Addr(t, "apps"), nil, "a@example.test", []string{"b@remote.test"},
		[]byte("Subject: retry\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	got := sink.WaitFor(t, 1, 20*time.Second)
	if got[0].To[0] != "b@remote.test" {
		t.Errorf("got %+v", got[0])
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
