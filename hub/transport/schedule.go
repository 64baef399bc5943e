package transport

import (
	"container/heap"
	"sync"
	"time"

	"hubd/hub"
)

// scheduler is the single goroutine that knows when each message is next
// due, and when each next hop in Retry is to be probed (park.go). A message
// rescheduled before its old time comes leaves a stale item in the heap;
// dispatch recognises it (the time no longer matches) and ignores it, which
// is cheaper than finding and fixing the old item. So does wakeHop.
type scheduler struct {
	clock    func() time.Time
	dispatch func(id hub.QueueID, at time.Time)
	wakeHop  func(q *hopQueue, at time.Time)

	mu    sync.Mutex
	items dueHeap
	wake  chan struct{} // buffered 1: something earlier may have arrived
	quit  chan struct{}
	done  chan struct{}
	once  sync.Once
}

type dueItem struct {
	at time.Time
	id hub.QueueID
	q  *hopQueue // set: the retry time of a queue, not a message
}

type dueHeap []dueItem

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueItem)) }
func (h *dueHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

func newScheduler(clock func() time.Time, dispatch func(hub.QueueID, time.Time), wakeHop func(*hopQueue, time.Time)) *scheduler {
	return &scheduler{
		clock:    clock,
		dispatch: dispatch,
		wakeHop:  wakeHop,
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
}

// add makes id due at at.
func (s *scheduler) add(id hub.QueueID, at time.Time) { s.push(dueItem{at: at, id: id}) }

// addHop makes q's probe due at at.
func (s *scheduler) addHop(q *hopQueue, at time.Time) { s.push(dueItem{at: at, q: q}) }

func (s *scheduler) push(it dueItem) {
	s.mu.Lock()
	heap.Push(&s.items, it)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// poke makes run look at the clock again now (tests that step an
// injected clock use it instead of waiting for maxWait).
func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run dispatches due items until stop. Dispatch must not block.
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
		case <-timer.C:
		}
	}
}

// maxWait bounds how long the scheduler trusts a computed wait: it looks at
// the clock again at least this often, so a stepped wall clock (or a test's
// injected one) is noticed.
const maxWait = time.Second

// dispatchDue dispatches every item whose time has come and returns how
// long to wait for the next one.
func (s *scheduler) dispatchDue() time.Duration {
	for {
		s.mu.Lock()
		if len(s.items) == 0 {
			s.mu.Unlock()
			return maxWait
		}
		next := s.items[0]
		if wait := next.at.Sub(s.clock()); wait > 0 {
			s.mu.Unlock()
			return min(wait, maxWait)
		}
		heap.Pop(&s.items)
		s.mu.Unlock()
		if next.q != nil {
			s.wakeHop(next.q, next.at)
		} else {
			s.dispatch(next.id, next.at)
		}
	}
}

// stop ends run and waits for it.
func (s *scheduler) stop() {
	s.once.Do(func() { close(s.quit) })
	<-s.done
}
