package transport

import (
	"cmp"
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
// the admin API show. Listing is an admin operation: it costs O(queue), but
// it never holds Transport.mu across the walk or across I/O. It takes a
// snapshot in two short steps (the delivery queues under Transport.mu, then
// each message under its own lock, in the usual lock order), and computes
// and reads (headers, the tracking log) from the copies.

var _ ops.Queue = (*Transport)(nil)

// The queues of the operator's view that are not next hops.
const (
	submissionQueue = "submission" // not yet categorized or routed
	poisonQueue     = "poison"
)

// opsView is a snapshot of the queue for the operator's view.
type opsView struct {
	now       time.Time
	hops      []hopView
	suspended map[string]bool
	loc       map[hub.QueueID]map[int]itemLoc // where in-flight recipients are
	msgs      []msgView                       // oldest first
}

type hopView struct {
	name, kind, state string
	suspended         bool
	active            int
	retryAt           time.Time
	lastError         string
}

// itemLoc is the delivery queue a recipient's work item is in, and
// whether it is being delivered now.
type itemLoc struct {
	queue  string
	active bool
}

// msgView is one message as the snapshot saw it. m's ID, Envelope, Arrived
// and Size never change; st and inflight are copies.
type msgView struct {
	m        *queue.Message
	st       queue.State
	inflight map[int]bool
	busy     bool // a pass (categorization, routing) is running
}

func (t *Transport) snapshot() *opsView {
	v := &opsView{now: t.clock(), suspended: map[string]bool{}, loc: map[hub.QueueID]map[int]itemLoc{}}
	t.mu.Lock()
	busy := map[*entry]bool{}
	entries := make([]*entry, 0, len(t.msgs))
	for _, e := range t.msgs {
		if !e.removing {
			entries = append(entries, e)
			busy[e] = e.busy
		}
	}
	note := func(it *workItem, name string, active bool) {
		m := v.loc[it.e.id]
		if m == nil {
			m = map[int]itemLoc{}
			v.loc[it.e.id] = m
		}
		for _, i := range it.indexes {
			m[i] = itemLoc{queue: name, active: active}
		}
	}
	for _, q := range t.queues {
		name := q.hop.String()
		hv := hopView{name: name, kind: string(q.hop.Kind), state: q.state(v.now), suspended: q.suspended,
			active: q.active, lastError: q.lastError}
		if hv.state == StateRetry {
			hv.retryAt = q.retryAt
		}
		v.hops = append(v.hops, hv)
		for _, it := range q.items {
			note(it, name, false)
		}
		for it := range q.running {
			note(it, name, true)
		}
	}
	for name := range t.suspended {
		v.suspended[name] = true
	}
	t.mu.Unlock()

	for _, e := range entries {
		e.mu.Lock()
		m, err := t.view(e)
		if err != nil {
			e.mu.Unlock()
			continue // removed meanwhile, or unreadable (logged where it is used)
		}
		mv := msgView{m: m, st: cloneState(m.State), inflight: make(map[int]bool, len(e.inflight)), busy: busy[e]}
		for i := range e.inflight {
			mv.inflight[i] = true
		}
		e.mu.Unlock()
		v.msgs = append(v.msgs, mv)
	}
	slices.SortFunc(v.msgs, func(a, b msgView) int {
		return cmp.Or(a.m.Arrived.Compare(b.m.Arrived), strings.Compare(string(a.m.ID), string(b.m.ID)))
	})
	slices.SortFunc(v.hops, func(a, b hopView) int { return strings.Compare(a.name, b.name) })
	return v
}

// where is the queue pending recipient i of mv waits in ("" when it is
// settled), and whether it is being delivered now.
func (v *opsView) where(mv msgView, i int) (string, bool) {
	r := mv.st.Recipients[i]
	if l, ok := v.loc[mv.m.ID][i]; ok {
		return l.queue, l.active
	}
	switch {
	case r.Status.Settled():
		return "", false
	case mv.st.Poisoned:
		return poisonQueue, false
	case !mv.st.Expanded || r.NextHop == "":
		// Waiting for the categorizer, or for its first routing.
		return submissionQueue, mv.busy
	default:
		// Deferred, waiting for its retry (or just handed to a queue).
		return r.NextHop, false
	}
}

// state is the message's state in the operator's view.
func (v *opsView) state(mv msgView) string {
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
		if _, active := v.where(mv, i); active {
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
func (v *opsView) summary(mv msgView) ops.MessageSummary {
	m := mv.m
	s := ops.MessageSummary{ID: string(m.ID), State: v.state(mv), Arrived: m.Arrived.UTC(), Size: m.Size,
		From: m.Envelope.From, MessageID: m.Envelope.MessageID, Recipients: []ops.RecipientSummary{}}
	var latest time.Time
	for i, r := range mv.st.Recipients {
		if r.Status.Settled() {
			continue
		}
		q, _ := v.where(mv, i)
		if q != "" && !slices.Contains(s.Queues, q) {
			s.Queues = append(s.Queues, q)
		}
		s.Recipients = append(s.Recipients, ops.RecipientSummary{Address: r.Address, Status: string(r.Status),
			Queue: q, LastReply: replyString(r.LastReply)})
		if r.Status == queue.Deferred && !mv.inflight[i] && !mv.st.Held && !mv.st.Poisoned {
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

// Queues lists the delivery queues (with work, in Retry or suspended, and
// the next hops deferred recipients wait for), then "submission",
// "unreachable" and "poison". A held message is counted in the queue it
// waits in, as Exchange shows a suspended message in its queue.
func (t *Transport) Queues(ctx context.Context) ([]ops.QueueInfo, error) {
	v := t.snapshot()
	byName := map[string]*ops.QueueInfo{}
	var names []string
	add := func(name, kind, state string) *ops.QueueInfo {
		qi := &ops.QueueInfo{Name: name, Kind: kind, State: state}
		byName[name] = qi
		names = append(names, name)
		return qi
	}
	for _, h := range v.hops {
		qi := add(h.name, h.kind, h.state)
		qi.Active, qi.NextRetry, qi.LastError = h.active, h.retryAt.UTC(), h.lastError
		if h.retryAt.IsZero() {
			qi.NextRetry = time.Time{}
		}
		if h.suspended {
			qi.Override = "suspended (runtime override)"
		}
	}
	for name := range v.suspended {
		if byName[name] == nil {
			add(name, hopKind(name), StateSuspended).Override = "suspended (runtime override)"
		}
	}
	special := []string{submissionQueue, unreachableQueue, poisonQueue}
	for _, name := range special {
		state := StateReady
		if name == poisonQueue {
			state = StateSuspended // never delivered from: only released by an operator
		}
		add(name, name, state)
	}
	counted := map[string]map[hub.QueueID]bool{}
	for _, mv := range v.msgs {
		for i, r := range mv.st.Recipients {
			name, active := v.where(mv, i)
			if name == "" {
				continue
			}
			qi := byName[name]
			if qi == nil {
				qi = add(name, hopKind(name), StateReady)
			}
			if counted[name] == nil {
				counted[name] = map[hub.QueueID]bool{}
			}
			if !counted[name][mv.m.ID] {
				counted[name][mv.m.ID] = true
				qi.Messages++
				if qi.Oldest.IsZero() || mv.m.Arrived.Before(qi.Oldest) {
					qi.Oldest = mv.m.Arrived.UTC()
				}
			}
			qi.Recipients++
			if name == submissionQueue && active {
				qi.Active++
				qi.State = StateActive
			}
			if r.Status == queue.Deferred && !mv.inflight[i] && !mv.st.Held && name != poisonQueue {
				if qi.State != StateRetry && (qi.NextRetry.IsZero() || r.NextAttempt.Before(qi.NextRetry)) {
					qi.NextRetry = r.NextAttempt.UTC()
				}
				if qi.LastError == "" {
					qi.LastError = replyString(r.LastReply)
				}
			}
		}
	}
	// Delivery queues by name, then the three of the hub's own.
	hops := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return slices.Contains(special, n) })
	slices.Sort(hops)
	out := make([]ops.QueueInfo, 0, len(names))
	for _, n := range append(hops, special...) {
		out = append(out, *byName[n])
	}
	return out, nil
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
	v := t.snapshot()
	known := name == submissionQueue || name == unreachableQueue || v.suspended[name]
	for _, h := range v.hops {
		known = known || h.name == name
	}
	var ids []hub.QueueID
	n := 0 // messages with work in the queue not being delivered now: made due, or probing and following the probe
	for _, mv := range v.msgs {
		hit, waiting := false, false
		for i := range mv.st.Recipients {
			q, active := v.where(mv, i)
			hit = hit || q == name
			waiting = waiting || (q == name && !active)
		}
		known = known || hit
		if hit && !mv.st.Held && !mv.st.Poisoned {
			ids = append(ids, mv.m.ID)
			if waiting {
				n++
			}
		}
	}
	if !known {
		return 0, fmt.Errorf("%w: no queue named %q", ops.ErrNotFound, name)
	}
	t.probeNow(name)
	if resubmit {
		t.pullWaiting(func(it *workItem) bool { return it.hop.String() == name })
	}
	for _, id := range ids {
		if e := t.lookup(id); e != nil && (resubmit || !t.parkedOnName(e, name)) {
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

// lookup returns the queued message id, or nil.
func (t *Transport) lookup(id hub.QueueID) *entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.msgs[id]; e != nil && !e.removing {
		return e
	}
	return nil
}

// pendingHopNames are the next hops deferred recipients wait for.
func (t *Transport) pendingHopNames() map[string]bool {
	names := map[string]bool{}
	for _, e := range t.entries() {
		e.mu.Lock()
		m, err := t.view(e)
		if err != nil {
			e.mu.Unlock()
			continue
		}
		for _, r := range m.Recipients {
			if r.Status == queue.Deferred && r.NextHop != "" && r.NextHop != unreachableQueue {
				names[r.NextHop] = true
			}
		}
		e.mu.Unlock()
	}
	return names
}
