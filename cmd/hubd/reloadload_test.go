package main

import (
	"fmt"
	"net/textproto"
	"strings"
	"syscall"
	"testing"
	"time"

	"hubd/internal/admintest"
)

// TestSIGHUPReloadUnderLoad: a hubd child process serves eight clients
// sending continuously while it gets SIGHUP five times with a new banner
// and max_message_size each time, then once with a broken file: no session
// is refused or cut, new sessions see each new policy, the broken reload
// keeps the last one in force and logs its diagnostics and one refusal.
func TestSIGHUPReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	config := func(gen int) string {
		return fmt.Sprintf(`
hub {
  hostname  = "load.example.test"
  spool_dir = "spool"
}
accepted_domain "example.test" {}
mailbox "bob@example.test" { maildir = "mail/bob" }
receive_connector "in" {
  bind             = [%q]
  banner           = "load.example.test generation %d"
  max_message_size = "%dMB"
  tarpit_interval  = "0s"
}
`, addr, gen, 10+gen)
	}
	cfg := writeConfig(t, dir, config(0))
	p := startHubd(t, cfg, addr)
	load := admintest.StartLoad(addr, "bob@example.test", 8)
	waitSent := func(n int) {
		waitFor(t, func() bool { return load.Sent() >= n }, fmt.Sprintf("%d messages sent", n))
	}
	for gen := 1; gen <= 5; gen++ {
		waitSent(load.Sent() + 10)
		writeConfig(t, dir, config(gen))
		p.cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, func() bool { return strings.Count(p.out.String(), "configuration reloaded") == gen },
			fmt.Sprintf("reload %d in the log", gen))
		banner, size := ehloSize(t, addr)
		if banner != fmt.Sprintf("load.example.test generation %d", gen) || size != fmt.Sprint((10+gen)<<20) {
			t.Errorf("after reload %d: banner %q, SIZE %s", gen, banner, size)
		}
	}
	waitSent(load.Sent() + 10)
	writeConfig(t, dir, config(6)+"receive_connector \"x\" { colour = 1 }\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return strings.Contains(p.out.String(), "reload refused") }, "the refusal in the log")
	waitSent(load.Sent() + 10)
	sessions, sent, errs, _ := load.Stop()
	if len(errs) > 0 {
		t.Errorf("%d of %d sessions failed under reload, e.g. %s", len(errs), sessions, strings.Join(errs[:min(5, len(errs))], "; "))
	}
	if banner, _ := ehloSize(t, addr); banner != "load.example.test generation 5" {
		t.Errorf("after a refused reload: banner %q", banner)
	}
	log := p.out.String()
	if !strings.Contains(log, "hubd.hcl:14:25: error: Unsupported argument") || strings.Count(log, "reload refused") != 1 ||
		strings.Count(log, "configuration reloaded") != 5 {
		t.Errorf("the log does not tell the story:\n%s", log)
	}
	if err := p.stop(t, 30*time.Second); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	t.Logf("%d sessions, %d messages accepted across 5 reloads and a refused one", sessions, sent)
}

// ehloSize returns the greeting text and the EHLO SIZE value.
func ehloSize(t *testing.T, addr string) (banner, size string) {
	t.Helper()
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, banner, err = c.ReadResponse(220)
	if err != nil {
		t.Fatal(err)
	}
	c.PrintfLine("EHLO probe.test")
	_, msg, err := c.ReadResponse(250)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(msg, "\n") {
		if v, ok := strings.CutPrefix(l, "SIZE "); ok {
			size = v
		}
	}
	c.PrintfLine("QUIT")
	return banner, size
}
