package main

// End to end, against a hubd child process: a queue suspended and resumed
// (the override shown, then gone), a deferred message retried by id, and a
// queue retried with --resubmit once the remote takes mail again.

import (
	"fmt"
	"net/smtp"
	"strings"
	"sync/atomic"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"hubd/hub/ops"
	"hubd/internal/admin"
	"hubd/internal/smtpsink"
)

func TestQueueSuspendResumeAndRetry(t *testing.T) {
	dir := t.TempDir()
	var accept atomic.Bool
	sink := smtpsink.Start(t, smtpsink.Options{Rcpt: func(string) error {
		if accept.Load() {
			return nil
		}
		return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, try later"}
	}})
	// An hour between attempts: nothing is delivered unless hubctl asks.
	in, cfg, sock := relayHub(t, dir, sink.Port(), "  quick_retry_interval = \"1h\"\n  retry_interval = \"1h\"", "", "")
	startHubd(t, cfg, sock)
	c := ctl{t, sock}
	for i := range 3 {
		msg := fmt.Sprintf("Subject: r%d\r\nMessage-ID: <r%d@example.test>\r\n\r\nbody\r\n", i, i)
		if err := smtp.SendMail(in, nil, "sender@example.test", []string{fmt.Sprintf("r%d@remote.test", i)}, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "three deferred messages", func() bool { return len(c.messages("--state", "deferred")) == 3 })
	msgs := c.messages()
	hop := msgs[0].Recipients[0].Queue
	if hop == "" {
		t.Fatalf("deferred recipient without a queue: %+v", msgs[0])
	}
	queue := func() ops.QueueInfo {
		var qs []ops.QueueInfo
		c.json(&qs, "queue", "list")
		for _, q := range qs {
			if q.Name == hop {
				return q
			}
		}
		t.Fatalf("queue %q not listed: %+v", hop, qs)
		return ops.QueueInfo{}
	}

	// suspend: a runtime override, shown as such in the table and the JSON.
	var res admin.ActionResult
	c.json(&res, "queue", "suspend", hop)
	if !res.OK || res.ID != hop {
		t.Errorf("queue suspend --json: %+v", res)
	}
	if q := queue(); q.Override != "suspended (runtime override)" || q.Messages != 3 {
		t.Errorf("suspended queue: %+v", q)
	}
	table := c.ok("queue", "list")
	t.Logf("$ hubctl queue list\n%s", table)
	if !strings.Contains(table, "suspended (runtime override)") {
		t.Errorf("queue list does not show the override:\n%s", table)
	}
	// While suspended, a retry by id leaves the message where it is: the
	// remote would take it now, but the queue holds it.
	accept.Store(true)
	c.ok("message", "retry", msgs[0].ID)
	// resume: the override is gone; the queue's messages are due again
	// only at their own time (an hour away), except the one retried.
	out := c.ok("queue", "resume", hop)
	t.Logf("$ hubctl queue resume %s\n%s", hop, out)
	if q := queue(); q.Override != "" {
		t.Errorf("resumed queue still shows an override: %+v", q)
	}
	waitFor(t, "the retried message delivered", func() bool { return len(sink.Messages()) == 1 })
	if got := c.messages(); len(got) != 2 {
		t.Errorf("after one delivery, %d messages queued, want 2", len(got))
	}

	// retry --resubmit: the rest are routed again and delivered now.
	out = c.ok("queue", "retry", hop, "--resubmit")
	t.Logf("$ hubctl queue retry %s --resubmit\n%s", hop, out)
	waitFor(t, "the queue emptied", func() bool { return len(sink.Messages()) == 3 && len(c.messages()) == 0 })
	seen := map[string]bool{}
	for _, m := range sink.Messages() {
		seen[strings.Join(m.To, ",")] = true
	}
	if len(seen) != 3 {
		t.Errorf("delivered %v, want each of r0..r2 once", seen)
	}

	// A queue nobody knows: exit 1 and the name in the error.
	if _, errs, code := c.run("", "queue", "suspend", "[no.such.hop]"); code != 1 || !strings.Contains(errs, "no.such.hop") {
		t.Errorf("suspend of an unknown queue: exit %d, %q", code, errs)
	}
}
