package transport

import (
	"cmp"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"hubd/hub/categorizer"
	"hubd/hub/delivery"
	"hubd/hub/queue"
	"hubd/policy"
)

// unreachableQueue is the NextHop recorded for recipients with no route.
const unreachableQueue = "unreachable"

// process runs one pass over a due message: categorize it if not yet done,
// route its due recipients into the delivery queues, queue the DSNs it
// owes, and schedule it again. isolated: e is a suspect holding the
// isolation slot for this pass.
func (t *Transport) process(e *entry, isolated bool) {
	defer t.wg.Done()
	cfg := t.cfg.Load()
	e.mu.Lock()
	err := t.loadLocked(e)
	e.mu.Unlock()
	if err != nil {
		t.passFailed(e, isolated, err)
		return
	}
	t.markActive(e, cfg, isolated)
	var items []*workItem
	var woken *hopQueue // the queue whose drain woke e, if this pass routed it (park.go)
	_, span := t.startCategorize(e.msg)
	proceed, crashed := t.expand(cfg, e, span)
	if proceed {
		items, woken = t.route(cfg, e, span)
	} else {
		woken = e.wakeFor.Swap(nil) // held or poisoned: its release makes it due
	}
	span.SetAttributes(attribute.Int("mta.work_items", len(items)), attribute.Bool("mta.crashed", crashed))
	span.End()
	if !crashed && len(items) == 0 {
		t.clearIfClean(e)
	}
	t.notify(cfg, e)
	e.mu.Lock()
	t.mu.Lock()
	e.busy = false
	t.endPassLeaseLocked(e)
	t.queueItemsLocked(e, items, woken) // or parks e on a backlogged queue (backlog.go)
	t.probeEndedLocked(e)
	if woken != nil {
		t.drainLocked(woken) // what it woke was routed: perhaps the next batch is due
	}
	t.mu.Unlock()
	e.mu.Unlock()
	// The pass is over; each delivery it queued marks the message itself
	// when (and only when) it runs.
	t.clearActive(e, isolated)
	if isolated {
		t.mu.Lock()
		t.releaseLocked() // after the mark is gone: never two isolated marks at once
		t.mu.Unlock()
	}
	t.reschedule(e)
}

// clearIfClean is called when a pass over e ended without a crash and
// queued no delivery: if e was interrupted by process deaths and has
// nothing else in flight, it was not their cause (see isolation.go).
func (t *Transport) clearIfClean(e *entry) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.msg.Interrupted == 0 || e.msg.Poisoned || len(e.inflight) > 0 {
		return
	}
	t.persist(e, cleared(cloneState(e.msg.State)))
	t.mu.Lock()
	e.suspect = false
	t.mu.Unlock()
	t.log.Info("message processed cleanly after process deaths; no longer a suspect", "id", e.msg.ID)
}

// reschedule decides what happens to e after a pass or a delivery: removed
// when every recipient is settled and notified, else scheduled when its
// earliest recipient not in a delivery queue is due.
func (t *Transport) reschedule(e *entry) { t.rescheduleFrom(e, nil) }

// rescheduleFrom is reschedule after work of e that retryQ deferred (nil:
// none): while retryQ is in Retry, e is parked on it (park.go) and
// scheduled only for its deadlines.
func (t *Transport) rescheduleFrom(e *entry, retryQ *hopQueue) {
	now := t.clock()
	h := t.cfg.Load().Hub
	e.mu.Lock()
	if e.asleep {
		// Fell asleep meanwhile (dormant.go): nothing of it is in flight,
		// and the seam has its due time.
		e.mu.Unlock()
		return
	}
	if err := t.loadLocked(e); err != nil {
		e.mu.Unlock()
		t.log.Error("cannot read queued message", "id", e.id, "err", err)
		return
	}
	idle := len(e.inflight) == 0
	done := idle && !e.msg.Poisoned && finished(e.msg.State)
	due, ok := nextDue(e, now, h.DelayDSNAfter, h.MessageExpiration, "")
	parkQ, parkHop := t.parkingQueue(e, retryQ)
	parkDue, parkOK := due, ok
	waits := false // a recipient waits for parkQ
	if parkQ != nil {
		parkDue, parkOK = nextDue(e, now, h.DelayDSNAfter, h.MessageExpiration, parkHop)
		for i, r := range e.msg.Recipients {
			waits = waits || (!e.inflight[i] && parked(r, parkHop))
		}
	}
	t.depth.update(e) // after a pass or a delivery: what is in flight changed

	// Decided with e.mu still held, so that two reschedules of e (a pass
	// and a delivery ending together) apply in the order they computed:
	// parking is not monotonic like a due time moving earlier.
	t.mu.Lock()
	if e.busy || e.removing {
		t.mu.Unlock()
		e.mu.Unlock()
		return // the running pass reschedules when it ends
	}
	if done {
		e.removing = true
		t.unparkLocked(e)
		t.mu.Unlock()
		e.mu.Unlock()
		t.remove(e)
		return
	}
	e.parkHint = nil
	evict := idle && !t.closed
	switch {
	case waits && t.inRetryLocked(parkQ):
		// Parked: due only at its deadlines, also if a reschedule that
		// did not know of the Retry yet made it due earlier.
		t.parkLocked(e, parkQ)
		evict = evict && (!parkOK || parkDue.Sub(now) > evictAfter)
		t.scheduleParkedLocked(e, parkDue, parkOK)
		if !t.closed && !now.Before(parkQ.retryAt) && parkQ.probe == nil && parkQ.active == 0 && len(parkQ.items) == 0 {
			// Its retry time already came (an operator's retry moved it
			// to now before anything was parked): the scheduler's wake
			// for it has passed, so a probe goes now.
			t.wakeProbeLocked(parkQ)
		}
	case waits && e.parkedOn == parkQ && t.queues[parkQ.hop] == parkQ:
		// Parked on a queue out of Retry: held back by its backlog
		// (backlog.go), or not yet woken by its drain after a Retry. Due
		// at its deadlines, or when the drain wakes it.
		t.scheduleParkedLocked(e, parkDue, parkOK)
		// A drain that ran before e was parked found nothing to wake.
		t.drainLocked(parkQ)
		evict = evict && e.parkedOn == parkQ && (!parkOK || parkDue.Sub(now) > evictAfter)
	default:
		t.unparkLocked(e)
		cur := t.work.Due(e.id)
		if ok && !t.closed && (cur.IsZero() || due.Before(cur)) {
			t.scheduleLocked(e, due) // a due time already earlier stays
			cur = due
		}
		evict = evict && (cur.IsZero() || cur.Sub(now) > evictAfter)
	}
	t.mu.Unlock()
	if evict {
		t.evictLocked(e)
		t.mu.Lock()
		t.sleepLocked(e) // dormant.go
		t.mu.Unlock()
	}
	e.mu.Unlock()
}

// scheduleParkedLocked schedules e, parked, at its deadline due (ok:
// it has one; else it waits for its queue to wake it). t.mu is held.
func (t *Transport) scheduleParkedLocked(e *entry, due time.Time, ok bool) {
	switch {
	case t.closed:
	case ok:
		t.scheduleLocked(e, due)
	default:
		t.scheduleLocked(e, time.Time{})
	}
}

// remove takes a settled message out of the store and the queue.
func (t *Transport) remove(e *entry) {
	if err := t.store.Remove(e.id); err != nil {
		// Deliveries may have skipped the Update of the settled state,
		// counting on this Remove: persist it now, so that after a restart
		// the message is loaded, found settled and removed again.
		t.log.Error("cannot remove message", "id", e.id, "err", err)
		e.mu.Lock()
		t.persist(e, e.msg.State)
		e.mu.Unlock()
	}
	t.mu.Lock()
	delete(t.msgs, e.id)
	t.work.Forget(e.id)
	t.mu.Unlock()
	// Last: WaitIdle returns once the depth says no message is left, and
	// by then the message is gone from the engine too.
	t.depth.forget(e)
}

// markActive records in the store that a pass or a delivery of e starts
// (see queue.Store.MarkActive): a process death now interrupts this
// message (and counts as its crash if isolated: see isolation.go), and its
// retry waits for the ladder's first rung. Each call is paired with one
// clearActive when that pass or delivery ends. The mark is rewritten at
// each start, so its time is never stale while a long delivery runs beside
// a new one.
func (t *Transport) markActive(e *entry, cfg *policy.Config, isolated bool) {
	e.markMu.Lock()
	defer e.markMu.Unlock()
	if e.active == nil {
		e.active = &activeMark{}
	}
	a := e.active
	a.marks++
	if isolated {
		a.isoMarks++
	}
	a.mark = queue.Mark{NotBefore: t.clock().Add(backoff(cfg.Hub, 1)), Isolated: a.isoMarks > 0}
	if err := t.store.MarkActive(e.id, a.mark); err != nil {
		t.log.Warn("cannot mark message active", "id", e.id, "err", err)
	}
}

// activeMark is an entry's mark while it is processed.
type activeMark struct {
	// marks counts the passes and deliveries of this message running now;
	// the store's active mark exists while it is above zero. Work merely
	// waiting in a next hop's queue is not processing: marking it would
	// count a crash for every backlogged message at each restart.
	marks int
	// isoMarks counts those of them running with the isolation slot; the
	// mark says Isolated exactly while it is above zero, so that a stale
	// isolated mark never outlives the slot (isolation.go).
	isoMarks int
	mark     queue.Mark // as last written
}

// clearActive ends one markActive (isolated as it was given); the mark
// goes with the last one, and stops saying Isolated with the last isolated
// one.
func (t *Transport) clearActive(e *entry, isolated bool) {
	e.markMu.Lock()
	defer e.markMu.Unlock()
	a := e.active
	a.marks--
	if isolated {
		a.isoMarks--
	}
	switch {
	case a.marks == 0:
		e.active = nil
		t.store.ClearActive(e.id)
	case isolated && a.isoMarks == 0:
		a.mark.Isolated = false
		if err := t.store.MarkActive(e.id, a.mark); err != nil {
			t.log.Warn("cannot mark message active", "id", e.id, "err", err)
		}
	}
}

// finished reports whether every recipient is settled and owes no DSN.
func finished(st queue.State) bool {
	for _, r := range st.Recipients {
		if !r.Status.Settled() || !r.Notified {
			return false
		}
	}
	return true
}

// nextDue is when e should next be processed: the earliest retry time of a
// recipient not in a delivery queue, now for one never tried or owing a
// DSN, and the time its delay DSN falls due (delayAfter from arrival; 0:
// none) for a deferred one that has not had it — a recipient parked in
// the unreachable queue has no retry before its expiry, yet must hear of
// the delay. A recipient waiting for the queue parkHop names (parked on a
// next hop in Retry: park.go) has no retry time of its own, only its
// expiry (expiration from arrival; 0: none); one waiting for the queue
// e.wakeFor names is due now. ok is false when nothing is due (all in
// flight, poisoned, or held by an operator). e.mu is held.
func nextDue(e *entry, now time.Time, delayAfter, expiration time.Duration, parkHop string) (due time.Time, ok bool) {
	m := e.msg
	if m.Poisoned || m.Held {
		return time.Time{}, false
	}
	consider := func(at time.Time) {
		if !ok || at.Before(due) {
			due, ok = at, true
		}
	}
	wake := ""
	if q := e.wakeFor.Load(); q != nil {
		wake = q.hop.String()
	}
	for i, r := range m.Recipients {
		switch {
		case e.inflight[i]:
		case !r.Status.Settled():
			switch {
			case wake != "" && r.Status == queue.Deferred && r.NextHop == wake:
				consider(now)
			case parked(r, parkHop):
				if expiration > 0 {
					consider(m.Arrived.Add(expiration))
				}
			default:
				consider(r.NextAttempt)
			}
			if r.Status == queue.Deferred && !r.DelayNotified && delayAfter > 0 {
				// Not before a failed DSN's retry time, or a Submit that
				// keeps failing would spin.
				at := m.Arrived.Add(delayAfter)
				if retry := e.notifyRetryAt(); retry.After(at) {
					at = retry
				}
				consider(at)
			}
		case !r.Notified:
			consider(e.notifyRetryAt())
		}
	}
	if ok && due.Before(now) {
		due = now
	}
	return due, ok
}

// workItem is one delivery queue's share of a pass over a message: its
// recipients that share a next hop, an envelope sender and a trace.
type workItem struct {
	e       *entry
	hop     delivery.NextHop
	sender  string   // "" keeps the envelope's
	lists   []string // trace headers to add
	indexes []int    // into the message's recipients
	rcpts   []delivery.Recipient
	// isolated: e is a suspect and this delivery holds the isolation slot
	// (set by pumpLocked under Transport.mu, read by run and complete).
	isolated bool
	// spanContext is the attempt's span (set by run), in whose context
	// its outcome is logged and tracked (recordIn).
	spanContext trace.SpanContext
}

// route routes every due recipient of e with the current config. It
// settles what routing alone decides (a mailbox removed, no route) and
// persists that, and returns the rest grouped into work items, marked in
// flight, and the queue that woke e (park.go), if one did.
func (t *Transport) route(cfg *policy.Config, e *entry, span trace.Span) ([]*workItem, *hopQueue) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.msg
	now := t.clock()
	st := cloneState(m.State)
	wake := "" // recipients waiting for this queue are due now (park.go)
	woken := e.wakeFor.Swap(nil)
	if woken != nil {
		wake = woken.hop.String()
	}
	var outcomes []categorizer.Outcome
	var owners []int  // recipient index of each outcome
	var settled []int // recipients routing alone decided
	grew := false
	for i, n := 0, len(st.Recipients); i < n; i++ {
		r := st.Recipients[i]
		woken := wake != "" && r.Status == queue.Deferred && r.NextHop == wake
		if r.Status.Settled() || e.inflight[i] || (r.NextAttempt.After(now) && !woken) {
			continue
		}
		out, err := categorizeSafely(cfg, categorizer.Message{Size: m.Size}, []categorizer.Input{{Address: r.Address, DSN: r.DSN}})
		if err != nil || len(out) == 0 {
			out = []categorizer.Outcome{{Address: r.Address, Disposition: categorizer.Unreachable,
				Reply: &policy.Reply{Code: 451, Enhanced: "4.3.0", Text: fmt.Sprintf("Routing failed: %v", err)}}}
		}
		if out[0].Address != r.Address || len(out) > 1 {
			// A reload made this address an alias. The recipient takes the
			// first target; the others are appended, so no existing index
			// (and delivery key) changes meaning. They are routed next pass.
			st.Recipients[i].Address = out[0].Address
			for _, o := range out[1:] {
				if hasRecipient(st.Recipients, o.Address) {
					continue // already a recipient of this message: once is enough
				}
				st.Recipients = append(st.Recipients, queue.RecipientState{Address: o.Address,
					ResolvedFrom: cmp.Or(r.ResolvedFrom, r.Address), DSN: r.DSN, Status: queue.Queued,
					Sender: r.Sender, Lists: r.Lists})
			}
			grew = true
		}
		o := out[0]
		t.routeEvent(span, i, o)
		switch o.Disposition {
		case categorizer.Deliver:
			outcomes = append(outcomes, o)
			owners = append(owners, i)
			if r.NextHop != o.NextHop.String() {
				t.recordRoute(m, st.Recipients[i], o)
			}
		case categorizer.Fail:
			st.Recipients[i] = t.settle(cfg, m, st.Recipients[i], delivery.Result{Status: delivery.Failed, Code: o.Reply.Code,
				Enhanced: o.Reply.Enhanced, Text: o.Reply.Text}, "", now, time.Time{})
			settled = append(settled, i)
		case categorizer.AlreadyExpanded:
			st.Recipients[i] = t.settle(cfg, m, st.Recipients[i], delivery.Result{Status: delivery.Delivered, Code: o.Reply.Code,
				Enhanced: o.Reply.Enhanced, Text: o.Reply.Text}, "", now, time.Time{})
			settled = append(settled, i)
		default: // unreachable: parked until a Reload or its expiry (the unreachable queue)
			expires := m.Arrived.Add(cfg.Hub.MessageExpiration)
			st.Recipients[i] = t.settle(cfg, m, st.Recipients[i], delivery.Result{Status: delivery.Deferred, Code: o.Reply.Code,
				Enhanced: o.Reply.Enhanced, Text: o.Reply.Text}, unreachableQueue, now, expires)
			settled = append(settled, i)
		}
	}
	if len(settled) > 0 || grew {
		t.persist(e, st)
		for _, i := range settled {
			t.record(e.msg, e.msg.Recipients[i])
		}
	}
	// Group by next hop, then by envelope sender and trace, in order of
	// first appearance: one transaction each.
	var items []*workItem
	type itemKey struct {
		hop           delivery.NextHop
		sender, lists string
	}
	index := map[itemKey]*workItem{}
	for k, o := range outcomes {
		i := owners[k]
		r := m.Recipients[i]
		key := itemKey{o.NextHop, r.Sender, strings.Join(r.Lists, "\x00")}
		it := index[key]
		if it == nil {
			it = &workItem{e: e, hop: o.NextHop, sender: r.Sender, lists: r.Lists}
			index[key] = it
			items = append(items, it)
		}
		it.indexes = append(it.indexes, i)
		it.rcpts = append(it.rcpts, delivery.Recipient{
			Address: o.Address,
			Key:     deliveryKey(m.ID, o.Address),
			Maildir: o.Maildir,
			DSN:     r.DSN,
		})
		if e.inflight == nil {
			e.inflight = map[int]bool{}
		}
		e.inflight[i] = true
		if e.inflightHop == nil {
			e.inflightHop = map[int]string{}
		}
		e.inflightHop[i] = o.NextHop.String()
	}
	return items, woken
}
