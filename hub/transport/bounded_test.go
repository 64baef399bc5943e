package transport

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/queue"
)

// TestGoroutinesBoundedByConfiguration: a backlog of due messages whose
// deliveries cannot finish costs no goroutine per message, and only a
// bounded part of it is claimed at once. Passes run on
// passWorkers workers; deliveries start only with one of
// max_outbound_connections slots, across all next hops (issue 11: with
// 20,000 due messages the transport used to peak at 6,306 goroutines).
func TestGoroutinesBoundedByConfiguration(t *testing.T) {
	const backlog = 1500
	spool := t.TempDir()
	block := make(chan struct{})
	local := &fake{result: ok, block: block}
	remote := &fake{result: ok, block: block}
	ds, err := queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		t.Fatal(err)
	}
	marks := &gatedStore{Store: ds, gate: make(chan struct{})}
	before := runtime.NumGoroutine()
	h := startStore(t, config(t, spool, `max_outbound_connections = 3
  max_per_domain_outbound_connections = 2`), local, remote, nil, marks)
	// Opened before the transport is closed should the test fail first.
	var gateOnce, blockOnce sync.Once
	openGate := func() { gateOnce.Do(func() { close(marks.gate) }) }
	unblock := func() { blockOnce.Do(func() { close(block) }) }
	t.Cleanup(func() { openGate(); unblock() })
	for i := range backlog {
		rcpt := "alice@example.com"
		if i%2 == 1 {
			rcpt = fmt.Sprintf("u%d@partner.example", i)
		}
		h.submit("x\r\n", rcpt)
	}
	// Every pass that starts now waits in MarkActive: the passes running
	// at once are as many as there are workers, however many are due.
	eventually(t, "workers busy", func() bool { return marks.waiting.Load() == passWorkers })
	if peak := runtime.NumGoroutine() - before; peak > 1+passWorkers+20 {
		t.Errorf("%d goroutines with %d messages due, want at most %d", peak, backlog, 1+passWorkers+20)
	}
	// Nor are all of them claimed: the passes running and maxQueuedPasses
	// waiting for a worker; the rest waits in the engine (schedule.go).
	claimed := func() (n int) {
		h.tr.mu.Lock()
		defer h.tr.mu.Unlock()
		for _, e := range h.tr.msgs {
			if e.busy {
				n++
			}
		}
		return n
	}
	eventually(t, "passes claimed up to the bound", func() bool { return claimed() == passWorkers+maxQueuedPasses })
	h.tr.sched.poke()
	if n := claimed(); n != passWorkers+maxQueuedPasses {
		t.Errorf("%d messages claimed for passes with the workers stuck, want %d", n, passWorkers+maxQueuedPasses)
	}
	openGate()
	// Wait until every pass has run and the backlog sits in the delivery
	// queues, up to their backlog, and parked on them beyond it
	// (backlog.go): what would have been a goroutine per message has had
	// every chance to appear.
	eventually(t, "backlog routed", func() bool {
		h.tr.mu.Lock()
		defer h.tr.mu.Unlock()
		waiting, active := 0, 0
		for _, q := range h.tr.queues {
			waiting += len(q.items) + q.active + q.nParked
			active += q.active
		}
		return waiting == backlog && active == 3
	})
	h.tr.mu.Lock()
	for _, q := range h.tr.queues {
		if len(q.items) > backlogCap(2) || q.nParked == 0 {
			t.Errorf("queue %s holds %d items with %d parked, want at most %d, the rest parked", q.hop, len(q.items), q.nParked, backlogCap(2))
		}
	}
	h.tr.mu.Unlock()
	peak := runtime.NumGoroutine() - before
	// The scheduler, the workers, 3 deliveries, and slack for the test's
	// and the runtime's own.
	if limit := 1 + passWorkers + 3 + 20; peak > limit {
		t.Errorf("%d goroutines with %d messages backlogged, want at most %d", peak, backlog, limit)
	}
	unblock()
	h.waitIdle()
	if n := len(local.seen()) + len(remote.seen()); n != backlog {
		t.Errorf("%d deliveries, want %d", n, backlog)
	}
}

// countingStore counts a store's durable state writes (Update), its
// active marks (MarkActive: one per pass and one per delivery) and its
// reads of single messages (Get: a message read back, evict.go).
type countingStore struct {
	queue.Store
	updates atomic.Int64
	marks   atomic.Int64
	gets    atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, id hub.QueueID) (*queue.Message, error) {
	s.gets.Add(1)
	return s.Store.Get(ctx, id)
}

func (s *countingStore) Update(ctx context.Context, id hub.QueueID, st queue.State) error {
	s.updates.Add(1)
	return s.Store.Update(ctx, id, st)
}

func (s *countingStore) MarkActive(id hub.QueueID, m queue.Mark) error {
	s.marks.Add(1)
	return s.Store.MarkActive(id, m)
}

// TestRetryCostsNoWritePerWaitingMessage: when a next hop turns out to be
// unreachable, the work waiting for it is deferred without a write per
// message (issue 11: 20,000 waiting used to cost 20,000 file and directory
// fsyncs per retry cycle); only the attempt that failed is persisted.
func TestRetryCostsNoWritePerWaitingMessage(t *testing.T) {
	const waiting = 200
	spool := t.TempDir()
	ds, err := queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Store: ds}
	clock := newFakeClock()
	gate := make(chan struct{})
	var calls atomic.Int64
	remote := &fake{result: func(n int, r delivery.Recipient) delivery.Result {
		if calls.Add(1) == 1 {
			<-gate // the first attempt waits until the backlog is queued behind it
		}
		return delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.4.1", Text: "connection refused", Connection: true}
	}}
	h := startStore(t, config(t, spool, `quick_retry_interval = "1m"
  max_per_domain_outbound_connections = 1`), &fake{result: ok}, remote, clock.Now, store)
	var ids []hub.QueueID
	for i := range waiting + 1 {
		ids = append(ids, h.submit("x\r\n", fmt.Sprintf("u%d@partner.example", i)))
	}
	eventually(t, "backlog queued behind the first attempt", func() bool {
		for _, q := range h.tr.DeliveryQueues() {
			if strings.HasPrefix(q.Name, "smtp:") && q.Items == waiting {
				return true
			}
		}
		return false
	})
	before := store.updates.Load()
	close(gate)
	for _, id := range ids {
		eventually(t, "deferred", func() bool {
			r, _ := h.recipient(id, 0)
			return r.Status == queue.Deferred
		})
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("next hop dialled %d times, want 1", n)
	}
	if n := store.updates.Load() - before; n > 1 {
		t.Errorf("%d store updates for a next hop going into Retry with %d waiting, want at most 1 (the failed attempt)", n, waiting)
	}
	r, _ := h.recipient(ids[waiting], 0)
	if !strings.Contains(r.LastReply.Text, "Next hop in retry") || r.NextAttempt.Before(clock.Now().Add(time.Minute)) {
		t.Errorf("waiting recipient: %+v", r)
	}
}

// gatedStore holds every MarkActive until gate is closed.
type gatedStore struct {
	queue.Store
	gate    chan struct{}
	waiting atomic.Int64
}

func (s *gatedStore) MarkActive(id hub.QueueID, m queue.Mark) error {
	s.waiting.Add(1)
	<-s.gate
	return s.Store.MarkActive(id, m)
}

// TestArrivalListForgetsDeliveredMail: the depth tracker's arrival list
// (the oldest message's age, the listing order) drops the messages that
// left, also when nothing scrapes the metrics: memory is bounded by what
// is queued, not by what ever passed through.
func TestArrivalListForgetsDeliveredMail(t *testing.T) {
	spool := t.TempDir()
	h := start(t, config(t, spool, ""), &fake{result: ok}, &fake{result: ok}, nil)
	const n = 600
	for i := range n {
		h.submit("x\r\n", fmt.Sprintf("u%d@partner.example", i))
	}
	h.waitIdle()
	h.tr.depth.mu.Lock()
	kept := len(h.tr.depth.arrivals)
	h.tr.depth.mu.Unlock()
	if kept > n/2+64 {
		t.Errorf("the arrival list keeps %d entries after %d messages were delivered, want at most %d", kept, n, n/2+64)
	}
}

// SetHop and Hops pass through to the store when it keeps next-hop state.
func (s *countingStore) SetHop(ctx context.Context, h queue.HopState) error {
	if hs, ok := s.Store.(queue.HopStore); ok {
		return hs.SetHop(ctx, h)
	}
	return nil
}

func (s *countingStore) Hops() []queue.HopState {
	if hs, ok := s.Store.(queue.HopStore); ok {
		return hs.Hops()
	}
	return nil
}

// removeGatedStore holds every Remove until gate is closed: the store's
// commits stalled (a compaction, a slow disk).
type removeGatedStore struct {
	queue.Store
	gate    chan struct{}
	waiting atomic.Int64
}

func (s *removeGatedStore) Remove(id hub.QueueID) error {
	s.waiting.Add(1)
	<-s.gate
	return s.Store.Remove(id)
}

// TestSettlingDeliveriesHoldTheirSlots: a delivery that ended keeps its
// global slot until its outcome is durable, so while the store's commits
// stall no more deliveries start than max_outbound_connections: the
// goroutines waiting for the store do not pile up with the next hop's
// pace (a compaction stalled commits for a while in deadhop -slow, and
// 345 deliveries that had ended waited in Remove, a goroutine each).
func TestSettlingDeliveriesHoldTheirSlots(t *testing.T) {
	const n = 40
	spool := t.TempDir()
	ds, err := queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		t.Fatal(err)
	}
	store := &removeGatedStore{Store: ds, gate: make(chan struct{})}
	var once sync.Once
	open := func() { once.Do(func() { close(store.gate) }) }
	remote := &fake{result: ok}
	h := startStore(t, config(t, spool, `max_outbound_connections = 3
  max_per_domain_outbound_connections = 3`), &fake{result: ok}, remote, nil, store)
	t.Cleanup(open) // before the transport's Close, should the test fail
	for i := range n {
		h.submit("x\r\n", fmt.Sprintf("u%d@partner.example", i))
	}
	eventually(t, "three deliveries waiting for the store", func() bool { return store.waiting.Load() == 3 })
	h.submit("x\r\n", "late@partner.example") // work for the next hop keeps coming
	// Every other message routed and waiting for a slot (or, without the
	// bound, delivered and waiting for the store too).
	eventually(t, "the rest routed", func() bool {
		h.tr.mu.Lock()
		defer h.tr.mu.Unlock()
		return h.tr.itemsWaiting == n+1-3 || remote.begun.Load() > 3
	})
	if got := remote.begun.Load(); got != 3 {
		t.Errorf("%d deliveries begun while 3 wait for the store, want 3", got)
	}
	open()
	h.waitIdle()
	if got := len(remote.seen()); got != n+1 {
		t.Errorf("%d deliveries, want %d", got, n+1)
	}
}
