package main

import (
	"fmt"
	"net/textproto"
	"strings"
	"syscall"
	"testing"
	"time"
)

// rcptReply opens a session and returns the reply line to RCPT TO:<rcpt>.
func rcptReply(t *testing.T, addr, rcpt string) string {
	t.Helper()
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := c.ReadResponse(220); err != nil {
		t.Fatal(err)
	}
	c.PrintfLine("EHLO reload.example.test")
	if _, _, err := c.ReadResponse(250); err != nil {
		t.Fatal(err)
	}
	c.PrintfLine("MAIL FROM:<someone@remote.test>")
	if _, _, err := c.ReadResponse(250); err != nil {
		t.Fatal(err)
	}
	c.PrintfLine("RCPT TO:<%s>", rcpt)
	code, msg, _ := c.ReadResponse(0)
	c.PrintfLine("QUIT")
	return fmt.Sprintf("%d %s", code, msg)
}

// TestSIGHUPReload: SIGHUP applies a new configuration to new sessions; a
// configuration with errors is refused with its diagnostics in the log and
// the running configuration stays in force.
func TestSIGHUPReload(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	base := fmt.Sprintf(`
hub {
  hostname  = "reload.example.test"
  spool_dir = "spool"
}
accepted_domain "example.test" {}
mailbox "bob@example.test" { maildir = "mail/bob" }
receive_connector "in" { bind = [%q] }
`, addr)
	write := func(s string) { writeConfig(t, dir, s) }
	cfg := writeConfig(t, dir, base)
	p := startHubd(t, cfg, addr)
	if r := rcptReply(t, addr, "carol@example.test"); !strings.HasPrefix(r, "550 5.1.1") {
		t.Fatalf("unknown carol: %s", r)
	}

	write(base + `mailbox "carol@example.test" { maildir = "mail/carol" }` + "\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return strings.HasPrefix(rcptReply(t, addr, "carol@example.test"), "250") },
		"carol accepted after reload")

	// A broken file: refused, logged with its line, old config stays.
	write(base + `mailbox "dave@example.test" { maildir = "mail/dave" }` + "\nreceive_connector \"x\" { colour = 1 }\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return strings.Contains(p.out.String(), "reload refused") }, "reload refused in the log")
	if !strings.Contains(p.out.String(), "hubd.hcl line 10") {
		t.Errorf("the log lacks the diagnostic's position:\n%s", p.out.String())
	}
	if r := rcptReply(t, addr, "carol@example.test"); !strings.HasPrefix(r, "250") {
		t.Errorf("carol refused after a failed reload: %s", r)
	}
	if r := rcptReply(t, addr, "dave@example.test"); !strings.HasPrefix(r, "550 5.1.1") {
		t.Errorf("dave accepted from a refused configuration: %s", r)
	}
	if err := p.stop(t, 30*time.Second); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	waitWithin(t, 10*time.Second, 25*time.Millisecond, cond, what)
}
