package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"
	"hubd/internal/hubtest"

	"hubd/internal/smtpsink"
)

// devPorts are where a devHub listens: dev.hcl's 2525, 2587 and 2465
// replaced by free ports, so that the tests never collide with `make run`.
type devPorts struct {
	smtp, submission, submissions string // "127.0.0.1:port"
}

// devHub starts hubd on a copy of examples/dev.hcl placed in a temporary
// tree, so its "../var" lands in the test's directory and not in the
// repository. dev.hcl's fixed ports are replaced by free ones, and its smart
// host 127.0.0.1:2526 by smartHost (the test's sink).
func devHub(t *testing.T, smartHost string) (p *hubdProcess, root string, ports devPorts) {
	t.Helper()
	root = t.TempDir()
	src, err := os.ReadFile("../../examples/dev.hcl")
	if err != nil {
		t.Fatal(err)
	}
	ports = devPorts{smtp: freePort(t), submission: freePort(t), submissions: freePort(t)}
	for from, to := range map[string]string{`"127.0.0.1:2525"`: ports.smtp, `"127.0.0.1:2587"`: ports.submission,
		`"127.0.0.1:2465"`: ports.submissions, `"127.0.0.1:2526"`: smartHost} {
		if !strings.Contains(string(src), from) {
			t.Fatalf("examples/dev.hcl no longer has %s; update devHub", from)
		}
		src = []byte(strings.ReplaceAll(string(src), from, strconv.Quote(to)))
	}
	if err := os.MkdirAll(filepath.Join(root, "examples"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(root, "examples", "dev.hcl")
	if err := os.WriteFile(cfg, src, 0o644); err != nil {
		t.Fatal(err)
	}
	return startHubd(t, cfg, ports.smtp, ports.submission, ports.submissions), root, ports
}

func swaks(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("swaks", append([]string{"--timeout", "20"}, args...)...).CombinedOutput()
	return string(out), err
}

// TestInteropSwaksDevConfig sends through every connector of
// examples/dev.hcl with swaks, an independent SMTP client.
func TestInteropSwaksDevConfig(t *testing.T) {
	if _, err := exec.LookPath("swaks"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("swaks is not installed; .ci/run installs it")
		}
		t.Skip("swaks not installed (apt-get install swaks)")
	}
	sink := smtpsink.Start(t, smtpsink.Options{})
	p, root, ports := devHub(t, sink.Addr())
	mail := filepath.Join(root, "var", "mail")

	// dev.hcl's 2525: anonymous mail for an accepted domain.
	out, err := swaks(t, "--server", ports.smtp, "--from", "someone@remote.test", "--to", "bob@example.test",
		"--header", "Subject: interop 2525")
	if err != nil || !strings.Contains(out, "250 2.0.0") {
		t.Fatalf("swaks on 2525: %v\n%s", err, out)
	}
	// dev.hcl's 2525: relaying is refused at RCPT time.
	out, _ = swaks(t, "--server", ports.smtp, "--from", "someone@remote.test", "--to", "victim@elsewhere.test")
	if !strings.Contains(out, "550 5.7.1") {
		t.Errorf("relay through 2525 was not refused with 550 5.7.1:\n%s", out)
	}
	// dev.hcl's 2525: an unknown user is refused at RCPT time.
	out, _ = swaks(t, "--server", ports.smtp, "--from", "someone@remote.test", "--to", "nobody@example.test")
	if !strings.Contains(out, "550 5.1.1") {
		t.Errorf("unknown user on 2525 was not refused with 550 5.1.1:\n%s", out)
	}
	// postmaster is an alias of alice.
	out, err = swaks(t, "--server", ports.smtp, "--from", "someone@remote.test", "--to", "postmaster@example.test")
	if err != nil {
		t.Fatalf("swaks to postmaster: %v\n%s", err, out)
	}

	// dev.hcl's 2587: STARTTLS, AUTH PLAIN, relay to the smart host.
	out, err = swaks(t, "--server", ports.submission, "--tls", "--auth", "PLAIN",
		"--auth-user", "alice@example.test", "--auth-password", "alice-dev-password",
		"--from", "alice@example.test", "--to", "friend@remote.test", "--header", "Subject: interop 2587")
	if err != nil || !strings.Contains(out, "250 2.0.0") {
		t.Fatalf("swaks on 2587: %v\n%s", err, out)
	}
	// dev.hcl's 2587: MAIL without AUTH is refused (RFC 6409).
	out, _ = swaks(t, "--server", ports.submission, "--tls", "--from", "alice@example.test", "--to", "friend@remote.test")
	if !strings.Contains(out, "530 5.7.0") {
		t.Errorf("MAIL before AUTH on 2587 was not refused with 530 5.7.0:\n%s", out)
	}
	// dev.hcl's 2465: implicit TLS, AUTH LOGIN, local delivery.
	out, err = swaks(t, "--server", ports.submissions, "--tlsc", "--auth", "LOGIN",
		"--auth-user", "alice@example.test", "--auth-password", "alice-dev-password",
		"--from", "alice@example.test", "--to", "bob@example.test", "--header", "Subject: interop 2465")
	if err != nil || !strings.Contains(out, "250 2.0.0") {
		t.Fatalf("swaks on 2465: %v\n%s", err, out)
	}
	// A wrong password is refused.
	out, _ = swaks(t, "--server", ports.submissions, "--tlsc", "--auth", "PLAIN",
		"--auth-user", "alice@example.test", "--auth-password", "wrong",
		"--from", "alice@example.test", "--to", "bob@example.test")
	if !strings.Contains(out, "535 5.7.8") {
		t.Errorf("wrong password was not refused with 535 5.7.8:\n%s", out)
	}

	bob := hubtest.WaitMaildir(t, filepath.Join(mail, "bob"), 2, 20*time.Second)
	joined := strings.Join(bob, "\n")
	for _, want := range []string{"Subject: interop 2525", "Subject: interop 2465", "Received: from", "Delivered-To: bob@example.test"} {
		if !strings.Contains(joined, want) {
			t.Errorf("bob's Maildir lacks %q:\n%s", want, joined)
		}
	}
	if strings.Contains(joined, "\r\n") {
		t.Error("Maildir files should use LF line endings")
	}
	hubtest.WaitMaildir(t, filepath.Join(mail, "alice"), 1, 20*time.Second) // postmaster alias
	got := sink.WaitFor(t, 1, 20*time.Second)
	if !strings.Contains(string(got[0].Data), "Subject: interop 2587") || got[0].To[0] != "friend@remote.test" {
		t.Errorf("smart host got %+v", got[0])
	}
	if err := p.stop(t, 30*time.Second); err != nil {
		t.Errorf("hubd did not exit 0 after SIGTERM: %v", err)
	}
}

// TestInteropPythonSmtplib submits with Python's smtplib over STARTTLS.
func TestInteropPythonSmtplib(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	sink := smtpsink.Start(t, smtpsink.Options{})
	_, root, ports := devHub(t, sink.Addr())
	script := fmt.Sprintf(`
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
with smtplib.SMTP("127.0.0.1", %s, timeout=20) as s:
    s.ehlo("python.example.test")
    assert "auth" not in s.esmtp_features, "AUTH advertised before STARTTLS"
    s.starttls(context=ctx)
    s.ehlo("python.example.test")
    s.login("alice@example.test", "alice-dev-password")
    s.sendmail("alice@example.test", ["bob@example.test"],
               "From: alice@example.test\r\nTo: bob@example.test\r\nSubject: from smtplib\r\n\r\nhello\r\n")
print("sent")
`, portOf(t, ports.submission))
	out, err := exec.Command("python3", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("smtplib: %v\n%s", err, out)
	}
	msgs := hubtest.WaitMaildir(t, filepath.Join(root, "var", "mail", "bob"), 1, 20*time.Second)
	if !strings.Contains(msgs[0], "Subject: from smtplib") || !strings.Contains(msgs[0], "Message-ID:") {
		t.Errorf("unexpected message (submission should add Message-ID):\n%s", msgs[0])
	}
}

// TestInteropDSNParsesInPython: a recipient refused by the next hop earns
// its sender an RFC 3464 DSN, and Python's email package (an independent
// MIME parser) reads it as a multipart/report with a message/delivery-status
// part naming the recipient, the action and the status.
func TestInteropDSNParsesInPython(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	sink := smtpsink.Start(t, smtpsink.Options{Rcpt: func(addr string) error {
		return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "No such user here"}
	}})
	_, root, ports := devHub(t, sink.Addr())
	out, err := swaks(t, "--server", ports.submission, "--tls", "--auth", "PLAIN",
		"--auth-user", "alice@example.test", "--auth-password", "alice-dev-password",
		"--from", "alice@example.test", "--to", "nobody@elsewhere.example")
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	dsns := hubtest.WaitMaildir(t, filepath.Join(root, "var", "mail", "alice"), 1, 20*time.Second)
	script := `
import email, sys
from email import policy
msg = email.message_from_string(sys.stdin.read(), policy=policy.default)
assert msg.get_content_type() == "multipart/report", msg.get_content_type()
assert msg.get_param("report-type") == "delivery-status"
assert msg["Auto-Submitted"] == "auto-replied"
parts = list(msg.iter_parts())
assert [p.get_content_type() for p in parts][:2] == ["text/plain", "message/delivery-status"], [p.get_content_type() for p in parts]
blocks = parts[1].get_payload()
per_rcpt = blocks[1]
print(per_rcpt["Action"], per_rcpt["Status"], per_rcpt["Final-Recipient"], parts[2].get_content_type())
`
	cmd := exec.Command("python3", "-c", script)
	cmd.Stdin = strings.NewReader(dsns[0])
	res, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python could not read the DSN: %v\n%s\n%s", err, res, dsns[0])
	}
	if got := strings.TrimSpace(string(res)); got != "failed 5.1.1 rfc822;nobody@elsewhere.example message/rfc822" {
		t.Errorf("python read %q", got)
	}
}
