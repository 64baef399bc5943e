package transport

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/queue"
	"hubd/policy"
)

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
	t.depth.update(e)
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

// startSpan opens the span of one delivery attempt: a new trace, linked to
// the trace that received the message (the messaging conventions' pattern
// for work that outlives its producer; retries may come hours later).
func (t *Transport) startSpan(ctx context.Context, m *queue.Message, it *workItem) (context.Context, trace.Span) {
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
