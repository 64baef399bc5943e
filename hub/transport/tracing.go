package transport

// Spans of the hub (docs/spans.md has the whole model):
//
//   - hub.enqueue (PRODUCER, messaging.operation.type=send) around the
//     durable commit in Submit, a child of the caller's span (the SMTP
//     transaction); it carries the group-commit batch size. A submission
//     without a span in its context (a DSN, the pickup directory) starts a
//     new trace, linked to the stored traceparent when there is one (a DSN
//     carries the traceparent of the message it reports on).
//   - categorize (INTERNAL), one per pass over a due message, a new root
//     linked to the receiving span, with an event per resolve, expand and
//     route decision.
//   - deliver <next hop> (CONSUMER, messaging.operation.type=process), one
//     per delivery attempt, a new root linked to the receiving span; the
//     deliverers add CLIENT children (DNS, the SMTP or LMTP conversation).
//
// Why new traces with links after the enqueue: a pass or an attempt runs
// when the queue decides, often after the receiving trace has ended,
// possibly hours later or in another process after a restart, and the
// retries of one message would otherwise pile into one ever-growing trace.
// The messaging conventions make links the relationship between a message's
// creation and its processing (OTEP 0220), and the link is rebuilt from
// the traceparent stored with the message, so it survives a restart.

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"hubd/hub"
	"hubd/hub/categorizer"
	"hubd/hub/delivery"
	"hubd/hub/queue"
)

// messagingSystem is messaging.system for the hub's own queue (no
// registered value fits).
const messagingSystem = "hub"

var (
	attrQueueID   = attribute.Key("mta.queue_id")
	attrBatchSize = attribute.Key("hub.queue.batch_size")
	attrAttempt   = attribute.Key("mta.attempt")
	attrNextHop   = attribute.Key("mta.next_hop")
	attrRcptCount = attribute.Key("mta.rcpt.count")
	attrOutcome   = attribute.Key("mta.outcome")
)

// storedContext is the span context of the traceparent stored with a
// message (the receiving span), or an invalid one.
func storedContext(traceParent string) trace.SpanContext {
	if traceParent == "" {
		return trace.SpanContext{}
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": traceParent})
	return trace.SpanContextFromContext(ctx)
}

// linkToReceipt links a new root to the message's receiving span, if any.
func linkToReceipt(env *hub.Envelope, attrs ...attribute.KeyValue) []trace.SpanStartOption {
	if sc := storedContext(env.TraceParent); sc.IsValid() {
		return []trace.SpanStartOption{trace.WithLinks(trace.Link{SpanContext: sc, Attributes: attrs})}
	}
	return nil
}

// startEnqueue opens hub.enqueue for env and returns the context to pass
// the store, which reports the group commit's batch size into the span.
func (t *Transport) startEnqueue(ctx context.Context, env *hub.Envelope) (context.Context, trace.Span) {
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			semconv.MessagingSystemKey.String(messagingSystem),
			semconv.MessagingOperationTypeSend,
			semconv.MessagingDestinationName(submissionQueue),
			semconv.MessagingMessageID(string(env.ID)),
			attrRcptCount.Int(len(env.Recipients)),
			attribute.String("smtp.connector", env.Connector),
		),
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		opts = append(opts, trace.WithNewRoot())
		opts = append(opts, linkToReceipt(env)...)
	}
	ctx, span := t.tracer.Start(ctx, "hub.enqueue", opts...)
	ctx = queue.WithCommitObserver(ctx, func(info queue.CommitInfo) {
		span.SetAttributes(attrBatchSize.Int(info.BatchSize))
	})
	return ctx, span
}

// endEnqueue ends hub.enqueue with the message as stored, or the error.
func endEnqueue(span trace.Span, m *queue.Message, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		span.SetAttributes(semconv.ErrorTypeOther)
	} else {
		span.SetAttributes(semconv.MessagingMessageID(string(m.ID)), semconv.MessagingMessageBodySize(int(m.Size)))
	}
	span.End()
}

// startCategorize opens the span of a pass over m. Only m's immutable
// part (ID, Envelope) is read: its State is e.mu's.
func (t *Transport) startCategorize(m *queue.Message) (context.Context, trace.Span) {
	opts := append([]trace.SpanStartOption{
		trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attrQueueID.String(string(m.ID)), attrRcptCount.Int(len(m.Envelope.Recipients))),
	}, linkToReceipt(&m.Envelope)...)
	return t.tracer.Start(context.Background(), "categorize", opts...)
}

// Event names of the categorize span.
const (
	eventResolve = "categorizer.resolve" // a recipient resolved to another address (alias, mailbox address)
	eventExpand  = "categorizer.expand"  // a distribution list expanded on the way to a recipient
	eventRoute   = "categorizer.route"   // a recipient given a next hop, or refused one
)

// categorizerEvent adds one decision to the pass's span: the recipient by
// its index in the message's recipient list, addresses only with
// record_addresses.
func (t *Transport) categorizerEvent(span trace.Span, name string, index int, o categorizer.Outcome, extra ...attribute.KeyValue) {
	if !span.IsRecording() {
		return
	}
	attrs := append([]attribute.KeyValue{attribute.Int("mta.rcpt.index", index),
		attribute.String("mta.disposition", dispositionName(o.Disposition))}, extra...)
	if t.cfg.Load().Telemetry.RecordAddresses {
		attrs = append(attrs, attribute.String("mta.rcpt.address", o.Address))
		if o.ResolvedFrom != "" {
			attrs = append(attrs, attribute.String("mta.rcpt.resolved_from", o.ResolvedFrom))
		}
	}
	span.AddEvent(name, trace.WithAttributes(attrs...))
}

// expansionEvents records how the categorizer reached outcome o (the pass
// that fixes the recipient list): one expand event per list on its path
// (the list's address only with record_addresses, its depth always), and a
// resolve event when an alias or another address of a mailbox led to it.
func (t *Transport) expansionEvents(span trace.Span, index int, o categorizer.Outcome) {
	for depth, l := range o.Lists {
		extra := []attribute.KeyValue{attribute.Int("mta.list.depth", depth)}
		if t.cfg.Load().Telemetry.RecordAddresses {
			extra = append(extra, attribute.String("mta.list", l))
		}
		t.categorizerEvent(span, eventExpand, index, o, extra...)
	}
	if o.ResolvedFrom != "" {
		t.categorizerEvent(span, eventResolve, index, o)
	}
}

// routeEvent records the routing decision for recipient index.
func (t *Transport) routeEvent(span trace.Span, index int, o categorizer.Outcome) {
	var extra []attribute.KeyValue
	if o.Disposition == categorizer.Deliver {
		extra = append(extra, attrNextHop.String(o.NextHop.String()))
		if o.NextHop.Connector != "" {
			extra = append(extra, attribute.String("mta.send_connector", o.NextHop.Connector))
		}
	}
	if o.Reply != nil {
		extra = append(extra, attribute.Int("smtp.response.code", o.Reply.Code),
			attribute.String("smtp.response.enhanced_code", o.Reply.Enhanced))
	}
	t.categorizerEvent(span, eventRoute, index, o, extra...)
}

func dispositionName(d categorizer.Disposition) string {
	switch d {
	case categorizer.Deliver:
		return "deliver"
	case categorizer.Fail:
		return "fail"
	case categorizer.AlreadyExpanded:
		return "already_expanded"
	default:
		return "unreachable"
	}
}

// startDelivery opens the CONSUMER span of one delivery attempt: a new
// trace, linked to the receiving span from the stored traceparent.
func (t *Transport) startDelivery(ctx context.Context, m *queue.Message, it *workItem, attempt int) (context.Context, trace.Span) {
	opts := append([]trace.SpanStartOption{
		trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			semconv.MessagingSystemKey.String(messagingSystem),
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingDestinationName(it.hop.String()),
			semconv.MessagingMessageID(string(m.ID)),
			semconv.MessagingMessageBodySize(int(m.Size)),
			attrQueueID.String(string(m.ID)),
			attrNextHop.String(it.hop.String()),
			attrRcptCount.Int(len(it.rcpts)),
			attrAttempt.Int(attempt),
		),
	}, linkToReceipt(&m.Envelope, attrAttempt.Int(attempt))...)
	return t.tracer.Start(ctx, "deliver "+it.hop.String(), opts...)
}

// endDelivery ends an attempt's span with its outcome: "delivered",
// "deferred", "failed" or "mixed"; anything but delivered is an Error,
// with error.type the first failing recipient's enhanced status code.
func endDelivery(span trace.Span, results []delivery.Result) {
	outcome := ""
	errType := ""
	for _, r := range results {
		switch {
		case outcome == "":
			outcome = r.Status.String()
		case outcome != r.Status.String():
			outcome = "mixed"
		}
		if r.Status != delivery.Delivered && errType == "" {
			errType = r.Enhanced
			if errType == "" {
				errType = r.Status.String()
			}
		}
	}
	span.SetAttributes(attrOutcome.String(outcome))
	if outcome != delivery.Delivered.String() {
		if errType == "" {
			errType = semconv.ErrorTypeOther.Value.AsString()
		}
		span.SetAttributes(semconv.ErrorTypeKey.String(errType))
		span.SetStatus(codes.Error, outcome)
	}
	span.End()
}

// injectTraceParent is the W3C traceparent of ctx's span, "" if none.
func injectTraceParent(ctx context.Context) string {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	return carrier["traceparent"]
}

// attemptOf is the number of the attempt it is about to make: one more
// than the most any of its recipients had.
func (t *Transport) attemptOf(it *workItem) int {
	it.e.mu.Lock()
	defer it.e.mu.Unlock()
	n := 0
	for _, i := range it.indexes {
		n = max(n, it.e.msg.Recipients[i].Attempts)
	}
	return n + 1
}
