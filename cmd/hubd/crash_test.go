package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/smtp"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCrashNeverLosesAckedMail is DESIGN.md invariant 1 tested on the real
// binary: parallel clients send mail while hubd is SIGKILLed at random
// moments and restarted, many times, with the default poison_threshold.
// Every message that got 250 after DATA must end up in its recipients'
// Maildirs, no message may be delivered twice to the same recipient, and
// none may be parked in the poison queue: a process death that no message
// caused must not be blamed on the messages in flight (crash attribution,
// hub/transport).
func TestCrashNeverLosesAckedMail(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test skipped in -short mode")
	}
	dir := t.TempDir()
	addr := freePort(t)
	rcpts := []string{"u1", "u2", "u3", "u4"}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `
hub {
  hostname       = "crash.example.test"
  spool_dir      = "spool"
  quick_retry_interval = "1s"
  retry_interval       = "1s"
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

	// Rounds end in a SIGKILL each; they go on until both minimums are met
	// (the machine's speed decides how much mail a round carries).
	const minKills, minAcked, maxRounds = 20, 2000, 60
	const senders = 8
	var (
		mu    sync.Mutex
		acked = map[string][]string{} // message id → recipients
		tried int
	)
	var logs strings.Builder // every lifetime's log, for hub/queue's death summaries
	seq, rounds := 0, 0
	for round := 0; round < minKills || len(acked) < minAcked; round++ {
		if round == maxRounds {
			t.Fatalf("only %d messages acked after %d rounds", len(acked), round)
		}
		rounds++
		p := startHubd(t, cfgPath, addr)
		stopSending := make(chan struct{})
		var wg sync.WaitGroup
		for s := 0; s < senders; s++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stopSending:
						return
					default:
					}
					mu.Lock()
					seq++
					id := fmt.Sprintf("crash-%d-%d", round, seq)
					tried++
					mu.Unlock()
					to := pickRecipients(rcpts)
					if err := sendOne(addr, id, to); err != nil {
						if isConnError(err) {
							return // hubd is gone: this round is over for this sender
						}
						continue
					}
					mu.Lock()
					acked[id] = to
					mu.Unlock()
				}
			}()
		}
		// SIGKILL at a random moment while the senders are busy.
		killAt := time.Duration(300+rand.IntN(900)) * time.Millisecond
		<-time.After(killAt)
		p.kill()
		close(stopSending)
		wg.Wait()
		logs.WriteString(p.out.String())
	}

	// Final start: everything acked must be delivered, then a clean stop.
	finalStart := time.Now()
	p := startHubd(t, cfgPath, addr)
	want := 0
	for _, to := range acked {
		want += len(to)
	}
	found := waitDelivered(t, filepath.Join(dir, "mail"), rcpts, acked, time.Now().Add(60*time.Second))
	t.Logf("final start: everything delivered after %v", time.Since(finalStart))
	stopStart := time.Now()
	if err := p.stop(t, 30*time.Second); err != nil {
		t.Errorf("hubd did not exit 0 after SIGTERM: %v", err)
	}
	t.Logf("SIGTERM to exit: %v", time.Since(stopStart))
	logs.WriteString(p.out.String())
	inFlight, counted := deathsInLogs(logs.String())

	// SIGKILL must never leave an unreadable record: torn writes stay in
	// tmp/ and are cleaned at start-up, so nothing is ever quarantined.
	if q, _ := os.ReadDir(filepath.Join(dir, "spool", "quarantine")); len(q) > 0 {
		t.Errorf("%d items quarantined after SIGKILLs", len(q))
	}
	poisoned := poisonedMessages(t, filepath.Join(dir, "spool"))
	for _, id := range poisoned {
		t.Errorf("healthy message %s parked in the poison queue", id)
	}

	lost, dup := lostAndDuplicated(acked, found)
	for _, key := range lost {
		t.Errorf("acked message %s was never delivered", key)
	}
	deliveredCopies := 0
	for key, n := range found {
		deliveredCopies += n
		if n > 1 {
			t.Errorf("message %s delivered %d times", key, n)
		}
	}
	t.Logf("crash test: %d SIGKILLs, %d messages tried, %d acked (%d recipient deliveries expected), "+
		"%d delivered copies found, %d lost, %d duplicated, %d poisoned; %d messages in flight at the deaths, "+
		"%d deaths counted against a message",
		rounds, tried, len(acked), want, deliveredCopies, len(lost), len(dup), len(poisoned), inFlight, counted)
}

func pickRecipients(all []string) []string {
	n := 1 + rand.IntN(3)
	perm := rand.Perm(len(all))
	var to []string
	for _, i := range perm[:n] {
		to = append(to, all[i])
	}
	return to
}

// sendOne sends one message with net/smtp (an independent client) and
// returns nil only when the server answered 250 to the end of DATA.
func sendOne(addr, id string, to []string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("crash-client.example.test"); err != nil {
		return err
	}
	if err := c.Mail("sender@remote.test"); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r + "@example.test"); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: sender@remote.test\r\nTo: %s\r\nSubject: %s\r\nX-Crash-ID: %s\r\n\r\n", strings.Join(to, ", "), id, id)
	w.Write(bytes.Repeat([]byte("crash test body line\r\n"), 50))
	if err := w.Close(); err != nil {
		return err
	}
	c.Quit()
	return nil
}

func isConnError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "connection refused") || strings.Contains(s, "connection reset") ||
		strings.Contains(s, "broken pipe") || strings.Contains(s, "EOF")
}

var crashIDRe = regexp.MustCompile(`(?m)^X-Crash-ID: (\S+)`)

// scanMaildirs counts delivered copies per "message id/recipient".
func scanMaildirs(t *testing.T, root string, rcpts []string) map[string]int {
	found := map[string]int{}
	for _, r := range rcpts {
		for _, sub := range []string{"new", "cur"} {
			entries, _ := os.ReadDir(filepath.Join(root, r, sub))
			for _, e := range entries {
				data, err := os.ReadFile(filepath.Join(root, r, sub, e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				m := crashIDRe.FindSubmatch(data)
				if m == nil {
					t.Errorf("maildir file %s has no X-Crash-ID", e.Name())
					continue
				}
				found[string(m[1])+"/"+r]++
			}
		}
	}
	return found
}
