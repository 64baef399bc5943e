package transport

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"hubd/hub"
	"hubd/hub/ops"
	"hubd/hub/queue"
)

// The operator's view of the queue (hub/ops.Queue): what hubctl, mailq and
// the admin API show. A queue of a million messages waiting on a dead next
// hop keeps only their entries in RAM (evict.go), and reading one back
// from the store costs a Get, so the view is built to read as few as it
// can, and never holds Transport.mu across a walk or across I/O:
//
//   - A listing (Messages, opslist.go) walks the entries in arrival order
//     from the depth tracker's arrival list, a chunk at a time, and reads a
//     message only when the walk reaches it and what RAM says of it (its
//     depth share: queues, held, poisoned; its arrival) lets it match; it
//     stops at the page's limit. Message reads the one message asked for.
//   - Queues and RetryQueue count from the depth shares (depth.go), which
//     say where each message's pending recipients wait without reading it;
//     Queues reads back only the waiting messages whose deferred recipients'
//     retry time or reply it must show (opsqueues.go).
//
// What the view needs of the transport besides the messages (opsState) is
// taken in one short step under Transport.mu: O(next hops + deliveries
// running). Each message is then read under its own lock, in the usual
// lock order, and computed and read (headers, the tracking log) from the
// copies.

var _ ops.Queue = (*Transport)(nil)

// The queues of the operator's view that are not next hops.
const (
	submissionQueue = "submission" // not yet categorized or routed
	poisonQueue     = "poison"
)

// opsState is what the operator's view reads of the transport besides the
// messages themselves.
type opsState struct {
	now       time.Time
	hops      []hopView // by name
	suspended map[string]bool
	// running are the recipients being delivered now, by message: the
	// queue each one's delivery runs in.
	running map[*entry]map[int]string
}

type hopView struct {
	name, kind, state string
	suspended         bool
	active            int
	retryAt           time.Time
	lastError         string
}

// opsState takes the delivery queues' state under Transport.mu.
func (t *Transport) opsState() *opsState {
	st := &opsState{now: t.clock(), suspended: map[string]bool{}, running: map[*entry]map[int]string{}}
	t.mu.Lock()
	for _, q := range t.queues {
		name := q.hop.String()
		hv := hopView{name: name, kind: string(q.hop.Kind), state: q.state(st.now), suspended: q.suspended,
			active: q.active, lastError: q.lastError}
		if hv.state == StateRetry {
			hv.retryAt = q.retryAt
		}
		st.hops = append(st.hops, hv)
		for it := range q.running {
			m := st.running[it.e]
			if m == nil {
				m = map[int]string{}
				st.running[it.e] = m
			}
			for _, i := range it.indexes {
				m[i] = name
			}
		}
	}
	for name := range t.suspended {
		st.suspended[name] = true
	}
	t.mu.Unlock()
	slices.SortFunc(st.hops, func(a, b hopView) int { return strings.Compare(a.name, b.name) })
	return st
}

// hop is the delivery queue named name, if it exists.
func (st *opsState) hop(name string) (hopView, bool) {
	i, ok := slices.BinarySearchFunc(st.hops, name, func(h hopView, n string) int { return strings.Compare(h.name, n) })
	if !ok {
		return hopView{}, false
	}
	return st.hops[i], true
}

// msgView is one message as the operator's view saw it. m's ID, Envelope,
// Arrived and Size never change; st and the maps are copies.
type msgView struct {
	m  *queue.Message
	st queue.State
	// inflight are the recipients handed to a delivery queue and not back
	// yet, with that queue's name; active are those being delivered now.
	inflight map[int]string
	active   map[int]bool
	busy     bool // a pass (categorization, routing) is running
}

// msgView reads e as it is now (from the store if its Message was
// dropped: view), or reports false when it left the queue or cannot be
// read (logged where it is used).
func (t *Transport) msgView(e *entry, st *opsState) (msgView, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, err := t.view(e)
	if err != nil {
		return msgView{}, false
	}
	t.mu.Lock()
	busy, removing := e.busy, e.removing
	t.mu.Unlock()
	if removing {
		return msgView{}, false
	}
	mv := msgView{m: m, st: cloneState(m.State), busy: busy}
	if len(e.inflight) > 0 {
		mv.inflight = make(map[int]string, len(e.inflight))
		for i := range e.inflight {
			mv.inflight[i] = e.inflightHop[i]
		}
	}
	for i, q := range st.running[e] {
		if _, in := mv.inflight[i]; in {
			if mv.active == nil {
				mv.active = map[int]bool{}
			}
			mv.inflight[i], mv.active[i] = q, true
		}
	}
	return mv, true
}

// where is the queue pending recipient i of mv waits in ("" when it is
// settled), and whether it is being delivered now. It places a recipient
// where the depth tracker counts it (depth.go, placeOf).
func (mv msgView) where(i int) (string, bool) {
	r := mv.st.Recipients[i]
	if q := mv.inflight[i]; q != "" {
		return q, mv.active[i]
	}
	switch {
	case r.Status.Settled():
		return "", false
	case mv.st.Poisoned:
		return poisonQueue, false
	case r.NextHop == "" || (!mv.st.Expanded && r.Status != queue.Deferred):
		// Waiting for the categorizer, or for its first routing. (A
		// deferred recipient was routed: its message was expanded, though
		// the store may not say so when the expansion changed nothing and
		// was not persisted, evict.go.)
		return submissionQueue, mv.busy
	default:
		// Deferred, waiting for its retry (or just handed to a queue).
		return r.NextHop, false
	}
}

// waiting reports whether recipient i is not in flight.
func (mv msgView) waiting(i int) bool {
	_, in := mv.inflight[i]
	return !in
}

// state is the message's state in the operator's view.
func (mv msgView) state() string {
	switch {
	case mv.st.Poisoned:
		return ops.StatePoisoned
	case mv.st.Held:
		return ops.StateHeld
	case mv.busy:
		return ops.StateActive
	}
	deferred := false
	for i, r := range mv.st.Recipients {
		if _, active := mv.where(i); active {
			return ops.StateActive
		}
		deferred = deferred || r.Status == queue.Deferred
	}
	if deferred {
		return ops.StateDeferred
	}
	return ops.StateQueued
}

// summary is mv as a listing shows it.
func (mv msgView) summary() ops.MessageSummary {
	m := mv.m
	s := ops.MessageSummary{ID: string(m.ID), State: mv.state(), Arrived: m.Arrived.UTC(), Size: m.Size,
		From: m.Envelope.From, MessageID: m.Envelope.MessageID, Recipients: []ops.RecipientSummary{}}
	var latest time.Time
	for i, r := range mv.st.Recipients {
		if r.Status.Settled() {
			continue
		}
		q, _ := mv.where(i)
		if q != "" && !slices.Contains(s.Queues, q) {
			s.Queues = append(s.Queues, q)
		}
		s.Recipients = append(s.Recipients, ops.RecipientSummary{Address: r.Address, Status: string(r.Status),
			Queue: q, LastReply: replyString(r.LastReply)})
		if r.Status == queue.Deferred && mv.waiting(i) && !mv.st.Held && !mv.st.Poisoned {
			if s.NextRetry.IsZero() || r.NextAttempt.Before(s.NextRetry) {
				s.NextRetry = r.NextAttempt.UTC()
			}
		}
		// The latest reply: deferred last is retried last.
		if r.LastReply != (queue.Reply{}) && !r.NextAttempt.Before(latest) {
			latest, s.LastError = r.NextAttempt, replyString(r.LastReply)
		}
	}
	return s
}

// Suspended names the delivery queues an operator suspended (runtime
// overrides, gone at restart), sorted; O(overrides), for status lines that
// must not walk the queue.
func (t *Transport) Suspended() []string {
	t.mu.Lock()
	names := make([]string, 0, len(t.suspended))
	for name := range t.suspended {
		names = append(names, name)
	}
	t.mu.Unlock()
	slices.Sort(names)
	return names
}

// hopKind is the kind of a next hop named by NextHop.String.
func hopKind(name string) string {
	kind, _, _ := strings.Cut(name, ":")
	return kind
}

// RetryQueue makes the named queue's deferred work due now (Exchange
// Retry-Queue; Postfix's postqueue -s for one destination): a delivery
// queue in Retry is probed at once by one connection (the others follow
// when it succeeds), and its deferred recipients are due; "unreachable" is
// routed again; "submission" is categorized now. With resubmit, work
// waiting in a delivery queue is also taken out of it and routed again with
// the configuration in force (Retry-Queue -Resubmit), e.g. after a routing
// change. Expansion is never redone (recipients already delivered stay
// delivered). Held and poisoned messages are left alone: they need a
// release. It returns the number of messages whose work in the queue was
// waiting (not being delivered): made due, or, behind a next hop in Retry,
// to follow the probe.
func (t *Transport) RetryQueue(ctx context.Context, name string, resubmit bool) (int, error) {
	if name == poisonQueue {
		return 0, fmt.Errorf("%w: the poison queue is never retried; release its messages one by one (hubctl message release)", ops.ErrConflict)
	}
	// Which messages have work in the queue, from the depth shares: no
	// message is read to find them (a million may be parked on it).
	st := t.opsState()
	_, isHop := st.hop(name)
	known := name == submissionQueue || name == unreachableQueue || st.suspended[name] || isHop
	var targets []arrival
	n := 0 // messages with work in the queue not being delivered now: made due, or probing and following the probe
	err := t.walk(ctx, firstPos, walkChunk, func(a arrival) bool {
		here := a.recipientsIn(name)
		if here == 0 {
			return true
		}
		known = true
		if a.held || a.poisoned {
			return true
		}
		if a.e == nil && a.parked != nil && a.parked.hop.String() == name && !resubmit {
			// Asleep, parked on the queue: it follows the probe (below)
			// without being woken now (dormant.go).
			n++
			return true
		}
		targets = append(targets, a)
		running := 0
		for _, q := range st.running[a.e] {
			if q == name {
				running++
			}
		}
		if here > running {
			n++
		}
		return true
	})
	if err != nil {
		return 0, err
	}
	if !known {
		return 0, fmt.Errorf("%w: no queue named %q", ops.ErrNotFound, name)
	}
	t.probeNow(name)
	if resubmit {
		t.pullWaiting(func(it *workItem) bool { return it.hop.String() == name })
	}
	for _, a := range targets {
		e := t.lookup(a.pos.id) // wakes it if it fell asleep (dormant.go)
		if e != nil && (resubmit || !t.parkedOnName(e, name)) {
			// A message parked on the queue is left as it is: it follows
			// the probe when that reaches the next hop (park.go).
			t.makeDue(e, resubmit, func(r queue.RecipientState) bool {
				return name == submissionQueue || r.NextHop == name || resubmit
			})
		}
	}
	t.log.Info("queue retried by operator", "queue", name, "resubmit", resubmit, "messages", n)
	return n, nil
}

// parkedOnName reports whether e is parked on the queue named name.
func (t *Transport) parkedOnName(e *entry, name string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return e.parkedOn != nil && e.parkedOn.hop.String() == name
}

// probeNow ends the named delivery queue's Retry wait: the next item
// queued for it is dialled at once, alone, as a probe.
func (t *Transport) probeNow(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, q := range t.queues {
		if q.hop.String() == name && q.failures > 0 {
			q.retryAt = t.clock()
			t.pumpLocked(q)
			if q.active == 0 && len(q.items) == 0 && q.probe == nil {
				t.wakeProbeLocked(q) // a message parked on it probes it (park.go)
			}
		}
	}
}

// takeWaitingLocked removes from every delivery queue the waiting items
// that match and returns them; queues left idle are dropped. t.mu is held.
func (t *Transport) takeWaitingLocked(match func(*workItem) bool) []*workItem {
	var taken []*workItem
	for _, q := range t.queues {
		keep := q.items[:0]
		for _, it := range q.items {
			if match(it) {
				taken = append(taken, it)
			} else {
				keep = append(keep, it)
			}
		}
		t.itemsTakenLocked(len(q.items) - len(keep))
		clear(q.items[len(keep):])
		q.items = keep
		t.dropIdleLocked(q)
	}
	return taken
}

// pullWaiting takes out of their delivery queues the waiting (not running)
// work items that match, and hands their recipients back to their messages
// (no longer in flight), so that the next pass routes them again. It
// returns the messages affected.
func (t *Transport) pullWaiting(match func(*workItem) bool) []*entry {
	t.mu.Lock()
	pulled := t.takeWaitingLocked(match)
	t.mu.Unlock()
	var touched []*entry
	for _, it := range pulled {
		it.e.mu.Lock()
		it.e.landed(it.indexes)
		t.depth.update(it.e)
		it.e.mu.Unlock()
		if !slices.Contains(touched, it.e) {
			touched = append(touched, it.e)
		}
	}
	return touched
}

// makeDue makes e's pending recipients that match (and are not in flight)
// due now, in memory (a restart makes them due anyway), and schedules e.
// With unpark, a message parked on a next hop in Retry is taken off it
// (park.go); without, it stays there and follows that queue's probe. It
// reports whether e was affected.
func (t *Transport) makeDue(e *entry, unpark bool, match func(queue.RecipientState) bool) bool {
	if unpark {
		t.mu.Lock()
		t.unparkLocked(e)
		t.mu.Unlock()
	}
	now := t.clock()
	e.mu.Lock()
	for e.asleep {
		// Fell asleep since it was found (dormant.go).
		e.mu.Unlock()
		if e = t.lookup(e.id); e == nil {
			return false
		}
		if unpark {
			t.mu.Lock()
			t.unparkLocked(e)
			t.mu.Unlock()
		}
		e.mu.Lock()
	}
	if err := t.loadLocked(e); err != nil {
		e.mu.Unlock()
		return false
	}
	n := 0
	if !e.msg.Held && !e.msg.Poisoned {
		for i := range e.msg.Recipients {
			r := &e.msg.Recipients[i]
			if !r.Status.Settled() && !e.inflight[i] && match(*r) {
				r.NextAttempt = now
				n++
			}
		}
	}
	e.mu.Unlock()
	if n > 0 {
		t.reschedule(e)
	}
	return n > 0
}

// lookup returns the queued message id, or nil; an asleep one is woken
// (dormant.go).
func (t *Transport) lookup(id hub.QueueID) *entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.msgs[id]; e != nil {
		if e.removing {
			return nil
		}
		return e
	}
	return t.wakeAsleepLocked(id)
}
