package hubtest

import (
	"fmt"
	"net/smtp"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hubd/internal/smtpsink"
)

// forged is a message carrying a hub-internal field (folded over two lines)
// in its header, and a line that looks like one in its body.
const forged = "From: sender@example.test\r\n" +
	"X-Hubd-Expanded: team@example.test; by=hub.example.test\r\n\t(forged)\r\n" +
	"Subject: firewall\r\n\r\n" +
	"X-Hubd-Expanded: this line is body text and stays\r\n"

const firewallHCL = `
hub {
  hostname  = "hub.example.test"
  spool_dir = "{{dir}}/spool"
}
accepted_domain "example.test" {}
mailbox "alice@example.test" { maildir = "{{dir}}/mail/alice" }
receive_connector "internet" {
  bind        = ["127.0.0.1:0"]
  permissions { anonymous = ["submit"] }
}
receive_connector "internal" {
  bind             = ["127.0.0.2:0"]
  remote_ip_ranges = ["127.0.0.0/8"]
  permissions { anonymous = ["submit", "relay", "accept_org_headers"] }
}
send_connector "internet" {
  address_spaces = ["*"]
  smart_hosts    = [%q]
  tls            = "none"
}
send_connector "partner" {
  address_spaces   = ["partner.test"]
  smart_hosts      = [%q]
  tls              = "none"
  send_org_headers = true
}
`

// TestHeaderFirewall: the hub-internal fields of the message above are
// removed, continuation line included, when an anonymous client of the
// Internet connector sends it, kept when the connector grants
// accept_org_headers; on the way out they are kept only through the send
// connector with send_org_headers (TestHeaderFirewallOnSend). The body is
// never touched.
func TestHeaderFirewall(t *testing.T) {
	internet := smtpsink.Start(t, smtpsink.Options{})
	partner := smtpsink.Start(t, smtpsink.Options{})
	h := Start(t, fmt.Sprintf(firewallHCL, internet.Addr(), partner.Addr()), Options{})
	alice := filepath.Join(h.Dir, "mail/alice")

	if err := smtp.SendMail(h.Addr(t, "internet"), nil, "sender@example.test", []string{"alice@example.test"}, []byte(forged)); err != nil {
		t.Fatal(err)
	}
	got := WaitMaildir(t, alice, 1, 10*time.Second)[0]
	if strings.Contains(got, "(forged)") || strings.Contains(got, "X-Hubd-Expanded: team@") {
		t.Errorf("anonymous client's X-Hubd-Expanded reached the mailbox:\n%s", got)
	}
	if !strings.Contains(got, "Subject: firewall") || !strings.Contains(got, "X-Hubd-Expanded: this line is body text and stays") {
		t.Errorf("more than the field was removed:\n%s", got)
	}

	if err := smtp.SendMail(h.Addr(t, "internal"), nil, "sender@example.test", []string{"alice@example.test"}, []byte(forged)); err != nil {
		t.Fatal(err)
	}
	kept := 0
	for _, m := range WaitMaildir(t, alice, 2, 10*time.Second) {
		if strings.Contains(m, "X-Hubd-Expanded: team@example.test; by=hub.example.test\r\n\t(forged)\r\n") ||
			strings.Contains(m, "X-Hubd-Expanded: team@example.test; by=hub.example.test\n\t(forged)\n") {
			kept++
		}
	}
	if kept != 1 {
		t.Errorf("%d of 2 copies kept the field, want 1 (the one through accept_org_headers)", kept)
	}
}

// TestHeaderFirewallOnSend: a message the hub accepted with its internal
// fields leaves without them through a send connector lacking
// send_org_headers, and with them through one that has it.
func TestHeaderFirewallOnSend(t *testing.T) {
	internet := smtpsink.Start(t, smtpsink.Options{})
	partner := smtpsink.Start(t, smtpsink.Options{})
	h := Start(t, fmt.Sprintf(firewallHCL, internet.Addr(), partner.Addr()), Options{})
	if err := smtp.SendMail(h.Addr(t, "internal"), nil, "sender@example.test",
		[]string{"bob@remote.test", "carol@partner.test"}, []byte(forged)); err != nil {
		t.Fatal(err)
	}
	out := string(internet.WaitFor(t, 1, 10*time.Second)[0].Data)
	if strings.Contains(out, "(forged)") || !strings.Contains(out, "X-Hubd-Expanded: this line is body text and stays") {
		t.Errorf("without send_org_headers:\n%s", out)
	}
	kept := string(partner.WaitFor(t, 1, 10*time.Second)[0].Data)
	if !strings.Contains(kept, "X-Hubd-Expanded: team@example.test; by=hub.example.test\r\n\t(forged)\r\n") {
		t.Errorf("with send_org_headers:\n%s", kept)
	}
}
