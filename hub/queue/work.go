// Work leases (docs/queue.md, "Work-lease seam").
//
// Work is the seam between the transport and the queue engine for the
// question "which message is due when, and who is working on it". The
// transport schedules messages, claims the ones due for a bounded time (a
// lease), and ends each lease by deferring the message to a later time or
// by settling it. A lease carries the message's revision; a lease that
// lapsed and was claimed again has lost its revision, so its holder cannot
// end it: two owners never both settle one message. A lapse is a crash (or
// a hang) of the holder, and Lease.Lapsed counts them.
//
// LocalWork is the engine for one process: everything in memory under one
// mutex, nothing persisted (the store's active marks record deaths across
// restarts). Its memory is the point, since every queued message has an
// item: 56 bytes in a slab, a slot in a hash index and one in a binary heap
// (workheap.go), 84 B/message at 1,000,000 (BenchmarkWorkScheduleMemory).
// The heap orders each message by lease end while it is leased, else by due
// time, and is fixed in place on every change (container/heap Fix/Remove),
// so rescheduling leaves no stale items behind, unlike the transport's own
// scheduler.
//
// # NATS JetStream
//
// Work was shaped so that an engine on JetStream could implement it (Claim
// ≈ a pull consumer's Fetch, ttl ≈ AckWait, Defer ≈ NakWithDelay, Lapsed ≈
// NumDelivered-1). The JetStream engine that was built (hub/queue/jsqueue,
// docs/cluster.md) keeps Work in-process instead: hubs share the queue by
// owning messages, each hub's transport leases its own messages through
// LocalWork, and the fencing of two owners moved to the store's state
// writes (conditional on the KV revision, queue.ErrLeaseLost on a lost
// race). A next hop's Retry, parking and connection count stay in one
// transport that way; per-stage pull consumers would have spread them over
// every hub.

package queue

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"hubd/hub"
)

// Lease is the right to work on one queued message until Until.
type Lease struct {
	ID hub.QueueID
	// Rev is the revision of the message, new with every Claim: Extend,
	// Defer and Done must carry it. LocalWork draws revisions from one
	// counter for all messages, so a revision never comes back, not even
	// for an ID forgotten and scheduled again.
	Rev uint64
	// Until is when the lease lapses unless extended.
	Until time.Time
	// Lapsed is how many earlier leases of this message lapsed (ended
	// neither by Defer nor Done, and claimed again): a crash count.
	Lapsed int
}

// ErrLeaseLost is the error of ending or extending a lease that is not the
// message's current one: it lapsed and was claimed again, or the message
// was forgotten. Errors wrap it with the queue ID.
var ErrLeaseLost = errors.New("queue: lease lost")

// Work is the work-lease seam between the transport and the queue engine.
//
// Times are compared at nanosecond precision; the zero time means "none".
// Every method may be called concurrently.
type Work interface {
	// Schedule makes id due at at (replacing any due time); a zero at: not
	// due (it waits for an event, e.g. a next hop's recovery or an
	// operator). A new id is added. While id is leased, the time is kept
	// and applies when the lease ends (Defer takes the earlier of the two
	// non-zero times; Done forgets it).
	Schedule(id hub.QueueID, at time.Time)
	// Due is when id is next due: its due time, or while it is leased the
	// time Scheduled since its Claim; zero when it is not due or not
	// known.
	Due(id hub.QueueID) time.Time
	// Forget drops id (it left the queue), leased or not; its lease, if
	// any, is lost.
	Forget(id hub.QueueID)
	// Claim leases up to max messages due at or before now and not leased,
	// earliest due first, each for ttl; a lease that lapsed (Until at or
	// before now) makes its message due at once again with Lapsed+1 (so a
	// lapsed lease is claimed like due work). A Claim consumes the due
	// time: the holder says when the message is next due (Defer).
	Claim(now time.Time, max int, ttl time.Duration) []Lease
	// Next is the earliest time Claim could return something (the
	// earliest due time of an unleased message or the earliest lease
	// end); zero: nothing scheduled.
	Next() time.Time
	// Extend moves l's end to now+ttl; ErrLeaseLost if l is not id's
	// current lease.
	Extend(l Lease, now time.Time, ttl time.Duration) (Lease, error)
	// Defer ends l; the message is due at until (zero: not due), or at
	// the earlier time Scheduled while it was leased. ErrLeaseLost if l
	// is not current (nothing changes).
	Defer(l Lease, until time.Time) error
	// Done ends l and forgets the message (settled: it left the queue).
	// ErrLeaseLost as above.
	Done(l Lease) error
	// SetNote keeps note with id until the next SetNote or until id is
	// forgotten: a word of the holder's about a message it keeps nothing
	// else for while it waits (the transport's next hop and depth count of
	// a waiting message: transport/dormant.go). Ignored when id is not
	// known.
	SetNote(id hub.QueueID, note uint64)
	// Note is id's note (0 until one is set) and whether id is known.
	Note(id hub.QueueID) (note uint64, known bool)
	// Len is the number of messages known (leased or not).
	Len() int
	// Ready is signalled (buffered 1, never closed) whenever Next may
	// have moved earlier, so a claimer waiting on a timer for Next()
	// wakes up.
	Ready() <-chan struct{}
}

// LocalWork is the in-memory Work of one process.
//
// A lease stays current until a Claim takes the message over or it is
// forgotten, even past its Until: a holder that was slow rather than dead
// may still end it, since nobody else has worked on the message. Only a
// Claim at or after Until decides that the lease lapsed.
//
// IDs that are not hub.QueueID.Valid are ignored by Schedule and Forget
// (they cannot be packed into the item's key), and their leases are lost.
// The Unix epoch itself is taken as 1 ns later, since 0 means "none".
type LocalWork struct {
	mu    sync.Mutex
	t     *workTable
	rev   uint64 // the last revision handed out
	ready chan struct{}
}

var _ Work = (*LocalWork)(nil)

// NewLocalWork returns an empty LocalWork.
func NewLocalWork() *LocalWork {
	return &LocalWork{t: newWorkTable(), ready: make(chan struct{}, 1)}
}

// nanos is t in Unix nanoseconds, 0 for the zero time.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	if n := t.UnixNano(); n != 0 {
		return n
	}
	return 1
}

// timeOf is the inverse of nanos.
func timeOf(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// leaseEnd is now+ttl in nanoseconds; a ttl under 1 ns is 1 ns, so that a
// Claim never finds the lease it just made already lapsed.
func leaseEnd(now time.Time, ttl time.Duration) int64 {
	return nanos(now) + int64(max(ttl, 1))
}

func (w *LocalWork) Schedule(id hub.QueueID, at time.Time) {
	if !id.Valid() {
		return
	}
	k := keyOf(id)
	w.mu.Lock()
	defer w.mu.Unlock()
	slot := w.t.lookup(k)
	if slot < 0 {
		slot = w.t.add(k)
	}
	it := &w.t.items[slot]
	it.due = nanos(at)
	if it.until != 0 {
		return // kept for Defer; the heap orders it by its lease end
	}
	w.t.reorder(slot)
	w.signalIfFirst(slot)
}

// Due is when id is next due: its due time, or while it is leased the
// time Scheduled since its Claim (applied when the lease ends); zero when
// it is not due or not known.
func (w *LocalWork) Due(id hub.QueueID) time.Time {
	if !id.Valid() {
		return time.Time{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	slot := w.t.lookup(keyOf(id))
	if slot < 0 {
		return time.Time{}
	}
	return timeOf(w.t.items[slot].due)
}

func (w *LocalWork) Forget(id hub.QueueID) {
	if !id.Valid() {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if slot := w.t.lookup(keyOf(id)); slot >= 0 {
		w.t.remove(slot)
	}
}

func (w *LocalWork) Claim(now time.Time, max int, ttl time.Duration) []Lease {
	n, until := nanos(now), leaseEnd(now, ttl)
	w.mu.Lock()
	defer w.mu.Unlock()
	var leases []Lease
	for len(leases) < max {
		slot := w.t.first()
		if slot < 0 {
			break
		}
		it := &w.t.items[slot]
		if it.at() > n {
			break
		}
		if it.until != 0 {
			it.lapsed++ // its holder never ended it: crashed or hung
		}
		w.rev++
		it.rev, it.until, it.due = w.rev, until, 0
		w.t.reorder(slot)
		leases = append(leases, Lease{ID: it.key.id(), Rev: it.rev, Until: timeOf(until), Lapsed: int(it.lapsed)})
	}
	return leases
}

func (w *LocalWork) Next() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	slot := w.t.first()
	if slot < 0 {
		return time.Time{}
	}
	return timeOf(w.t.items[slot].at())
}

func (w *LocalWork) Extend(l Lease, now time.Time, ttl time.Duration) (Lease, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	slot, err := w.current(l)
	if err != nil {
		return l, err
	}
	it := &w.t.items[slot]
	it.until = leaseEnd(now, ttl)
	w.t.reorder(slot)
	w.signalIfFirst(slot) // a shorter ttl may end it earlier
	l.Until = timeOf(it.until)
	return l, nil
}

func (w *LocalWork) Defer(l Lease, until time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	slot, err := w.current(l)
	if err != nil {
		return err
	}
	it := &w.t.items[slot]
	if u := nanos(until); it.due == 0 || u != 0 && u < it.due {
		it.due = u
	}
	it.until = 0
	w.t.reorder(slot)
	w.signalIfFirst(slot)
	return nil
}

func (w *LocalWork) Done(l Lease) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	slot, err := w.current(l)
	if err != nil {
		return err
	}
	w.t.remove(slot)
	return nil
}

func (w *LocalWork) SetNote(id hub.QueueID, note uint64) {
	if !id.Valid() {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if slot := w.t.lookup(keyOf(id)); slot >= 0 {
		w.t.items[slot].note = note
	}
}

func (w *LocalWork) Note(id hub.QueueID) (uint64, bool) {
	if !id.Valid() {
		return 0, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if slot := w.t.lookup(keyOf(id)); slot >= 0 {
		return w.t.items[slot].note, true
	}
	return 0, false
}

func (w *LocalWork) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.t.count
}

func (w *LocalWork) Ready() <-chan struct{} { return w.ready }

// current returns the slot of l's message if l is its current lease.
func (w *LocalWork) current(l Lease) (int32, error) {
	if l.ID.Valid() {
		if slot := w.t.lookup(keyOf(l.ID)); slot >= 0 {
			if it := &w.t.items[slot]; it.until != 0 && it.rev == l.Rev {
				return slot, nil
			}
		}
	}
	return -1, fmt.Errorf("%w: %s (revision %d)", ErrLeaseLost, l.ID, l.Rev)
}

// signalIfFirst signals Ready when slot is now at the top of the heap: the
// only way Next can have moved earlier.
func (w *LocalWork) signalIfFirst(slot int32) {
	if w.t.first() != slot {
		return
	}
	select {
	case w.ready <- struct{}{}:
	default:
	}
}
