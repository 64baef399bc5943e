package connectors

import (
	"context"
	"crypto/tls"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hubd/internal/logbuf"
	"hubd/policy"
)

// logBuf collects a Service's log lines so that tests can assert them,
// echoing them to t.Log unless quiet.
type logBuf struct {
	t     *testing.T
	quiet bool // do not echo to t.Log (floods)
	buf   logbuf.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.buf.Write(p)
	if !l.quiet {
		l.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// count returns how many log lines contain all of parts.
func (l *logBuf) count(parts ...string) int { return l.buf.Count(parts...) }

// waitLog polls until a log line contains all of parts.
func (l *logBuf) waitLog(parts ...string) {
	l.t.Helper()
	eventually(l.t, "log line with "+strings.Join(parts, " & "), func() bool { return l.count(parts...) > 0 })
}

// loadConfig builds a Config from the test base and connectors in dir.
func loadConfig(t *testing.T, dir, connectors string) *policy.Config {
	t.Helper()
	cfg, err := policy.LoadBytes(filepath.Join(dir, "hubd.hcl"), []byte(baseHCL(t, dir)+connectors), dir)
	if err != nil {
		if le, ok := err.(*policy.LoadError); ok {
			var b strings.Builder
			le.Write(&b, false)
			t.Fatalf("config: %s", b.String())
		}
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// startLogged is start with the Service's log captured.
func startLogged(t *testing.T, connectors string, quiet bool) (*harness, *logBuf) {
	t.Helper()
	dir := t.TempDir()
	return startIn(t, dir, loadConfig(t, dir, connectors), quiet)
}

func startIn(t *testing.T, dir string, cfg *policy.Config, quiet bool) (*harness, *logBuf) {
	t.Helper()
	lb := &logBuf{t: t, quiet: quiet}
	h := &harness{t: t, sub: &capture{}, dir: dir}
	var err error
	h.svc, err = New(Options{Config: cfg, Submitter: h.sub,
		Logger: slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.svc.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return h, lb
}

const hardHCL = `
distribution_list "team@example.com" { members = ["alice@example.com", "bob@example.com"] }
receive_connector "mx" {
  bind = ["127.0.0.1:0"]
  tarpit_interval = "0s" # tarpit_test.go measures the tarpit
  max_command_line_length  = 512
  max_commands_before_mail = 6
  max_protocol_errors      = 5
}
`

func TestLineTooLongSurvives(t *testing.T) {
	t.Parallel()
	h, lb := startLogged(t, hardHCL, false)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("NOOP "+strings.Repeat("x", 600), "500 5.5.2 Line too long")
	lb.waitLog("refused", `reply="500 5.5.2 Line too long"`)
	// Exactly at the limit (510 + CRLF) is fine.
	c.expect("NOOP "+strings.Repeat("x", 505), "250 ")
	c.send("someone@remote.test", []string{"alice@example.com"}, "Subject: x\r\n\r\nhi\r\n")
	other, _ := h.dial("127.0.0.1:0", "")
	other.expect("EHLO other.test", "250")
}

func TestNULAndEightBit(t *testing.T) {
	t.Parallel()
	h, lb := startLogged(t, hardHCL, false)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("NOOP a\x00b", "500 5.5.2 Syntax error, NUL in command")
	c.expect("MAIL FROM:<jörg@remote.test>", "500 5.5.2 Syntax error, 8-bit data in command without SMTPUTF8")
	c.expect("MAIL FROM:<x@remote.test>", "250 ")
	c.expect("RCPT TO:<jörg@example.com>", "500 5.5.2 ")
	c.expect("RSET", "250 ")
	// RFC 6531: UTF-8 is fine in a transaction opened with SMTPUTF8.
	c.expect("MAIL FROM:<jörg@remote.test> SMTPUTF8", "250 ")
	if r := c.cmd("RCPT TO:<jörg@example.com>"); strings.HasPrefix(r, "500") {
		t.Errorf("RCPT with SMTPUTF8: %q", r)
	}
	lb.waitLog("refused", "command=MAIL", "8-bit")
	lb.waitLog("refused", "NUL in command")
}

func TestRequireEHLODomain(t *testing.T) {
	t.Parallel()
	h, lb := startLogged(t, hardHCL+`
receive_connector "lax" {
  bind = ["127.0.0.2:0"]
  require_ehlo_domain = false
}
`, false)
	c, _ := h.dial("127.0.0.1:0", "")
	for _, bad := range []string{"EHLO under_score!", "EHLO -bad.test", "HELO [300.1.1.1]", "EHLO [IPv6:zz]", "EHLO a..b"} {
		c.expect(bad, "501 5.5.4 Invalid domain name")
	}
	c, _ = h.dial("127.0.0.1:0", "")
	for _, good := range []string{"HELO client.test", "EHLO [127.0.0.1]", "EHLO [IPv6:2001:db8::1]", "EHLO single"} {
		c.expect(good, "250")
	}
	lb.waitLog("refused", "command=EHLO", `reply="501 5.5.4 Invalid domain name"`)
	lax, _ := h.dial("127.0.0.2:0", "")
	lax.expect("EHLO under_score!", "250")
}

func TestCommandsBeforeMail(t *testing.T) {
	t.Parallel()
	h, lb := startLogged(t, hardHCL, false)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	for range 5 {
		c.expect("NOOP", "250")
	}
	c.expect("NOOP", "421 4.7.0 Too many commands without MAIL")
	if !c.closed() {
		t.Error("connection open after max_commands_before_mail")
	}
	lb.waitLog("refused", "Too many commands without MAIL", "closing=true")
	// Another session, and commands after MAIL are not limited.
	o, _ := h.dial("127.0.0.1:0", "")
	o.expect("EHLO other.test", "250")
	o.expect("MAIL FROM:<x@remote.test>", "250")
	for range 8 {
		o.expect("NOOP", "250")
	}
}

func TestVRFYAndEXPN(t *testing.T) {
	t.Parallel()
	h, _ := startLogged(t, hardHCL+`
receive_connector "open" {
  bind = ["127.0.0.2:0"]
  allow_vrfy = true
  allow_expn = true
}
`, false)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("VRFY alice@example.com", "252 2.5.0 ")
	c.expect("EXPN team@example.com", "252 2.5.0 ")
	o, _ := h.dial("127.0.0.2:0", "")
	o.expect("EHLO client.test", "250")
	o.expect("VRFY <alice@example.com>", "250 2.1.5 <alice@example.com>")
	o.expect("VRFY nobody@example.com", "550 5.1.1 User unknown")
	if r := o.expect("EXPN team@example.com", "250-2.1.5 "); r != "250-2.1.5 <alice@example.com>\n250 2.1.5 <bob@example.com>" {
		t.Errorf("EXPN: %q", r)
	}
	o.expect("EXPN nobody@example.com", "550 5.1.1 ")
	o.expect("HELP", "214 ")
}

// TestProtocolErrorsOwnCount: max_protocol_errors, not go-smtp's fixed 3,
// decides; errors of every origin count (the filter's, go-smtp's, the
// session's).
func TestProtocolErrorsOwnCount(t *testing.T) {
	t.Parallel()
	h, lb := startLogged(t, hardHCL, false)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("MAIL FROM:<x@remote.test>", "503 5.5.1 ") // no EHLO yet
	c.expect("EHLO client.test", "250")
	c.expect("FOO", "500 5.5.2 Syntax error, command unrecognized")
	c.expect("", "500 5.5.2 ")
	c.expect("RCPT TO:<alice@example.com>", "503 5.5.1 ") // no MAIL
	c.expect("XY", "500 5.5.2 ")
	c.expect("BARF x", "421 4.7.0 Too many errors")
	if !c.closed() {
		t.Error("connection open after max_protocol_errors")
	}
	lb.waitLog("closing", "too many errors")
	o, _ := h.dial("127.0.0.1:0", "")
	o.expect("EHLO other.test", "250")
	o.expect("FOO", "500 5.5.2 ")
}

// TestSTARTTLSDiscardsPipelinedPlaintext: commands sent in clear text after
// STARTTLS are not executed as if they came over TLS (RFC 3207 §5,
// CVE-2011-0411), and the session after TLS starts afresh.
func TestSTARTTLSDiscardsPipelinedPlaintext(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	c.expect("MAIL FROM:<x@remote.test>", "250")
	c.raw("STARTTLS\r\nRSET\r\nNOOP\r\n")
	if r := c.reply(); !strings.HasPrefix(r, "220 2.0.0") {
		t.Fatalf("STARTTLS: %q", r)
	}
	tc := tls.Client(c.conn, &tls.Config{RootCAs: h.pool, ServerName: "mx.test"})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c = newClient(t, tc)
	ehlo := c.expect("EHLO client.test", "250-")
	if strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("STARTTLS offered over TLS:\n%s", ehlo)
	}
	// The transaction before STARTTLS is gone (RFC 3207 §4.2).
	c.expect("RCPT TO:<alice@example.com>", "503 5.5.1 Need MAIL command")
	c.expect("STARTTLS", "503 5.5.1 ")
	c.send("x@remote.test", []string{"alice@example.com"}, "Subject: x\r\n\r\nhi\r\n")
	_, body := h.sub.last(t)
	if !strings.Contains(body, "TLS") {
		t.Errorf("Received: does not show TLS:\n%s", body)
	}
}

func TestValidHelo(t *testing.T) {
	for s, want := range map[string]bool{
		"mx.example.com": true, "mx.example.com.": true, "localhost": true, "xn--bcher-kva.test": true,
		"[192.0.2.1]": true, "[IPv6:::1]": true, "[x-tag:abc]": true,
		"": false, "a_b.test": false, "-a.test": false, "a-.test": false, "[192.0.2]": false,
		"[IPv6:192.0.2.1]": false, "[]": false, "a..b": false, strings.Repeat("a", 64) + ".test": false,
	} {
		if got := validHelo(s); got != want {
			t.Errorf("validHelo(%q) = %v", s, got)
		}
	}
}

// TestSTARTTLSAfterReload: a session that began before a reload can still
// STARTTLS (its connector's Server lives until its last session ends).
func TestSTARTTLSAfterReload(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	cfg := loadConfig(t, h.dir, internetHCL)
	if err := h.svc.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	c.startTLS(h.pool)
	c.expect("EHLO client.test", "250")
	c.send("x@remote.test", []string{"alice@example.com"}, "Subject: x\r\n\r\nhi\r\n")
	c.expect("QUIT", "221")
}
