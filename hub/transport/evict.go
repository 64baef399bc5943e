package transport

import (
	"context"
	"errors"
	"fmt"
	"time"

	"hubd/hub"
	"hubd/hub/ops"
	"hubd/hub/queue"
)

// Memory: what a waiting message keeps in RAM.
//
// A queued message's envelope and recipient state (queue.Message) are in
// RAM only while it has work in flight or is soon due. A message that
// merely waits — parked on a next hop in Retry (park.go) or on a full
// backlog (backlog.go), or not due for longer than evictAfter — keeps
// only its entry: its queue ID, due time, flags and its share of the
// depth counts (depth.go), and its place in the seam's schedule, the
// arrival list and its queue's parked list; and
// most such messages then fall asleep without the entry too (dormant.go).
// Its Message is read back from the store (queue.Store.Get) when a pass
// over it starts, when an operator acts on it, or for a Reload when it
// waits in the unreachable queue; listings read it without keeping it
// (view, asleepView).
//
// What the store has is what a restart would load, so dropping the
// Message loses only what a restart would lose, and that is chosen:
//
//   - the deferral of work a next hop in Retry turned away without
//     dialling (complete, inRetry), kept in memory only so that a queue
//     going into Retry writes nothing per waiting message: read back, the
//     recipient is as its last attempt left it, and the next pass routes
//     it again (it is due: what parked it is the queue's Retry, not its
//     retry time);
//   - an expansion that changed nothing (expand: identity), which the
//     next pass does again.
//
// Anything else kept in memory only (a DSN queued, marked on the
// recipients until the next Update: notify) makes the entry dirty, and a
// dirty entry is persisted before its Message is dropped.
//
// Code that holds e.mu sees e.msg either loaded or nil; every path that
// needs it calls loadLocked first. A pass (e.busy), a delivery (in
// e.inflight) and a notify (e.notifyMu) use the Message without e.mu held
// for stretches, so a Message is dropped only when none of them runs.

// evictAfter: a message not due within this long drops its Message.
const evictAfter = 30 * time.Second

// loadLocked reads e's Message back from the store if it was dropped.
// e.mu is held.
func (t *Transport) loadLocked(e *entry) error {
	if e.msg != nil {
		return nil
	}
	m, err := t.store.Get(context.Background(), e.id)
	if err != nil {
		return err
	}
	e.msg = m
	return nil
}

// view returns e's Message as it is now, without keeping it in RAM if it
// was dropped: for listings. The store does not have the deferral of a
// parked message's recipients (above); view shows them as they were in
// RAM: deferred, waiting for the queue they are parked on, with its retry
// time and error. e.mu is held.
func (t *Transport) view(e *entry) (*queue.Message, error) {
	if e.msg != nil {
		return e.msg, nil
	}
	return t.readBack(e.id, func() *hopQueue { return e.parkedOn })
}

// readBack reads message id from the store as view shows it, parked on
// the queue parkedOn returns under t.mu (nil: not parked).
func (t *Transport) readBack(id hub.QueueID, parkedOn func() *hopQueue) (*queue.Message, error) {
	m, err := t.store.Get(context.Background(), id)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.showParkedLocked(m, parkedOn())
	t.mu.Unlock()
	return m, nil
}

// showParkedLocked shows m, read back from the store, as it is while
// parked on q (nil: not parked): see view. t.mu is held.
func (t *Transport) showParkedLocked(m *queue.Message, q *hopQueue) {
	if q == nil {
		return
	}
	name, text, retryAt := q.hop.String(), retryText(q), q.retryAt
	inRetry := t.inRetryLocked(q)
	for i := range m.Recipients {
		r := &m.Recipients[i]
		// A parked message is dropped only when nothing else of it is due
		// soon: a recipient never attempted is one the queue turned away.
		if r.Status.Settled() || (r.NextHop != "" && r.NextHop != name) {
			continue
		}
		if !inRetry {
			// Held back by the queue's backlog (backlog.go), or not yet
			// woken by its drain: waiting for it, as it was. Routed, so
			// expanded (evict.go: an expansion that changed nothing is
			// not stored).
			r.NextHop = name
			m.Expanded = true
			continue
		}
		r.Status, r.NextHop = queue.Deferred, name
		r.LastReply = queue.Reply{Code: 451, Enhanced: "4.4.1", Text: text}
		if r.NextAttempt.Before(retryAt) {
			r.NextAttempt = retryAt
		}
	}
}

// asleepView is the operator's view of a message asleep (dormant.go),
// parked on q (nil: not parked), read without waking it; false when it
// left the queue or cannot be read.
func (t *Transport) asleepView(id hub.QueueID, q *hopQueue) (msgView, bool) {
	m, err := t.readBack(id, func() *hopQueue { return q })
	if err != nil {
		return msgView{}, false
	}
	return msgView{m: m, st: cloneState(m.State)}, true
}

// arrivalView is msgView of the message a walk found, asleep or not.
func (t *Transport) arrivalView(a arrival, st *opsState) (msgView, bool) {
	if a.e == nil {
		return t.asleepView(a.pos.id, a.parked)
	}
	return t.msgView(a.e, st)
}

// viewOf is msgView of the queued message id, without waking it; false
// when there is none.
func (t *Transport) viewOf(id hub.QueueID, st *opsState) (msgView, bool) {
	t.mu.Lock()
	e := t.msgs[id]
	var asleep bool
	var parked *hopQueue
	if e == nil {
		var note uint64
		if note, asleep = t.asleepLocked(id); asleep {
			parked = t.parkedQueueLocked(note)
		}
	}
	t.mu.Unlock()
	switch {
	case e != nil:
		return t.msgView(e, st)
	case asleep:
		return t.asleepView(id, parked)
	}
	return msgView{}, false
}

// evictLocked drops e's Message if nothing uses it. e.mu is held, t.mu is
// not; idle says nothing of e is in flight and no pass runs.
func (t *Transport) evictLocked(e *entry) {
	if e.msg == nil || len(e.inflight) > 0 {
		return
	}
	if !e.notifyMu.TryLock() {
		return // a notify holds e.msg across e.mu; the next reschedule drops it
	}
	defer e.notifyMu.Unlock()
	if e.dirty {
		t.persist(e, e.msg.State)
	}
	if e.dirty {
		return // not persisted (logged): keep what only memory knows
	}
	e.unreachable = false
	for _, r := range e.msg.Recipients {
		e.unreachable = e.unreachable || (r.Status == queue.Deferred && r.NextHop == unreachableQueue)
	}
	e.msg = nil
}

// passFailed ends a pass that could not start because e's Message could
// not be read back. A message the store no longer has is forgotten; one it
// cannot read now (an I/O error, a damaged record: the next start
// quarantines it) is tried again after the ladder's first rung, like a
// failed attempt. isolated: the pass held the isolation slot.
func (t *Transport) passFailed(e *entry, isolated bool, err error) {
	t.log.Error("cannot read queued message", "id", e.id, "err", err)
	gone := errors.Is(err, queue.ErrNotFound)
	if gone {
		defer t.depth.forget(e) // after the engine forgets it (see remove)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e.busy = false
	t.endPassLeaseLocked(e)
	if isolated {
		t.releaseLocked()
	}
	if gone {
		e.removing = true
		t.unparkLocked(e)
		delete(t.msgs, e.id)
		t.work.Forget(e.id)
		return
	}
	if !t.closed {
		t.scheduleLocked(e, t.clock().Add(backoff(t.cfg.Load().Hub, 1)))
	}
}

// errAsleep: the entry fell asleep and is detached (dormant.go); look the
// message up again.
var errAsleep = errors.New("transport: entry detached: the message fell asleep")

// lockLoaded locks e.mu with e's Message in RAM, for an operator's
// action; on error e.mu is not held. errAsleep: see lockedEntry.
func (t *Transport) lockLoaded(e *entry) error {
	e.mu.Lock()
	if e.asleep {
		// It fell asleep since it was found (dormant.go): the caller
		// looks it up again.
		e.mu.Unlock()
		return errAsleep
	}
	if err := t.loadLocked(e); err != nil {
		e.mu.Unlock()
		if errors.Is(err, queue.ErrNotFound) {
			return fmt.Errorf("%w: message %s is no longer queued", ops.ErrNotFound, e.id)
		}
		return err
	}
	return nil
}
