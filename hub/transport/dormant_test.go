package transport

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/ops"
	"hubd/hub/queue"
)

// withEntry counts the messages that have an entry (the others sleep:
// dormant.go).
func (h *harness) withEntry() int {
	h.tr.mu.Lock()
	defer h.tr.mu.Unlock()
	return len(h.tr.msgs)
}

// countDelivered makes f answer with result and count in to, per
// address, the recipients it answered Delivered.
func countDelivered(f *fake, to *sync.Map, result func(k int, r delivery.Recipient) delivery.Result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.result = func(k int, r delivery.Recipient) delivery.Result {
		res := result(k, r)
		if res.Status == delivery.Delivered {
			v, _ := to.LoadOrStore(r.Address, new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
		}
		return res
	}
}

// count is what countDelivered counted for addr.
func count(to *sync.Map, addr string) int64 {
	if v, ok := to.Load(addr); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// startAsleep is startParking (its remote up when up is set) and waits
// until every parked message is asleep.
func startAsleep(t *testing.T, waiting int, extraHub string) (*harness, *fakeClock, []hub.QueueID, *atomic.Bool) {
	t.Helper()
	var up atomic.Bool
	var calls atomic.Int64
	h, _, clock, _, ids := startParking(t, waiting, extraHub, &up, &calls)
	eventually(t, "every parked message asleep", func() bool { return h.withEntry() == 0 })
	return h, clock, ids, &up
}

// TestWaitingMessagesSleep: messages parked on a dead next hop keep no
// entry; the operator's views see them without waking them, the actions
// on one wake only that one, and when the next hop is back every one is
// delivered once.
func TestWaitingMessagesSleep(t *testing.T) {
	const waiting = 40
	h, _, ids, up := startAsleep(t, waiting, "")
	for _, id := range ids {
		h.tr.mu.Lock()
		note, asleep := h.tr.asleepLocked(id)
		q := h.tr.parkedQueueLocked(note)
		h.tr.mu.Unlock()
		if !asleep || q == nil || q.hop.String() != partnerName {
			t.Fatalf("%s: asleep %v on %v, want asleep on %s", id, asleep, q, partnerName)
		}
	}
	if s := h.tr.Stats(); s.Messages != waiting+1 || s.PendingRecipients != waiting+1 {
		t.Errorf("Stats %+v, want %d messages and recipients", s, waiting+1)
	}

	// Views: nothing wakes.
	list, err := h.tr.Messages(t.Context(), ops.MessageFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Messages) != waiting+1 {
		t.Fatalf("listed %d, want %d", len(list.Messages), waiting+1)
	}
	for i, m := range list.Messages {
		if m.ID != string(ids[i]) || m.State != ops.StateDeferred || len(m.Queues) != 1 || m.Queues[0] != partnerName {
			t.Errorf("listed %+v, want %s deferred in %s", m, ids[i], partnerName)
		}
	}
	qs, err := h.tr.Queues(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, q := range qs {
		if q.Name == partnerName {
			found = true
			if q.Messages != waiting+1 || q.Recipients != waiting+1 || q.State != StateRetry {
				t.Errorf("queue %+v, want %d messages in Retry", q, waiting+1)
			}
		}
	}
	if !found {
		t.Errorf("no queue %s in %+v", partnerName, qs)
	}
	d, err := h.tr.Message(t.Context(), string(ids[3]))
	if err != nil || d.Recipients[0].Queue != partnerName || d.Recipients[0].Status != string(queue.Deferred) {
		t.Errorf("Message: %+v, %v", d, err)
	}
	if !h.tr.Queued(ids[4]) || h.tr.Queued(hub.NewQueueID(h.tr.clock())) {
		t.Error("Queued does not tell an asleep message from none")
	}
	if n := h.withEntry(); n != 0 {
		t.Errorf("%d messages woken by listing, Queues, Message and Queued, want 0", n)
	}

	// Actions: each wakes its message only.
	if err := h.tr.Hold(t.Context(), string(ids[5])); err != nil {
		t.Fatal(err)
	}
	if err := h.tr.Delete(t.Context(), string(ids[6]), false); err != nil {
		t.Fatal(err)
	}
	if n := h.withEntry(); n != 1 {
		t.Errorf("%d messages with an entry after a hold and a delete, want 1 (the held one)", n)
	}
	if _, queued := h.recipient(ids[6], 0); queued {
		t.Error("deleted message still queued")
	}
	if s := h.tr.Stats(); s.Messages != waiting || s.Held != 1 {
		t.Errorf("Stats %+v, want %d messages, 1 held", s, waiting)
	}

	// The next hop is back: every message but the held one is delivered
	// once; then the released one too.
	var deliveredTo sync.Map
	countDelivered(h.smtp, &deliveredTo, func(k int, r delivery.Recipient) delivery.Result { return ok(k, r) })
	up.Store(true)
	if _, err := h.tr.RetryQueue(t.Context(), partnerName, false); err != nil {
		t.Fatal(err)
	}
	rest := append(append([]hub.QueueID{}, ids[:5]...), ids[7:]...)
	h.waitGone(rest)
	if err := h.tr.Release(t.Context(), string(ids[5])); err != nil {
		t.Fatal(err)
	}
	h.waitGone(ids[5:6])
	h.waitIdle()
	for i := range waiting + 1 {
		addr, want := fmt.Sprintf("u%d@partner.example", i), int64(1)
		if i == 6 {
			want = 0
		}
		if got := count(&deliveredTo, addr); got != want {
			t.Errorf("%s delivered %d times, want %d", addr, got, want)
		}
	}
	if s := h.tr.Stats(); s.Messages != 0 {
		t.Errorf("Stats %+v after the drain, want empty", s)
	}
}

// TestSleepRacesOperators: while messages keep falling asleep and waking
// (a next hop that fails every other attempt, operators retrying queues
// and messages, holding and releasing), every message ends delivered
// exactly once.
func TestSleepRacesOperators(t *testing.T) {
	const n = 60
	// The clock moves 20 minutes at a time below: the messages must not
	// expire meanwhile (that is not what is tested).
	h, clock, ids, _ := startAsleep(t, n-1, "message_expiration = \"3650d\"\n")
	var deliveredTo sync.Map
	countDelivered(h.smtp, &deliveredTo, func(k int, r delivery.Recipient) delivery.Result {
		switch {
		case k%2 == 0:
			return ok(k, r)
		case k%3 == 0:
			return delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.3.0", Text: "try later"}
		}
		return unreachableResult(k, r)
	})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				id := string(ids[rnd.IntN(len(ids))])
				switch rnd.IntN(5) {
				case 0:
					h.tr.RetryQueue(t.Context(), partnerName, rnd.IntN(2) == 0)
				case 1:
					h.tr.Retry(t.Context(), id)
				case 2:
					if h.tr.Hold(t.Context(), id) == nil {
						h.tr.Release(t.Context(), id)
					}
				case 3:
					h.tr.Messages(t.Context(), ops.MessageFilter{Queue: partnerName, Limit: 10})
				default:
					clock.set(h, clock.Now().Add(20*time.Minute)) // retries and probes come due
				}
			}
		})
	}
	eventually(t, "every message delivered", func() bool {
		for _, id := range ids {
			if _, queued := h.recipient(id, 0); queued {
				return false
			}
		}
		return true
	})
	close(stop)
	wg.Wait()
	h.waitIdle()
	for i := range n {
		if addr := fmt.Sprintf("u%d@partner.example", i); count(&deliveredTo, addr) != 1 {
			t.Errorf("%s delivered %d times, want 1", addr, count(&deliveredTo, addr))
			for _, l := range strings.Split(h.logs.String(), "\n") {
				if strings.Contains(l, addr) || strings.Contains(l, string(ids[i])) {
					t.Log(l)
				}
			}
		}
	}
	if s := h.tr.Stats(); s.Messages != 0 || s.PendingRecipients != 0 {
		t.Errorf("Stats %+v, want empty", s)
	}
	if strings.Contains(h.logs.String(), "level=ERROR") {
		t.Errorf("errors logged:\n%s", h.logs.String())
	}
}

// TestProbeRoutedElsewhereWakesAsleep: when the probe of a next hop in
// Retry is routed elsewhere (a reload moved the domain to another smart
// host), every message asleep on its queue is woken without getting its
// entry back at once, and each follows the new route once.
func TestProbeRoutedElsewhereWakesAsleep(t *testing.T) {
	const waiting = 40
	h, _, ids, _ := startAsleep(t, waiting, "")
	var deliveredTo sync.Map
	countDelivered(h.smtp, &deliveredTo, func(k int, r delivery.Recipient) delivery.Result { return ok(k, r) })
	src := strings.Replace(configSource(h.tr.cfg.Load().Hub.SpoolDir), "#HUB", `quick_retry_interval = "1m"
  transient_retry_interval = "5m"
  retry_interval = "15m"
  max_per_domain_outbound_connections = 1`, 1)
	h.tr.Reload(loadConfig(t, strings.Replace(src, "[192.0.2.5]:25", "[192.0.2.6]:25", 1)))
	if _, err := h.tr.RetryQueue(t.Context(), partnerName, false); err != nil {
		t.Fatal(err)
	}
	h.waitGone(ids)
	h.waitIdle()
	if !strings.Contains(h.logs.String(), "probe was not routed to it") {
		t.Error("the probe was routed to the old next hop")
	}
	for i := range waiting + 1 {
		if addr := fmt.Sprintf("u%d@partner.example", i); count(&deliveredTo, addr) != 1 {
			t.Errorf("%s delivered %d times, want 1", addr, count(&deliveredTo, addr))
		}
	}
}

// TestDetachedEntryUnparksOnce: an operator's action that found a
// message's entry before it fell asleep takes the message off its parked
// list once, not once for the detached entry and again for the woken one
// (the count went to -1 in TestSleepRacesOperators, and the queue's drain
// then stalled).
func TestDetachedEntryUnparksOnce(t *testing.T) {
	const waiting = 10
	h, _, ids, _ := startAsleep(t, waiting, "")
	parkedOn := func() int {
		h.tr.mu.Lock()
		defer h.tr.mu.Unlock()
		n := 0
		for _, q := range h.tr.queues {
			n += q.nParked
		}
		return n
	}
	before := parkedOn()
	old := h.tr.lookup(ids[3]) // wakes it: an entry, still parked
	old.mu.Lock()
	h.tr.mu.Lock()
	h.tr.sleepLocked(old) // and asleep again: old is detached
	asleep := old.asleep
	h.tr.mu.Unlock()
	old.mu.Unlock()
	if !asleep {
		t.Fatal("the woken message did not fall asleep again")
	}
	h.tr.makeDue(old, true, func(queue.RecipientState) bool { return true })
	// Due now, its pass defers it again without dialling (the queue is
	// still in Retry) and parks it again: at once, or a moment later on a
	// busy machine. Taken off twice, the count would stay one short of
	// the messages really parked.
	if got := parkedOn(); got != before-1 && got != before {
		t.Errorf("%d messages parked after one was taken off, want %d (or %d once parked again)", got, before-1, before)
	}
	eventually(t, "the woken message parked again, the count matching the messages parked", func() bool {
		h.tr.mu.Lock()
		defer h.tr.mu.Unlock()
		count, really := 0, 0
		for _, q := range h.tr.queues {
			count += q.nParked
			for _, id := range ids {
				if h.tr.parkedHereLocked(id, q) {
					really++
				}
			}
		}
		return count == really && count == before
	})
}
