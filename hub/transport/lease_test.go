package transport

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/queue"
)

// countingWork counts the leases a Work hands out and how they end.
type countingWork struct {
	*queue.LocalWork
	mu       sync.Mutex
	claimed  map[uint64]bool // revisions claimed and not ended
	claims   int
	deferred int
	lost     int // Defer or Done of a lease that was not current
}

func newCountingWork() *countingWork {
	return &countingWork{LocalWork: queue.NewLocalWork(), claimed: map[uint64]bool{}}
}

func (w *countingWork) Claim(now time.Time, max int, ttl time.Duration) []queue.Lease {
	ls := w.LocalWork.Claim(now, max, ttl)
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range ls {
		w.claims++
		w.claimed[l.Rev] = true
	}
	return ls
}

func (w *countingWork) Defer(l queue.Lease, until time.Time) error {
	err := w.LocalWork.Defer(l, until)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.lost++
	} else {
		w.deferred++
		delete(w.claimed, l.Rev)
	}
	return err
}

func (w *countingWork) open() (claims, deferred, lost, open int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.claims, w.deferred, w.lost, len(w.claimed)
}

// TestPassesTakeLeases: every pass runs under a lease from the work-lease
// seam (schedule.go) and ends it exactly once; once the queue is empty
// the engine knows no message.
func TestPassesTakeLeases(t *testing.T) {
	spool := t.TempDir()
	work := newCountingWork()
	h := startWith(t, config(t, spool, ""), &fake{result: ok}, &fake{result: ok}, Options{Work: work})
	var ids []hub.QueueID
	for i := range 200 {
		rcpt := "alice@example.com"
		if i%2 == 1 {
			rcpt = fmt.Sprintf("u%d@partner.example", i)
		}
		ids = append(ids, h.submit("x\r\n", rcpt))
	}
	h.waitIdle()
	h.waitGone(ids)
	claims, deferred, lost, open := work.open()
	if claims < len(ids) || deferred != claims || lost != 0 || open != 0 {
		t.Errorf("%d leases claimed, %d ended by Defer, %d ends refused, %d still open; want at least %d claimed, each ended once",
			claims, deferred, lost, open, len(ids))
	}
	if n := work.Len(); n != 0 {
		t.Errorf("the engine still knows %d messages after the queue emptied", n)
	}
	if strings.Contains(h.logs.String(), "cannot end the lease") {
		t.Errorf("a lease could not be ended:\n%s", h.logs.String())
	}
}

// TestPassOutlastsItsLease: a pass that runs past its lease (here: stuck
// in the store's MarkActive) is not started a second time when the lapsed
// lease is claimed again; the running pass takes the new lease over, says
// so in the log, ends it, and the message is delivered once.
func TestPassOutlastsItsLease(t *testing.T) {
	spool := t.TempDir()
	ls, err := queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		t.Fatal(err)
	}
	marks := &gatedStore{Store: ls, gate: make(chan struct{})}
	clock := newFakeClock()
	work := newCountingWork()
	local := &fake{result: ok}
	h := startWith(t, config(t, spool, ""), local, &fake{result: ok}, Options{Clock: clock.Now, Store: marks, Work: work})
	var gateOnce sync.Once
	openGate := func() { gateOnce.Do(func() { close(marks.gate) }) }
	t.Cleanup(openGate) // before the transport's Close, should the test fail first
	id := h.submit("x\r\n", "alice@example.com")
	eventually(t, "the pass stuck in MarkActive", func() bool { return marks.waiting.Load() == 1 })
	clock.set(h, clock.Now().Add(passLease+time.Second))
	eventually(t, "the lapsed lease claimed again", func() bool {
		claims, _, _, _ := work.open()
		return claims == 2
	})
	// Claim has returned the lease; dispatch logs the take-over just after.
	eventually(t, "the take-over of the lapsed lease in the log", func() bool {
		return strings.Contains(h.logs.String(), "outlasted its lease")
	})
	openGate()
	h.waitIdle()
	h.waitGone([]hub.QueueID{id})
	if n := len(local.seen()); n != 1 {
		t.Errorf("%d deliveries, want 1: a lapsed lease must not start a second pass", n)
	}
	if claims, deferred, lost, open := work.open(); deferred != 1 || lost != 0 || open != 1 {
		// The first lease was taken over by the second: only that one is
		// ended (open counts the first, superseded).
		t.Errorf("%d claimed, %d ended, %d refused, %d open; want 2, 1, 0, 1", claims, deferred, lost, open)
	}
	if strings.Contains(h.logs.String(), "cannot end the lease") {
		t.Errorf("the pass could not end the lease it took over:\n%s", h.logs.String())
	}
}
