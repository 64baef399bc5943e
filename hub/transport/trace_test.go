package transport

import (
	"context"
	"sync"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"hubd/hub/delivery"
	"hubd/internal/logbuf"
)

// recorder is a minimal TracerProvider that remembers each span's start
// configuration and the attributes set on it later.
type recorder struct {
	noop.TracerProvider
	mu    sync.Mutex
	spans []*recSpan
}

type recTracer struct {
	noop.Tracer
	r *recorder
}

type recSpan struct {
	noop.Span
	r     *recorder
	name  string
	cfg   trace.SpanConfig
	attrs []attribute.KeyValue
	ended bool
}

func (r *recorder) Tracer(string, ...trace.TracerOption) trace.Tracer { return recTracer{r: r} }

func (t recTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	s := &recSpan{r: t.r, name: name, cfg: trace.NewSpanStartConfig(opts...)}
	s.attrs = append(s.attrs, s.cfg.Attributes()...)
	t.r.mu.Lock()
	t.r.spans = append(t.r.spans, s)
	t.r.mu.Unlock()
	return trace.ContextWithSpan(ctx, s), s
}

func (s *recSpan) SetAttributes(kv ...attribute.KeyValue) {
	s.r.mu.Lock()
	s.attrs = append(s.attrs, kv...)
	s.r.mu.Unlock()
}

func (s *recSpan) End(...trace.SpanEndOption) {
	s.r.mu.Lock()
	s.ended = true
	s.r.mu.Unlock()
}

func TestDeliverySpan(t *testing.T) {
	spool := t.TempDir()
	rec := &recorder{}
	tr, err := New(config(t, spool, ""), Options{
		TracerProvider: rec,
		Deliverers:     map[delivery.Kind]delivery.Deliverer{delivery.KindMaildir: &fake{result: ok}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, tr: tr, logs: &logbuf.Buffer{}}
	t.Cleanup(h.close)
	id := h.submit("x\r\n", "alice@example.com", "bob@example.com")
	h.waitIdle()

	rec.mu.Lock()
	defer rec.mu.Unlock()
	// hub.enqueue and categorize come first (tracing.go); the delivery
	// attempt's span is the last.
	var names []string
	for _, s := range rec.spans {
		names = append(names, s.name)
	}
	if len(rec.spans) != 3 || names[0] != "hub.enqueue" || names[1] != "categorize" {
		t.Fatalf("spans %q, want hub.enqueue, categorize, deliver maildir", names)
	}
	s := rec.spans[2]
	got := map[attribute.Key]attribute.Value{}
	for _, kv := range s.attrs {
		got[kv.Key] = kv.Value
	}
	if s.name != "deliver maildir" || !s.ended || got["mta.queue_id"].AsString() != string(id) ||
		got["mta.next_hop"].AsString() != "maildir" || got["mta.rcpt.count"].AsInt64() != 2 ||
		got["mta.outcome"].AsString() != "delivered" || s.cfg.SpanKind() != trace.SpanKindConsumer || !s.cfg.NewRoot() {
		t.Errorf("span %q ended=%v attrs=%v kind=%v", s.name, s.ended, got, s.cfg.SpanKind())
	}
	links := s.cfg.Links()
	if len(links) != 1 || links[0].SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("links %+v, want the submitting trace", links)
	}
}
