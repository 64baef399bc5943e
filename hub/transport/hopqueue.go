package transport

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"hubd/hub/categorizer"
	"hubd/hub/delivery"
	"hubd/hub/ops"
	"hubd/hub/queue"
	"hubd/policy"
)

// hopQueue is the delivery queue of one next hop (Exchange's remote
// delivery queue, keyed like its NextHopSolutionKey: kind, connector and
// destination). It exists while it holds or runs work, is in Retry, or is
// suspended. All fields are guarded by Transport.mu.
type hopQueue struct {
	hop       delivery.NextHop
	items     []*workItem // waiting, oldest first
	active    int         // deliveries running
	failures  int         // consecutive attempts that reached no host
	retryAt   time.Time   // in Retry: no new connection before this
	since     time.Time   // in Retry since (the first of failures)
	lastError string
	suspended bool // runtime override by an operator (not persisted)
	starved   bool // in Transport.starved: work waits for a global delivery slot
	// running are the work items being delivered now (len == active, but
	// for items that complete without having run), for the operator's view.
	running map[*workItem]bool
	// Parking (park.go): the messages waiting for this queue's Retry to
	// end, nParked of them live; probe is the one woken to probe it.
	parked  []queue.Key // by key, so that an asleep message is listed (dormant.go)
	nParked int
	probe   *entry
	// woken: the batch drainLocked woke last, for counting what of it
	// is not yet routed.
	woken []*entry
}

// Queue states, as Exchange's queue viewer shows them.
const (
	StateActive    = "Active"    // deliveries running
	StateReady     = "Ready"     // nothing running, nothing blocking
	StateRetry     = "Retry"     // the next hop could not be reached; waiting for RetryAt
	StateSuspended = "Suspended" // suspended by an operator: messages enter, none leave
)

func (q *hopQueue) state(now time.Time) string {
	switch {
	case q.suspended:
		return StateSuspended
	case q.failures > 0 && (now.Before(q.retryAt) || q.active == 0):
		return StateRetry
	case q.active > 0:
		return StateActive
	default:
		return StateReady
	}
}

// QueueInfo describes one queue for operators (hubctl, logs).
type QueueInfo struct {
	Name       string    // the next hop, e.g. "smtp:internet[mx:example.net]", or "unreachable", "poison"
	State      string    // StateActive, StateReady, StateRetry, StateSuspended
	Items      int       // work items waiting (one per message and next hop)
	Active     int       // deliveries running
	Recipients int       // unreachable and poison queues: recipients held
	RetryAt    time.Time // StateRetry
	LastError  string
}

// DeliveryQueues lists the delivery queues, then the unreachable and poison
// queues, as logs and tests see them; operators see Queues (ops.go).
func (t *Transport) DeliveryQueues() []QueueInfo {
	now := t.clock()
	var out []QueueInfo
	t.mu.Lock()
	for _, q := range t.queues {
		out = append(out, QueueInfo{Name: q.hop.String(), State: q.state(now), Items: len(q.items), Active: q.active,
			RetryAt: q.retryAt, LastError: q.lastError})
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b QueueInfo) int { return strings.Compare(a.Name, b.Name) })
	unreachable := QueueInfo{Name: unreachableQueue, State: StateReady}
	poison := QueueInfo{Name: "poison", State: StateSuspended}
	for _, e := range t.entries() {
		e.mu.Lock()
		m, err := t.view(e)
		if err != nil {
			e.mu.Unlock()
			continue // removed meanwhile, or unreadable (logged where it is used)
		}
		if m.Poisoned {
			poison.Items++
			poison.Recipients += pending(m.State)
		} else {
			n := 0
			for _, r := range m.Recipients {
				if r.Status == queue.Deferred && r.NextHop == unreachableQueue {
					n++
				}
			}
			if n > 0 {
				unreachable.Items++
				unreachable.Recipients += n
			}
		}
		e.mu.Unlock()
	}
	return append(out, unreachable, poison)
}

func pending(st queue.State) int {
	n := 0
	for _, r := range st.Recipients {
		if !r.Status.Settled() {
			n++
		}
	}
	return n
}

// SuspendQueue stops deliveries from the named delivery queue until
// ResumeQueue: work still enters it, none leaves. It is a runtime override,
// not persisted: after a restart the queue runs (DESIGN.md invariant 5).
// ops.ErrNotFound when no delivery queue has that name.
func (t *Transport) SuspendQueue(_ context.Context, name string) error {
	return t.setSuspended(name, true)
}

// ResumeQueue ends SuspendQueue and lets the queue's work go.
func (t *Transport) ResumeQueue(_ context.Context, name string) error {
	return t.setSuspended(name, false)
}

// setSuspended turns the override on or off. A queue is known by name while
// it exists or while a deferred recipient waits for its next hop (the queue
// itself is dropped while idle); the override is kept by name, so that the
// queue is suspended again when work recreates it.
func (t *Transport) setSuspended(name string, on bool) error {
	known := t.pendingHopNames()[name]
	t.mu.Lock()
	defer t.mu.Unlock()
	var q *hopQueue
	for _, c := range t.queues {
		if c.hop.String() == name {
			q = c
		}
	}
	if q == nil && !known && !t.suspended[name] {
		return fmt.Errorf("%w: no delivery queue named %q", ops.ErrNotFound, name)
	}
	if on {
		t.suspended[name] = true
		t.log.Warn("queue suspended (runtime override, not persisted)", "queue", name)
	} else {
		delete(t.suspended, name)
		t.log.Warn("queue resumed", "queue", name)
	}
	if q != nil {
		q.suspended = on
		if !on {
			t.pumpLocked(q)
		}
	}
	return nil
}

// enqueueLocked puts it at the end of its next hop's queue and starts what
// may run. t.mu is held.
func (t *Transport) enqueueLocked(it *workItem) { t.queueItemLocked(it, false) }

// requeueLocked puts back at the front of its next hop's queue a work item
// that was waiting for the isolation slot. t.mu is held.
func (t *Transport) requeueLocked(it *workItem) { t.queueItemLocked(it, true) }

func (t *Transport) queueItemLocked(it *workItem, front bool) {
	q := t.queues[it.hop]
	if q == nil {
		q = &hopQueue{hop: it.hop, suspended: t.suspended[it.hop.String()]}
		t.queues[it.hop] = q
	}
	if q.failures > 0 && t.clock().Before(q.retryAt) && !q.suspended {
		// The next hop is in Retry: do not dial it again before its time;
		// the recipients are deferred at once, as if they had been tried.
		// The results are built here, under t.mu: q's retry time and
		// error are written by other completions.
		t.queueJobLocked(job{e: it.e, q: q, it: it, res: t.retryResults(q, it)})
		return
	}
	if front {
		q.items = append([]*workItem{it}, q.items...)
	} else {
		q.items = append(q.items, it)
	}
	t.itemsWaiting++
	t.pumpLocked(q)
}

// retryResults is what a work item gets when its queue is in Retry.
func (t *Transport) retryResults(q *hopQueue, it *workItem) []delivery.Result {
	res := make([]delivery.Result, len(it.rcpts))
	for i := range res {
		res[i] = delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.4.1", Connection: true, Text: retryText(q)}
	}
	return res
}

// retryText is the reply text of work a queue in Retry turned away.
// t.mu is held.
func retryText(q *hopQueue) string {
	return "Next hop in retry until " + q.retryAt.UTC().Format(time.RFC3339) + "; last error: " + q.lastError
}

// pumpLocked starts deliveries from q up to its limit. In Retry after the
// retry time, one connection probes the next hop before more follow. A
// suspect's item starts only with the isolation slot; while another
// suspect holds it, the item waits aside and the next one is considered.
// t.mu is held.
func (t *Transport) pumpLocked(q *hopQueue) {
	if t.closed || q.suspended {
		return
	}
	limit := max(1, t.cfg.Load().Hub.MaxPerDomainOutboundConnections)
	if q.failures > 0 {
		limit = 1
	}
	for q.active < limit && len(q.items) > 0 {
		if !t.slotFreeLocked(q) {
			break // every global delivery slot is taken; giveSlotLocked pumps q again
		}
		it := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		t.itemsTakenLocked(1)
		if it.e.suspect {
			if !t.admitLocked(it.e) {
				t.iso.waiting = append(t.iso.waiting, isoWaiter{e: it.e, it: it})
				continue
			}
			it.isolated = true
		}
		t.takeSlotLocked()
		q.active++
		if q.running == nil {
			q.running = map[*workItem]bool{}
		}
		q.running[it] = true
		t.wg.Add(1)
		go t.run(q, it)
	}
	t.drainLocked(q)
	t.dropIdleLocked(q)
}

// dropIdleLocked forgets a queue with nothing to do and nothing to remember
// (a queue draining its parked messages remembers them).
// q may be a queue already dropped (a deferral in Retry completing late):
// only the queue the map holds is deleted, never a newer one of the same
// next hop.
func (t *Transport) dropIdleLocked(q *hopQueue) {
	if q.active == 0 && len(q.items) == 0 && q.failures == 0 && q.nParked == 0 && !q.suspended && t.queues[q.hop] == q {
		delete(t.queues, q.hop)
	}
}

// run makes one delivery attempt for it.
func (t *Transport) run(q *hopQueue, it *workItem) {
	defer t.wg.Done()
	ctx := t.runCtx
	it.e.mu.Lock()
	parked := it.e.msg.Poisoned || it.e.msg.Held
	it.e.mu.Unlock()
	if parked {
		// Parked in the poison queue while this waited (another of its
		// deliveries crashed), or held by an operator: never dialled again
		// automatically; the recipients stay as they are, with the message.
		t.complete(q, it, nil, aborted, "")
		return
	}
	if ctx.Err() != nil {
		t.complete(q, it, nil, aborted, "") // shutting down: the recipients stay as they are, for the next Start
		return
	}
	m := it.e.msg // ID, Envelope and Size never change
	// Marked only now that it is dialled: a death from here on interrupts
	// this message (complete clears the mark once its results are
	// persisted).
	t.markActive(it.e, t.cfg.Load(), it.isolated)
	ctx, span := t.startDelivery(ctx, m, it, t.attemptOf(it))
	it.spanContext = span.SpanContext()
	began := time.Now()
	results, panicked := t.callDeliverer(ctx, it)
	t.meters.attempted(it.hop, time.Since(began), m, results, t.clock())
	endDelivery(span, results)
	t.complete(q, it, results, attempted, panicked)
}

// How a work item ended.
type ending int

const (
	attempted ending = iota // the deliverer ran
	inRetry                 // not dialled: the queue is in Retry
	aborted                 // not attempted: shutting down, or the message was poisoned; nothing changes
)

// complete applies a work item's results: persist the recipients' new
// state, queue the DSNs owed, update the next hop's queue, and reschedule
// the message. panicked, when set, says the deliverer crashed.
func (t *Transport) complete(q *hopQueue, it *workItem, results []delivery.Result, how ending, panicked string) {
	cfg := t.cfg.Load()
	now := t.clock()
	e := it.e
	unreachable := len(results) > 0
	for _, r := range results {
		unreachable = unreachable && r.Connection && r.Status == delivery.Deferred
	}

	t.mu.Lock()
	if how != inRetry {
		q.active--
		delete(q.running, it)
		// The global slot pumpLocked took for run is given back only at
		// the end, once the outcome is durable: with the store's commits
		// slow for a while (a compaction, a slow disk), deliveries that
		// ended and wait for them would otherwise pile up beyond
		// max_outbound_connections, a goroutine each.
		defer t.giveSlot()
	}
	hopChanged := false // q went into Retry, stays there, or left it: the store keeps that (hopstate.go)
	if how == attempted {
		if unreachable {
			hopChanged = true
			if q.failures == 0 {
				q.since = now
			}
			q.failures++
			q.retryAt = now.Add(backoff(cfg.Hub, q.failures))
			q.lastError = resultsText(results)
			t.log.Warn("next hop unreachable, queue in retry", "queue", q.hop.String(), "failures", q.failures,
				"retry_at", q.retryAt, "err", q.lastError, "parked", q.nParked)
			t.scheduleWakeLocked(q) // its probe (park.go)
		} else if q.failures > 0 {
			hopChanged = true
			t.log.Info("next hop reachable again", "queue", q.hop.String(), "parked", q.nParked)
			q.failures, q.retryAt, q.since, q.lastError = 0, time.Time{}, time.Time{}, ""
			// Its parked messages follow in batches (pumpLocked below
			// starts the drain).
		}
	}
	if how == attempted && unreachable {
		// The whole next hop is down: what waits for it is deferred now
		// instead of dialling it again, by the workers (one job each, no
		// goroutine each), with results built here under t.mu like
		// enqueueLocked's.
		for _, w := range q.items {
			t.queueJobLocked(job{e: w.e, q: q, it: w, res: t.retryResults(q, w)})
		}
		t.itemsTakenLocked(len(q.items))
		q.items = nil
	}
	floor := time.Time{}
	if unreachable {
		floor = q.retryAt
	}
	t.pumpLocked(q)
	t.mu.Unlock()
	if hopChanged {
		t.saveHop(q)
	}

	clean := false
	e.mu.Lock()
	if how == inRetry && e.msg.Held {
		how = aborted // held while waiting: not tried, so not deferred either (q.active was not taken)
	}
	if how != aborted {
		st := cloneState(e.msg.State)
		for k, i := range it.indexes {
			st.Recipients[i] = t.settle(cfg, e.msg, st.Recipients[i], results[k], it.hop.String(), now, floor)
		}
		if panicked != "" {
			t.crashed(cfg, e, &st, panicked)
		} else if how == attempted && !unreachable && st.Interrupted > 0 && t.aloneInFlight(e, it) {
			// Ended cleanly, nothing else of it in flight, and the next hop
			// was reached (a failed dial proves nothing): not the cause of
			// the deaths that interrupted it (isolation.go).
			st = cleared(st)
			clean = true
		}
		if finished(st) && len(e.inflight) == len(it.indexes) {
			// Everything is settled and nothing is owed: the Remove that
			// follows records the outcome as well as an Update would, for one
			// fsync less on the hot path (remove persists st if it fails).
			e.msg.State = st
		} else if how == inRetry && !anySettled(st, it.indexes) {
			// Not an attempt: the next hop was not dialled. The deferral
			// stays in memory, so that a next hop going into Retry costs no
			// write per message waiting for it (issue 11: a dead next hop
			// with a million waiting must not mean a million writes per
			// retry cycle). A restart loses nothing that matters: these
			// recipients are then due, and their queue probes the next hop
			// again. An expiry (4.4.7) settles, and is persisted.
			e.msg.State = st
			t.depth.update(e)
		} else {
			t.persist(e, st)
		}
		for _, i := range it.indexes {
			t.recordIn(it.spanContext, e.msg, e.msg.Recipients[i])
		}
	}
	if unreachable {
		// Hinted before e.mu is let go: a reschedule of e that runs first
		// (its pass ending) parks it as the one below would, instead of
		// letting it fall asleep unparked (dormant.go).
		t.mu.Lock()
		e.parkHint = q
		t.mu.Unlock()
	}
	e.landed(it.indexes)
	e.mu.Unlock()
	if how != aborted {
		t.notify(cfg, e)
	}
	if how == attempted {
		t.clearActive(e, it.isolated) // run's markActive: the attempt's outcome is persisted
	}
	if clean || it.isolated {
		t.mu.Lock()
		if clean {
			e.suspect = false
			t.log.Info("message delivered cleanly after process deaths; no longer a suspect", "id", e.id)
		}
		if it.isolated {
			t.releaseLocked() // after the mark is gone: never two isolated marks at once
		}
		t.mu.Unlock()
	}
	if unreachable {
		t.rescheduleFrom(e, q) // parked while q is in Retry (park.go)
	} else {
		t.reschedule(e)
	}
}

// anySettled reports whether a recipient among indexes is settled in st.
func anySettled(st queue.State, indexes []int) bool {
	for _, i := range indexes {
		if st.Recipients[i].Status.Settled() {
			return true
		}
	}
	return false
}

// aloneInFlight reports whether it is all of e in flight: no other
// delivery and no pass running. e.mu is held.
func (t *Transport) aloneInFlight(e *entry, it *workItem) bool {
	if len(e.inflight) != len(it.indexes) {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return !e.busy
}

func resultsText(results []delivery.Result) string {
	if len(results) == 0 {
		return ""
	}
	r := results[0]
	if r.Code == 0 {
		return r.Text
	}
	return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text)
}

// callDeliverer runs the deliverer for it, guaranteeing one result per
// recipient whatever the deliverer does. A panic is reported (it counts
// towards the poison threshold) and the recipients deferred.
func (t *Transport) callDeliverer(ctx context.Context, it *workItem) (results []delivery.Result, panicked string) {
	m := it.e.msg
	d := t.opts.Deliverers[it.hop.Kind]
	defer func() {
		if p := recover(); p != nil {
			t.log.Error("deliverer panicked", "id", m.ID, "next_hop", it.hop.String(), "panic", p)
			results = nil
			panicked = fmt.Sprintf("deliverer %s: %v", it.hop.Kind, p)
		}
		for len(results) < len(it.rcpts) {
			results = append(results, delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.3.0",
				Text: "Delivery attempt ended without a result"})
		}
	}()
	if d == nil {
		// RFC 3463 X.3.5: the system is not configured to deliver this kind.
		for range it.rcpts {
			results = append(results, delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.3.5",
				Text: "No deliverer configured for " + string(it.hop.Kind)})
		}
		return results, ""
	}
	env := m.Envelope
	if it.sender != "" {
		env.From = it.sender // a list owner: bounces go to the owner (RFC 5321 §3.9)
	}
	var trace bytes.Buffer
	for _, l := range it.lists {
		trace.WriteString(categorizer.TraceHeader + ": " + categorizer.TraceValue(l, t.cfg.Load().Hub.Hostname) + "\r\n")
	}
	it.e.mu.Lock()
	prepend := m.Prepend // m.State changes under e.mu (another delivery settling)
	it.e.mu.Unlock()
	open := func() (io.ReadCloser, error) {
		return t.openContent(m.ID, prepend, trace.Bytes())
	}
	// Trace headers name lists, which may be internationalized: with
	// them the body is no longer known to be plain.
	size := m.Size + int64(trace.Len()+len(prepend))
	msg := delivery.Message{ID: m.ID, Envelope: &env, Size: size, Open: open, Plain: it.e.plain && len(it.lists) == 0}
	if sigs, rest := splitOwnSignatures(prepend); sigs != "" {
		msg.OpenUnsigned = func() (io.ReadCloser, error) { return t.openContent(m.ID, rest, trace.Bytes()) }
	}
	return d.Deliver(ctx, it.hop, msg, it.rcpts), ""
}

type readCloser struct {
	io.Reader
	io.Closer
}

// settle applies one attempt's result to a recipient's state. A deferred
// recipient is retried on the ladder, not before floor (its queue's retry
// time, or its expiry for the unreachable queue), and fails with 4.4.7 once
// the message has expired.
func (t *Transport) settle(cfg *policy.Config, m *queue.Message, r queue.RecipientState, res delivery.Result, hop string, now, floor time.Time) queue.RecipientState {
	r.Attempts++
	r.NextHop = hop
	r.LastReply = queue.Reply{Code: res.Code, Enhanced: res.Enhanced, Text: res.Text, RemoteMTA: res.RemoteMTA}
	r.NextAttempt = time.Time{}
	switch res.Status {
	case delivery.Delivered:
		r.Status = queue.Delivered
		// A next hop with the DSN extension reports success itself.
		r.Notified = res.RemoteDSN || !t.owesDSN(m, r)
	case delivery.Failed:
		r.Status = queue.Failed
		r.Notified = !t.owesDSN(m, r)
	default:
		expires := m.Arrived.Add(cfg.Hub.MessageExpiration)
		if cfg.Hub.MessageExpiration > 0 && !now.Before(expires) {
			// RFC 3463 X.4.7: delivery time expired.
			r.Status = queue.Failed
			r.LastReply = queue.Reply{Code: 451, Enhanced: "4.4.7",
				Text: "Message expired in queue; last error: " + replyString(r.LastReply), RemoteMTA: res.RemoteMTA}
			r.Notified = !t.owesDSN(m, r)
			break
		}
		r.Status = queue.Deferred
		r.NextAttempt = now.Add(backoff(cfg.Hub, r.Attempts))
		if floor.After(r.NextAttempt) {
			r.NextAttempt = floor
		}
		if cfg.Hub.MessageExpiration > 0 && r.NextAttempt.After(expires) {
			r.NextAttempt = expires // one last attempt at expiry, then 4.4.7
		}
	}
	return r
}
