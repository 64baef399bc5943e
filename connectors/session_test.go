package connectors

import (
	"strings"
	"testing"
)

// internetHCL is an anonymous port-25 connector with STARTTLS.
const internetHCL = `
receive_connector "internet" {
  bind   = ["127.0.0.1:0"]
  tarpit_interval = "0s" # tarpit_test.go measures the tarpit
  banner = "mx.test ESMTP test banner"
  tls { self_signed = true }
  max_recipients = 3
  max_message_size = "1KB"
  max_hop_count = 3
}
`

func TestEHLOKeywords(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	c, greet := h.dial("127.0.0.1:0", "")
	if greet != "220 mx.test ESMTP test banner" {
		t.Errorf("greeting %q", greet)
	}
	ehlo := c.expect("EHLO client.test", "250-")
	for _, kw := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "SIZE 1024", "CHUNKING", "DSN", "STARTTLS"} {
		if !strings.Contains(ehlo, "250-"+kw+"\n") && !strings.HasSuffix(ehlo, "250 "+kw) {
			t.Errorf("EHLO lacks %s:\n%s", kw, ehlo)
		}
	}
	if strings.Contains(ehlo, "AUTH") {
		t.Errorf("AUTH advertised on a connector without auth:\n%s", ehlo)
	}
}

func TestConnectorSelection(t *testing.T) {
	t.Parallel()
	h := start(t, `
receive_connector "one" {
  bind = ["127.0.0.1:0"]
  tarpit_interval = "0s" # tarpit_test.go measures the tarpit
  remote_ip_ranges = ["127.0.0.2/32"]
  banner = "one"
}
receive_connector "net" {
  bind = ["127.0.0.1:0"]
  tarpit_interval = "0s" # tarpit_test.go measures the tarpit
  remote_ip_ranges = ["127.0.0.0/24"]
  banner = "net"
}
receive_connector "all" {
  bind = ["127.0.0.1:0"]
  tarpit_interval = "0s" # tarpit_test.go measures the tarpit
  remote_ip_ranges = ["0.0.0.0/0"]
  banner = "all"
}
receive_connector "narrow" {
  bind = ["127.0.0.5:0"]
  tarpit_interval = "0s" # tarpit_test.go measures the tarpit
  remote_ip_ranges = ["127.0.0.9/32"]
}
`)
	for _, tc := range []struct{ from, want string }{
		{"127.0.0.2", "220 one"},
		{"127.0.0.3", "220 net"},
		{"127.0.1.1", "220 all"},
	} {
		_, greet := h.dial("127.0.0.1:0", tc.from)
		if greet != tc.want {
			t.Errorf("from %s: %q, want %q", tc.from, greet, tc.want)
		}
	}
	_, greet := h.dial("127.0.0.5:0", "127.0.0.3")
	if greet != "554 5.7.1 mx.test Access denied" {
		t.Errorf("unmatched peer: %q", greet)
	}
}

func TestRecipientPolicy(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("MAIL FROM:<someone@remote.test>", "250 ")
	c.expect("RCPT TO:<x@elsewhere.test>", "550 5.7.1 ")
	c.expect("RCPT TO:<nobody@example.com>", "550 5.1.1 ")
	c.expect("RCPT TO:<alice@example.com>", "250 ")
	c.expect("RCPT TO:<ALICE@EXAMPLE.COM>", "250 ")
	c.expect("RCPT TO:<bob@example.com>", "250 ")
	c.expect("RCPT TO:<a@example.com>", "452 4.5.3 Too many recipients")
	c.expect("DATA", "354")
	c.raw("Subject: hi\r\n\r\nbody\r\n.\r\n")
	r := c.reply()
	env, _ := h.sub.last(t)
	if r != "250 2.0.0 Ok: queued as "+string(env.ID) || !env.ID.Valid() {
		t.Fatalf("DATA: %q (queue id %q)", r, env.ID)
	}
	if len(env.Recipients) != 2 {
		t.Errorf("recipients %+v, want alice once and bob", env.Recipients)
	}
}

func TestDeliveryAndReceived(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("MAIL FROM:<someone@remote.test> BODY=8BITMIME RET=HDRS ENVID=e1", "250 ")
	c.expect("RCPT TO:<alice@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.com", "250 ")
	c.expect("DATA", "354")
	c.raw("Subject: hi\r\n\r\n..dot\r\n.\r\n")
	reply := c.reply()
	c.expect("QUIT", "221")
	env, body := h.sub.last(t)
	// One ID from MAIL on: the 250, the envelope and the Received: field.
	if reply != "250 2.0.0 Ok: queued as "+string(env.ID) || !env.ID.Valid() {
		t.Fatalf("DATA: %q (queue id %q)", reply, env.ID)
	}
	if env.From != "someone@remote.test" || env.Connector != "internet" || env.ClientHelo != "client.test" ||
		env.Body != "8BITMIME" || env.DSNRet != "HDRS" || env.DSNEnvID != "e1" ||
		!strings.HasPrefix(env.ClientAddr, "127.0.0.1:") || env.ReceivedAt.IsZero() {
		t.Errorf("envelope %+v", env)
	}
	r := env.Recipients[0]
	if r.Address != "alice@example.com" || strings.Join(r.Notify, ",") != "SUCCESS,FAILURE" || r.ORCPT != "rfc822;alice@example.com" {
		t.Errorf("recipient %+v", r)
	}
	unfolded := strings.NewReplacer("\r\n\t", " ", "\r\n ", " ").Replace(body)
	for _, want := range []string{"Received: from client.test ([127.0.0.1])", "by mx.test with ESMTP id " + string(env.ID) + " for <alice@example.com>;", "Subject: hi\r\n\r\n.dot\r\n"} {
		if !strings.Contains(unfolded, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
	if !strings.HasPrefix(body, "Received: ") {
		t.Errorf("Received: is not first:\n%s", body)
	}
	if strings.Contains(body, "Message-ID") {
		t.Errorf("Message-ID added for an anonymous session:\n%s", body)
	}
}

func TestSizeLimits(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("MAIL FROM:<s@remote.test> SIZE=5000", "552 5.3.4 ")
	c.expect("MAIL FROM:<s@remote.test> SIZE=100", "250 ")
	c.expect("RCPT TO:<alice@example.com>", "250 ")
	c.expect("DATA", "354")
	c.raw("Subject: big\r\n\r\n" + strings.Repeat("0123456789abcde\r\n", 100) + ".\r\n")
	if r := c.reply(); !strings.HasPrefix(r, "552 5.3.4 ") {
		t.Fatalf("oversize DATA: %q", r)
	}
	c.expect("RSET", "250 ")
	if h.sub.count() != 0 {
		t.Error("an oversize message was queued")
	}
}

// TestNestedMAIL: a second MAIL inside an open transaction is out of
// sequence (RFC 5321 §4.1.4); after RSET a new transaction starts cleanly.
func TestNestedMAIL(t *testing.T) {
	t.Parallel()
	h := start(t, `
receive_connector "internet" {
  bind = ["127.0.0.1:0"]
  tarpit_interval = "0s" # tarpit_test.go measures the tarpit
}
`)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("MAIL FROM:<a@remote.test>", "250 ")
	c.expect("MAIL FROM:<b@remote.test>", "503 5.5.1")
	c.expect("RCPT TO:<bob@example.com>", "250 ")
	c.expect("RSET", "250 ")
	if got := c.send("c@remote.test", []string{"bob@example.com"}, "Subject: x\r\n\r\nx\r\n"); !strings.HasPrefix(got, "250 2.0.0") {
		t.Fatalf("after RSET: %q", got)
	}
	if env, _ := h.sub.last(t); env.From != "c@remote.test" {
		t.Errorf("queued from %q", env.From)
	}
}

// TestRelayTricks: percent hack, bang paths, quoted local parts with '@' and
// source routes never open a relay over the wire, whatever go-smtp's parser
// makes of them; an internal_relay domain without a recipient list is where
// they would otherwise slip through.
func TestRelayTricks(t *testing.T) {
	t.Parallel()
	h := start(t, `
accepted_domain "corp.example.com" { type = "internal_relay" }
send_connector "corp" {
  address_spaces = ["corp.example.com"]
  smart_hosts    = ["[192.0.2.10]:25"]
}
receive_connector "internet" {
  bind = ["127.0.0.1:0"]
  tarpit_interval = "0s" # tarpit_test.go measures the tarpit
}
`)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("MAIL FROM:<someone@remote.test>", "250 ")
	for _, rcpt := range []string{
		"<victim%elsewhere.test@corp.example.com>",
		"<elsewhere.test!victim@corp.example.com>",
		`<"victim@elsewhere.test"@corp.example.com>`,
		"<@corp.example.com:victim@elsewhere.test>",
		"<victim@elsewhere.test@corp.example.com>",
		"<victim%elsewhere.test@example.com>",
	} {
		got := c.cmd("RCPT TO:" + rcpt)
		if !strings.HasPrefix(got, "5") {
			t.Errorf("RCPT TO:%s accepted: %q", rcpt, got)
		}
	}
	c.expect("RCPT TO:<anyone@corp.example.com>", "250 ")
	// RFC 5321 §3.6.1 and Appendix C: a source route is ignored and the mail
	// goes to the final mailbox, which here is ours: not a relay.
	c.expect("RCPT TO:<@elsewhere.test:victim@corp.example.com>", "250 ")
}
