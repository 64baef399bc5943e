package connectors

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"hubd/policy"
)

func TestTooManyReceived(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL) // max_hop_count = 3
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("MAIL FROM:<s@remote.test>", "250 ")
	c.expect("RCPT TO:<alice@example.com>", "250 ")
	c.expect("DATA", "354")
	c.raw(strings.Repeat("Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n", 4) + "\r\nloop\r\n.\r\n")
	if r := c.reply(); !strings.HasPrefix(r, "554 5.4.6 ") {
		t.Fatalf("4 Received fields: %q", r)
	}
	if h.sub.count() != 0 {
		t.Error("a looping message was queued")
	}
}

// TestBareLFThenNextTransaction proves the session stays in step after a
// content error: the rest of the DATA is read, and the next commands work.
func TestBareLFThenNextTransaction(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("MAIL FROM:<s@remote.test>", "250 ")
	c.expect("RCPT TO:<alice@example.com>", "250 ")
	c.expect("DATA", "354")
	c.raw("Subject: smuggle\r\n\r\nfirst\n.\nMAIL FROM:<evil@remote.test>\r\nmore\r\n.\r\n")
	if r := c.reply(); !strings.HasPrefix(r, "550 5.6.0 ") {
		t.Fatalf("bare LF: %q", r)
	}
	c.expect("RSET", "250 ")
	if r := c.send("s@remote.test", []string{"alice@example.com"}, "Subject: ok\r\n\r\nfine\r\n"); !strings.HasPrefix(r, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("next message: %q", r)
	}
	if n := h.sub.count(); n != 1 {
		t.Errorf("%d messages queued, want 1", n)
	}
}

func TestBDAT(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("MAIL FROM:<s@remote.test>", "250 ")
	c.expect("RCPT TO:<alice@example.com>", "250 ")
	part1, part2 := "Subject: chunked\r\n\r\n", "one\r\n.two\r\n"
	c.raw(fmt.Sprintf("BDAT %d\r\n%s", len(part1), part1))
	if r := c.reply(); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("BDAT 1: %q", r)
	}
	c.raw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(part2), part2))
	if r := c.reply(); !strings.HasPrefix(r, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("BDAT LAST: %q", r)
	}
	_, body := h.sub.last(t)
	if !strings.HasSuffix(body, "Subject: chunked\r\n\r\none\r\n.two\r\n") {
		t.Errorf("body:\n%q", body)
	}
	// A bare LF in a chunk is refused, and the session goes on.
	c.expect("MAIL FROM:<s@remote.test>", "250 ")
	c.expect("RCPT TO:<alice@example.com>", "250 ")
	bad := "Subject: x\r\n\r\nbare\nlf\r\n"
	c.raw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(bad), bad))
	if r := c.reply(); !strings.HasPrefix(r, "550 5.6.0 ") {
		t.Fatalf("BDAT bare LF: %q", r)
	}
	c.expect("NOOP", "250 ")
}

func TestSubmitErrors(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	h.sub.mu.Lock()
	h.sub.err = errors.New("disk on fire")
	h.sub.mu.Unlock()
	if r := c.send("s@remote.test", []string{"alice@example.com"}, "Subject: x\r\n\r\ny\r\n"); r != "451 4.3.0 Temporary failure, try again later" {
		t.Errorf("plain error: %q", r)
	}
	h.sub.mu.Lock()
	h.sub.err = fmt.Errorf("queue: %w", &policy.Reply{Code: 452, Enhanced: "4.3.1", Text: "Insufficient system storage"})
	h.sub.mu.Unlock()
	if r := c.send("s@remote.test", []string{"alice@example.com"}, "Subject: x\r\n\r\ny\r\n"); r != "452 4.3.1 Insufficient system storage" {
		t.Errorf("reply error: %q", r)
	}
}

func TestImplicitTLS(t *testing.T) {
	t.Parallel()
	h := start(t, `
receive_connector "smtps" {
  bind  = ["127.0.0.1:0"]
  tls {
    mode        = "implicit"
    self_signed = true
  }
  auth  = ["plain"]
  banner = "mx.test ESMTP implicit"
  permissions {
    anonymous     = []
    authenticated = ["submit", "relay"]
  }
}
`)
	c, greet := h.dialTLS("127.0.0.1:0")
	if greet != "220 mx.test ESMTP implicit" {
		t.Errorf("greeting %q", greet)
	}
	ehlo := c.expect("EHLO client.test", "250")
	if !strings.Contains(ehlo, "AUTH PLAIN") || strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("EHLO:\n%s", ehlo)
	}
	c.expect("AUTH PLAIN "+b64("\x00alice@example.com\x00"+alicePassword), "235 ")
	if r := c.send("alice@example.com", []string{"x@remote.test"}, "Subject: x\r\n\r\ny\r\n"); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("DATA: %q", r)
	}
	_, body := h.sub.last(t)
	if !strings.Contains(body, "ESMTPSA") {
		t.Errorf("Received: does not say ESMTPSA:\n%s", body)
	}
}

func TestPerSourceConnectionLimit(t *testing.T) {
	t.Parallel()
	h := start(t, `
receive_connector "internet" {
  bind = ["127.0.0.1:0"]
  max_inbound_connections_per_source = 2
}
`)
	a, _ := h.dial("127.0.0.1:0", "127.0.0.2")
	h.dial("127.0.0.1:0", "127.0.0.2")
	_, greet := h.dial("127.0.0.1:0", "127.0.0.2")
	if greet != "421 4.3.2 Too many connections" {
		t.Errorf("third connection: %q", greet)
	}
	if _, greet := h.dial("127.0.0.1:0", "127.0.0.3"); !strings.HasPrefix(greet, "220 ") {
		t.Errorf("other source: %q", greet)
	}
	a.expect("QUIT", "221")
	eventually(t, "a slot to free up", func() bool {
		h.svc.mu.Lock()
		defer h.svc.mu.Unlock()
		return h.svc.counts["internet"].perSource[peerAddrOf("127.0.0.2")] < 2
	})
	if _, greet := h.dial("127.0.0.1:0", "127.0.0.2"); !strings.HasPrefix(greet, "220 ") {
		t.Errorf("after QUIT: %q", greet)
	}
}

func TestConnectionTimeout(t *testing.T) {
	t.Parallel()
	h := start(t, `
receive_connector "internet" {
  bind = ["127.0.0.1:0"]
  connection_timeout = "300ms"
}
`)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	if r := c.reply(); r != "421 4.4.2 Connection timed out" {
		t.Errorf("timeout reply %q", r)
	}
	if !c.closed() {
		t.Error("connection still open")
	}
}

func TestShutdownLetsDataFinish(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	idle, _ := h.dial("127.0.0.1:0", "")
	idle.expect("EHLO idle.test", "250")
	busy, _ := h.dial("127.0.0.1:0", "")
	busy.expect("EHLO busy.test", "250")
	busy.expect("MAIL FROM:<s@remote.test>", "250 ")
	busy.expect("RCPT TO:<alice@example.com>", "250 ")
	busy.expect("DATA", "354")
	busy.raw("Subject: in flight\r\n\r\n")
	eventually(t, "the message to be in DATA", func() bool {
		h.svc.mu.Lock()
		defer h.svc.mu.Unlock()
		for sc := range h.svc.conns {
			if sc.inData.Load() {
				return true
			}
		}
		return false
	})
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- h.svc.Shutdown(ctx)
	}()
	if r := idle.reply(); r != "421 4.3.2 Service shutting down" {
		t.Errorf("idle session: %q", r)
	}
	busy.raw("still here\r\n.\r\n")
	if r := busy.reply(); !strings.HasPrefix(r, "250 2.0.0 Ok: queued as ") {
		t.Errorf("in-flight message: %q", r)
	}
	if err := <-done; err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func TestReload(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	src := baseHCL(t, h.dir) + `
receive_connector "internet" {
  bind   = ["127.0.0.1:0"]
  banner = "mx.test ESMTP reloaded"
}
`
	cfg, err := policy.LoadBytes(h.dir+"/hubd.hcl", []byte(src), h.dir)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := h.dial("127.0.0.1:0", "")
	if err := h.svc.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if _, greet := h.dial("127.0.0.1:0", ""); greet != "220 mx.test ESMTP reloaded" {
		t.Errorf("after reload: %q", greet)
	}
	// The session that started before the reload goes on with its config.
	if ehlo := old.expect("EHLO client.test", "250"); !strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("old session lost its config:\n%s", ehlo)
	}
}

// TestTotalConnectionLimit: max_inbound_connections counts every source.
func TestTotalConnectionLimit(t *testing.T) {
	t.Parallel()
	h := start(t, `
receive_connector "internet" {
  bind = ["127.0.0.1:0"]
  max_inbound_connections = 2
}
`)
	a, _ := h.dial("127.0.0.1:0", "127.0.0.2")
	h.dial("127.0.0.1:0", "127.0.0.3")
	if _, greet := h.dial("127.0.0.1:0", "127.0.0.4"); greet != "421 4.3.2 Too many connections" {
		t.Errorf("third connection from a new source: %q", greet)
	}
	a.expect("QUIT", "221")
	eventually(t, "a slot to free up", func() bool {
		_, greet := h.dial("127.0.0.1:0", "127.0.0.4")
		return strings.HasPrefix(greet, "220 ")
	})
}

// TestStallInDATA: a client that stops in the middle of a message gets a
// 421 and the connection ends, rather than a reply followed by commands read
// from the middle of its message; nothing is queued.
func TestStallInDATA(t *testing.T) {
	t.Parallel()
	h := start(t, `
receive_connector "internet" {
  bind = ["127.0.0.1:0"]
  connection_inactivity_timeout = "300ms"
}
`)
	for _, bdat := range []bool{false, true} {
		c, _ := h.dial("127.0.0.1:0", "")
		c.expect("EHLO client.test", "250")
		c.expect("MAIL FROM:<s@remote.test>", "250 ")
		c.expect("RCPT TO:<alice@example.com>", "250 ")
		if bdat {
			c.raw("BDAT 1000 LAST\r\nSubject: stalled\r\n")
		} else {
			c.expect("DATA", "354 ")
			c.raw("Subject: stalled\r\n")
		}
		if r := c.reply(); r != "421 4.4.2 Timeout waiting for client input" {
			t.Errorf("bdat=%v: reply %q", bdat, r)
		}
		if !c.closed() {
			t.Errorf("bdat=%v: connection still open", bdat)
		}
	}
	if n := h.sub.count(); n != 0 {
		t.Errorf("%d messages queued", n)
	}
}

// TestFailedTLSHandshakeCloses: after STARTTLS, bytes that are not a TLS
// handshake end the connection (RFC 3207 §4.1) instead of a session that
// goes on in clear text.
func TestFailedTLSHandshakeCloses(t *testing.T) {
	t.Parallel()
	h := start(t, `
receive_connector "internet" {
  bind = ["127.0.0.1:0"]
  tls { self_signed = true }
}
`)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("STARTTLS", "220 ")
	c.raw("this is not a TLS ClientHello\r\n\r\n\r\n")
	if r := c.reply(); r != "454 4.7.0 TLS handshake failed" {
		t.Errorf("reply %q", r)
	}
	if !c.closed() {
		t.Error("connection still open after a failed handshake")
	}
}

// TestLongLineInDATA: a content line of 2,000 octets with its CRLF is taken
// (the SMTP deliverer wraps it to RFC 5322's 998 before relaying); one
// octet more is refused with 550 5.6.0 after the final dot, nothing is
// queued, and the session stays in step for the next command.
func TestLongLineInDATA(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL+`
receive_connector "big" {
  bind = ["127.0.0.2:0"]
  tarpit_interval = "0s"
}
`)
	for _, bdat := range []bool{false, true} {
		c, _ := h.dial("127.0.0.2:0", "")
		c.expect("EHLO client.test", "250")
		for _, n := range []int{1998, 1999} {
			msg := "Subject: long\r\n\r\n" + strings.Repeat("y", n) + "\r\nNOOP\r\n"
			c.expect("MAIL FROM:<s@remote.test>", "250 ")
			c.expect("RCPT TO:<alice@example.com>", "250 ")
			if bdat {
				c.raw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg))
			} else {
				c.expect("DATA", "354 ")
				c.raw(msg + ".\r\n")
			}
			r := c.reply()
			switch {
			case n == 1998 && !strings.HasPrefix(r, "250 2.0.0 Ok: queued as "):
				t.Errorf("bdat=%v: line of %d+2 octets: %q", bdat, n, r)
			case n == 1999 && r != "550 5.6.0 Message contains a line longer than 2000 octets":
				t.Errorf("bdat=%v: line of %d+2 octets: %q", bdat, n, r)
			}
			c.expect("NOOP", "250 2.0.0 OK")
		}
	}
	if n := h.sub.count(); n != 2 {
		t.Errorf("%d messages queued, want 2", n)
	}
}

// TestSizeBoundary: RFC 1870 §4, SIZE is the largest message accepted.
// MAIL SIZE=, BDAT and the EHLO SIZE value agree on max_message_size (1KB
// here): exactly the limit is accepted, one octet more refused with the
// reply the rest of hubd gives, and the session stays in step.
func TestSizeBoundary(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL) // max_message_size = "1KB"
	c, _ := h.dial("127.0.0.1:0", "")
	if r := c.expect("EHLO client.test", "250"); !strings.Contains(r, "SIZE 1024") {
		t.Fatalf("EHLO: %q, want SIZE 1024", r)
	}
	const tooBig = "552 5.3.4 Message size exceeds fixed maximum message size"
	c.expect("MAIL FROM:<s@remote.test> SIZE=1025", tooBig)
	c.expect("MAIL FROM:<s@remote.test> SIZE=1024", "250 ")
	c.expect("RCPT TO:<alice@example.com>", "250 ")
	head := "Subject: bdat\r\n\r\n"
	body := head + strings.Repeat("z", 1024-len(head)-2) + "\r\n"
	c.raw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
	if r := c.reply(); !strings.HasPrefix(r, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("BDAT of 1024 octets: %q", r)
	}
	c.expect("MAIL FROM:<s@remote.test>", "250 ")
	c.expect("RCPT TO:<alice@example.com>", "250 ")
	body += "z"
	c.raw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
	if r := c.reply(); !strings.HasPrefix(r, tooBig) {
		t.Fatalf("BDAT of 1025 octets: %q, want %q", r, tooBig)
	}
	c.expect("NOOP", "250 ")
}
