package connectors

import (
	"strings"
	"testing"
	"time"
)

// TestTrickleClosed: a client that keeps the connection alive by sending one
// byte at a time, never finishing a request, is closed after the inactivity
// timeout (RFC 5321 §4.5.3.2; Postfix's smtpd_per_request_deadline), in a
// command line, in a DATA line and in a BDAT chunk. A deadline that only
// slid with each read would keep it for ever.
func TestTrickleClosed(t *testing.T) {
	t.Parallel()
	const timeout = 500 * time.Millisecond
	h := start(t, `
receive_connector "internet" {
  bind = ["127.0.0.1:0"]
  tarpit_interval = "0s"
  connection_inactivity_timeout = "500ms"
}
`)
	cases := map[string][]string{
		"command":    {"EHLO client.test"},
		"DATA line":  {"EHLO client.test", "MAIL FROM:<s@remote.test>", "RCPT TO:<alice@example.com>", "DATA"},
		"BDAT chunk": {"EHLO client.test", "MAIL FROM:<s@remote.test>", "RCPT TO:<alice@example.com>", "BDAT 1000 LAST\r\n"},
	}
	for name, steps := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, _ := h.dial("127.0.0.1:0", "")
			for _, s := range steps {
				if strings.HasPrefix(s, "BDAT") {
					c.raw(s)
					continue
				}
				c.cmd(s)
			}
			start := time.Now()
			// One byte every tenth of the timeout, up to 10 timeouts' worth.
			for i := 0; i < 100; i++ {
				if _, err := c.conn.Write([]byte("x")); err != nil {
					break // closed: the write after the close fails
				}
				<-time.After(timeout / 10) // the client's pace, not a wait for the server
				if time.Since(start) > 10*timeout {
					t.Fatalf("still open after %v of trickling", time.Since(start))
				}
			}
			if d := time.Since(start); d > 10*timeout {
				t.Errorf("closed only after %v", d)
			}
		})
	}
}

// TestIdleInDATAClosedOnce: a client that goes silent in the middle of a
// message is answered and closed after one inactivity timeout, not after
// one per read of the message's remainder.
func TestIdleInDATAClosedOnce(t *testing.T) {
	t.Parallel()
	h := start(t, `
receive_connector "internet" {
  bind = ["127.0.0.1:0"]
  tarpit_interval = "0s"
  connection_inactivity_timeout = "1s"
}
`)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("MAIL FROM:<s@remote.test>", "250 ")
	c.expect("RCPT TO:<alice@example.com>", "250 ")
	c.expect("DATA", "354 ")
	c.raw("Subject: stalled\r\n")
	start := time.Now()
	if r := c.reply(); r != "421 4.4.2 Timeout waiting for client input" {
		t.Errorf("reply %q", r)
	}
	if !c.closed() {
		t.Error("connection still open")
	}
	// The old per-read deadline answered after three timeouts; one is
	// right, and the margin absorbs a loaded machine.
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("closed after %v with a 1s inactivity timeout", d)
	}
}
