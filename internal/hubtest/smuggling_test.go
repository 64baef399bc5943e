package hubtest

import (
	"bytes"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"hubd/internal/smtpsink"
)

// rawClient speaks SMTP line by line over a real socket, so that a test can
// send bytes no well-behaved client library would.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	tp *textproto.Conn
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &rawClient{t: t, nc: nc, tp: textproto.NewConn(nc)}
	c.expect("", "220")
	return c
}

// reply reads one whole reply and returns its last line.
func (c *rawClient) reply() string {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		l, err := c.tp.ReadLine()
		if err != nil {
			c.t.Fatalf("reading reply: %v", err)
		}
		if len(l) < 4 || l[3] != '-' {
			return l
		}
	}
}

// expect sends line (unless empty) and checks the reply's prefix.
func (c *rawClient) expect(line, want string) string {
	c.t.Helper()
	if line != "" {
		c.write(line + "\r\n")
	}
	r := c.reply()
	if !strings.HasPrefix(r, want) {
		c.t.Fatalf("%q: reply %q, want %q", line, r, want)
	}
	return r
}

func (c *rawClient) write(s string) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.nc.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

const relayHCL = `
hub {
  hostname  = "hub.example.test"
  spool_dir = "{{dir}}/spool"
}
accepted_domain "example.test" {}
receive_connector "apps" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["127.0.0.0/8"]
  permissions { anonymous = ["submit", "relay"] }
}
send_connector "outbound" {
  address_spaces = ["*"]
  smart_hosts    = [%q]
  tls            = "none"
}
`

// TestSMTPSmuggling sends each end-of-data look-alike of the SMTP smuggling
// attacks, with a second transaction hidden after it, through a real
// connector into the real hub and on to a smart host. Whatever the variant,
// the hidden transaction never becomes a message: at most one message per
// attempt reaches the smart host, none for the victim, and the session's
// next reply answers the client's next command (no smuggled command was
// executed).
//
// Four variants hold a bare CR or LF and are refused with 550 5.6.0 by the
// strict DATA reader. In "<CR><LF>.<CR>", go-smtp's dot-unstuffing drops the
// ".<CR>" (it removes the dot, then the CR it held after it), so the content
// reaching the reader has clean line endings: the message is accepted whole,
// the would-be commands as body text, and it leaves as one message whose
// body still holds them as harmless lines.
func TestSMTPSmuggling(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	h := Start(t, fmt.Sprintf(relayHCL, sink.Addr()), Options{})
	addr := h.Addr(t, "apps")

	variants := []struct {
		name, end string
		accepted  bool
	}{
		{"LF.LF", "\n.\n", false},
		{"LF.CRLF", "\n.\r\n", false},
		{"CR.CR", "\r.\r", false},
		{"CRLF.LF", "\r\n.\n", false},
		{"CRLF.CR", "\r\n.\r", true},
	}
	for i, v := range variants {
		c := dialRaw(t, addr)
		c.expect("EHLO attacker.test", "250")
		c.expect("MAIL FROM:<attacker@example.test>", "250")
		c.expect("RCPT TO:<someone@remote.test>", "250")
		c.expect("DATA", "354")
		c.write(fmt.Sprintf("Subject: variant-%d\r\n\r\nfirst%s", i, v.end) +
			"MAIL FROM:<ceo@example.test>\r\nRCPT TO:<victim@remote.test>\r\nDATA\r\n" +
			fmt.Sprintf("Subject: smuggled-%d\r\n\r\nforged\r\n.\r\n", i))
		r := c.reply()
		switch {
		case v.accepted && !strings.HasPrefix(r, "250 "):
			t.Errorf("%s: reply %q, want 250", v.name, r)
		case !v.accepted && !strings.HasPrefix(r, "550 5.6.0 "):
			t.Errorf("%s: reply %q, want 550 5.6.0", v.name, r)
		}
		// The next reply is QUIT's: a smuggled MAIL/RCPT/DATA that ran as
		// commands would have answered 250/354 first.
		if r := c.expect("QUIT", ""); !strings.HasPrefix(r, "221") {
			t.Errorf("%s: QUIT answered %q: smuggled commands were executed", v.name, r)
		}
	}
	if err := h.Transport.WaitIdle(ctxTimeout(t, 15*time.Second)); err != nil {
		t.Fatal(err)
	}

	msgs := sink.Messages()
	for i, v := range variants {
		n := 0
		for _, m := range msgs {
			if bytes.Contains(m.Data, fmt.Appendf(nil, "Subject: variant-%d\r\n", i)) {
				n++
				if strings.Join(m.To, ",") != "someone@remote.test" {
					t.Errorf("%s: delivered to %v", v.name, m.To)
				}
				if v.accepted && !bytes.Contains(m.Data, []byte("first\r\nMAIL FROM:<ceo@example.test>\r\n")) {
					t.Errorf("%s: the would-be commands are not body text: %q", v.name, m.Data)
				}
				if hasBareNewline(m.Data) {
					t.Errorf("%s: relayed content holds a bare CR or LF: %q", v.name, m.Data)
				}
			}
		}
		want := 0
		if v.accepted {
			want = 1
		}
		if n != want {
			t.Errorf("%s: %d messages downstream, want %d", v.name, n, want)
		}
	}
	for _, m := range msgs {
		for _, to := range m.To {
			if to == "victim@remote.test" {
				t.Errorf("smuggled message delivered: %s", m.Data)
			}
		}
	}
	if len(msgs) > 1 {
		t.Errorf("%d messages downstream, want at most 1", len(msgs))
	}
}

// hasBareNewline reports a CR not followed by LF or an LF not preceded by CR.
func hasBareNewline(b []byte) bool {
	for i, c := range b {
		switch {
		case c == '\r' && (i+1 == len(b) || b[i+1] != '\n'):
			return true
		case c == '\n' && (i == 0 || b[i-1] != '\r'):
			return true
		}
	}
	return false
}
