package transport

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/dsn"
	"hubd/hub/queue"
	"hubd/policy"
)

// TestMetricsOffCostNothing: without a MeterProvider there are no
// instruments, and every measurement is a nil check. The depth tracker is
// kept either way: Stats reads it (O(1) where walking the queue would be
// O(queue), issue 11).
func TestMetricsOffCostNothing(t *testing.T) {
	cfg := &policy.Config{Hub: policy.Hub{SpoolDir: t.TempDir()}}
	tr, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.meters != nil || tr.depth == nil {
		t.Fatal("metrics on without a MeterProvider, or no depth for Stats")
	}
	on, err := New(cfg, Options{MeterProvider: noop.NewMeterProvider()})
	if err != nil {
		t.Fatal(err)
	}
	if on.meters == nil || on.depth == nil {
		t.Fatal("metrics off with a MeterProvider")
	}
	e := &entry{msg: &queue.Message{State: queue.State{Recipients: []queue.RecipientState{{Status: queue.Queued}}}},
		inflight: map[int]bool{}}
	results := []delivery.Result{{Status: delivery.Delivered}}
	allocs := testing.AllocsPerRun(100, func() {
		tr.meters.attempted(delivery.NextHop{Kind: delivery.KindMaildir}, time.Second, e.msg, results, time.Now())
		tr.meters.dsnQueued(dsn.Failed, e.msg, []int{0})
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run with metrics off", allocs)
	}
	tr.depth.update(e)
	if st := tr.Stats(); st.Messages != 1 || st.PendingRecipients != 1 {
		t.Errorf("Stats = %+v, want 1 message, 1 pending recipient", st)
	}
	tr.depth.forget(e)
	if st := tr.Stats(); st != (Stats{}) {
		t.Errorf("Stats after forget = %+v", st)
	}
}

// TestDepthTracker: shares move between queues and states as a message
// changes, leave with it, and the oldest message skips poisoned ones and
// copes with arrivals recorded out of order.
func TestDepthTracker(t *testing.T) {
	d := newDepthTracker()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	msg := func(arrived time.Time, rs ...queue.RecipientState) *entry {
		return newEntry(&queue.Message{ID: hub.NewQueueID(arrived), Arrived: arrived, State: queue.State{Recipients: rs}})
	}
	a := msg(t0.Add(2*time.Second), queue.RecipientState{Status: queue.Queued}, queue.RecipientState{Status: queue.Queued})
	b := msg(t0.Add(time.Second), queue.RecipientState{Status: queue.Queued})
	d.update(a)
	d.update(b) // arrived earlier, recorded later
	check := func(what string, want map[depthKey]int64, messages, held, poisoned int64) {
		t.Helper()
		s := d.snapshot()
		if len(s.rcpts) != len(want) || s.messages != messages || s.held != held || s.poisoned != poisoned {
			t.Fatalf("%s: %+v, want %v messages=%d held=%d poisoned=%d", what, s, want, messages, held, poisoned)
		}
		for k, n := range want {
			if s.rcpts[k] != n {
				t.Fatalf("%s: %v = %d, want %d (%+v)", what, k, s.rcpts[k], n, s)
			}
		}
	}
	check("new", map[depthKey]int64{{submissionQueue, depthQueued}: 3}, 2, 0, 0)
	if at, ok := d.oldest(); !ok || !at.Equal(b.msg.Arrived) {
		t.Fatalf("oldest %v %v, want b's arrival", at, ok)
	}

	// a is categorized and routed: one recipient handed to a queue, the
	// other deferred there; then it is held.
	a.msg.Expanded = true
	a.msg.Recipients[0].NextHop = "maildir"
	a.inflight, a.inflightHop = map[int]bool{0: true}, map[int]string{0: "maildir"}
	a.msg.Recipients[1] = queue.RecipientState{Status: queue.Deferred, NextHop: "maildir"}
	d.update(a)
	check("routed", map[depthKey]int64{{submissionQueue, depthQueued}: 1, {"maildir", depthReady}: 1, {"maildir", depthDeferred}: 1}, 2, 0, 0)
	a.msg.Recipients[0].Status = queue.Delivered
	delete(a.inflight, 0)
	a.msg.Held = true
	d.update(a)
	check("held", map[depthKey]int64{{submissionQueue, depthQueued}: 1, {"maildir", depthHeld}: 1}, 2, 1, 0)

	// b is poisoned: it counts in the poison queue, and the oldest is a.
	b.msg.Poisoned = true
	d.update(b)
	check("poisoned", map[depthKey]int64{{poisonQueue, depthPoisoned}: 1, {"maildir", depthHeld}: 1}, 2, 1, 1)
	if at, ok := d.oldest(); !ok || !at.Equal(a.msg.Arrived) {
		t.Fatalf("oldest %v %v, want a's arrival (b is poisoned)", at, ok)
	}

	d.forget(a)
	d.update(a) // a late update of a message that left changes nothing
	check("a left", map[depthKey]int64{{poisonQueue, depthPoisoned}: 1}, 1, 0, 1)
	if _, ok := d.oldest(); ok {
		t.Fatal("an oldest message when only a poisoned one is left")
	}
	d.forget(b)
	check("empty", map[depthKey]int64{}, 0, 0, 0)
}
