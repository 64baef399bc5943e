package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/ops"
	"hubd/hub/queue"
)

// fillParked queues n messages, from 64 submitters at once, for a next hop
// that cannot be reached, and returns once all of them are parked on its
// queue in Retry, their Message dropped (evict.go) and asleep (dormant.go):
// what a dead destination leaves in the queue. The clock moves a
// microsecond each time it is read, so that messages arrive one after
// another as they do on a real clock, and no retry comes due.
func fillParked(tb testing.TB, n int) (*harness, *countingStore) {
	tb.Helper()
	spool := tb.TempDir()
	ls, err := queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		tb.Fatal(err)
	}
	store := &countingStore{Store: ls}
	h := startStore(tb, config(tb, spool, `quick_retry_interval = "1m"
  max_per_domain_outbound_connections = 1`), &fake{result: ok}, &fake{result: unreachableResult}, tickingClock(), store)
	h.tr.log = slog.New(slog.DiscardHandler)
	parkMany(tb, h, n)
	// Asleep, not only dropped: a delivery's goroutine can still be
	// ending (its DSNs, its reschedule) after its queue counts as idle,
	// and that reschedule reads the message back before it drops it again
	// and puts it to sleep (process.go). A message asleep has no such
	// tail left, so the store reads counted below are the listing's own.
	eventually(tb, "every parked message asleep", func() bool { return h.loaded() == 0 && h.withEntry() == 0 })
	return h, store
}

// parkMany submits n messages from 64 submitters at once for the
// partner next hop, which cannot be reached, and waits until all of them
// are parked on its queue.
func parkMany(tb testing.TB, h *harness, n int) {
	tb.Helper()
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 64 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				env := hub.Envelope{From: "sender@example.com", Connector: "in",
					Recipients: []hub.Recipient{{Address: fmt.Sprintf("u%d@partner.example", i)}}}
				if _, err := h.tr.Submit(context.Background(), env, strings.NewReader("Subject: x\r\n\r\nbody\r\n")); err != nil {
					tb.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	eventually(tb, "every message parked", func() bool {
		_, parked, _, busy := h.partnerQueue()
		return parked == n && busy == 0
	})
}

// tickingClock is a clock that moves a microsecond each time it is read.
func tickingClock() func() time.Time {
	start, n := newFakeClock().Now(), atomic.Int64{}
	return func() time.Time { return start.Add(time.Duration(n.Add(1)) * time.Microsecond) }
}

// partnerName is the name of the partner next hop's queue.
const partnerName = "smtp:partner[[192.0.2.5]:25]"

// TestListingReadsOnlyThePage: with 10,000 messages waiting on a dead next
// hop, none of them in RAM, a listing of 10 reads about 10 of them back
// from the store, and so does the next page, whatever the filter on the
// queue or the state; Queues, a queue's retry and one message's details
// read none or one (issue 11: every listing read the whole queue).
func TestListingReadsOnlyThePage(t *testing.T) {
	const n, limit = 10000, 10
	h, store := fillParked(t, n)
	ctx := context.Background()
	gets := func(what string, max int64, f func()) {
		t.Helper()
		before := store.gets.Load()
		f()
		if got := store.gets.Load() - before; got > max {
			t.Errorf("%s: %d store reads, want at most %d", what, got, max)
		}
	}
	var first, second ops.MessageList
	for _, f := range []ops.MessageFilter{{}, {Queue: partnerName}, {State: ops.StateDeferred}, {From: "sender@example.com"}} {
		f.Limit = limit
		gets(fmt.Sprintf("first page of %+v", f), limit+1, func() {
			var err error
			if first, err = h.tr.Messages(ctx, f); err != nil {
				t.Fatal(err)
			}
		})
		if len(first.Messages) != limit || !first.Truncated || first.Next == "" {
			t.Fatalf("%+v: %d messages, truncated %v, next %q", f, len(first.Messages), first.Truncated, first.Next)
		}
		f.After = first.Next
		gets(fmt.Sprintf("second page of %+v", f), limit+1, func() {
			var err error
			if second, err = h.tr.Messages(ctx, f); err != nil {
				t.Fatal(err)
			}
		})
		if len(second.Messages) != limit || second.Messages[0].ID == first.Messages[limit-1].ID {
			t.Fatalf("%+v: second page %d messages, starting with %s", f, len(second.Messages), second.Messages[0].ID)
		}
		if m := first.Messages[0]; m.State != ops.StateDeferred || !slices.Equal(m.Queues, []string{partnerName}) ||
			!strings.Contains(m.LastError, "connection refused") {
			t.Errorf("a parked message listed as %+v", m)
		}
	}
	// Filters that cannot match what waits read nothing.
	for _, f := range []ops.MessageFilter{{Queue: "unreachable"}, {State: ops.StateHeld}, {State: ops.StatePoisoned},
		{OlderThan: 1 << 40}} {
		gets(fmt.Sprintf("%+v", f), 0, func() {
			if l, err := h.tr.Messages(ctx, f); err != nil || len(l.Messages) != 0 {
				t.Errorf("%+v: %d messages, %v", f, len(l.Messages), err)
			}
		})
	}
	gets("Queues", 0, func() {
		qs, err := h.tr.Queues(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if q := qs[0]; q.Name != partnerName || q.Messages != n || q.Recipients != n || q.State != StateRetry ||
			q.NextRetry.IsZero() || !strings.Contains(q.LastError, "connection refused") {
			t.Errorf("queue %+v", q)
		}
	})
	gets("Message", 1, func() {
		if d, err := h.tr.Message(ctx, first.Messages[3].ID); err != nil || d.ID != first.Messages[3].ID {
			t.Errorf("Message: %+v %v", d.MessageSummary, err)
		}
	})
	// The retry wakes one parked message as the probe, whose pass reads it
	// (and may read it again when it is parked anew): nothing else is read.
	gets("RetryQueue of the queue they are parked on, and its probe", 2, func() {
		if got, err := h.tr.RetryQueue(ctx, partnerName, false); err != nil || got != n {
			t.Errorf("RetryQueue = %d, %v; want %d", got, err, n)
		}
		eventually(t, "the probe failed and parked again", func() bool {
			_, parked, probing, busy := h.partnerQueue()
			return parked == n && !probing && busy == 0
		})
	})
	gets("suspend by name", 0, func() {
		if err := h.tr.SuspendQueue(ctx, partnerName); err != nil {
			t.Error(err)
		}
	})
}

// TestPagingNeitherSkipsNorRepeats: paging through a queue while messages
// arrive and leave lists every message that stays queued throughout once,
// in order, and none twice; the position of a message that left still
// names its place. With a clock that does not move every message has the
// same arrival and the order is the queue ids'; with one that moves, the
// arrival's (and so the ids' again).
func TestPagingNeitherSkipsNorRepeats(t *testing.T) {
	for _, step := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprintf("clock step %v", step), func(t *testing.T) { testPaging(t, step) })
	}
}

func testPaging(t *testing.T, step time.Duration) {
	spool := t.TempDir()
	clock := newFakeClock()
	h := start(t, config(t, spool, `quick_retry_interval = "1h"`), &fake{result: ok}, &fake{result: deferAll}, clock.Now)
	ctx := context.Background()
	submit := func(n int) []hub.QueueID {
		var ids []hub.QueueID
		for i := range n {
			clock.set(h, clock.Now().Add(step))
			ids = append(ids, h.submit("x\r\n", fmt.Sprintf("p%d@partner.example", i)))
		}
		for _, id := range ids {
			eventually(t, "deferred", func() bool { r, _ := h.recipient(id, 0); return r.Status == queue.Deferred })
		}
		return ids
	}
	stay := map[string]bool{}
	for _, id := range submit(40) {
		stay[string(id)] = true
	}
	all := func() []string {
		l, err := h.tr.Messages(ctx, ops.MessageFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range l.Messages {
			ids = append(ids, m.ID)
		}
		return ids
	}
	order := all()
	var listed []string
	f := ops.MessageFilter{Limit: 7}
	for page := 0; ; page++ {
		l, err := h.tr.Messages(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range l.Messages {
			listed = append(listed, m.ID)
		}
		if !l.Truncated {
			break
		}
		if page > 20 {
			t.Fatal("paging does not end")
		}
		// Between pages: the last message listed leaves (the next page
		// starts after its place all the same), so does one not listed
		// yet, and new messages arrive.
		last := l.Messages[len(l.Messages)-1].ID
		if err := h.tr.Delete(ctx, last, false); err != nil {
			t.Fatal(err)
		}
		delete(stay, last)
		cur := slices.Index(order, last)
		if cur+5 < len(order) {
			gone := order[cur+5]
			if stay[gone] {
				if err := h.tr.Delete(ctx, gone, false); err != nil {
					t.Fatal(err)
				}
				delete(stay, gone)
			}
		}
		submit(2)
		f.After = l.Next
	}
	seen := map[string]int{}
	for _, id := range listed {
		seen[id]++
		if seen[id] > 1 {
			t.Errorf("%s listed twice", id)
		}
	}
	for id := range stay {
		if seen[id] != 1 {
			t.Errorf("%s stayed queued throughout but was listed %d times", id, seen[id])
		}
	}
	if !slices.IsSortedFunc(listed, func(a, b string) int { return strings.Compare(a, b) }) {
		t.Errorf("not in order (one arrival time: by queue id): %v", listed)
	}

	// A bare queue id is a position while that message is queued.
	ids := all()
	l, err := h.tr.Messages(ctx, ops.MessageFilter{After: ids[2], Limit: 1})
	if err != nil || len(l.Messages) != 1 || l.Messages[0].ID != ids[3] {
		t.Errorf("after %s: %+v %v, want %s", ids[2], l.Messages, err, ids[3])
	}
	if err := h.tr.Delete(ctx, ids[2], false); err != nil {
		t.Fatal(err)
	}
	if _, err := h.tr.Messages(ctx, ops.MessageFilter{After: ids[2]}); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("after a bare id that left: %v", err)
	}
	if _, err := h.tr.Messages(ctx, ops.MessageFilter{After: ids[2] + "@yesterday"}); err == nil {
		t.Error("a position with a bad time accepted")
	}
}

// BenchmarkListingPageParked: one page of 10 messages (the first, then
// after a position) with 100,000 messages parked on a dead next hop;
// reports the store reads per page.
func BenchmarkListingPageParked(b *testing.B) {
	const n = 100000
	h, store := fillParked(b, n)
	ctx := context.Background()
	mid, err := h.tr.Messages(ctx, ops.MessageFilter{Limit: n / 2})
	if err != nil {
		b.Fatal(err)
	}
	after := ops.PositionOf(mid.Messages[len(mid.Messages)-1]).String()
	for _, c := range []struct {
		name string
		f    ops.MessageFilter
	}{{"first", ops.MessageFilter{Limit: 10}}, {"after", ops.MessageFilter{Limit: 10, After: after}}} {
		b.Run(c.name, func(b *testing.B) {
			before := store.gets.Load()
			b.ResetTimer()
			for range b.N {
				l, err := h.tr.Messages(ctx, c.f)
				if err != nil || len(l.Messages) != 10 {
					b.Fatal(len(l.Messages), err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(store.gets.Load()-before)/float64(b.N), "Gets/op")
		})
	}
	b.Run("Queues", func(b *testing.B) {
		before := store.gets.Load()
		for range b.N {
			if _, err := h.tr.Queues(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(store.gets.Load()-before)/float64(b.N), "Gets/op")
	})
}
