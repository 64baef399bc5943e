package transport

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel/trace"

	"hubd/hub/categorizer"
	"hubd/hub/queue"
	"hubd/hub/tracking"
)

// Logging and message tracking. The slog line is for the operator reading
// the daemon's log; the tracking event is the per-message history hubctl
// searches (Exchange's message tracking log).

// record logs recipient r's state after an attempt or a decision:
// "delivered", "deferred", or "recipient failed", and tracks it as DELIVER
// (local) or SEND (SMTP), DEFER, or FAIL.
func (t *Transport) record(m *queue.Message, r queue.RecipientState) {
	t.recordIn(trace.SpanContext{}, m, r)
}

// recordIn is record for the delivery attempt whose span is sc: the log
// line is written in its context and the tracking event carries its trace
// id. An invalid sc (no attempt, or not traced) stands for the receiving
// span, from the traceparent stored with the message.
func (t *Transport) recordIn(sc trace.SpanContext, m *queue.Message, r queue.RecipientState) {
	attrs := []any{"id", m.ID, "rcpt", r.Address, "next_hop", r.NextHop, "attempts", r.Attempts,
		"reply", replyString(r.LastReply)}
	if r.ResolvedFrom != "" {
		attrs = append(attrs, "resolved_from", r.ResolvedFrom)
	}
	if r.LastReply.RemoteMTA != "" {
		attrs = append(attrs, "remote_mta", r.LastReply.RemoteMTA)
	}
	ev := t.event(m, r)
	if !sc.IsValid() {
		sc = storedContext(m.Envelope.TraceParent)
	}
	if sc.IsValid() {
		ev.TraceID = sc.TraceID().String()
	}
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	switch r.Status {
	case queue.Delivered:
		t.log.InfoContext(ctx, "delivered", attrs...)
		ev.Event = tracking.Deliver
		if strings.HasPrefix(r.NextHop, "smtp:") {
			ev.Event = tracking.Send
		}
	case queue.Deferred:
		t.log.InfoContext(ctx, "deferred", append(attrs, "next_attempt", r.NextAttempt)...)
		ev.Event = tracking.Defer
	case queue.Failed:
		t.log.WarnContext(ctx, "recipient failed", attrs...)
		ev.Event = tracking.Fail
	default:
		return
	}
	t.track.Record(ev)
}

// recordAll records every recipient in rs.
func (t *Transport) recordAll(m *queue.Message, rs []queue.RecipientState) {
	for _, r := range rs {
		t.record(m, r)
	}
}

func (t *Transport) event(m *queue.Message, r queue.RecipientState) tracking.Event {
	return tracking.Event{
		QueueID:          string(m.ID),
		MessageID:        m.Envelope.MessageID,
		Source:           "HUB",
		Sender:           m.Envelope.From,
		Recipient:        r.Address,
		RelatedRecipient: r.ResolvedFrom,
		NextHop:          r.NextHop,
		Reply:            replyString(r.LastReply),
		RemoteMTA:        r.LastReply.RemoteMTA,
		Size:             m.Size,
		TraceID:          traceID(m.Envelope.TraceParent),
	}
}

// recordReceive tracks a message entering the queue.
func (t *Transport) recordReceive(m *queue.Message, authResults string) {
	if t.track == nil {
		return
	}
	rcpts := make([]string, len(m.Envelope.Recipients))
	for i, r := range m.Envelope.Recipients {
		rcpts[i] = r.Address
	}
	source := "SMTP"
	switch m.Envelope.Connector {
	case "hub":
		source = "DSN"
	case "pickup":
		source = "PICKUP" // the maildrop (sendmail), as Exchange's Pickup directory
	}
	t.track.Record(tracking.Event{
		Event:       tracking.Receive,
		QueueID:     string(m.ID),
		MessageID:   m.Envelope.MessageID,
		Source:      source,
		Connector:   m.Envelope.Connector,
		AuthResults: authResults,
		ClientAddr:  m.Envelope.ClientAddr,
		Sender:      m.Envelope.From,
		Recipient:   strings.Join(rcpts, ","),
		Size:        m.Size,
		TraceID:     traceID(m.Envelope.TraceParent),
	})
}

// recordExpansion tracks how the categorizer got to outcome o: one EXPAND
// per list on its path, RESOLVE when an alias or another address of a
// mailbox led to it.
func (t *Transport) recordExpansion(m *queue.Message, o categorizer.Outcome) {
	if t.track == nil {
		return
	}
	for _, l := range o.Lists {
		ev := t.event(m, queue.RecipientState{Address: o.Address})
		ev.Event, ev.RelatedRecipient = tracking.Expand, l
		t.track.Record(ev)
	}
	if o.ResolvedFrom != "" && len(o.Lists) == 0 {
		ev := t.event(m, queue.RecipientState{Address: o.Address, ResolvedFrom: o.ResolvedFrom})
		ev.Event = tracking.Resolve
		t.track.Record(ev)
	}
}

// recordRoute tracks the next hop chosen for a recipient, when it changes.
func (t *Transport) recordRoute(m *queue.Message, r queue.RecipientState, o categorizer.Outcome) {
	if t.track == nil {
		return
	}
	ev := t.event(m, r)
	ev.Event, ev.NextHop, ev.Reply, ev.RemoteMTA = tracking.Route, o.NextHop.String(), o.Why, ""
	ev.Connector = o.NextHop.Connector
	t.track.Record(ev)
}

// recordPoison logs and tracks a message parked in the poison queue.
func (t *Transport) recordPoison(m *queue.Message, crashes int, why string) {
	t.log.Error("message moved to the poison queue; it will not be retried until an operator releases it",
		"id", m.ID, "crashes", crashes, "why", why)
	ev := t.event(m, queue.RecipientState{})
	ev.Event, ev.Reply = tracking.Poison, why
	t.track.Record(ev)
}
