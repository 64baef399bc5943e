package transport

// Queue depth for the metrics (metrics.go) and for Stats, kept
// incrementally.
//
// A scrape or a status request must not walk the queue (it may hold a million messages), so
// the depth is maintained where it changes: each entry remembers its share
// (its pending recipients counted by queue and state, and whether it is
// held or poisoned), and whenever the message's state or its in-flight set
// changes, the share is computed again — O(its recipients), the same order
// as the state Update that usually comes with it — and the difference is
// applied to the totals. A scrape then reads O(queues × states) numbers.
//
// Where a recipient is counted follows the operator's view (ops.go, where):
// in the poison queue when its message is poisoned; in "submission" before
// categorization or routing; otherwise in its next hop's queue (the
// unreachable queue included). Its state is one of the depth* constants.
// The totals therefore add up to Stats.PendingRecipients, and per queue to
// what Queues reports as Recipients.
//
// The oldest message is found from a list of every queued message in
// arrival order (arrivals: its arrival time and queue ID key, 24 bytes,
// no pointer, so that a message asleep without an entry, dormant.go, is
// listed too): messages that left are dropped from its front when it is
// read, so a read costs O(1) amortised, plus the poisoned messages at its
// front (which the age ignores: they wait for an operator, not for
// delivery). Which messages left, and which are poisoned, the tracker
// keeps as sets of keys (left: until the list is next compacted).

import (
	"cmp"
	"slices"
	"sync"
	"time"

	"hubd/hub"
	"hubd/hub/queue"
)

// Recipient states of hubd.queue.recipients.
const (
	depthQueued   depthState = iota // waiting for the categorizer, routing or its first attempt
	depthReady                      // handed to its delivery queue: waiting for a connection or being delivered
	depthDeferred                   // a temporary failure; waiting for its retry
	depthHeld                       // its message is held by an operator
	depthPoisoned                   // its message is in the poison queue
)

// depthState is a recipient's state in the depth counts: one byte in
// each message's share, its name only in the metrics.
type depthState uint8

var depthStateNames = [...]string{depthQueued: "queued", depthReady: "ready", depthDeferred: "deferred",
	depthHeld: "held", depthPoisoned: "poisoned"}

func (s depthState) String() string { return depthStateNames[s] }

type depthKey struct {
	queue string // interned (depthTracker.intern)
	state depthState
}

// depthShare is one entry's part of the totals. Most messages have all
// their pending recipients in one queue and state: one count, kept inline
// (first); a message spread over several keeps the others in more. It is
// part of every queued message's entry, so it is kept small (issue 11:
// RAM per waiting message).
type depthShare struct {
	counted        bool // added to the totals (and to the arrival list)
	gone           bool // left the queue: never counted again
	held, poisoned bool
	suspect        bool       // not poisoned, and processed in isolation (isolation.go)
	first          depthCount // n == 0: no pending recipient
	more           []depthCount
}

// depthCount is n recipients of one key (its fields laid out flat: 24
// bytes, not 32).
type depthCount struct {
	queue string
	n     int32
	state depthState
}

func (c depthCount) key() depthKey { return depthKey{c.queue, c.state} }

// counts appends the share's counts to dst.
func (s *depthShare) counts(dst []depthCount) []depthCount {
	if s.first.n == 0 {
		return dst
	}
	return append(append(dst, s.first), s.more...)
}

// depthTracker holds the totals. Its mutex is a leaf: taken with e.mu
// held, never the other way round.
type depthTracker struct {
	mu       sync.Mutex
	rcpts    map[depthKey]int64
	messages int64
	held     int64
	poisoned int64
	suspects int64
	arrivals []arrivalRec
	left     map[queue.Key]struct{} // in arrivals, left the queue (compacted by forget)
	poisonK  map[queue.Key]struct{} // poisoned (few: they wait for an operator)
	unsorted bool                   // bulk: records are appended, sorted when it ends
	// Queue names, interned and numbered (bounded by the next hops ever
	// used): nameList[nameNum[q]-1] is the one copy of q.
	nameNum  map[string]uint32
	nameList []string
	// waiting is closed and replaced whenever the number of messages not
	// poisoned changes (WaitIdle).
	waiting chan struct{} // in arrival order; entries that left are dropped lazily
}

// arrivalRec is one queued message in the arrival list.
type arrivalRec struct {
	at  int64 // its arrival, Unix nanoseconds
	key queue.Key
}

func newDepthTracker() *depthTracker {
	return &depthTracker{rcpts: map[depthKey]int64{}, waiting: make(chan struct{}), left: map[queue.Key]struct{}{},
		poisonK: map[queue.Key]struct{}{}}
}

// keyOf is id's key; every queued message's ID is valid (the store and
// the connectors make them with hub.NewQueueID).
func keyOf(id hub.QueueID) queue.Key {
	k, _ := queue.KeyOf(id)
	return k
}

// update counts e as it is now. e.mu is held (or e is not shared yet).
func (d *depthTracker) update(e *entry) {
	m := e.msg
	next := depthShare{counted: true, held: m.Held, poisoned: m.Poisoned, suspect: !m.Poisoned && suspect(m.State)}
	for i, r := range m.Recipients {
		if r.Status.Settled() {
			continue
		}
		hop := ""
		if e.inflight[i] {
			hop = e.inflightHop[i]
			if hop == "" {
				hop = submissionQueue // not yet known: counted where it was
			}
		}
		next.add(placeOf(m, r, hop))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	next.first.queue = d.intern(next.first.queue)
	for i := range next.more {
		next.more[i].queue = d.intern(next.more[i].queue)
	}
	old := &e.depth
	if old.gone {
		return // left the queue, or fell asleep (dormant.go)
	}
	defer d.signalLocked(d.unsettledLocked())
	if !old.counted {
		d.messages++
		d.insertLocked(arrivalRec{at: m.Arrived.UnixNano(), key: keyOf(e.id)})
	}
	if next.poisoned != (old.counted && old.poisoned) {
		if next.poisoned {
			d.poisonK[keyOf(e.id)] = struct{}{}
		} else {
			delete(d.poisonK, keyOf(e.id))
		}
	}
	d.applyLocked(old, -1)
	d.applyLocked(&next, 1)
	*old = next
}

// intern returns the one copy of queue name q the tracker keeps, so that
// a million shares naming one next hop hold one string, not a million.
// d.mu is held.
func (d *depthTracker) intern(q string) string {
	if n, ok := d.nameNum[q]; ok {
		return d.nameList[n-1]
	}
	if d.nameNum == nil {
		d.nameNum = map[string]uint32{}
	}
	d.nameList = append(d.nameList, q)
	d.nameNum[q] = uint32(len(d.nameList))
	return q
}

// forget takes e out of the totals for good: it left the queue.
func (d *depthTracker) forget(e *entry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.signalLocked(d.unsettledLocked())
	if e.depth.counted && !e.depth.gone {
		d.messages--
		d.applyLocked(&e.depth, -1)
		k := keyOf(e.id)
		d.left[k] = struct{}{}
		delete(d.poisonK, k)
	}
	e.depth = depthShare{gone: true}
	if len(d.left) > len(d.arrivals)/2+64 {
		// Most of the list left: drop them, amortised O(1) per message
		// (a scrape's oldest trims only the front, and without metrics
		// nothing else would: the list would keep every message ever
		// queued).
		live := d.arrivals[:0]
		for _, a := range d.arrivals {
			if _, left := d.left[a.key]; !left {
				live = append(live, a)
			}
		}
		d.arrivals = live
		clear(d.left)
	}
}

func (d *depthTracker) applyLocked(s *depthShare, sign int64) {
	if !s.counted {
		return
	}
	if s.held {
		d.held += sign
	}
	if s.poisoned {
		d.poisoned += sign
	}
	if s.suspect {
		d.suspects += sign
	}
	if s.first.n == 0 {
		return
	}
	d.applyCountLocked(s.first, sign)
	for _, c := range s.more {
		d.applyCountLocked(c, sign)
	}
}

func (d *depthTracker) applyCountLocked(c depthCount, sign int64) {
	if n := d.rcpts[c.key()] + sign*int64(c.n); n != 0 {
		d.rcpts[c.key()] = n
	} else {
		delete(d.rcpts, c.key())
	}
}

// unsettledLocked is the number of messages not poisoned. d.mu is held.
func (d *depthTracker) unsettledLocked() int64 { return d.messages - d.poisoned }

// signalLocked wakes the waiters of idle if the number of messages not
// poisoned is no longer before. d.mu is held.
func (d *depthTracker) signalLocked(before int64) {
	if d.unsettledLocked() != before {
		close(d.waiting)
		d.waiting = make(chan struct{})
	}
}

// idle returns the number of messages not poisoned, and a channel closed
// when it changes.
func (d *depthTracker) idle() (int64, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.unsettledLocked(), d.waiting
}

// bulk(true) starts a load in no particular order (Start: Store.Scan
// hands messages out in log order): entries are appended to the arrival
// list, which bulk(false) sorts once, instead of each being inserted in
// place.
func (d *depthTracker) bulk(on bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.unsorted = on
	if !on {
		slices.SortStableFunc(d.arrivals, func(a, b arrivalRec) int { return cmp.Compare(a.at, b.at) })
	}
}

// insertLocked puts a in the arrival list: at the end, or a few places
// before it when concurrent Submits finished out of order.
func (d *depthTracker) insertLocked(a arrivalRec) {
	if d.unsorted {
		d.arrivals = append(d.arrivals, a)
		return
	}
	i := len(d.arrivals)
	for i > 0 && d.arrivals[i-1].at > a.at {
		i--
	}
	d.arrivals = slices.Insert(d.arrivals, i, a)
}

// oldest is the arrival time of the oldest message not poisoned; false
// when there is none.
func (d *depthTracker) oldest() (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for ; n < len(d.arrivals); n++ {
		k := d.arrivals[n].key
		if _, left := d.left[k]; !left {
			break
		}
		delete(d.left, k)
	}
	d.arrivals = d.arrivals[n:] // the array's front is reclaimed when it next grows
	for _, a := range d.arrivals {
		_, left := d.left[a.key]
		if _, poisoned := d.poisonK[a.key]; !left && !poisoned {
			return time.Unix(0, a.at), true
		}
	}
	return time.Time{}, false
}

// depthSnapshot is what one scrape reads.
type depthSnapshot struct {
	rcpts                              map[depthKey]int64
	messages, held, poisoned, suspects int64
}

func (d *depthTracker) snapshot() depthSnapshot {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := depthSnapshot{rcpts: make(map[depthKey]int64, len(d.rcpts)), messages: d.messages, held: d.held, poisoned: d.poisoned,
		suspects: d.suspects}
	for k, n := range d.rcpts {
		s.rcpts[k] = n
	}
	return s
}

func (s *depthShare) add(k depthKey) {
	switch {
	case s.first.n == 0:
		s.first = depthCount{queue: k.queue, state: k.state, n: 1}
		return
	case s.first.key() == k:
		s.first.n++
		return
	}
	for i := range s.more {
		if s.more[i].key() == k {
			s.more[i].n++
			return
		}
	}
	s.more = append(s.more, depthCount{queue: k.queue, state: k.state, n: 1})
}

// placeOf is the queue and state of pending recipient r of m (see the
// comment at the top, and ops.go's where); inflightHop names the delivery
// queue its work item is in, "" when it is not in one.
func placeOf(m *queue.Message, r queue.RecipientState, inflightHop string) depthKey {
	name := r.NextHop
	if !m.Expanded || name == "" {
		name = submissionQueue
	}
	inflight := inflightHop != ""
	if inflight {
		name = inflightHop
	}
	switch {
	case m.Poisoned:
		return depthKey{poisonQueue, depthPoisoned}
	case m.Held:
		return depthKey{name, depthHeld}
	case inflight:
		return depthKey{name, depthReady}
	case r.Status == queue.Deferred:
		return depthKey{name, depthDeferred}
	}
	return depthKey{name, depthQueued}
}
