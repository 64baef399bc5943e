package connectors

import (
	"strings"
	"testing"
)

// submissionHCL is a client (submission) connector: STARTTLS, then AUTH.
const submissionHCL = `
receive_connector "submission" {
  usage = "client"
  bind  = ["127.0.0.1:0"]
  tarpit_interval = "0s" # tarpit_test.go measures the tarpit
  tls { self_signed = true }
  max_logon_failures = 2
}
`

// insecureHCL offers AUTH without TLS (allowed explicitly), so the test sees
// the plaintext exchange go-smtp would otherwise hide under TLS.
const insecureHCL = `
receive_connector "insecure" {
  bind  = ["127.0.0.1:0"]
  tarpit_interval = "0s" # tarpit_test.go measures the tarpit
  auth  = ["plain", "login"]
  allow_insecure_auth = true
  permissions {
    anonymous     = []
    authenticated = ["submit", "relay"]
  }
}
`

func TestAuthAdvertisedOnlyAfterSTARTTLS(t *testing.T) {
	t.Parallel()
	h := start(t, submissionHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	if ehlo := c.expect("EHLO client.test", "250"); strings.Contains(ehlo, "AUTH") || !strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("before STARTTLS:\n%s", ehlo)
	}
	c.expect("AUTH PLAIN "+b64("\x00alice@example.com\x00"+alicePassword), "530 5.7.0 Must issue a STARTTLS command first")
	c.expect("MAIL FROM:<alice@example.com>", "530 5.7.0 Must issue a STARTTLS command first")
	c.startTLS(h.pool)
	ehlo := c.expect("EHLO client.test", "250")
	if !strings.Contains(ehlo, "AUTH PLAIN LOGIN") || strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("after STARTTLS:\n%s", ehlo)
	}
}

// tlsSession dials the submission connector and brings it to TLS + EHLO.
func tlsSession(t *testing.T, h *harness) *client {
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.startTLS(h.pool)
	c.expect("EHLO client.test", "250")
	return c
}

func TestAuthPlainSubmission(t *testing.T) {
	t.Parallel()
	h := start(t, submissionHCL)
	c := tlsSession(t, h)
	c.expect("MAIL FROM:<alice@example.com>", "530 5.7.0 Authentication required")
	c.expect("AUTH PLAIN "+b64("\x00alice@example.com\x00"+alicePassword), "235 ")
	c.expect("MAIL FROM:<bob@example.com>", "550 5.7.1 ")
	c.expect("MAIL FROM:<a@example.com>", "250 ")
	c.expect("RCPT TO:<someone@remote.test>", "250 ")
	c.expect("DATA", "354")
	c.raw("Subject: s\r\n\r\nhello\r\n.\r\n")
	if r := c.reply(); !strings.HasPrefix(r, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("DATA: %q", r)
	}
	env, body := h.sub.last(t)
	if env.AuthUser != "alice@example.com" || env.MessageID == "" {
		t.Errorf("envelope %+v", env)
	}
	unfolded := strings.NewReplacer("\r\n\t", " ", "\r\n ", " ").Replace(body)
	for _, want := range []string{"with ESMTPSA id", "(using TLS1.3 with cipher ", "Message-ID: <", "@mx.test>\r\n", "\r\nDate: "} {
		if !strings.Contains(unfolded, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}
}

func TestAuthLogin(t *testing.T) {
	t.Parallel()
	h := start(t, submissionHCL)
	c := tlsSession(t, h)
	c.expect("AUTH LOGIN", "334 "+b64("Username:"))
	c.expect(b64("alice@example.com"), "334 "+b64("Password:"))
	c.expect(b64(alicePassword), "235 ")
	// With the user name as initial response, on a fresh connection.
	c2 := tlsSession(t, h)
	c2.expect("AUTH LOGIN "+b64("alice@example.com"), "334 "+b64("Password:"))
	c2.expect(b64(alicePassword), "235 ")
}

func TestAuthFailuresClose(t *testing.T) {
	t.Parallel()
	h := start(t, submissionHCL)
	c := tlsSession(t, h)
	c.expect("AUTH PLAIN "+b64("\x00alice@example.com\x00wrong"), "535 5.7.8 Authentication credentials invalid")
	c.expect("AUTH PLAIN "+b64("\x00nobody@example.com\x00wrong"), "421 4.7.0 Too many authentication failures")
	if !c.closed() {
		t.Error("connection still open after the logon-failure limit")
	}
}

func TestAuthProtocolReplies(t *testing.T) {
	t.Parallel()
	h := start(t, insecureHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	if ehlo := c.expect("EHLO client.test", "250"); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO:\n%s", ehlo)
	}
	c.expect("AUTH CRAM-MD5", "504 5.5.4 ")
	c.expect("AUTH PLAIN !!!notbase64", "501 5.5.2 ")
	c.expect("AUTH LOGIN", "334 ")
	c.expect("%%%", "501 5.5.2 ")
	c.expect("AUTH PLAIN "+b64("only-one-part"), "501 5.5.2 ")
	c.expect("MAIL FROM:<x@remote.test>", "530 5.7.0 Authentication required")
}

func TestProtocolErrorLimit(t *testing.T) {
	t.Parallel()
	h := start(t, `
receive_connector "strict" {
  bind  = ["127.0.0.1:0"]
  tarpit_interval = "0s" # tarpit_test.go measures the tarpit
  auth  = ["plain"]
  allow_insecure_auth = true
  max_protocol_errors = 2
  permissions {
    anonymous     = []
    authenticated = ["submit"]
  }
}
`)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("MAIL FROM:<x@remote.test>", "530 ")
	c.expect("AUTH NOPE", "504 ")
	c.expect("MAIL FROM:<x@remote.test>", "421 4.7.0 Too many errors")
	if !c.closed() {
		t.Error("connection still open after the protocol-error limit")
	}
}

// TestAuthInsideTransaction: AUTH after MAIL is refused (RFC 4954 §4), so an
// anonymous MAIL FROM cannot be followed by AUTH to gain relay for it and
// skip the sender check; a second AUTH after success is refused too.
func TestAuthInsideTransaction(t *testing.T) {
	t.Parallel()
	h := start(t, `
receive_connector "mx" {
  bind  = ["127.0.0.1:0"]
  tarpit_interval = "0s" # tarpit_test.go measures the tarpit
  auth  = ["plain"]
  allow_insecure_auth = true
  permissions {
    anonymous     = ["submit"]
    authenticated = ["submit", "relay"]
  }
}
`)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("MAIL FROM:<ceo@bank.test>", "250 ")
	c.expect("RCPT TO:<victim@external.test>", "550 5.7.1 ")
	c.expect("AUTH PLAIN "+b64("\x00alice@example.com\x00"+alicePassword), "503 5.5.1 ")
	c.expect("RCPT TO:<victim@external.test>", "550 5.7.1 ")
	c.expect("RSET", "250 ")
	c.expect("AUTH PLAIN "+b64("\x00alice@example.com\x00"+alicePassword), "235 ")
	c.expect("AUTH PLAIN "+b64("\x00alice@example.com\x00"+alicePassword), "503 5.5.1 ")
	c.expect("MAIL FROM:<ceo@bank.test>", "550 5.7.1 ")
}

// TestBDATZeroThenCommands: after "BDAT 0" go-smtp's Data goroutine runs
// alongside the commands that follow; under -race this shows that our
// session state is not shared unsafely, and the next transaction works. (The
// next transaction uses DATA: a second BDAT here trips a data race inside
// go-smtp v0.25.1 itself, on Conn.dataResult, which is not ours to fix.)
func TestBDATZeroThenCommands(t *testing.T) {
	t.Parallel()
	h := start(t, insecureHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("AUTH PLAIN "+b64("\x00alice@example.com\x00"+alicePassword), "235 ")
	c.expect("MAIL FROM:<alice@example.com>", "250 ")
	c.expect("RCPT TO:<bob@example.com>", "250 ")
	c.raw("BDAT 0\r\n")
	c.reply()
	c.cmd("RSET")
	c.cmd("EHLO again.test")
	c.expect("MAIL FROM:<alice@example.com>", "250 ")
	c.expect("RCPT TO:<bob@example.com>", "250 ")
	c.expect("DATA", "354 ")
	c.raw("Subject: after bdat 0\r\n\r\nx\r\n.\r\n")
	if r := c.reply(); !strings.HasPrefix(r, "250 2.0.0") {
		t.Fatalf("DATA: %q", r)
	}
}
