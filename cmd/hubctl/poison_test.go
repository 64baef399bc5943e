package main

// End to end, against hubd built with -tags crashhook: a message that
// kills hubd at every delivery ends in the poison queue; hubctl shows it
// there with its crashes; after an "upgrade" to a hubd without the hook,
// `message release` puts it back and it is delivered.

import (
	"io"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hubd/hub/ops"
)

func TestPoisonedMessageReleased(t *testing.T) {
	if testing.Short() {
		t.Skip("crash-hook test skipped in -short mode")
	}
	bin := filepath.Join(t.TempDir(), "hubd-crashhook")
	if out, err := exec.Command("go", "build", "-tags", "crashhook", "-o", bin, "../hubd").CombinedOutput(); err != nil {
		t.Fatalf("building hubd -tags crashhook: %v\n%s", err, out)
	}
	dir := t.TempDir()
	in, cfg, sock := relayHub(t, dir, 1,
		"  poison_threshold = 1\n  quick_retry_interval = \"1s\"\n  retry_interval = \"1s\"", "",
		`mailbox "victim@example.test" { maildir = "mail/victim" }`)
	p := startHubdBinary(t, bin, cfg, sock)
	// The deliverer may kill hubd before its 250 reaches us: the message is
	// queued by then (the reply follows the commit), so an EOF here is no
	// failure; the loop below finds the message or times out.
	if err := sendCrashing(in); err != nil {
		t.Logf("sending the crashing message: %v", err)
	}
	// A supervisor's loop: restart hubd after each death until the message
	// is parked (3 + poison_threshold deaths, hub/transport/isolation.go).
	// After a death the message waits quick_retry_interval (1s), so each
	// new hubd has its admin socket up well before the hook kills it.
	c := ctl{t, sock}
	deaths := 0
	var poisoned ops.MessageSummary
	deadline := time.Now().Add(60 * time.Second)
	for poisoned.ID == "" {
		select {
		case <-p.done:
			deaths++
			p = startHubdBinary(t, bin, cfg, sock)
			continue
		case <-time.After(50 * time.Millisecond): // poll the queue
		}
		if out, _, code := c.run("", "message", "list", "--state", "poisoned", "-q"); code == 0 && strings.TrimSpace(out) != "" {
			poisoned.ID = strings.TrimSpace(out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not poisoned after %d deaths in 60 s", deaths)
		}
	}
	t.Logf("poisoned after %d deaths", deaths)

	var qs []ops.QueueInfo
	c.json(&qs, "queue", "list")
	for _, q := range qs {
		if q.Name == "poison" && q.Messages != 1 {
			t.Errorf("poison queue: %+v", q)
		}
	}
	var d ops.MessageDetail
	c.json(&d, "message", "show", poisoned.ID)
	if d.State != ops.StatePoisoned || d.Crashes < 1 {
		t.Errorf("message show: state %q, crashes %d", d.State, d.Crashes)
	}
	out := c.ok("message", "show", poisoned.ID)
	if !strings.Contains(out, "Crashes:") {
		t.Errorf("message show does not print the crashes:\n%s", out)
	}
	// The poison queue is never retried as a whole.
	if _, errs, code := c.run("", "queue", "retry", "poison"); code != 1 || !strings.Contains(errs, "release") {
		t.Errorf("queue retry poison: exit %d, %q", code, errs)
	}

	// The operator's story: the bug is fixed (here: a hubd without the
	// hook), the message is released, and it is delivered.
	p.stop(t)
	startHubd(t, cfg, sock)
	if got := c.messages("--state", "poisoned"); len(got) != 1 {
		t.Fatalf("after a restart, %d poisoned messages, want 1", len(got))
	}
	out = c.ok("message", "release", poisoned.ID)
	t.Logf("$ hubctl message release %s\n%s", poisoned.ID, out)
	waitFor(t, "the released message delivered", func() bool {
		files, _ := os.ReadDir(filepath.Join(dir, "mail", "victim", "new"))
		return len(files) == 1
	})
	if got := c.messages(); len(got) != 0 {
		t.Errorf("after delivery the queue holds %+v", got)
	}
}

// sendCrashing sends the message that kills hubd built with -tags
// crashhook; hubd may die before QUIT.
func sendCrashing(addr string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail("sender@example.test"); err != nil {
		return err
	}
	if err := c.Rcpt("victim@example.test"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	io.WriteString(w, "Subject: crash\r\nX-Test-Crash-Hook: kill\r\n\r\nthis message crashes the hub\r\n")
	return w.Close()
}
