package main

import (
	"errors"
	"fmt"
	"io"
	"net/smtp"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// deathsToPoison is how many process deaths a message that kills hubd
// every time costs before it is parked: three in a row make it a suspect
// (hub/transport: suspectAfter), then poison_threshold more while it is
// the isolated suspect.
const deathsToPoison = 3 + 2

// TestCrashingMessageIsPoisoned: hubd built with -tags crashhook dies
// (SIGKILL to itself, no cleanup) whenever a deliverer takes a message
// carrying the hook's header. With other mail flowing throughout, and
// hubd restarted after each death as a supervisor would, that message
// (and nothing else) ends in the poison queue after deathsToPoison deaths,
// and every other acknowledged message is delivered once.
func TestCrashingMessageIsPoisoned(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	bin := filepath.Join(t.TempDir(), "hubd-crashhook")
	if out, err := exec.Command("go", "build", "-tags", "crashhook", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building hubd -tags crashhook: %v\n%s", err, out)
	}
	dir := t.TempDir()
	addr := freePort(t)
	rcpts := []string{"u1", "u2", "u3"}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `
hub {
  hostname             = "crash.example.test"
  spool_dir            = "spool"
  quick_retry_interval = "200ms"
  retry_interval       = "200ms"
}
accepted_domain "example.test" {}
receive_connector "in" {
  bind = [%q]
  max_inbound_connections_per_source = 100
}
`, addr)
	for _, r := range rcpts {
		fmt.Fprintf(&cfg, "mailbox %q { maildir = %q }\n", r+"@example.test", "mail/"+r)
	}
	cfgPath := writeConfig(t, dir, cfg.String())

	var (
		mu    sync.Mutex
		acked = map[string][]string{}
		seq   int
	)
	stop := make(chan struct{})
	var senders sync.WaitGroup
	for range 4 {
		senders.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				seq++
				id := fmt.Sprintf("hook-%d", seq)
				mu.Unlock()
				to := pickRecipients(rcpts)
				if err := sendOne(addr, id, to); err != nil {
					<-time.After(20 * time.Millisecond) // hubd restarting: poll again
					continue
				}
				mu.Lock()
				acked[id] = to
				mu.Unlock()
			}
		})
	}

	p := startBinary(t, bin, cfgPath, addr)
	if err := sendMarked(addr); err != nil {
		t.Fatalf("marked message not accepted: %v", err)
	}
	deaths, logs := 0, ""
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.out.String(), "message moved to the poison queue") {
		select {
		case <-p.done:
			deaths++
			logs += p.out.String()
			// Restarted as a supervisor would, without waiting for it to
			// listen: the crashing message is due again one
			// quick_retry_interval after recovery, and on a loaded machine
			// that may come before the listeners are up (a death this
			// loop counts like any other).
			p = startBinary(t, bin, cfgPath)
		case <-time.After(50 * time.Millisecond): // poll the log
		}
		if time.Now().After(deadline) {
			t.Fatalf("not poisoned after %d deaths in 60 s", deaths)
		}
	}
	// Mail keeps flowing after the poisoning.
	mu.Lock()
	after := len(acked) + 50
	mu.Unlock()
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= after || time.Now().After(deadline) {
			break
		}
		<-time.After(20 * time.Millisecond) // poll
	}
	close(stop)
	senders.Wait()

	found := waitDelivered(t, filepath.Join(dir, "mail"), rcpts, acked, deadline)
	if err := p.stop(t, 30*time.Second); err != nil {
		t.Errorf("hubd did not exit 0 after SIGTERM: %v", err)
	}
	logs += p.out.String()

	lost, dup := lostAndDuplicated(acked, found)
	for key := range found {
		if strings.HasPrefix(key, "marked/") {
			t.Errorf("the crashing message was delivered to %s", key)
		}
	}
	poisoned := poisonedMessages(t, filepath.Join(dir, "spool"))
	inFlight, counted := deathsInLogs(logs)
	t.Logf("crash hook: %d deaths, %d messages in flight at them (the crashing one included), %d deaths counted; "+
		"%d other messages acked, %d lost, %d duplicated; %d poisoned",
		deaths, inFlight, counted, len(acked), len(lost), len(dup), len(poisoned))
	if counted != deathsToPoison-3 {
		t.Errorf("%d deaths counted against a message, want %d (all against the crashing one)", counted, deathsToPoison-3)
	}
	if len(lost) != 0 || len(dup) != 0 {
		t.Errorf("lost %v, duplicated %v", lost, dup)
	}
	var bodies []string
	for _, b := range poisoned {
		bodies = append(bodies, b)
	}
	if len(bodies) != 1 || !strings.Contains(bodies[0], "X-Test-Crash-Hook: kill") {
		t.Errorf("poison queue holds %d messages, want only the crashing one:\n%s", len(bodies), strings.Join(bodies, "\n---\n"))
	}
	if deaths != deathsToPoison {
		t.Errorf("%d deaths before the message was parked, want %d", deaths, deathsToPoison)
	}
	if t.Failed() {
		t.Logf("hubd logs:\n%s", logs)
	}
}

// sendMarked sends the message that kills hubd built with -tags crashhook.
// It is accepted once DATA is answered 250; hubd may die before QUIT.
func sendMarked(addr string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Mail("sender@remote.test"); err != nil {
		return err
	}
	if err := c.Rcpt("u1@example.test"); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	io.WriteString(w, "From: sender@remote.test\r\nTo: u1@example.test\r\nSubject: crash\r\nX-Crash-ID: marked\r\n"+
		"X-Test-Crash-Hook: kill\r\n\r\nthis message crashes the hub\r\n")
	if err := w.Close(); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		return err
	}
	// The connection closing instead of the 250: the message is durable
	// before the 250 is written, and its delivery may start, and kill
	// hubd, before the 250 reaches the socket. The test goes on: if the
	// message was not queued after all, it is never poisoned, and the
	// test fails there.
	return nil
}
