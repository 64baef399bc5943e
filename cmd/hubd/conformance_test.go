package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hubd/internal/hubtest"
)

// TestInteropConformanceSmtplib drives the real hubd with Python's smtplib,
// an independent client, through the replies RFC 5321 prescribes where
// go-smtp's defaults were wrong: 503 for commands out of sequence, 555 for
// an unknown parameter, RFC 3463 codes on success, RCPT TO:<Postmaster>
// delivered to the postmaster, "with SMTP" after HELO, and one queue id in
// the 250 reply and the Received: field.
func TestInteropConformanceSmtplib(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 not installed")
	}
	dir := t.TempDir()
	addr := freePort(t)
	cfg := writeConfig(t, dir, fmt.Sprintf(`
hub {
  hostname  = "mx.example.test"
  spool_dir = "spool"
}
accepted_domain "example.test" {}
mailbox "alice@example.test" { maildir = "mail/alice" }
alias "postmaster@example.test" { to = ["alice@example.test"] }
receive_connector "in" {
  bind            = [%q]
  tarpit_interval = "0s"
}
`, addr))
	startHubd(t, cfg, addr)
	host, port, _ := strings.Cut(addr, ":")
	script := fmt.Sprintf(`
import smtplib
s = smtplib.SMTP(%q, %s, timeout=20)
def check(got, code, enhanced):
    c, text = got
    text = text.decode()
    assert c == code and text.startswith(enhanced), (code, enhanced, c, text)
check(s.docmd("MAIL", "FROM:<x@remote.test>"), 503, "5.5.1")
code, text = s.helo("python.example.test")
assert code == 250 and text.decode().startswith("mx.example.test"), (code, text)
check(s.docmd("RCPT", "TO:<alice@example.test>"), 503, "5.5.1")
check(s.docmd("DATA"), 503, "5.5.1")
check(s.docmd("MAIL", "FROM:<x@remote.test> XFOO=BAR"), 555, "5.5.4")
check(s.docmd("MAIL", "FROM:<x@remote.test>"), 250, "2.1.0")
check(s.docmd("DATA"), 503, "5.5.1")
check(s.docmd("RCPT", "TO:<nobody@example.test>"), 550, "5.1.1")
check(s.docmd("DATA"), 554, "5.5.1")
check(s.docmd("RCPT", "TO:<Postmaster>"), 250, "2.1.5")
check(s.docmd("DATA"), 354, "")
s.send(b"Subject: to the postmaster\r\n\r\nhello\r\n.\r\n")
code, text = s.getreply()
assert code == 250 and text.decode().startswith("2.0.0 Ok: queued as "), (code, text)
print(text.decode().split()[-1])
check(s.docmd("QUIT"), 221, "2.0.0")
`, host, port)
	out, err := exec.Command("python3", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("smtplib: %v\n%s", err, out)
	}
	id := strings.TrimSpace(string(out))
	msgs := hubtest.WaitMaildir(t, filepath.Join(dir, "mail", "alice"), 1, 20*time.Second)
	unfolded := strings.NewReplacer("\n\t", " ", "\n ", " ").Replace(msgs[0])
	for _, want := range []string{"Subject: to the postmaster", "by mx.example.test with SMTP id " + id + " "} {
		if !strings.Contains(unfolded, want) {
			t.Errorf("postmaster's copy lacks %q:\n%s", want, msgs[0])
		}
	}
}
