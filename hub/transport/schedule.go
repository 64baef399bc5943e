package transport

import (
	"container/heap"
	"sync"
	"time"

	"hubd/hub/queue"
)

// The scheduler: the one goroutine that takes due work from the queue
// engine's work-lease seam (queue.Work) and starts its passes, and that
// knows when each next hop in Retry is to be probed (park.go).
//
// Which message is due when is the engine's (Schedule; LocalWork keeps it
// in a heap with one item per message, JetStream would keep it in its
// consumers): the scheduler Claims what is due, a lease per message, and
// hands each to dispatch. The lease is the pass's: it ends when the pass
// does (endPassLeaseLocked), and a lease that lapses while its pass still
// runs (passLease) is taken over by that pass (dispatch), so in one
// process a message is never worked on twice. What the seam adds is that
// a second owner, another hub sharing the queue, could not settle a
// message whose lease it lost: Defer and Done carry the lease's revision.
//
// Next hops in Retry are few (bounded by the next hops in use), and their
// retry times are the transport's own: they stay in a small heap here. A
// hop rescheduled before its old time leaves a stale item, which wakeHop
// recognises (the time no longer matches) and ignores.
type scheduler struct {
	clock    func() time.Time
	work     queue.Work
	dispatch func(l queue.Lease)
	wakeHop  func(q *hopQueue, at time.Time)
	// room is how many more passes may be dispatched now (passRoom): due
	// messages beyond it stay with the engine, asleep (dormant.go), until
	// the workers catch up and poke.
	room func() int

	mu   sync.Mutex
	hops hopHeap
	wake chan struct{} // buffered 1: something earlier may have arrived
	quit chan struct{}
	done chan struct{}
	once sync.Once
}

// claimBatch bounds how many due messages one Claim leases: the passes
// queue for the workers (workers.go) in that order either way, and a
// smaller batch lets hop probes and new due times in between.
const claimBatch = 256

// maxQueuedPasses bounds the passes dispatched and waiting for a worker
// (passRoom). Everything a pass produces (work items, deferrals in Retry)
// is queued behind the passes waiting, so without a bound a start-up with
// a million messages due would claim them all at once and read every one
// of them back into RAM before the first deferral let one go again; with
// it, what is in RAM while a backlog of due messages is worked off is
// bounded by configuration, and the rest waits in the engine, asleep.
const maxQueuedPasses = 2 * claimBatch

// passLease is how long a pass's lease lasts. A pass is CPU work and one
// store write or two; one that outlives this is stuck, and its lease
// lapsing says so in the log (dispatch).
const passLease = 5 * time.Minute

type hopItem struct {
	at time.Time
	q  *hopQueue
}

type hopHeap []hopItem

func (h hopHeap) Len() int           { return len(h) }
func (h hopHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h hopHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *hopHeap) Push(x any)        { *h = append(*h, x.(hopItem)) }
func (h *hopHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = hopItem{}
	*h = old[:len(old)-1]
	return it
}

func newScheduler(clock func() time.Time, work queue.Work, dispatch func(queue.Lease), wakeHop func(*hopQueue, time.Time),
	room func() int) *scheduler {
	return &scheduler{
		clock:    clock,
		work:     work,
		dispatch: dispatch,
		wakeHop:  wakeHop,
		room:     room,
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
}

// addHop makes q's probe due at at.
func (s *scheduler) addHop(q *hopQueue, at time.Time) {
	s.mu.Lock()
	heap.Push(&s.hops, hopItem{at: at, q: q})
	s.mu.Unlock()
	s.poke()
}

// poke makes run look at the clock again now (tests that step an
// injected clock use it instead of waiting for maxWait).
func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run dispatches due work until stop. Dispatch must not block.
func (s *scheduler) run() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := s.dispatchDue()
		timer.Reset(wait)
		select {
		case <-s.quit:
			return
		case <-s.wake:
		case <-s.work.Ready():
		case <-timer.C:
		}
	}
}

// maxWait bounds how long the scheduler trusts a computed wait: it looks at
// the clock again at least this often, so a stepped wall clock (or a test's
// injected one) is noticed.
const maxWait = time.Second

// dispatchDue starts everything due and returns how long to wait for the
// next.
func (s *scheduler) dispatchDue() time.Duration {
	for {
		now := s.clock()
		s.mu.Lock()
		var hop *hopItem
		if len(s.hops) > 0 && !s.hops[0].at.After(now) {
			it := heap.Pop(&s.hops).(hopItem)
			hop = &it
		}
		s.mu.Unlock()
		if hop != nil {
			s.wakeHop(hop.q, hop.at)
			continue
		}
		room := min(claimBatch, s.room())
		if room == 0 {
			return maxWait // the workers poke when they have caught up
		}
		leases := s.work.Claim(now, room, passLease)
		for _, l := range leases {
			s.dispatch(l)
		}
		if len(leases) == room {
			continue
		}
		next := s.work.Next()
		s.mu.Lock()
		if len(s.hops) > 0 && (next.IsZero() || s.hops[0].at.Before(next)) {
			next = s.hops[0].at
		}
		s.mu.Unlock()
		if next.IsZero() {
			return maxWait
		}
		return min(max(next.Sub(s.clock()), 0), maxWait)
	}
}

// stop ends run and waits for it.
func (s *scheduler) stop() {
	s.once.Do(func() { close(s.quit) })
	<-s.done
}

// passRoom is how many more passes the scheduler may dispatch now
// (maxQueuedPasses): none while the delivery queues hold maxWaitingItems
// (backlog.go).
func (t *Transport) passRoom() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.itemsWaiting >= maxWaitingItems(t.cfg.Load().Hub.MaxPerDomainOutboundConnections) {
		return 0
	}
	return max(0, maxQueuedPasses-t.passesQueued)
}

// leaseOf is e's current pass lease, as the engine knows it. t.mu is held.
func leaseOf(e *entry) queue.Lease { return queue.Lease{ID: e.id, Rev: e.rev} }

// dispatch is called by the scheduler with the lease of a due message:
// its pass starts (or waits for the isolation slot, isolation.go).
func (t *Transport) dispatch(l queue.Lease) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.msgs[l.ID]
	if e == nil {
		e = t.wakeAsleepLocked(l.ID) // dormant.go
	}
	switch {
	case e == nil || e.removing:
		// Left the queue (remove forgets it in the engine too; a message
		// removed meanwhile may still have been claimed).
		t.work.Forget(l.ID)
		return
	case t.closed:
		return // the next Start schedules it again
	case e.busy || e.passWaiting:
		// Its lease lapsed while its pass ran or waited for the isolation
		// slot: that pass holds the new lease, and ends it.
		if e.busy {
			t.log.Warn("a pass over a message outlasted its lease; it still runs", "id", e.id, "lease", passLease)
		}
		e.rev = l.Rev
		return
	}
	e.rev = l.Rev
	switch {
	case !e.suspect:
		t.startPassLocked(e, false)
	case t.admitLocked(e):
		t.startPassLocked(e, true)
	default:
		t.waitPassLocked(e) // another suspect is in flight
	}
}

// endPassLeaseLocked ends the lease of e's pass (or of its wait for the
// isolation slot): what was scheduled while it ran applies now. t.mu is
// held.
func (t *Transport) endPassLeaseLocked(e *entry) {
	if err := t.work.Defer(leaseOf(e), time.Time{}); err != nil && !e.removing {
		t.log.Warn("cannot end the lease of a pass", "id", e.id, "err", err)
	}
}
