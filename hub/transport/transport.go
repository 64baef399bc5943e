// Package transport is the hub: it implements hub.Submitter over a durable
// queue.Store, runs the categorizer on every queued message, and feeds one
// delivery queue per next hop, so that every accepted recipient ends
// delivered, or failed with a DSN to its sender (DESIGN.md invariant 3).
//
// What it promises:
//   - Submit returns only once the message is durable (the Store's Put).
//   - When each message is next due is kept by the queue engine's
//     work-lease seam (queue.Work; schedule.go): one scheduler goroutine
//     Claims what is due and runs each pass under its lease; nothing
//     sleeps per message. Goroutines are bounded by
//     configuration, not by the queue (workers.go): a fixed pool of workers
//     runs the passes, and a delivery starts only with one of
//     Hub.MaxOutboundConnections slots.
//   - A due message is categorized once (aliases and distribution lists
//     expanded, then persisted), its due recipients are routed again with
//     the current config (a Reload changes routing on the next attempt), and
//     each group sharing a next hop, envelope sender and expansion trace
//     becomes a work item in that next hop's delivery queue.
//   - Delivery queues are independent (invariant 4): each runs at most
//     Hub.MaxPerDomainOutboundConnections deliveries, all of them together at
//     most Hub.MaxOutboundConnections, and a recipient waiting in or being
//     delivered by one queue never holds back the same message's recipients
//     in another. A queue whose next hop cannot be reached at all (every
//     result has Result.Connection) goes into Retry on the retry ladder: its
//     waiting items are deferred at once without dialling, and after the
//     retry time one connection probes the next hop before the others follow.
//     Deferring that waiting work writes nothing per message (it was not an
//     attempt): a next hop going into Retry costs the one failed attempt's
//     write, however much waits for it.
//   - While a pass over a message or one of its deliveries runs (not while
//     its work merely waits in a queue) the store marks it active
//     (MarkActive), so that if the process dies the next start knows it was
//     in flight and does not retry it before the ladder's first rung. A
//     panic in the categorizer or a deliverer counts a crash of its message
//     at once; a process death counts only against a suspect processed in
//     isolation (the exact rule is in isolation.go: crash attribution).
//     After Hub.PoisonThreshold crashes the message is parked in the poison
//     queue and never retried automatically; two unrelated deaths never
//     park healthy mail.
//   - After every attempt the recipients' new state is persisted before
//     anything else happens; delivered and failed recipients are never
//     attempted again, also after a restart.
//   - A temporary failure is retried on the retry ladder (backoff) until
//     Hub.MessageExpiration has passed since arrival, then fails with 4.4.7
//     (RFC 3463: delivery time expired). A permanent failure fails at once.
//     A recipient with no route waits in the unreachable queue until a
//     Reload (routing may have changed) or its expiry.
//   - Failed recipients, delayed ones past Hub.DelayDSNAfter (once), and
//     delivered ones that asked for NOTIFY=SUCCESS get an RFC 3464 DSN,
//     queued through Submit with the null sender before the message leaves
//     the queue. No DSN is ever sent to the null sender.
//   - Every step is written to the message tracking log when one is given.
//   - It is the operator's queue (hub/ops.Queue, ops.go and opsmessage.go):
//     listings are snapshots taken without holding the queue across I/O; a
//     hold is persisted (queue.State.Held) and survives restarts; a release
//     frees held and poisoned mail; a delete fails what is pending with
//     5.3.0 in the same persist-then-DSN order as every final state.
//     Queue suspension is a runtime override, never persisted.
package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/delivery/mime7bit"
	"hubd/hub/queue"
	"hubd/hub/tracking"
	"hubd/policy"
)

// Options configure a Transport.
type Options struct {
	Logger         *slog.Logger                         // nil: discard
	TracerProvider trace.TracerProvider                 // nil: no tracing
	MeterProvider  metric.MeterProvider                 // nil: no metrics
	Deliverers     map[delivery.Kind]delivery.Deliverer // one per next-hop kind
	Clock          func() time.Time                     // nil: time.Now
	// Store overrides the durable store; nil opens a queue.LogStore in
	// Hub.SpoolDir at Start (the replicated backend plugs in here).
	Store queue.Store
	// Work overrides the work-lease seam (which message is due when, and
	// leased to whom: schedule.go); nil: a queue.LocalWork.
	Work queue.Work
	// Tracking receives the message tracking log's events; nil: none.
	Tracking *tracking.Log
	// Pressure is the back pressure monitor (hub/backpressure): at High,
	// Submit refuses with 452 4.3.1 so that the hub never takes a message
	// it may not be able to store. nil: never refuses.
	Pressure interface{ Admit(anonymous bool) error }
}

// Stats is a snapshot of the queue.
type Stats struct {
	Messages          int // messages in the queue, poisoned ones included
	PendingRecipients int // recipients neither delivered nor failed
	Poisoned          int // messages in the poison queue
	Held              int // messages held by an operator (ops.Queue.Hold)
	Suspects          int // messages processed in isolation after process deaths (isolation.go)
}

// Transport is the hub. Create it with New, then Start it.
type Transport struct {
	cfg    atomic.Pointer[policy.Config]
	opts   Options
	log    *slog.Logger
	track  *tracking.Log
	tracer trace.Tracer
	clock  func() time.Time
	store  queue.Store
	work   queue.Work // due times and pass leases (schedule.go)
	sched  *scheduler
	meters *hubMetrics   // nil: no metrics (metrics.go)
	depth  *depthTracker // queue depth for the metrics; nil when they are off (depth.go)

	global chan struct{} // overall delivery slots (Hub.MaxOutboundConnections, read at New)

	mu sync.Mutex
	// msgs: the messages with an entry; the others sleep (dormant.go).
	msgs    map[hub.QueueID]*entry
	hopNum  map[delivery.NextHop]int // next hops numbered for notes (dormant.go)
	hopList []delivery.NextHop       // hopList[n-1] is number n
	queues  map[delivery.NextHop]*hopQueue
	// suspended names the delivery queues an operator suspended (a runtime
	// override, never persisted: SuspendQueue).
	suspended map[string]bool
	iso       isolation  // the slot for the one suspect in flight (isolation.go)
	hopMu     sync.Mutex // serialises writes of next hops' Retry state (hopstate.go)
	started   bool
	closed    bool
	wg        sync.WaitGroup // work running or queued for the workers: passes, deliveries, deferrals

	jobs []job // passes and deferrals waiting for a worker, oldest first (workers.go)
	// passesQueued counts the passes in jobs (bounded by maxQueuedPasses:
	// schedule.go).
	passesQueued int
	jobsReady    *sync.Cond     // on mu: a job was queued, or Close
	workers      sync.WaitGroup // the passWorkers workers
	starved      []*hopQueue    // queues with work waiting for a global delivery slot
	// itemsWaiting counts the work items in all delivery queues (bounded
	// by maxWaitingItems: backlog.go).
	itemsWaiting int

	// runCtx is the context of every delivery; Close cancels it when its own
	// deadline passes, so deliverers give up and report Deferred.
	runCtx    context.Context
	cancelRun context.CancelFunc
}

// entry is one queued message. Every queued message has one, waiting or
// not, so its fields are ordered to leave no padding (the flags of both
// locks share one word; each byte is its own memory location) and times
// that are rarely set are kept as Unix nanoseconds (issue 11: RAM per
// waiting message).
type entry struct {
	id hub.QueueID
	// mu guards msg, msg.State, inflight, notifyRetry, dirty and
	// unreachable, and is held across the store Update that persists them,
	// so that Updates of one message are ordered.
	mu sync.Mutex
	// msg is nil while the message waits with its Message dropped
	// (evict.go); loadLocked reads it back.
	msg *queue.Message

	// Guarded by mu.
	// dirty: msg.State holds a change the store must have before msg may
	// be dropped (evict.go).
	dirty bool
	// unreachable: msg, when it was dropped, had recipients waiting in the
	// unreachable queue (Reload routes them again).
	unreachable bool
	// plain: the body is 7-bit with short lines (delivery.Message.Plain),
	// as seen by Submit; false after a restart (not known).
	plain bool
	// asleep: the message fell asleep and this entry is detached
	// (dormant.go). Set with t.mu held too.
	asleep bool

	// Guarded by Transport.mu.
	busy        bool // process is running
	removing    bool // settled; being removed
	suspect     bool // processed in isolation (isolation.go)
	passWaiting bool // a due pass waits for the isolation slot

	inflight map[int]bool // recipient indexes handed to a delivery queue and not back yet
	// inflightHop names the delivery queue of each index in inflight
	// (depth.go).
	inflightHop map[int]string
	// notifyRetry: a DSN could not be queued: try again at this time (Unix
	// nanoseconds; 0: none). Guarded by mu.
	notifyRetry int64
	// rev is the revision of the pass's lease (schedule.go) while a pass
	// is due to run or runs. Guarded by Transport.mu.
	rev uint64

	markMu sync.Mutex // serialises MarkActive/ClearActive
	// active is the store's active mark while a pass or a delivery of this
	// message runs; nil otherwise (most messages, most of the time).
	active *activeMark

	notifyMu sync.Mutex // one notify at a time, so that a DSN is queued once

	// Parking on a next hop in Retry (park.go). parkedOn and probeOf are
	// guarded by Transport.mu.
	parkedOn *hopQueue                // parked: waits for this queue's Retry to end
	probeOf  *hopQueue                // woken as this queue's probe
	parkHint *hopQueue                // deferred work by this queue in Retry, not yet parked
	wakeFor  atomic.Pointer[hopQueue] // recipients deferred for this queue are due now

	depth depthShare // its part of the queue depth metrics; guarded by depthTracker.mu
}

// notifyRetryAt is notifyRetry as a time (zero: none). e.mu is held.
func (e *entry) notifyRetryAt() time.Time {
	if e.notifyRetry == 0 {
		return time.Time{}
	}
	return time.Unix(0, e.notifyRetry)
}

func newEntry(m *queue.Message) *entry {
	return &entry{id: m.ID, msg: m}
}

// landed takes the recipients at indexes out of flight; the maps go with
// the last one (a waiting message keeps none: evict.go). e.mu is held.
func (e *entry) landed(indexes []int) {
	for _, i := range indexes {
		delete(e.inflight, i)
		delete(e.inflightHop, i)
	}
	if len(e.inflight) == 0 {
		e.inflight, e.inflightHop = nil, nil
	}
}

// New returns a Transport for cfg. Nothing is opened until Start.
func New(cfg *policy.Config, opts Options) (*Transport, error) {
	if cfg == nil {
		return nil, errors.New("transport: nil config")
	}
	if opts.Store == nil && cfg.Hub.SpoolDir == "" {
		return nil, errors.New("transport: hub.spool_dir is not set")
	}
	t := &Transport{
		opts:      opts,
		log:       opts.Logger,
		clock:     opts.Clock,
		msgs:      map[hub.QueueID]*entry{},
		hopNum:    map[delivery.NextHop]int{},
		queues:    map[delivery.NextHop]*hopQueue{},
		suspended: map[string]bool{},
		track:     opts.Tracking,
	}
	t.jobsReady = sync.NewCond(&t.mu)
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if t.clock == nil {
		t.clock = time.Now
	}
	tp := opts.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	t.tracer = tp.Tracer("hubd/hub/transport")
	t.depth = newDepthTracker()
	if opts.MeterProvider != nil {
		meters, err := newHubMetrics(opts.MeterProvider, t.depth, t.clock)
		if err != nil {
			return nil, fmt.Errorf("transport: metrics: %w", err)
		}
		t.meters = meters
	}
	t.cfg.Store(cfg)
	workers := cfg.Hub.MaxOutboundConnections
	if workers <= 0 {
		workers = 1000
	}
	t.global = make(chan struct{}, workers)
	t.runCtx, t.cancelRun = context.WithCancel(context.Background())
	t.work = opts.Work
	if t.work == nil {
		t.work = queue.NewLocalWork()
	}
	t.sched = newScheduler(t.clock, t.work, t.dispatch, t.wakeHop, t.passRoom)
	return t, nil
}

// Start opens the store, recovers every queued message and schedules it,
// and starts the scheduler. ctx bounds recovery only.
func (t *Transport) Start(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.started || t.closed {
		return errors.New("transport: already started")
	}
	if t.opts.Store != nil {
		t.store = t.opts.Store
	} else {
		h := t.cfg.Load().Hub
		// The log-structured spool (queue.LogStore); a spool of the older
		// one-file-per-message format is imported by its first open.
		s, err := queue.OpenLog(queue.LogOptions{Dir: h.SpoolDir, Logger: t.log, Clock: t.clock, CrashDelay: h.QuickRetryInterval,
			MeterProvider: t.opts.MeterProvider})
		if err != nil {
			return err
		}
		t.store = s
	}
	// One message at a time (Store.Scan), each dropped again at once
	// (evict.go) and asleep if it can be (dormant.go), due or not: the
	// scheduler claims due messages only as fast as the pass workers take
	// them (schedule.go), and each pass reads its message back, so a
	// start-up holds neither every queued message's envelope and state
	// nor, mostly, an entry per message.
	now := t.clock()
	cfg := t.cfg.Load()
	n, poisoned, suspects := 0, 0, 0
	var retry retryAtLoad
	t.depth.bulk(true)
	err := t.store.Scan(ctx, func(m *queue.Message) error {
		n++
		e := newEntry(m)
		e.suspect = suspect(m.State)
		t.msgs[m.ID] = e
		t.poisonIfCrashedLocked(e, cfg.Hub)
		if e.suspect && !m.Poisoned {
			suspects++
		}
		if m.Poisoned {
			poisoned++
		} else if t.parkAtLoadLocked(e, &retry) {
			// Parked on its next hop, still in Retry (hopstate.go): due
			// only at its deadlines.
			if due, ok := nextDue(e, now, cfg.Hub.DelayDSNAfter, cfg.Hub.MessageExpiration, e.parkedOn.hop.String()); ok {
				t.scheduleLocked(e, due)
			}
		} else {
			t.scheduleLoadedLocked(e, now, cfg.Hub)
		}
		t.restLocked(e) // parking may have routed it (hopstate.go)
		return nil
	})
	t.depth.bulk(false) // the arrival list, sorted once
	if err != nil {
		t.store.Close()
		return err
	}
	if n > 0 {
		t.log.Info("queue recovered", "messages", n, "poisoned", poisoned, "suspects", suspects)
	}
	t.forgetIdleHopsLocked(ctx, &retry)
	t.started = true
	t.startWorkersLocked()
	go t.sched.run()
	return nil
}

// errNotRunning is what Submit answers before Start or after Close.
var errNotRunning = &policy.Reply{Code: 451, Enhanced: "4.3.2", Text: "System not accepting messages"}

// Submit queues a message durably and schedules it; see hub.Submitter.
func (t *Transport) Submit(ctx context.Context, env hub.Envelope, body io.Reader) (hub.QueueID, error) {
	t.mu.Lock()
	running := t.started && !t.closed
	t.mu.Unlock()
	if !running {
		return "", errNotRunning
	}
	if len(env.Recipients) == 0 {
		return "", &policy.Reply{Code: 554, Enhanced: "5.5.1", Text: "No valid recipients"}
	}
	if p := t.opts.Pressure; p != nil {
		if err := p.Admit(false); err != nil {
			return "", err
		}
	}
	m := &queue.Message{ID: env.ID, Envelope: env, Arrived: t.clock()}
	m.Envelope.Recipients = append([]hub.Recipient(nil), env.Recipients...)
	for _, r := range m.Envelope.Recipients {
		m.Recipients = append(m.Recipients, queue.RecipientState{Address: r.Address, DSN: r, Status: queue.Queued})
	}
	pctx, span := t.startEnqueue(ctx, &m.Envelope)
	if m.Envelope.TraceParent == "" {
		// Nothing received it under a span of its own (the pickup
		// directory): the enqueue is where its history starts.
		m.Envelope.TraceParent = injectTraceParent(pctx)
	}
	var atEnd *headersAtEnd
	if src, ok := body.(hub.HeaderSource); ok {
		atEnd = &headersAtEnd{src: src, m: m}
		body = atEnd
	}
	plain := &mime7bit.PlainReader{R: body}
	err := t.store.Put(pctx, m, plain)
	endEnqueue(span, m, err)
	if err != nil {
		return "", err
	}
	// Debug: the receive connector logs the accepted message at Info with
	// its session; this line is the hub's own view, for tracing the queue.
	t.log.DebugContext(pctx, "queued", "id", m.ID, "from", env.From, "rcpts", len(env.Recipients),
		"size", m.Size, "connector", env.Connector)
	auth := ""
	if atEnd != nil {
		auth = atEnd.auth
	}
	t.recordReceive(m, auth)
	e := newEntry(m)
	e.plain = plain.Plain()
	t.depth.update(e) // not shared yet: no lock needed
	t.mu.Lock()
	defer t.mu.Unlock()
	t.msgs[m.ID] = e
	if !t.closed { // a Close racing with us: the message is safe on disk for the next Start
		t.scheduleLocked(e, m.Arrived)
	}
	return m.ID, nil
}

// Reload swaps the configuration. Routing, aliases, lists and retry
// intervals take effect on each message's next attempt, and every recipient
// in the unreachable queue is routed again at once (Exchange resubmits the
// unreachable queue when routing changes). MaxOutboundConnections and the
// spool directory need a restart.
func (t *Transport) Reload(cfg *policy.Config) {
	if cfg == nil {
		return
	}
	t.cfg.Store(cfg)
	now := t.clock()
	for _, e := range t.entries() {
		e.mu.Lock()
		if e.msg == nil && !e.unreachable {
			e.mu.Unlock()
			continue // dropped while it waited for nothing routing decides (evict.go)
		}
		if err := t.loadLocked(e); err != nil {
			e.mu.Unlock()
			t.log.Error("cannot read queued message", "id", e.id, "err", err)
			continue
		}
		resubmit := false
		for i := range e.msg.Recipients {
			r := &e.msg.Recipients[i]
			if r.Status == queue.Deferred && r.NextHop == unreachableQueue && !e.inflight[i] {
				r.NextAttempt = now // in memory only: a restart routes it anyway
				resubmit = true
			}
		}
		e.mu.Unlock()
		if resubmit {
			t.reschedule(e)
		}
	}
}

// Close stops scheduling, waits for running attempts to finish and persist
// their results, and closes the store. When ctx ends first, running
// deliveries are cancelled (their recipients stay deferred) and Close still
// waits for their state to be persisted, then returns ctx's error.
func (t *Transport) Close(ctx context.Context) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	started := t.started
	t.jobsReady.Broadcast() // idle workers see closed and drop what is queued
	t.mu.Unlock()
	if !started {
		t.cancelRun()
		return nil
	}
	t.sched.stop()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		t.cancelRun()
		<-done
	}
	t.cancelRun()
	t.stopWorkers()
	if cerr := t.store.Close(); err == nil {
		err = cerr
	}
	return err
}

// Stats counts what is queued, from the depth kept incrementally
// (depth.go): O(next hops), never O(queue).
func (t *Transport) Stats() Stats {
	d := t.depth.snapshot()
	s := Stats{Messages: int(d.messages), Poisoned: int(d.poisoned), Held: int(d.held), Suspects: int(d.suspects)}
	for _, n := range d.rcpts {
		s.PendingRecipients += int(n)
	}
	return s
}

// entries returns a snapshot of the queued messages.
func (t *Transport) entries() []*entry {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*entry, 0, len(t.msgs))
	for _, e := range t.msgs {
		out = append(out, e)
	}
	return out
}

// WaitIdle returns when no message is left to process (poisoned messages
// are parked, not waiting), or with ctx's error.
func (t *Transport) WaitIdle(ctx context.Context) error {
	for {
		n, changed := t.depth.idle()
		if n == 0 {
			return nil
		}
		select {
		case <-changed: // a message came, left or was poisoned
		case <-ctx.Done():
			return fmt.Errorf("transport: %d messages still queued: %w", n, ctx.Err())
		}
	}
}

// scheduleLocked makes e due at at (zero: not due; it waits for an
// event), replacing its due time. t.mu is held, so that the engine's due
// times of one message change in the order the transport decided them.
func (t *Transport) scheduleLocked(e *entry, at time.Time) {
	t.work.Schedule(e.id, at)
}
