// Package transport is the hub: it implements hub.Submitter over a durable
// queue.Store, runs the categorizer on every queued message, and drives the
// deliverers with a retry schedule, so that every accepted recipient ends
// delivered or failed (DESIGN.md invariant 3).
//
// What it promises:
//   - Submit returns only once the message is durable (the Store's Put).
//   - One scheduler goroutine with a heap decides when each message is next
//     due; nothing sleeps per message.
//   - A due message is categorized (aliases expanded once, then persisted,
//     so each recipient's index and delivery key "<queue id>.<index>" stay
//     fixed), routed again with the current config (a Reload changes routing
//     on the next attempt), and split into one work item per next hop.
//   - Work items run concurrently, bounded overall by Hub.MaxDeliveryWorkers
//     (read at New) and per next hop by MaxPerNextHop, and a work item waits
//     for its next hop's slot before taking an overall one, so a slow smart
//     host never holds slots that Maildir delivery needs (invariant 4).
//   - After every attempt the recipients' new state is persisted before
//     anything else happens; delivered and failed recipients are never
//     attempted again, also after a restart.
//   - A temporary failure is retried after Hub.RetryInterval, doubling up to
//     Hub.MaxRetryInterval, plus up to 10% jitter so that messages deferred
//     together do not retry in lockstep. A recipient still deferred once
//     Hub.MessageExpiration has passed since arrival fails with 4.4.7
//     (RFC 3463: delivery time expired). A permanent failure fails at once.
//   - A message is removed from the store once all its recipients are
//     delivered or failed. Failed recipients are logged ("recipient failed");
//     turning them into RFC 3464 delivery status notifications is the job of
//     the DSN generator, which submits the report back through Submit.
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

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/queue"
	"hubd/policy"
)

// MaxPerNextHop bounds concurrent deliveries to one next hop (Exchange's
// default of 20 connections per destination). With fewer than 40 workers
// overall, one next hop gets at most half of them, so that a stuck next hop
// always leaves slots for the others.
const MaxPerNextHop = 20

// Options configure a Transport.
type Options struct {
	Logger         *slog.Logger                         // nil: discard
	TracerProvider trace.TracerProvider                 // nil: no tracing
	Deliverers     map[delivery.Kind]delivery.Deliverer // one per next-hop kind
	Clock          func() time.Time                     // nil: time.Now
	// Store overrides the durable store; nil opens a queue.DiskStore in
	// Hub.SpoolDir at Start (the replicated backend plugs in here).
	Store queue.Store
}

// Stats is a snapshot of the queue.
type Stats struct {
	Messages          int // messages in the queue
	PendingRecipients int // recipients neither delivered nor failed
}

// Transport is the hub. Create it with New, then Start it.
type Transport struct {
	cfg    atomic.Pointer[policy.Config]
	opts   Options
	log    *slog.Logger
	tracer trace.Tracer
	clock  func() time.Time
	store  queue.Store
	sched  *scheduler

	global chan struct{} // overall delivery slots
	perHop int           // slots per next hop

	mu      sync.Mutex
	msgs    map[hub.QueueID]*entry
	hops    map[delivery.NextHop]*hopSlots
	changed chan struct{} // closed and replaced when a message leaves the queue
	started bool
	closed  bool
	wg      sync.WaitGroup // running attempts

	// runCtx is the context of every delivery; Close cancels it when its own
	// deadline passes, so deliverers give up and report Deferred.
	runCtx    context.Context
	cancelRun context.CancelFunc
}

// entry is one queued message. mu guards msg.State and is held across the
// store Update that persists it, so that Updates of one message are ordered.
type entry struct {
	mu   sync.Mutex
	msg  *queue.Message
	busy bool      // an attempt is running (guarded by Transport.mu)
	due  time.Time // when the scheduler should next run it (guarded by Transport.mu)
}

type hopSlots struct {
	slots chan struct{}
	users int
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
		opts:    opts,
		log:     opts.Logger,
		clock:   opts.Clock,
		msgs:    map[hub.QueueID]*entry{},
		hops:    map[delivery.NextHop]*hopSlots{},
		changed: make(chan struct{}),
	}
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
	t.cfg.Store(cfg)
	workers := cfg.Hub.MaxOutboundConnections
	if workers <= 0 {
		workers = 1000
	}
	t.global = make(chan struct{}, workers)
	t.perHop = min(max(1, cfg.Hub.MaxPerDomainOutboundConnections), max(1, workers/2))
	t.runCtx, t.cancelRun = context.WithCancel(context.Background())
	t.sched = newScheduler(t.clock, t.dispatch)
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
		s, err := queue.OpenDisk(queue.DiskOptions{Dir: t.cfg.Load().Hub.SpoolDir, Logger: t.log, Clock: t.clock})
		if err != nil {
			return err
		}
		t.store = s
	}
	msgs, err := t.store.Load(ctx)
	if err != nil {
		t.store.Close()
		return err
	}
	now := t.clock()
	for _, m := range msgs {
		e := &entry{msg: m}
		t.msgs[m.ID] = e
		t.scheduleLocked(e, nextDue(m, now))
	}
	if len(msgs) > 0 {
		t.log.Info("queue recovered", "messages", len(msgs))
	}
	t.started = true
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
	m := &queue.Message{Envelope: env, Arrived: t.clock()}
	m.Envelope.Recipients = append([]hub.Recipient(nil), env.Recipients...)
	for _, r := range m.Envelope.Recipients {
		m.Recipients = append(m.Recipients, queue.RecipientState{Address: r.Address, DSN: r, Status: queue.Queued})
	}
	if err := t.store.Put(ctx, m, body); err != nil {
		return "", err
	}
	// Debug: the receive connector logs the accepted message at Info with
	// its session; this line is the hub's own view, for tracing the queue.
	t.log.Debug("queued", "id", m.ID, "from", env.From, "rcpts", len(env.Recipients),
		"size", m.Size, "connector", env.Connector)
	t.mu.Lock()
	defer t.mu.Unlock()
	e := &entry{msg: m}
	t.msgs[m.ID] = e
	if !t.closed { // a Close racing with us: the message is safe on disk for the next Start
		t.scheduleLocked(e, m.Arrived)
	}
	return m.ID, nil
}

// Reload swaps the configuration. Routing, aliases and retry intervals take
// effect on each message's next attempt; MaxDeliveryWorkers and the spool
// directory need a restart.
func (t *Transport) Reload(cfg *policy.Config) {
	if cfg != nil {
		t.cfg.Store(cfg)
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
	if cerr := t.store.Close(); err == nil {
		err = cerr
	}
	return err
}

// Stats counts what is queued.
func (t *Transport) Stats() Stats {
	t.mu.Lock()
	entries := make([]*entry, 0, len(t.msgs))
	for _, e := range t.msgs {
		entries = append(entries, e)
	}
	t.mu.Unlock()
	s := Stats{Messages: len(entries)}
	for _, e := range entries {
		e.mu.Lock()
		for _, r := range e.msg.Recipients {
			if !r.Status.Settled() {
				s.PendingRecipients++
			}
		}
		e.mu.Unlock()
	}
	return s
}

// WaitIdle returns when the queue is empty, or with ctx's error.
func (t *Transport) WaitIdle(ctx context.Context) error {
	for {
		t.mu.Lock()
		n, ch := len(t.msgs), t.changed
		t.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("transport: %d messages still queued: %w", n, ctx.Err())
		}
	}
}

// scheduleLocked makes e due at at. t.mu is held.
func (t *Transport) scheduleLocked(e *entry, at time.Time) {
	e.due = at
	t.sched.add(e.msg.ID, at)
}

// dispatch is called by the scheduler when message id is due at at.
func (t *Transport) dispatch(id hub.QueueID, at time.Time) {
	t.mu.Lock()
	e := t.msgs[id]
	if e == nil || e.busy || t.closed || !e.due.Equal(at) {
		// Gone, already running (it reschedules itself when done), or a
		// stale heap item superseded by a later schedule.
		t.mu.Unlock()
		return
	}
	e.busy = true
	t.wg.Add(1)
	t.mu.Unlock()
	go t.attempt(e)
}

// finish ends an attempt on e: remove the message if every recipient is
// settled, otherwise schedule it when its earliest recipient is due.
func (t *Transport) finish(e *entry) {
	e.mu.Lock()
	settled := allSettled(e.msg)
	due := nextDue(e.msg, t.clock())
	e.mu.Unlock()
	if settled {
		if err := t.store.Remove(e.msg.ID); err != nil {
			// deliver skipped the Update of the settled state, counting on
			// this Remove: persist it now, so that after a restart the
			// message is loaded, found settled and removed again.
			t.log.Error("cannot remove message", "id", e.msg.ID, "err", err)
			e.mu.Lock()
			t.persist(e, e.msg.State)
			e.mu.Unlock()
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e.busy = false
	switch {
	case settled:
		delete(t.msgs, e.msg.ID)
		close(t.changed)
		t.changed = make(chan struct{})
	case !t.closed:
		t.scheduleLocked(e, due)
	}
}

func allSettled(m *queue.Message) bool { return stateSettled(m.State) }

func stateSettled(st queue.State) bool {
	for _, r := range st.Recipients {
		if !r.Status.Settled() {
			return false
		}
	}
	return true
}

// nextDue is when m should next be attempted: now if a recipient was never
// tried or it was never categorized, else its earliest retry time.
func nextDue(m *queue.Message, now time.Time) time.Time {
	if !m.Expanded {
		// Not categorized yet; after a categorizer crash every recipient
		// carries the retry time.
		if len(m.Recipients) > 0 && m.Recipients[0].NextAttempt.After(now) {
			return m.Recipients[0].NextAttempt
		}
		return now
	}
	var due time.Time
	for _, r := range m.Recipients {
		switch {
		case r.Status == queue.Queued:
			return now
		case r.Status == queue.Deferred && (due.IsZero() || r.NextAttempt.Before(due)):
			due = r.NextAttempt
		}
	}
	if due.IsZero() {
		return now
	}
	return due
}

// hopAcquire takes a slot for hop, then an overall slot; false if ctx ended.
func (t *Transport) hopAcquire(ctx context.Context, hop delivery.NextHop) (release func(), ok bool) {
	t.mu.Lock()
	h := t.hops[hop]
	if h == nil {
		h = &hopSlots{slots: make(chan struct{}, t.perHop)}
		t.hops[hop] = h
	}
	h.users++
	t.mu.Unlock()
	drop := func() {
		t.mu.Lock()
		if h.users--; h.users == 0 {
			delete(t.hops, hop)
		}
		t.mu.Unlock()
	}
	select {
	case h.slots <- struct{}{}:
	case <-ctx.Done():
		drop()
		return nil, false
	}
	select {
	case t.global <- struct{}{}:
	case <-ctx.Done():
		<-h.slots
		drop()
		return nil, false
	}
	return func() { <-t.global; <-h.slots; drop() }, true
}
