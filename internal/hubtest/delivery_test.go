package hubtest

import (
	"context"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"hubd/hub/ops"
	"hubd/internal/certgen"
	"hubd/internal/dnstest"
	"hubd/internal/smtpsink"
)

// The delivery tests of the hub end to end: real SMTP into a receive
// connector, the real queue and categorizer, real SMTP out to remote MTAs
// started by the test on loopback addresses (127.0.0.x, one port), found
// through MX records served by a DNS server the test starts (dnstest).

const mxHub = `
hub {
  hostname                 = "hub.example.test"
  spool_dir                = "{{dir}}/spool"
  {{dns}}
  quick_retry_interval     = "200ms"
  transient_retry_interval = "200ms"
  retry_interval           = "200ms"
  %s
}
accepted_domain "example.test" {}
mailbox "sender@example.test" { maildir = "{{dir}}/mail/sender" }
receive_connector "apps" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["127.0.0.1"]
  permissions { anonymous = ["submit", "relay"] }
}
send_connector "internet" {
  address_spaces = ["*"]
  dns_routing    = true
}
`

// remote is one remote MTA: a domain, its MX host's loopback address, and
// how the sink behaves.
type remote struct {
	domain string
	opts   smtpsink.Options
}

// startRemotes starts one sink per remote on 127.0.0.2, .3, ... (one port)
// and a DNS server with an MX for each domain.
func startRemotes(t *testing.T, remotes []remote) (map[string]*smtpsink.Sink, *dnstest.Server, int) {
	t.Helper()
	dns := dnstest.Start(t)
	opts := make([]smtpsink.Options, len(remotes))
	for i, r := range remotes {
		opts[i] = r.opts
		opts[i].Addr = fmt.Sprintf("127.0.0.%d", i+2)
		host := "mx." + r.domain
		dns.SetMX(r.domain, &net.MX{Host: host + ".", Pref: 10})
		dns.SetHosts(host, opts[i].Addr)
	}
	sinks := smtpsink.StartSamePort(t, opts...)
	byDomain := map[string]*smtpsink.Sink{}
	for i, r := range remotes {
		byDomain[r.domain] = sinks[i]
	}
	return byDomain, dns, sinks[0].Port()
}

func send(t *testing.T, addr, from string, to ...string) {
	t.Helper()
	body := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: test\r\n\r\nhello\r\n", from, to[0])
	if err := smtp.SendMail(addr, nil, from, to, []byte(body)); err != nil {
		t.Fatalf("send to %v: %v", to, err)
	}
}

// TestSlowDestinationDoesNotBlockOthers: a remote MTA that accepts the TCP
// connection and never answers holds only its own next hop's connections;
// mail for another destination is delivered on time meanwhile (DESIGN.md
// invariant 4), even though more messages wait for the dead one than it has
// connection slots.
func TestSlowDestinationDoesNotBlockOthers(t *testing.T) {
	sinks, dns, port := startRemotes(t, []remote{
		{domain: "hang.test", opts: smtpsink.Options{Hang: true}},
		{domain: "fast.test"},
	})
	h := Start(t, fmt.Sprintf(mxHub, `max_outbound_connections = 4
  max_per_domain_outbound_connections = 2`), Options{DNSServers: []string{dns.Addr}, SMTPPort: port, SMTPCommandTimeout: time.Minute})
	addr := h.Addr(t, "apps")
	for i := range 4 {
		send(t, addr, "sender@example.test", fmt.Sprintf("u%d@hang.test", i))
	}
	start := time.Now()
	for i := range 5 {
		send(t, addr, "sender@example.test", fmt.Sprintf("u%d@fast.test", i))
	}
	got := sinks["fast.test"].WaitFor(t, 5, 10*time.Second)
	t.Logf("5 messages to fast.test delivered in %v while hang.test hangs", time.Since(start))
	if len(got) != 5 {
		t.Fatalf("fast.test got %d", len(got))
	}
	if n := len(sinks["hang.test"].Messages()); n != 0 {
		t.Fatalf("hang.test recorded %d messages", n)
	}
	for _, q := range h.Transport.DeliveryQueues() {
		if q.Name == "smtp:internet[mx:hang.test]" && (q.Active != 2 || q.Items != 2) {
			t.Errorf("hang.test queue %+v: want 2 connections stuck and 2 waiting (the per-domain limit)", q)
		}
	}
}

// TestRemoteBehaviours: each kind of remote MTA gets the outcome an
// operator expects, and the sender a DSN where one is owed.
func TestRemoteBehaviours(t *testing.T) {
	tlsCfg, _, err := certgen.ServerConfig("mx.tls.test")
	if err != nil {
		t.Fatal(err)
	}
	sinks, dns, port := startRemotes(t, []remote{
		{domain: "accept.test"},
		{domain: "tempfail.test", opts: smtpsink.Options{TempFailFirst: 1}},
		{domain: "onebad.test", opts: smtpsink.Options{Rcpt: func(a string) error {
			if strings.HasPrefix(a, "bad@") {
				return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
			}
			return nil
		}}},
		{domain: "drop.test", opts: smtpsink.Options{DropInData: 1}},
		{domain: "notls.test"},
		{domain: "tls.test", opts: smtpsink.Options{TLSConfig: tlsCfg}},
	})
	dns.SetMX("nullmx.test", &net.MX{Host: ".", Pref: 0})
	dns.SetFail("servfail.test", true)
	h := Start(t, fmt.Sprintf(mxHub, ""), Options{DNSServers: []string{dns.Addr}, SMTPPort: port})
	addr := h.Addr(t, "apps")

	send(t, addr, "sender@example.test", "a@accept.test")
	send(t, addr, "sender@example.test", "a@tempfail.test")
	send(t, addr, "sender@example.test", "good@onebad.test", "bad@onebad.test")
	send(t, addr, "sender@example.test", "a@drop.test")
	send(t, addr, "sender@example.test", "a@notls.test")
	send(t, addr, "sender@example.test", "a@tls.test")
	send(t, addr, "sender@example.test", "a@nullmx.test")
	send(t, addr, "sender@example.test", "a@nxdomain.test")
	send(t, addr, "sender@example.test", "a@servfail.test")

	for domain, want := range map[string]string{"accept.test": "a", "tempfail.test": "a", "onebad.test": "good",
		"drop.test": "a", "notls.test": "a", "tls.test": "a"} {
		got := sinks[domain].WaitFor(t, 1, 10*time.Second)
		if len(got) != 1 || len(got[0].To) != 1 || got[0].To[0] != want+"@"+domain {
			t.Errorf("%s got %+v", domain, got)
		}
	}
	if !sinks["tls.test"].Messages()[0].TLS || sinks["notls.test"].Messages()[0].TLS {
		t.Error("STARTTLS not used when offered, or used when not offered")
	}

	// DSNs: bad@onebad.test (5.1.1 from the remote), nullmx (5.1.10),
	// nxdomain (5.1.2). The SERVFAIL domain is only deferred.
	dsns := WaitMaildir(t, filepath.Join(h.Dir, "mail", "sender"), 3, 10*time.Second)
	all := strings.Join(dsns, "\n")
	for _, want := range []string{"Status: 5.1.1", "Status: 5.1.10", "Status: 5.1.2",
		"Final-Recipient: rfc822;bad@onebad.test", "Final-Recipient: rfc822;a@nullmx.test",
		"Final-Recipient: rfc822;a@nxdomain.test", "Remote-MTA: dns;"} {
		if !strings.Contains(all, want) {
			t.Errorf("DSNs lack %q", want)
		}
	}
	if strings.Contains(all, "servfail.test") {
		t.Error("a temporary DNS failure produced a DSN")
	}
	// Exactly once each: no duplicate after the temporary failure or the
	// dropped connection.
	for domain, s := range sinks {
		if n := len(s.Messages()); n > 1 {
			t.Errorf("%s received %d copies", domain, n)
		}
	}
}

// TestReloadChangesDNSServers: a domain the configured name server cannot
// answer for (SERVFAIL) is deferred, never bounced; once a reload points
// hub.dns_servers at a server that knows its MX, the next retry delivers
// it there.
func TestReloadChangesDNSServers(t *testing.T) {
	sinks, good, port := startRemotes(t, []remote{{domain: "later.test"}})
	broken := dnstest.Start(t)
	broken.SetFail("later.test", true)
	h := Start(t, fmt.Sprintf(mxHub, ""), Options{DNSServers: []string{broken.Addr}, SMTPPort: port})
	send(t, h.Addr(t, "apps"), "sender@example.test", "a@later.test")
	// Deferred: the message waits in its queue with the lookup's 4.4.3.
	waitUntil(t, 10*time.Second, func() bool { return deferredWith(h, "4.4.3") }, "a deferral with 4.4.3")
	if broken.Queries("") == 0 {
		t.Error("the configured name server was never asked")
	}

	path := filepath.Join(h.Dir, "hubd.hcl")
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	src = []byte(strings.Replace(string(src), broken.Addr, good.Addr, 1))
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	if res, err := h.Reload(ctxTimeout(t, 10*time.Second)); err != nil || !res.Applied {
		t.Fatalf("reload: %+v, %v", res, err)
	}
	if got := sinks["later.test"].WaitFor(t, 1, 10*time.Second); len(got) != 1 || got[0].To[0] != "a@later.test" {
		t.Fatalf("later.test got %+v", got)
	}
	if dsns, _ := os.ReadDir(filepath.Join(h.Dir, "mail", "sender", "new")); len(dsns) != 0 {
		t.Errorf("%d DSNs to the sender, want none (the SERVFAIL only deferred the message)", len(dsns))
	}
}

// deferredWith reports whether a queued message has a recipient deferred
// with the enhanced status code enh.
func deferredWith(h *Hub, enh string) bool {
	list, err := h.Transport.Messages(context.Background(), ops.MessageFilter{})
	if err != nil {
		return false
	}
	for _, m := range list.Messages {
		for _, r := range m.Recipients {
			if strings.Contains(r.LastReply, enh) {
				return true
			}
		}
	}
	return false
}
