package main

import (
	"context"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/queue"
)

// What the crash tests count, shared by TestCrashNeverLosesAckedMail and
// TestCrashingMessageIsPoisoned.

// waitDelivered polls the Maildirs under root until every acknowledged
// message (id → recipients) has a copy for each of its recipients, or the
// deadline passes, and returns the copies found per "id/recipient".
func waitDelivered(t *testing.T, root string, rcpts []string, acked map[string][]string, deadline time.Time) map[string]int {
	t.Helper()
	want := 0
	for _, to := range acked {
		want += len(to)
	}
	for {
		found := scanMaildirs(t, root, rcpts)
		got := 0
		for id, to := range acked {
			for _, r := range to {
				if found[id+"/"+r] > 0 {
					got++
				}
			}
		}
		if got == want || time.Now().After(deadline) {
			return found
		}
		<-time.After(50 * time.Millisecond) // poll interval under the deadline
	}
}

// lostAndDuplicated lists the acknowledged "id/recipient" deliveries with
// no copy, and the ones with more than one.
func lostAndDuplicated(acked map[string][]string, found map[string]int) (lost, dup []string) {
	for id, to := range acked {
		for _, r := range to {
			if found[id+"/"+r] == 0 {
				lost = append(lost, id+"/"+r)
			}
		}
	}
	for key, n := range found {
		if n > 1 {
			dup = append(dup, key)
		}
	}
	return lost, dup
}

// recoveryRe matches hub/queue's start-up summary of a death.
var recoveryRe = regexp.MustCompile(`messages were in flight when the previous process died" messages=(\d+) counted_against=(\d+)`)

// deathsInLogs sums, over the start-up summaries in logs, the messages in
// flight at each death and the deaths counted against a message.
func deathsInLogs(logs string) (inFlight, counted int) {
	for _, m := range recoveryRe.FindAllStringSubmatch(logs, -1) {
		n, _ := strconv.Atoi(m[1])
		c, _ := strconv.Atoi(m[2])
		inFlight, counted = inFlight+n, counted+c
	}
	return inFlight, counted
}

// poisonedMessages opens the spool of a stopped hubd and returns the
// messages in the poison queue with their bodies.
func poisonedMessages(t *testing.T, spool string) map[hub.QueueID]string {
	t.Helper()
	s, err := queue.OpenLog(queue.LogOptions{Dir: filepath.Clean(spool)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msgs, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[hub.QueueID]string{}
	for _, m := range msgs {
		if !m.Poisoned {
			continue
		}
		rc, err := s.Open(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[m.ID] = string(b)
	}
	return out
}
