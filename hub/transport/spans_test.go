package transport

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/tracking"
	"hubd/internal/logbuf"
	"hubd/policy"
)

// startTraced is startTracked with an SDK TracerProvider recording into rec.
func startTraced(t *testing.T, cfg *policy.Config, dir string, rec *tracetest.SpanRecorder, md, sm *fake, clock func() time.Time) *harness {
	t.Helper()
	h := &harness{t: t, maildir: md, smtp: sm, logs: &logbuf.Buffer{}}
	track, err := tracking.Open(tracking.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { track.Close() })
	tr, err := New(cfg, Options{
		Logger:         slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)),
		Deliverers:     map[delivery.Kind]delivery.Deliverer{delivery.KindMaildir: md, delivery.KindSMTP: sm},
		Clock:          clock,
		Tracking:       track,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.tr = tr
	t.Cleanup(func() { h.close() })
	return h
}

// receive submits a message the way a receive connector does: under its
// transaction span, whose traceparent goes into the envelope.
func receive(t *testing.T, h *harness, rec *tracetest.SpanRecorder, rcpts ...string) (hub.QueueID, trace.SpanContext) {
	t.Helper()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	ctx, span := tp.Tracer("test").Start(context.Background(), "smtp.transaction", trace.WithSpanKind(trace.SpanKindServer))
	defer span.End()
	env := hub.Envelope{From: "sender@example.com", Connector: "in", ReceivedAt: time.Now(),
		TraceParent: injectTraceParent(ctx)}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, hub.Recipient{Address: r})
	}
	id, err := h.tr.Submit(ctx, env, strings.NewReader("Subject: x\r\n\r\nx\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	return id, span.SpanContext()
}

func endedNamed(rec *tracetest.SpanRecorder, prefix string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if strings.HasPrefix(s.Name(), prefix) {
			out = append(out, s)
		}
	}
	return out
}

func trackedEvents(t *testing.T, dir string, id hub.QueueID) []tracking.Event {
	t.Helper()
	var evs []tracking.Event
	err := tracking.Search(dir, tracking.Filter{}, func(e tracking.Event) bool {
		if e.QueueID == string(id) {
			evs = append(evs, e)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// The delivery attempt after a restart still links to the receiving span:
// the link comes from the traceparent stored with the message. The
// tracking log names the receiving trace for RECEIVE and the attempt's
// trace for its outcome.
func TestDeliveryLinkSurvivesRestart(t *testing.T) {
	spool, trackDir := t.TempDir(), t.TempDir()
	cfg := config(t, spool, `retry_interval = "1h"
  quick_retry_interval = "1h"
  transient_retry_interval = "1h"`)
	defer1h := func(int, delivery.Recipient) delivery.Result {
		return delivery.Result{Status: delivery.Deferred, Code: 421, Enhanced: "4.4.2", Text: "busy"}
	}
	rec1 := tracetest.NewSpanRecorder()
	h1 := startTraced(t, cfg, trackDir, rec1, &fake{result: ok}, &fake{result: defer1h}, nil)
	id, receipt := receive(t, h1, rec1, "carol@partner.example")
	eventually(t, "first attempt", func() bool { return len(endedNamed(rec1, "deliver ")) == 1 })

	enq := endedNamed(rec1, "hub.enqueue")
	if len(enq) != 1 || enq[0].Parent().SpanID() != receipt.SpanID() || enq[0].SpanKind() != trace.SpanKindProducer {
		t.Fatalf("hub.enqueue spans %v, want one PRODUCER child of the receipt", enq)
	}
	// hubctl message show prints the stored trace id.
	if d, err := h1.tr.Message(context.Background(), string(id)); err != nil || d.TraceID != receipt.TraceID().String() {
		t.Errorf("message detail trace id %q (%v), want %v", d.TraceID, err, receipt.TraceID())
	}
	h1.close()

	rec2 := tracetest.NewSpanRecorder()
	later := func() time.Time { return time.Now().Add(3 * time.Hour) }
	h2 := startTraced(t, cfg, trackDir, rec2, &fake{result: ok}, &fake{result: ok}, later)
	h2.waitIdle()
	attempts := endedNamed(rec2, "deliver ")
	if len(attempts) != 1 {
		t.Fatalf("%d attempts after the restart, want 1", len(attempts))
	}
	a := attempts[0]
	links := a.Links()
	if len(links) != 1 || links[0].SpanContext.TraceID() != receipt.TraceID() || links[0].SpanContext.SpanID() != receipt.SpanID() {
		t.Errorf("links after restart %+v, want the receiving span %v", links, receipt)
	}
	if a.Parent().IsValid() || a.SpanContext().TraceID() == receipt.TraceID() {
		t.Errorf("attempt after restart is not a new root: parent %v", a.Parent())
	}
	if got := attrs2(a)["mta.attempt"]; got != "2" {
		t.Errorf("mta.attempt = %s, want 2", got)
	}

	var receiveTrace, sendTrace string
	for _, e := range trackedEvents(t, trackDir, id) {
		switch e.Event {
		case tracking.Receive:
			receiveTrace = e.TraceID
		case tracking.Send:
			sendTrace = e.TraceID
		}
	}
	if receiveTrace != receipt.TraceID().String() || sendTrace != a.SpanContext().TraceID().String() {
		t.Errorf("tracking trace ids RECEIVE %q SEND %q, want %v and %v", receiveTrace, sendTrace,
			receipt.TraceID(), a.SpanContext().TraceID())
	}
}

// A DSN is its own message, but its spans link to the message it reports
// on: it carries that message's traceparent.
func TestDSNLinksToOriginal(t *testing.T) {
	spool, trackDir := t.TempDir(), t.TempDir()
	fail := func(int, delivery.Recipient) delivery.Result {
		return delivery.Result{Status: delivery.Failed, Code: 550, Enhanced: "5.1.1", Text: "no such user"}
	}
	rec := tracetest.NewSpanRecorder()
	h := startTraced(t, config(t, spool, ""), trackDir, rec, &fake{result: ok}, &fake{result: fail}, nil)
	id, receipt := receive(t, h, rec, "carol@partner.example")
	h.waitIdle()
	var dsnEnqueue, dsnDelivery sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		a := attrs2(s)
		if s.Name() == "hub.enqueue" && a["smtp.connector"] == "hub" {
			dsnEnqueue = s
		}
		if s.Name() == "deliver maildir" && a["mta.queue_id"] != string(id) {
			dsnDelivery = s
		}
	}
	for name, s := range map[string]sdktrace.ReadOnlySpan{"enqueue": dsnEnqueue, "delivery": dsnDelivery} {
		if s == nil {
			t.Fatalf("no DSN %s span", name)
		}
		if l := s.Links(); s.Parent().IsValid() || len(l) != 1 || l[0].SpanContext.SpanID() != receipt.SpanID() {
			t.Errorf("DSN %s span parent %v links %+v, want a root linked to %v", name, s.Parent(), l, receipt.SpanID())
		}
	}
}

func attrs2(s sdktrace.ReadOnlySpan) map[string]string {
	m := map[string]string{}
	for _, kv := range s.Attributes() {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}
