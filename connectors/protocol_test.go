package connectors

import (
	"strings"
	"testing"
)

// protocolHCL is a connector where nothing but the state machine refuses:
// no tarpit, no error limit, STARTTLS and AUTH offered.
const protocolHCL = `
alias "postmaster@example.com" { to = ["bob@example.com"] }
receive_connector "conf" {
  bind  = ["127.0.0.1:0"]
  tarpit_interval          = "0s" # tarpit_test.go measures the tarpit
  max_protocol_errors      = 1000
  max_commands_before_mail = 1000
  tls { self_signed = true }
  auth = ["plain"]
  allow_insecure_auth = true
}
`

// States a reply-table row starts from: the commands that lead there. A
// step with a CRLF in it is written raw (a BDAT chunk); "STARTTLS" runs
// the handshake.
var protocolStates = map[string][]string{
	"fresh":          nil,
	"HELO":           {"HELO client.test"},
	"EHLO":           {"EHLO client.test"},
	"MAIL":           {"EHLO client.test", "MAIL FROM:<s@remote.test>"},
	"RCPT":           {"EHLO client.test", "MAIL FROM:<s@remote.test>", "RCPT TO:<alice@example.com>"},
	"RCPT refused":   {"EHLO client.test", "MAIL FROM:<s@remote.test>", "RCPT TO:<nobody@example.com>"},
	"BDAT open":      {"EHLO client.test", "MAIL FROM:<s@remote.test>", "RCPT TO:<alice@example.com>", "BDAT 5\r\nhello"},
	"RSET":           {"EHLO client.test", "MAIL FROM:<s@remote.test>", "RCPT TO:<alice@example.com>", "RSET"},
	"new EHLO":       {"EHLO client.test", "MAIL FROM:<s@remote.test>", "RCPT TO:<alice@example.com>", "EHLO client.test"},
	"STARTTLS":       {"EHLO client.test", "STARTTLS"},
	"after message":  {"EHLO client.test", "MAIL FROM:<s@remote.test>", "RCPT TO:<alice@example.com>", "BDAT 10 LAST\r\nSubject: x"},
	"authenticated":  {"EHLO client.test", authPlain("alice@example.com", alicePassword)},
	"MAIL SMTPUTF8":  {"EHLO client.test", "MAIL FROM:<s@remote.test> SMTPUTF8"},
	"STARTTLS, MAIL": {"EHLO client.test", "MAIL FROM:<s@remote.test>", "STARTTLS"},
}

// TestReplyTable: command × state → reply code and enhanced code (RFC 5321
// §4.1.4, §4.2; RFC 3463), over a real connection for every row.
func TestReplyTable(t *testing.T) {
	t.Parallel()
	h := start(t, protocolHCL)
	rows := []struct {
		state, cmd, want string
	}{
		// Out of sequence: 503 5.5.1, never 502 (not implemented).
		{"fresh", "MAIL FROM:<s@remote.test>", "503 5.5.1 Send EHLO or HELO first"},
		{"fresh", "RCPT TO:<alice@example.com>", "503 5.5.1 Need MAIL command"},
		{"fresh", "DATA", "503 5.5.1 Need MAIL command"},
		{"fresh", "BDAT 6 LAST\r\nQUIT\r\n", "503 5.5.1 Need MAIL command"},
		{"fresh", "AUTH PLAIN", "503 5.5.1 Send EHLO first"},
		{"HELO", "AUTH PLAIN", "503 5.5.1 Send EHLO first"},
		{"EHLO", "RCPT TO:<alice@example.com>", "503 5.5.1 Need MAIL command"},
		{"EHLO", "DATA", "503 5.5.1 Need MAIL command"},
		{"MAIL", "MAIL FROM:<s@remote.test>", "503 5.5.1 Nested MAIL command"},
		{"MAIL", "DATA", "503 5.5.1 Need RCPT command"},
		{"MAIL", "BDAT 6 LAST\r\nQUIT\r\n", "503 5.5.1 Need RCPT command"},
		{"MAIL", "AUTH PLAIN", "503 5.5.1 AUTH not permitted during a mail transaction"},
		{"RCPT refused", "DATA", "554 5.5.1 No valid recipients"},
		{"RCPT refused", "BDAT 6 LAST\r\nQUIT\r\n", "554 5.5.1 No valid recipients"},
		{"BDAT open", "DATA", "503 5.5.1 DATA not allowed during a BDAT transfer"},
		{"BDAT open", "MAIL FROM:<s@remote.test>", "503 5.5.1 BDAT transfer in progress"},
		{"BDAT open", "RCPT TO:<bob@example.com>", "503 5.5.1 BDAT transfer in progress"},
		{"RSET", "DATA", "503 5.5.1 Need MAIL command"},
		{"RSET", "RCPT TO:<alice@example.com>", "503 5.5.1 Need MAIL command"},
		{"new EHLO", "DATA", "503 5.5.1 Need MAIL command"},
		{"new EHLO", "RCPT TO:<alice@example.com>", "503 5.5.1 Need MAIL command"},
		{"STARTTLS", "MAIL FROM:<s@remote.test>", "503 5.5.1 Send EHLO or HELO first"},
		{"STARTTLS, MAIL", "RCPT TO:<alice@example.com>", "503 5.5.1 Need MAIL command"},
		{"after message", "DATA", "503 5.5.1 Need MAIL command"},
		{"after message", "RCPT TO:<alice@example.com>", "503 5.5.1 Need MAIL command"},
		{"authenticated", "AUTH PLAIN", "503 5.5.1 Already authenticated"},
		// Syntax and parameters.
		{"EHLO", "MAIL FROM:<s@remote.test> XFOO=BAR", "555 5.5.4 Parameter XFOO not supported"},
		{"EHLO", "MAIL FROM:<s@remote.test> RRVS=2030-01-01T00:00:00Z", "555 5.5.4 Parameter RRVS not supported"},
		{"EHLO", "MAIL FROM:<s@remote.test> BODY=BINARYMIME", "504 5.5.4 BODY=BINARYMIME not supported"},
		{"EHLO", "MAIL FROM:<s@remote.test> BODY=9BIT", "501 5.5.4 BODY must be 7BIT or 8BITMIME"},
		{"EHLO", "MAIL FROM:<s@remote.test> SIZE=big", "501 5.5.4 Syntax error in SIZE parameter"},
		{"EHLO", "MAIL FROM:<s@remote.test> RET=ALL", "501 5.5.4 RET must be FULL or HDRS"},
		{"EHLO", "MAIL FROM:<s@remote.test> SIZE=1=2", "501 5.5.4 Syntax error in MAIL parameters"},
		{"EHLO", "MAIL FROM:<s@remote.test> AUTH=+", "501 5.5.4 Syntax error in AUTH parameter"},
		{"EHLO", "MAIL FROM:<s@remote.test> ENVID=+", "501 5.5.4 Syntax error in ENVID parameter"},
		{"EHLO", "MAIL FROM:<s@remote.test", "501 5.5.2 Syntax: MAIL FROM:<address> [parameters]"},
		{"EHLO", "MAIL TO:<s@remote.test>", "501 5.5.2 Syntax: MAIL FROM:<address> [parameters]"},
		{"EHLO", "MAIL FROM:<nodomain>", "501 5.5.2 Syntax: MAIL FROM:<address> [parameters]"},
		{"MAIL", "RCPT TO:<alice@example.com> XFOO=1", "555 5.5.4 Parameter XFOO not supported"},
		{"MAIL", "RCPT TO:<alice@example.com> NOTIFY=SOMETIMES", "501 5.5.4 Syntax error in NOTIFY parameter"},
		{"MAIL", "RCPT TO:<alice@example.com> ORCPT=x", "501 5.5.4 Syntax error in ORCPT parameter"},
		{"MAIL", "RCPT FROM:<alice@example.com>", "501 5.5.2 Syntax: RCPT TO:<address> [parameters]"},
		{"MAIL", "RCPT TO:<alice>", "501 5.5.2 Syntax: RCPT TO:<address> [parameters]"},
		{"RCPT", "DATA now", "501 5.5.4 Syntax: DATA takes no parameters"},
		{"RCPT", "BDAT many", "501 5.5.4 Syntax: BDAT chunk-size [LAST]"},
		{"fresh", "EHLO", "501 5.5.4 Syntax: EHLO hostname"},
		{"fresh", "RSET now", "501 5.5.4 Syntax: RSET takes no parameters"},
		{"fresh", "QUIT now", "501 5.5.4 Syntax: QUIT takes no parameters"},
		{"fresh", "AUTH", "503 5.5.1 Send EHLO first"},
		{"EHLO", "AUTH", "501 5.5.4 Syntax: AUTH mechanism [initial-response]"},
		{"EHLO", "AUTH CRAM-MD5", "504 5.5.4 Unrecognized authentication type"},
		{"fresh", "XYZZY", "500 5.5.2 Syntax error, command unrecognized"},
		{"fresh", "LHLO client.test", "500 5.5.2 Syntax error, command unrecognized"},
		{"fresh", "TURN", "502 5.5.1 Command not implemented"},
		{"fresh", "SEND FROM:<s@remote.test>", "502 5.5.1 Command not implemented"},
		// RFC 5321 §4.5.1: <Postmaster> without a domain, any case.
		{"MAIL", "RCPT TO:<Postmaster>", "250 2.1.5 Recipient <Postmaster> OK"},
		{"MAIL", "RCPT TO:<POSTMASTER> NOTIFY=NEVER", "250 2.1.5 Recipient <POSTMASTER> OK"},
		// Success: RFC 3463 codes, our texts.
		{"fresh", "HELO client.test", "250 mx.test Hello client.test"},
		{"fresh", "EHLO client.test", "250-mx.test Hello client.test"},
		{"HELO", "MAIL FROM:<s@remote.test>", "250 2.1.0 Sender <s@remote.test> OK"},
		{"EHLO", "MAIL FROM:<>", "250 2.1.0 Sender <> OK"},
		{"MAIL", "RCPT TO:<alice@example.com>", "250 2.1.5 Recipient <alice@example.com> OK"},
		{"MAIL SMTPUTF8", "RCPT TO:<jörg@example.com>", "550 5.1.1 User unknown"},
		{"RCPT", "DATA", "354 Start mail input; end with <CRLF>.<CRLF>"},
		{"RCPT", "BDAT 5\r\nhello", "250 2.0.0 5 octets received"},
		{"RCPT", "BDAT 10 LAST\r\nSubject: x", "250 2.0.0 Ok: queued as "},
		{"BDAT open", "BDAT 0 LAST", "250 2.0.0 Ok: queued as "},
		{"BDAT open", "RSET", "250 2.0.0 OK"},
		{"fresh", "NOOP", "250 2.0.0 OK"},
		{"fresh", "NOOP any text", "250 2.0.0 OK"},
		{"fresh", "QUIT", "221 2.0.0 mx.test closing connection"},
		{"EHLO", authPlain("alice@example.com", alicePassword), "235 2.7.0 Authentication successful"},
		{"fresh", "VRFY alice@example.com", "252 2.5.0 "},
		{"fresh", "EXPN team@example.com", "252 2.5.0 "},
		{"fresh", "HELP", "214 2.0.0 "},
	}
	for _, r := range rows {
		steps, ok := protocolStates[r.state]
		if !ok {
			t.Fatalf("no state %q", r.state)
		}
		t.Run(r.state+": "+firstLine(r.cmd), func(t *testing.T) {
			h.t = t
			c, _ := h.dial("127.0.0.1:0", "")
			for _, s := range steps {
				if got := c.step(h, s); (got[0] == '4' || got[0] == '5') && r.state != "RCPT refused" {
					t.Fatalf("state %s: %q answered %q", r.state, s, got)
				}
			}
			got := c.step(h, r.cmd)
			if !strings.HasPrefix(got, r.want) {
				t.Errorf("got %q, want %q", firstLine(got), r.want)
			}
			if strings.HasPrefix(r.cmd, "BDAT ") && strings.Contains(r.cmd, "QUIT") {
				// The refused chunk was read and dropped, not taken as commands.
				if got := c.cmd("NOOP"); got != "250 2.0.0 OK" {
					t.Errorf("the chunk was read as a command: NOOP got %q", got)
				}
			}
		})
	}
}

// step sends one step of a state (see protocolStates) and returns the reply.
func (c *client) step(h *harness, s string) string {
	c.t.Helper()
	switch {
	case s == "STARTTLS":
		c.startTLS(h.pool)
		return "220"
	case strings.Contains(s, "\r\n"):
		c.raw(s) // a BDAT command and its chunk, exactly
		return c.reply()
	}
	return c.cmd(s)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// TestReceivedProtocolNames: the Received: field's "with" names how the
// message came (RFC 3848, RFC 6531 §3.7.3), and its id is the queue id.
func TestReceivedProtocolNames(t *testing.T) {
	t.Parallel()
	h := start(t, protocolHCL)
	cases := []struct {
		name, want string
		steps      []string
		smtputf8   bool
	}{
		{"HELO", "with SMTP id", []string{"HELO client.test"}, false},
		{"EHLO", "with ESMTP id", []string{"EHLO client.test"}, false},
		{"EHLO+AUTH", "with ESMTPA id", []string{"EHLO client.test", authPlain("alice@example.com", alicePassword)}, false},
		{"STARTTLS", "with ESMTPS id", []string{"EHLO client.test", "STARTTLS", "EHLO client.test"}, false},
		{"STARTTLS+AUTH", "with ESMTPSA id", []string{"EHLO client.test", "STARTTLS", "EHLO client.test",
			authPlain("alice@example.com", alicePassword)}, false},
		{"SMTPUTF8", "with UTF8SMTP id", []string{"EHLO client.test"}, true},
		{"SMTPUTF8+TLS+AUTH", "with UTF8SMTPSA id", []string{"EHLO client.test", "STARTTLS", "EHLO client.test",
			authPlain("alice@example.com", alicePassword)}, true},
	}
	for _, tc := range cases {
		c, _ := h.dial("127.0.0.1:0", "")
		for _, s := range tc.steps {
			c.step(h, s)
		}
		mail, rcpt := "MAIL FROM:<alice@example.com>", "RCPT TO:<bob@example.com>"
		if tc.smtputf8 {
			mail += " SMTPUTF8"
		}
		c.expect(mail, "250 2.1.0")
		c.expect(rcpt, "250 2.1.5")
		c.expect("DATA", "354")
		c.raw("Subject: x\r\n\r\nx\r\n.\r\n")
		reply := c.reply()
		env, body := h.sub.last(t)
		unfolded := strings.NewReplacer("\r\n\t", " ").Replace(body)
		if !strings.Contains(unfolded, tc.want+" "+string(env.ID)+" ") || !strings.HasSuffix(reply, string(env.ID)) {
			t.Errorf("%s: reply %q, Received:\n%s", tc.name, reply, body)
		}
	}
}

// TestPostmasterDelivered: RCPT TO:<Postmaster> reaches the postmaster's
// address, and the DSN parameters keep what the client wrote.
func TestPostmasterDelivered(t *testing.T) {
	t.Parallel()
	h := start(t, protocolHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("MAIL FROM:<s@remote.test>", "250 ")
	c.expect("RCPT TO:<postMaster>", "250 2.1.5")
	c.expect("DATA", "354")
	c.raw("Subject: x\r\n\r\nx\r\n.\r\n")
	c.reply()
	env, _ := h.sub.last(t)
	if len(env.Recipients) != 1 || env.Recipients[0].Address != "postmaster@example.com" ||
		env.Recipients[0].ORCPT != "rfc822;postMaster" {
		t.Errorf("recipients %+v", env.Recipients)
	}
}
