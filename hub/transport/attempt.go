package transport

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"hubd/hub"
	"hubd/hub/categorizer"
	"hubd/hub/delivery"
	"hubd/hub/queue"
	"hubd/policy"
)

// attempt runs one pass over a due message: categorize, route, deliver,
// persist, reschedule.
func (t *Transport) attempt(e *entry) {
	defer t.wg.Done()
	defer t.finish(e)
	cfg := t.cfg.Load()
	if !t.expand(cfg, e) {
		return
	}
	items := t.route(cfg, e)
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Go(func() { t.deliver(e, it) })
	}
	wg.Wait()
}

// expand resolves the envelope recipients once, through the categorizer,
// into the fixed recipient list, and persists it. It reports whether the
// attempt may go on.
func (t *Transport) expand(cfg *policy.Config, e *entry) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.msg
	if m.Expanded {
		return true
	}
	inputs := make([]categorizer.Input, len(m.Recipients))
	for i, r := range m.Recipients {
		inputs[i] = categorizer.Input{Address: r.Address, DSN: r.DSN}
	}
	outcomes, err := categorizeSafely(cfg, m.Size, inputs)
	st := queue.State{Expanded: true, CategorizerCrashes: m.CategorizerCrashes}
	if err != nil {
		// Keep the message and count the crash; a later poison queue parks
		// messages that crash the categorizer repeatedly.
		// Each crash counts as a failed attempt, so the message still
		// expires (4.4.7) instead of being retried for ever.
		st = cloneState(m.State)
		st.CategorizerCrashes++
		t.log.Error("categorizer crashed", "id", m.ID, "err", err, "crashes", st.CategorizerCrashes)
		now := t.clock()
		crashed := delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.3.0", Text: "Categorizer failed"}
		for i := range st.Recipients {
			st.Recipients[i] = t.settle(cfg, m, st.Recipients[i], crashed, "", now)
		}
		t.persist(e, st)
		for i, rs := range st.Recipients {
			if rs.Status == queue.Failed {
				t.logResult(m, i)
			}
		}
		return false
	}
	identity := len(outcomes) == len(inputs)
	for k, o := range outcomes {
		rs := queue.RecipientState{Address: o.Address, ResolvedFrom: o.ResolvedFrom, DSN: inputs[o.Input].DSN, Status: queue.Queued}
		if o.Disposition == categorizer.Fail {
			rs.Status = queue.Failed
			rs.LastReply = replyOf(o.Reply)
		}
		if o.Input != k || o.Address != inputs[k].Address || rs.Status != queue.Queued {
			identity = false
		}
		st.Recipients = append(st.Recipients, rs)
	}
	if identity {
		// No alias expanded and nothing failed: the recipient list is the
		// envelope's own. Persisting it would cost an fsync per message for
		// nothing; the first Update after an attempt records it. If a crash
		// comes first, the restart expands again, perhaps differently after a
		// configuration change, which is harmless: delivery keys derive from
		// the final address, not from its position (deliveryKey).
		e.msg.State = st
	} else {
		t.persist(e, st)
	}
	for i, rs := range st.Recipients {
		if rs.Status == queue.Failed {
			t.logResult(m, i)
		}
	}
	return true
}

func categorizeSafely(cfg *policy.Config, size int64, in []categorizer.Input) (out []categorizer.Outcome, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return categorizer.Categorize(cfg, size, in), nil
}

// workItem is one next hop's share of an attempt.
type workItem struct {
	hop     delivery.NextHop
	indexes []int // into the message's recipients
	rcpts   []delivery.Recipient
}

// route routes every recipient that is due with the current config. It
// settles what routing alone decides (a mailbox removed, no route) and
// persists that, and returns the rest grouped by next hop.
func (t *Transport) route(cfg *policy.Config, e *entry) []workItem {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.msg
	now := t.clock()
	st := cloneState(m.State)
	var outcomes []categorizer.Outcome
	var owners []int  // recipient index of each outcome
	var settled []int // recipients routing alone decided
	grew := false
	for i, n := 0, len(st.Recipients); i < n; i++ {
		r := st.Recipients[i]
		if r.Status.Settled() || (r.Status == queue.Deferred && r.NextAttempt.After(now)) {
			continue
		}
		out, err := categorizeSafely(cfg, m.Size, []categorizer.Input{{Address: r.Address, DSN: r.DSN}})
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
					ResolvedFrom: cmp.Or(r.ResolvedFrom, r.Address), DSN: r.DSN, Status: queue.Queued})
			}
			grew = true
		}
		o := out[0]
		switch o.Disposition {
		case categorizer.Deliver:
			outcomes = append(outcomes, o)
			owners = append(owners, i)
		case categorizer.Fail:
			st.Recipients[i] = t.settle(cfg, m, st.Recipients[i], delivery.Result{Status: delivery.Failed, Code: o.Reply.Code,
				Enhanced: o.Reply.Enhanced, Text: o.Reply.Text}, "", now)
			settled = append(settled, i)
		default: // unreachable: kept and retried (DESIGN.md: the unreachable queue)
			st.Recipients[i] = t.settle(cfg, m, st.Recipients[i], delivery.Result{Status: delivery.Deferred, Code: o.Reply.Code,
				Enhanced: o.Reply.Enhanced, Text: o.Reply.Text}, "unreachable", now)
			settled = append(settled, i)
		}
	}
	if len(settled) > 0 || grew {
		t.persist(e, st)
		for _, i := range settled {
			t.logResult(e.msg, i)
		}
	}
	var items []workItem
	for _, wi := range categorizer.Bifurcate(outcomes) {
		it := workItem{hop: wi.NextHop}
		for _, k := range wi.Outcomes {
			i := owners[k]
			it.indexes = append(it.indexes, i)
			it.rcpts = append(it.rcpts, delivery.Recipient{
				Address: outcomes[k].Address,
				Key:     deliveryKey(m.ID, outcomes[k].Address),
				Maildir: outcomes[k].Maildir,
				DSN:     m.Recipients[i].DSN,
			})
		}
		items = append(items, it)
	}
	return items
}

// deliver makes one delivery attempt for one work item and persists the
// outcome before anything else happens.
func (t *Transport) deliver(e *entry, it workItem) {
	ctx := t.runCtx
	release, ok := t.hopAcquire(ctx, it.hop)
	if !ok {
		return // shutting down: the recipients stay as they are, for the next Start
	}
	m := e.msg // ID, Envelope and Size never change
	ctx, span := t.startSpan(ctx, m, it)
	results := t.callDeliverer(ctx, it, m)
	release()

	cfg := t.cfg.Load()
	now := t.clock()
	e.mu.Lock()
	st := cloneState(e.msg.State)
	for k, i := range it.indexes {
		st.Recipients[i] = t.settle(cfg, m, st.Recipients[i], results[k], it.hop.String(), now)
	}
	if stateSettled(st) {
		// Every recipient is settled: finish removes the message durably,
		// which records the outcome as well as an Update would, for one
		// fsync less on the hot path (finish persists st if Remove fails).
		e.msg.State = st
	} else {
		t.persist(e, st)
	}
	for _, i := range it.indexes {
		t.logResult(e.msg, i)
	}
	e.mu.Unlock()
	endSpan(span, results)
}

// callDeliverer runs the deliverer for it, guaranteeing one result per
// recipient whatever the deliverer does.
func (t *Transport) callDeliverer(ctx context.Context, it workItem, m *queue.Message) (results []delivery.Result) {
	d := t.opts.Deliverers[it.hop.Kind]
	defer func() {
		if p := recover(); p != nil {
			t.log.Error("deliverer panicked", "id", m.ID, "next_hop", it.hop.String(), "panic", p)
			results = nil
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
		return results
	}
	msg := delivery.Message{
		ID:       m.ID,
		Envelope: &m.Envelope,
		Size:     m.Size,
		Open:     func() (io.ReadCloser, error) { return t.store.Open(m.ID) },
	}
	return d.Deliver(ctx, it.hop, msg, it.rcpts)
}

// settle applies one attempt's result to a recipient's state.
func (t *Transport) settle(cfg *policy.Config, m *queue.Message, r queue.RecipientState, res delivery.Result, hop string, now time.Time) queue.RecipientState {
	r.Attempts++
	r.NextHop = hop
	r.LastReply = queue.Reply{Code: res.Code, Enhanced: res.Enhanced, Text: res.Text, RemoteMTA: res.RemoteMTA}
	r.NextAttempt = time.Time{}
	switch res.Status {
	case delivery.Delivered:
		r.Status = queue.Delivered
	case delivery.Failed:
		r.Status = queue.Failed
	default:
		expires := m.Arrived.Add(cfg.Hub.MessageExpiration)
		if cfg.Hub.MessageExpiration > 0 && !now.Before(expires) {
			// RFC 3463 X.4.7: delivery time expired.
			r.Status = queue.Failed
			r.LastReply = queue.Reply{Code: 451, Enhanced: "4.4.7",
				Text: "Message expired in queue; last error: " + res.Text, RemoteMTA: res.RemoteMTA}
			break
		}
		r.Status = queue.Deferred
		r.NextAttempt = now.Add(backoff(cfg.Hub, r.Attempts))
		if cfg.Hub.MessageExpiration > 0 && r.NextAttempt.After(expires) {
			r.NextAttempt = expires // one last attempt at expiry, then 4.4.7
		}
	}
	return r
}

// backoff is the delay after the n-th failed attempt, on the retry ladder
// of DESIGN.md (Exchange's hub defaults): QuickRetryCount "glitch" retries
// QuickRetryInterval apart, then TransientRetryCount retries
// TransientRetryInterval apart, then RetryInterval for ever (until expiry).
// Up to 10% jitter is added, in integer nanoseconds, so that messages
// deferred together do not retry in lockstep.
func backoff(h policy.Hub, n int) time.Duration {
	var d time.Duration
	switch {
	case n <= h.QuickRetryCount:
		d = h.QuickRetryInterval
	case n <= h.QuickRetryCount+h.TransientRetryCount:
		d = h.TransientRetryInterval
	default:
		d = h.RetryInterval
	}
	if d <= 0 {
		d = time.Minute
	}
	if j := int64(d / 10); j > 0 {
		d += time.Duration(rand.Int64N(j))
	}
	return d
}

// persist stores st as e's state and makes it current. e.mu is held. A
// failed Update is logged and the state kept in memory: the attempt's
// effect already happened, and refusing to remember it would retry (and
// duplicate) delivered mail at once instead of only after a crash.
func (t *Transport) persist(e *entry, st queue.State) {
	if err := t.store.Update(context.Background(), e.msg.ID, st); err != nil {
		t.log.Error("cannot persist recipient state", "id", e.msg.ID, "err", err)
	}
	e.msg.State = st
}

func cloneState(s queue.State) queue.State {
	s.Recipients = append([]queue.RecipientState(nil), s.Recipients...)
	return s
}

func replyOf(r *policy.Reply) queue.Reply {
	if r == nil {
		return queue.Reply{}
	}
	return queue.Reply{Code: r.Code, Enhanced: r.Enhanced, Text: r.Text}
}

// startSpan opens the span of one delivery attempt: a new trace, linked to
// the trace that received the message (the messaging conventions' pattern
// for work that outlives its producer; retries may come hours later).
func (t *Transport) startSpan(ctx context.Context, m *queue.Message, it workItem) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{
		trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("mta.queue_id", string(m.ID)),
			attribute.String("mta.next_hop", it.hop.String()),
			attribute.Int("mta.rcpt.count", len(it.rcpts)),
		),
	}
	if tp := m.Envelope.TraceParent; tp != "" {
		parent := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": tp})
		if sc := trace.SpanContextFromContext(parent); sc.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		}
	}
	return t.tracer.Start(ctx, "deliver "+it.hop.String(), opts...)
}

func endSpan(span trace.Span, results []delivery.Result) {
	outcome := ""
	for _, r := range results {
		switch {
		case outcome == "":
			outcome = r.Status.String()
		case outcome != r.Status.String():
			outcome = "mixed"
		}
	}
	span.SetAttributes(attribute.String("mta.outcome", outcome))
	if outcome != delivery.Delivered.String() {
		span.SetStatus(codes.Error, outcome)
	}
	span.End()
}

// logResult logs recipient i's state after an attempt: "delivered",
// "deferred", or "recipient failed" (the line an operator looks for, and what
// the DSN generator will report).
func (t *Transport) logResult(m *queue.Message, i int) {
	r := m.Recipients[i]
	attrs := []any{"id", m.ID, "rcpt", r.Address, "next_hop", r.NextHop, "attempts", r.Attempts,
		"reply", replyString(r.LastReply)}
	if r.ResolvedFrom != "" {
		attrs = append(attrs, "resolved_from", r.ResolvedFrom)
	}
	if r.LastReply.RemoteMTA != "" {
		attrs = append(attrs, "remote_mta", r.LastReply.RemoteMTA)
	}
	switch r.Status {
	case queue.Delivered:
		t.log.Info("delivered", attrs...)
	case queue.Deferred:
		t.log.Info("deferred", append(attrs, "next_attempt", r.NextAttempt)...)
	case queue.Failed:
		t.log.Warn("recipient failed", attrs...)
	}
}

func replyString(r queue.Reply) string {
	if r.Code == 0 {
		return r.Text
	}
	return strconv.Itoa(r.Code) + " " + r.Enhanced + " " + r.Text
}

// deliveryKey names one final recipient of one message for the deliverers'
// idempotency (delivery.Recipient.Key): the queue id and a hash of the
// lower-cased address. It does not depend on the recipient's position, so
// an expansion recomputed after a crash or a reload keeps every key.
func deliveryKey(id hub.QueueID, addr string) string {
	h := fnv.New64a()
	h.Write([]byte(strings.ToLower(addr)))
	return fmt.Sprintf("%s.%016x", id, h.Sum64())
}

// hasRecipient reports whether addr is already among rs (case-insensitive).
func hasRecipient(rs []queue.RecipientState, addr string) bool {
	for _, r := range rs {
		if strings.EqualFold(r.Address, addr) {
			return true
		}
	}
	return false
}
