package telemetry

// Log lines that carry their trace: a record logged with a context that
// holds a valid span context (InfoContext(ctx, ...)) gets trace_id and
// span_id, so that an operator can go from a log line to its trace and
// back. The handler needs no SDK: it reads trace.SpanContextFromContext,
// which the no-op provider leaves empty, and then adds nothing.

import (
	"context"
	"errors"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// Log attribute keys of the trace context (the OpenTelemetry log data
// model's names, as other Go services print them).
const (
	TraceIDKey = "trace_id"
	SpanIDKey  = "span_id"
)

// NewTraceHandler wraps next so that every record logged in a traced
// context carries trace_id and span_id (hex, as W3C traceparent writes
// them).
func NewTraceHandler(next slog.Handler) slog.Handler { return traceHandler{next} }

type traceHandler struct{ next slog.Handler }

func (h traceHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String(TraceIDKey, sc.TraceID().String()), slog.String(SpanIDKey, sc.SpanID().String()))
	}
	return h.next.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.next.WithAttrs(as)}
}

// WithGroup nests what follows; the ids then land in the group too
// (hubd's logger opens no groups).
func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.next.WithGroup(name)}
}

// fanout sends every record to each handler (stderr and the OTLP bridge).
type fanout []slog.Handler

func (f fanout) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range f {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (f fanout) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range f {
		if h.Enabled(ctx, r.Level) {
			errs = append(errs, h.Handle(ctx, r.Clone()))
		}
	}
	return errors.Join(errs...)
}

func (f fanout) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (f fanout) WithGroup(name string) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithGroup(name)
	}
	return out
}

// leveled applies hubd's -log-level to the OTLP bridge too.
type leveled struct {
	slog.Handler
	level slog.Leveler
}

func (l leveled) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= l.level.Level() && l.Handler.Enabled(ctx, lv)
}

func (l leveled) WithAttrs(as []slog.Attr) slog.Handler {
	return leveled{l.Handler.WithAttrs(as), l.level}
}

func (l leveled) WithGroup(name string) slog.Handler {
	return leveled{l.Handler.WithGroup(name), l.level}
}
