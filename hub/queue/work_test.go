package queue

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hubd/hub"
)

// workT0 is the fake clock's origin: the tests pass now explicitly.
var workT0 = time.Unix(1_700_000_000, 0)

func afterT0(d time.Duration) time.Time { return workT0.Add(d) }

func newIDs(n int) []hub.QueueID {
	ids := make([]hub.QueueID, n)
	for i := range ids {
		ids[i] = hub.NewQueueID(time.Now())
	}
	return ids
}

func checkNext(t *testing.T, what string, w Work, want time.Time) {
	t.Helper()
	if got := w.Next(); !got.Equal(want) {
		t.Errorf("%s: Next() = %v, want %v", what, got, want)
	}
}

func claimedIDs(ls []Lease) []hub.QueueID {
	var ids []hub.QueueID
	for _, l := range ls {
		ids = append(ids, l.ID)
	}
	return ids
}

func checkClaimed(t *testing.T, what string, ls []Lease, want ...hub.QueueID) {
	t.Helper()
	got := claimedIDs(ls)
	if len(got) != len(want) {
		t.Fatalf("%s: claimed %v, want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: claimed %v, want %v", what, got, want)
		}
	}
}

func mustClaimOne(t *testing.T, w Work, now time.Time, ttl time.Duration) Lease {
	t.Helper()
	ls := w.Claim(now, 1, ttl)
	if len(ls) != 1 {
		t.Fatalf("Claim(%v) = %d leases, want 1", now, len(ls))
	}
	return ls[0]
}

func isLost(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, ErrLeaseLost) {
		t.Errorf("%s: err = %v, want ErrLeaseLost", what, err)
	}
}

func TestWorkClaimDueEarliestFirst(t *testing.T) {
	w := NewLocalWork()
	id := newIDs(6)
	// Scheduled out of order; id[4] waits for an event, id[5] is later.
	w.Schedule(id[2], afterT0(3*time.Second))
	w.Schedule(id[0], afterT0(1*time.Second))
	w.Schedule(id[3], afterT0(3500*time.Millisecond))
	w.Schedule(id[1], afterT0(2*time.Second))
	w.Schedule(id[4], time.Time{})
	w.Schedule(id[5], afterT0(time.Hour))

	checkClaimed(t, "before anything is due", w.Claim(afterT0(0), 10, time.Minute))
	checkClaimed(t, "max 2", w.Claim(afterT0(3*time.Second), 2, time.Minute), id[0], id[1])
	checkClaimed(t, "the rest due", w.Claim(afterT0(3*time.Second), 10, time.Minute), id[2])
	checkClaimed(t, "leased ones are not claimed again", w.Claim(afterT0(4*time.Second), 10, time.Minute), id[3])
	checkClaimed(t, "max 0", w.Claim(afterT0(2*time.Hour), 0, time.Minute))
	if w.Len() != 6 {
		t.Errorf("Len() = %d, want 6", w.Len())
	}
}

func TestWorkNext(t *testing.T) {
	w := NewLocalWork()
	checkNext(t, "empty", w, time.Time{})
	id := newIDs(2)
	w.Schedule(id[0], time.Time{})
	checkNext(t, "only waiting for an event", w, time.Time{})
	w.Schedule(id[1], afterT0(time.Hour))
	checkNext(t, "only future due", w, afterT0(time.Hour))
	w.Schedule(id[0], afterT0(time.Minute))
	checkNext(t, "two due", w, afterT0(time.Minute))
	l := mustClaimOne(t, w, afterT0(time.Minute), 3*time.Hour)
	checkNext(t, "one leased: the other's due time", w, afterT0(time.Hour))
	if !l.Until.Equal(afterT0(3*time.Hour + time.Minute)) {
		t.Errorf("Until = %v, want %v", l.Until, afterT0(3*time.Hour+time.Minute))
	}
	l2 := mustClaimOne(t, w, afterT0(time.Hour), 10*time.Minute)
	if l2.ID != id[1] {
		t.Fatalf("claimed %s, want %s", l2.ID, id[1])
	}
	checkNext(t, "both leased: the earlier lease end", w, afterT0(time.Hour+10*time.Minute))
	if err := w.Defer(l, time.Time{}); err != nil {
		t.Fatal(err)
	}
	checkNext(t, "one leased, one waiting", w, l2.Until)
	l3, err := w.Extend(l2, afterT0(time.Hour), 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	checkNext(t, "extended", w, afterT0(3*time.Hour))
	if l3.Rev != l2.Rev || !l3.Until.Equal(afterT0(3*time.Hour)) {
		t.Errorf("Extend = %+v, want Rev %d, Until %v", l3, l2.Rev, afterT0(3*time.Hour))
	}
}

func TestWorkRevisions(t *testing.T) {
	w := NewLocalWork()
	id := newIDs(1)[0]
	w.Schedule(id, afterT0(0))
	l1 := mustClaimOne(t, w, afterT0(0), time.Minute)
	if err := w.Defer(l1, afterT0(time.Second)); err != nil {
		t.Fatal(err)
	}
	l2 := mustClaimOne(t, w, afterT0(time.Second), time.Minute)
	if l2.Rev <= l1.Rev {
		t.Fatalf("Rev %d after %d: not bumped by Claim", l2.Rev, l1.Rev)
	}

	// The old lease ends nothing, and changes nothing.
	stale := l1
	stale.Until = l2.Until
	isLost(t, "Defer with an old Rev", w.Defer(stale, afterT0(time.Hour)))
	isLost(t, "Done with an old Rev", w.Done(stale))
	if _, err := w.Extend(stale, afterT0(time.Second), time.Hour); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Extend with an old Rev: err = %v, want ErrLeaseLost", err)
	}
	checkNext(t, "after stale calls", w, l2.Until)
	if w.Len() != 1 {
		t.Errorf("Len() = %d after stale calls, want 1", w.Len())
	}
	if l, err := w.Extend(l2, afterT0(time.Second), 2*time.Minute); err != nil || !l.Until.Equal(afterT0(time.Second+2*time.Minute)) {
		t.Fatalf("Extend of the current lease = %+v, %v", l, err)
	}

	w.Forget(id)
	isLost(t, "Defer after Forget", w.Defer(l2, afterT0(time.Hour)))
	isLost(t, "Done after Forget", w.Done(l2))
	if _, err := w.Extend(l2, afterT0(time.Second), time.Hour); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("Extend after Forget: err = %v, want ErrLeaseLost", err)
	}

	// Forgotten and scheduled again: the old revisions stay dead.
	w.Schedule(id, afterT0(0))
	l3 := mustClaimOne(t, w, afterT0(time.Minute), time.Minute)
	if l3.Rev == l1.Rev || l3.Rev == l2.Rev || l3.Lapsed != 0 {
		t.Errorf("lease after Forget and Schedule = %+v; earlier revisions %d, %d", l3, l1.Rev, l2.Rev)
	}
	isLost(t, "Done of a lease from before Forget", w.Done(l2))
	if err := w.Done(l3); err != nil {
		t.Fatal(err)
	}
	isLost(t, "Done twice", w.Done(l3))
	isLost(t, "Done of an invalid id", w.Done(Lease{ID: "nope", Rev: l3.Rev}))
}

func TestWorkLapsedLease(t *testing.T) {
	w := NewLocalWork()
	id := newIDs(1)[0]
	w.Schedule(id, afterT0(0))
	old := mustClaimOne(t, w, afterT0(0), 10*time.Second)
	checkClaimed(t, "before Until", w.Claim(afterT0(10*time.Second-1), 10, time.Minute))
	checkNext(t, "leased", w, old.Until)

	l := mustClaimOne(t, w, old.Until, 10*time.Second)
	if l.Lapsed != 1 || l.Rev == old.Rev || !l.Until.Equal(afterT0(20*time.Second)) {
		t.Fatalf("lease after a lapse = %+v, want Lapsed 1, a new Rev (old %d), Until %v", l, old.Rev, afterT0(20*time.Second))
	}
	isLost(t, "the old holder's Defer", w.Defer(old, afterT0(time.Hour)))
	isLost(t, "the old holder's Done", w.Done(old))
	checkNext(t, "the new lease is intact", w, l.Until)

	l = mustClaimOne(t, w, afterT0(time.Minute), 10*time.Second)
	if l.Lapsed != 2 {
		t.Errorf("Lapsed = %d after a second lapse, want 2", l.Lapsed)
	}
	// Leases ended by Defer do not count.
	if err := w.Defer(l, afterT0(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if l = mustClaimOne(t, w, afterT0(2*time.Minute), time.Second); l.Lapsed != 2 {
		t.Errorf("Lapsed = %d after a Defer, want 2", l.Lapsed)
	}
}

// A lease past its Until that no Claim took over is still current: its
// holder was slow, and nobody else worked on the message.
func TestWorkLateHolderBeforeTakeover(t *testing.T) {
	w := NewLocalWork()
	id := newIDs(1)[0]
	w.Schedule(id, afterT0(0))
	l := mustClaimOne(t, w, afterT0(0), time.Second)
	if err := w.Defer(l, afterT0(time.Hour)); err != nil {
		t.Fatalf("Defer after Until, before any Claim: %v", err)
	}
	l = mustClaimOne(t, w, afterT0(time.Hour), time.Second)
	if l.Lapsed != 0 {
		t.Errorf("Lapsed = %d, want 0: the late lease ended by Defer", l.Lapsed)
	}
}

// TestWorkTwoOwnersNeverBothSettle is the property the revisions exist for:
// claimers with leases far shorter than their work, racing on a fake clock
// they advance, take messages over from each other all the time, and still
// every message is settled (Done) exactly once.
func TestWorkTwoOwnersNeverBothSettle(t *testing.T) {
	const claimers, messages, rounds = 8, 200, 20
	var lost, lapsed atomic.Int64
	for range rounds {
		w := NewLocalWork()
		ids := newIDs(messages)
		for _, id := range ids {
			w.Schedule(id, afterT0(0))
		}
		var clock atomic.Int64 // ns since workT0
		var mu sync.Mutex
		done := map[hub.QueueID]int{}
		var wg sync.WaitGroup
		for range claimers {
			wg.Go(func() {
				for w.Len() > 0 {
					ls := w.Claim(afterT0(time.Duration(clock.Add(1))), 4, 3)
					for _, l := range ls {
						if l.Lapsed > 0 {
							lapsed.Add(1)
						}
						clock.Add(rand.Int64N(4)) // the work takes a while
						err := w.Done(l)
						if errors.Is(err, ErrLeaseLost) {
							lost.Add(1)
							continue
						}
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						done[l.ID]++
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		for _, id := range ids {
			if done[id] != 1 {
				t.Fatalf("%s settled %d times, want 1", id, done[id])
			}
		}
	}
	t.Logf("%d leases lost, %d claims of lapsed leases", lost.Load(), lapsed.Load())
	if lost.Load() == 0 || lapsed.Load() == 0 {
		t.Errorf("no lease lapsed (%d lost, %d lapsed claims): the test proves nothing", lost.Load(), lapsed.Load())
	}
}

func TestWorkScheduleWhileLeased(t *testing.T) {
	w := NewLocalWork()
	id := newIDs(1)[0]
	claim := func() Lease {
		t.Helper()
		w.Schedule(id, afterT0(0))
		return mustClaimOne(t, w, afterT0(0), time.Minute)
	}

	l := claim()
	w.Schedule(id, afterT0(time.Hour))
	checkNext(t, "scheduled while leased", w, l.Until)
	if err := w.Defer(l, afterT0(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	checkNext(t, "Defer later than the Scheduled time", w, afterT0(time.Hour))

	l = claim()
	w.Schedule(id, afterT0(3*time.Hour))
	if err := w.Defer(l, afterT0(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	checkNext(t, "Defer earlier than the Scheduled time", w, afterT0(2*time.Hour))

	l = claim()
	w.Schedule(id, afterT0(time.Hour))
	if err := w.Defer(l, time.Time{}); err != nil {
		t.Fatal(err)
	}
	checkNext(t, "Defer to no time after a Schedule", w, afterT0(time.Hour))

	l = claim()
	w.Schedule(id, afterT0(time.Hour))
	w.Schedule(id, time.Time{}) // replaced: nothing kept
	if err := w.Defer(l, time.Time{}); err != nil {
		t.Fatal(err)
	}
	checkNext(t, "Defer to no time after Schedule to none", w, time.Time{})
	if w.Len() != 1 {
		t.Errorf("Len() = %d, want 1: a message not due is still known", w.Len())
	}

	l = claim()
	w.Schedule(id, afterT0(time.Hour))
	if err := w.Done(l); err != nil {
		t.Fatal(err)
	}
	checkNext(t, "Done after a Schedule", w, time.Time{})
	if w.Len() != 0 {
		t.Errorf("Len() = %d after Done, want 0", w.Len())
	}
}

// The time Scheduled during a lease that lapses is consumed by the Claim
// that takes the message over: its new holder says when it is next due.
func TestWorkScheduleDuringLapsedLease(t *testing.T) {
	w := NewLocalWork()
	id := newIDs(1)[0]
	w.Schedule(id, afterT0(0))
	old := mustClaimOne(t, w, afterT0(0), time.Minute)
	w.Schedule(id, afterT0(time.Hour))
	l := mustClaimOne(t, w, old.Until, time.Minute)
	if err := w.Defer(l, time.Time{}); err != nil {
		t.Fatal(err)
	}
	checkNext(t, "after the takeover's Defer", w, time.Time{})
}

func TestWorkScheduleZeroUnleased(t *testing.T) {
	w := NewLocalWork()
	id := newIDs(2)
	w.Schedule(id[0], afterT0(time.Minute))
	w.Schedule(id[1], afterT0(time.Hour))
	w.Schedule(id[0], time.Time{})
	checkNext(t, "the first one waits for an event", w, afterT0(time.Hour))
	checkClaimed(t, "not due", w.Claim(afterT0(2*time.Hour), 10, time.Second), id[1])
	w.Schedule(id[0], afterT0(time.Minute))
	checkNext(t, "scheduled again", w, afterT0(time.Minute))
	checkClaimed(t, "due again", w.Claim(afterT0(2*time.Hour), 10, time.Second), id[0])
	w.Schedule(id[0], afterT0(time.Minute)) // while leased: Next is unchanged
	checkNext(t, "leases", w, afterT0(2*time.Hour+time.Second))
}

func TestWorkReady(t *testing.T) {
	w := NewLocalWork()
	signalled := func() bool {
		select {
		case <-w.Ready():
			return true
		default:
			return false
		}
	}
	id := newIDs(3)
	w.Schedule(id[0], afterT0(time.Hour))
	if !signalled() {
		t.Error("first Schedule: no signal")
	}
	w.Schedule(id[1], afterT0(2*time.Hour))
	if signalled() {
		t.Error("Schedule later than Next: signalled")
	}
	w.Schedule(id[2], time.Time{})
	if signalled() {
		t.Error("Schedule to no time: signalled")
	}
	w.Schedule(id[1], afterT0(time.Minute))
	if !signalled() {
		t.Error("Schedule earlier than Next: no signal")
	}
	w.Schedule(id[1], afterT0(time.Minute))
	w.Schedule(id[2], afterT0(time.Second))
	if !signalled() || signalled() {
		t.Error("two signals: want one buffered")
	}

	l := mustClaimOne(t, w, afterT0(time.Second), time.Hour)
	if signalled() {
		t.Error("Claim: signalled")
	}
	if _, err := w.Extend(l, afterT0(time.Second), time.Second); err != nil {
		t.Fatal(err)
	}
	if !signalled() {
		t.Error("Extend to an earlier end than Next: no signal")
	}
	if err := w.Defer(l, afterT0(time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if !signalled() {
		t.Error("Defer earlier than Next: no signal")
	}
}

func TestWorkLen(t *testing.T) {
	w := NewLocalWork()
	id := newIDs(3)
	w.Schedule(id[0], afterT0(0))
	w.Schedule(id[1], time.Time{})
	w.Schedule(id[2], afterT0(time.Hour))
	w.Schedule(id[2], afterT0(time.Minute)) // rescheduled, not added
	w.Schedule("not-a-queue-id", afterT0(0))
	w.Forget("not-a-queue-id")
	if w.Len() != 3 {
		t.Fatalf("Len() = %d, want 3", w.Len())
	}
	l := mustClaimOne(t, w, afterT0(0), time.Second)
	if w.Len() != 3 {
		t.Errorf("Len() = %d with one leased, want 3", w.Len())
	}
	w.Forget(id[1])
	if err := w.Done(l); err != nil {
		t.Fatal(err)
	}
	w.Forget(id[1])
	if w.Len() != 1 {
		t.Errorf("Len() = %d, want 1", w.Len())
	}
}

// TestWorkTableAgainstMap checks the hash index and the heap of workTable
// against a map through random adds, reschedules and removes, dense
// enough to wrap probe runs and delete from their middles.
func TestWorkTableAgainstMap(t *testing.T) {
	tb := newWorkTable()
	model := map[Key]int64{}
	var keys []Key
	for i := range 20000 {
		switch op := rand.IntN(10); {
		case op < 5 || len(keys) == 0:
			k := keyOf(hub.NewQueueID(time.Now()))
			slot := tb.add(k)
			tb.items[slot].due = rand.Int64N(1000) // may be 0: not in the heap
			tb.reorder(slot)
			model[k] = tb.items[slot].due
			keys = append(keys, k)
		case op < 7:
			k := keys[rand.IntN(len(keys))]
			slot := tb.lookup(k)
			tb.items[slot].due = rand.Int64N(1000)
			tb.reorder(slot)
			model[k] = tb.items[slot].due
		default:
			j := rand.IntN(len(keys))
			k := keys[j]
			tb.remove(tb.lookup(k))
			delete(model, k)
			keys[j] = keys[len(keys)-1]
			keys = keys[:len(keys)-1]
		}
		if i%1000 != 0 {
			continue
		}
		if tb.count != len(model) {
			t.Fatalf("count %d, want %d", tb.count, len(model))
		}
		inHeap := 0
		for k, due := range model {
			slot := tb.lookup(k)
			if slot < 0 || tb.items[slot].key != k || tb.items[slot].due != due {
				t.Fatalf("lookup lost %x", k)
			}
			if due != 0 {
				inHeap++
				if tb.order[tb.items[slot].pos] != uint32(slot) {
					t.Fatalf("pos of %x is wrong", k)
				}
			}
		}
		if len(tb.order) != inHeap {
			t.Fatalf("heap holds %d, want %d", len(tb.order), inHeap)
		}
		for p := range tb.order {
			if tb.orderAt[p] != tb.items[tb.order[p]].at() {
				t.Fatalf("the heap's time at %d is not its item's", p)
			}
			if p > 0 && tb.orderAt[(p-1)/2] > tb.orderAt[p] {
				t.Fatalf("heap order broken at %d", p)
			}
		}
		if tb.lookup(keyOf(hub.NewQueueID(time.Now()))) >= 0 {
			t.Fatal("lookup found a key never added")
		}
	}
}

// TestWorkDue: Due is the time a message is next due, also the one
// Scheduled while it is leased; zero when not due, claimed, or unknown.
func TestWorkDue(t *testing.T) {
	w := NewLocalWork()
	id := newIDs(1)[0]
	check := func(what string, want time.Time) {
		t.Helper()
		if got := w.Due(id); !got.Equal(want) {
			t.Errorf("%s: Due = %v, want %v", what, got, want)
		}
	}
	check("unknown", time.Time{})
	w.Schedule(id, afterT0(time.Minute))
	check("scheduled", afterT0(time.Minute))
	w.Schedule(id, time.Time{})
	check("not due", time.Time{})
	w.Schedule(id, afterT0(0))
	l := mustClaimOne(t, w, afterT0(0), time.Minute)
	check("claimed (the Claim consumes the due time)", time.Time{})
	w.Schedule(id, afterT0(time.Hour))
	check("scheduled while leased", afterT0(time.Hour))
	if err := w.Defer(l, afterT0(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	check("deferred: the earlier time", afterT0(time.Hour))
	w.Forget(id)
	check("forgotten", time.Time{})
	if got := w.Due("not-an-id"); !got.IsZero() {
		t.Errorf("Due of an invalid id = %v", got)
	}
}

// TestWorkNote: a note stays with its message through leases and
// reschedules, and goes with it.
func TestWorkNote(t *testing.T) {
	w := NewLocalWork()
	ids := newIDs(2)
	id := ids[0]
	check := func(what string, want uint64, wantKnown bool) {
		t.Helper()
		if got, known := w.Note(id); got != want || known != wantKnown {
			t.Errorf("%s: Note = %#x, %v; want %#x, %v", what, got, known, want, wantKnown)
		}
	}
	w.SetNote(id, 7)
	check("unknown (SetNote ignored)", 0, false)
	w.Schedule(id, time.Time{})
	check("known, not due", 0, true)
	w.SetNote(id, 1<<63|42)
	w.Schedule(ids[1], afterT0(0))
	w.SetNote(ids[1], 9)
	check("set", 1<<63|42, true)
	w.Schedule(id, afterT0(0))
	l := mustClaimOne(t, w, afterT0(time.Second), time.Minute)
	if l.ID != id && l.ID != ids[1] {
		t.Fatalf("claimed %s", l.ID)
	}
	check("claimed or not", 1<<63|42, true)
	w.Forget(ids[1])
	check("after the other one is forgotten", 1<<63|42, true)
	w.Forget(id)
	check("forgotten", 0, false)
	w.Schedule(id, time.Time{})
	check("scheduled anew", 0, true)
	if _, known := w.Note("not-an-id"); known {
		t.Error("an invalid id is known")
	}
}

// TestKeyOf: an ID and its key round-trip; an invalid ID has none.
func TestKeyOf(t *testing.T) {
	for _, id := range newIDs(100) {
		k, ok := KeyOf(id)
		if !ok || k.ID() != id {
			t.Fatalf("KeyOf(%s) = %v, %v; ID() = %s", id, k, ok, k.ID())
		}
	}
	if _, ok := KeyOf("../etc/passwd"); ok {
		t.Error("KeyOf accepts an invalid id")
	}
}
