package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"hubd/internal/otlptest"
	"hubd/policy"
)

func baseConfig() policy.Telemetry {
	return policy.Telemetry{ServiceName: "hubd-test", ServiceInstance: "mx-7",
		Traces:  policy.TelemetryTraces{Exporter: policy.ExporterNone, SamplingRatio: 1},
		Metrics: policy.TelemetryMetrics{Interval: time.Minute},
		Logs:    policy.TelemetryLogs{Format: "text"}}
}

func shutdown(t *testing.T, p *Providers) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestDefaultIsSilent: with nothing configured, both providers are no-ops
// and nothing listens.
func TestDefaultIsSilent(t *testing.T) {
	p, err := Build(context.Background(), baseConfig(), "1.2.3", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, p)
	_, span := p.TracerProvider.Tracer("t").Start(context.Background(), "x")
	if span.SpanContext().IsValid() || span.IsRecording() {
		t.Error("the default TracerProvider records spans")
	}
	if p.MetricsAddr() != nil {
		t.Error("the default opens a /metrics listener")
	}
}

// TestSpanOverOTLPHTTP: a span made through Build's TracerProvider reaches
// an OTLP/HTTP receiver with the resource attributes, and Shutdown flushes
// it (the batcher would otherwise wait up to 5 s).
func TestSpanOverOTLPHTTP(t *testing.T) {
	rcv := otlptest.New(t)
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test,service.name=not-this")
	cfg := baseConfig()
	cfg.Traces.Exporter = policy.ExporterOTLP
	cfg.Traces.OTLP = policy.OTLPTarget{Protocol: policy.ProtocolHTTPProtobuf, Endpoint: rcv.Endpoint, Insecure: true}
	p, err := Build(context.Background(), cfg, "1.2.3", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, parent := p.TracerProvider.Tracer("t").Start(context.Background(), "smtp.session",
		trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attribute.Int("smtp.rcpt.count", 2)))
	_, child := p.TracerProvider.Tracer("t").Start(ctx, "hub.enqueue", trace.WithSpanKind(trace.SpanKindProducer))
	child.End()
	parent.End()
	shutdown(t, p)

	got := rcv.WaitSpan(t, "smtp.session", 5*time.Second)
	want := map[string]any{"service.name": "hubd-test", "service.version": "1.2.3", "service.instance.id": "mx-7",
		"deployment.environment.name": "test"}
	for k, v := range want {
		if got.Resource[k] != v {
			t.Errorf("resource %s = %v, want %v (all: %v)", k, got.Resource[k], v, got.Resource)
		}
	}
	if got.Kind != trace.SpanKindServer || got.Attributes["smtp.rcpt.count"] != int64(2) || got.ParentSpanID != "" {
		t.Errorf("session span: %+v", got)
	}
	enq := rcv.WaitSpan(t, "hub.enqueue", time.Second)
	if enq.ParentSpanID != got.SpanID || enq.TraceID != got.TraceID || enq.Kind != trace.SpanKindProducer {
		t.Errorf("enqueue span %+v is not the child of %s", enq, got.SpanID)
	}
}

// TestSamplingRatioZero: ratio 0 records no new trace.
func TestSamplingRatioZero(t *testing.T) {
	cfg := baseConfig()
	cfg.Traces.Exporter, cfg.Traces.SamplingRatio = policy.ExporterStdout, 0
	p, err := Build(context.Background(), cfg, "1", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, p)
	_, span := p.TracerProvider.Tracer("t").Start(context.Background(), "x")
	if span.IsRecording() || span.SpanContext().IsSampled() {
		t.Error("sampling_ratio 0 sampled a root span")
	}
	span.End()
}

// TestPrometheusEndpoint: a counter made through the MeterProvider is on
// /metrics, read with the Prometheus text parser.
func TestPrometheusEndpoint(t *testing.T) {
	cfg := baseConfig()
	cfg.Metrics.PrometheusListen = "127.0.0.1:0"
	p, err := Build(context.Background(), cfg, "1.2.3", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, p)
	counter, err := p.MeterProvider.Meter("hubd").Int64Counter("hubd.test.messages", metric.WithUnit("{message}"))
	if err != nil {
		t.Fatal(err)
	}
	counter.Add(context.Background(), 3, metric.WithAttributes(attribute.String("connector", "internet")))

	resp, err := http.Get("http://" + p.MetricsAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	fam := families["hubd_test_messages_total"]
	if fam == nil {
		t.Fatalf("no hubd_test_messages_total among %d families", len(families))
	}
	m := fam.GetMetric()[0]
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if m.GetCounter().GetValue() != 3 || labels["connector"] != "internet" {
		t.Errorf("counter %v labels %v", m.GetCounter().GetValue(), labels)
	}
	if families["target_info"] == nil || families["go_goroutines"] == nil {
		t.Error("target_info (the resource) or the Go collector is missing")
	}

	// After Shutdown the listener is closed.
	addr := p.MetricsAddr().String()
	shutdown(t, p)
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("/metrics still listening after Shutdown")
	}
}

// TestPrometheusBindFailure: a port in use is an error of Build.
func TestPrometheusBindFailure(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := baseConfig()
	cfg.Metrics.PrometheusListen = ln.Addr().String()
	_, err = Build(context.Background(), cfg, "1", io.Discard)
	if err == nil || !strings.Contains(err.Error(), "prometheus_listen "+ln.Addr().String()) {
		t.Errorf("Build on a used port: %v", err)
	}
}

// TestLogHandlerTraceIDs: inside a span a line carries trace_id and
// span_id; outside it carries neither. Text and JSON alike.
func TestLogHandlerTraceIDs(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("t").Start(context.Background(), "smtp.session")
	defer span.End()
	sc := span.SpanContext()
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		cfg := baseConfig()
		cfg.Logs.Format = format
		p, err := Build(context.Background(), cfg, "1", &buf)
		if err != nil {
			t.Fatal(err)
		}
		log := slog.New(p.LogHandler(slog.LevelInfo)).With("connector", "internet")
		log.InfoContext(ctx, "inside")
		log.InfoContext(context.Background(), "outside")
		log.DebugContext(ctx, "filtered")
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		if len(lines) != 2 {
			t.Fatalf("%s: %d lines: %q", format, len(lines), buf.String())
		}
		if format == "json" {
			var in, out map[string]any
			json.Unmarshal([]byte(lines[0]), &in)
			json.Unmarshal([]byte(lines[1]), &out)
			if in[TraceIDKey] != sc.TraceID().String() || in[SpanIDKey] != sc.SpanID().String() || in["connector"] != "internet" {
				t.Errorf("json inside: %v", in)
			}
			if _, ok := out[TraceIDKey]; ok {
				t.Errorf("json outside has a trace id: %v", out)
			}
			continue
		}
		if !strings.Contains(lines[0], "trace_id="+sc.TraceID().String()) || !strings.Contains(lines[0], "span_id="+sc.SpanID().String()) {
			t.Errorf("text inside: %s", lines[0])
		}
		if strings.Contains(lines[1], "trace_id") || strings.Contains(lines[1], "span_id") {
			t.Errorf("text outside: %s", lines[1])
		}
	}
}

// TestLogsOverOTLP: with logs.otlp, records also reach the receiver with
// their trace context.
func TestLogsOverOTLP(t *testing.T) {
	rcv := otlptest.New(t)
	cfg := baseConfig()
	cfg.Logs.OTLP = &policy.OTLPTarget{Protocol: policy.ProtocolHTTPProtobuf, Endpoint: rcv.Endpoint, Insecure: true}
	var buf bytes.Buffer
	p, err := Build(context.Background(), cfg, "1", &buf)
	if err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("t").Start(context.Background(), "s")
	log := slog.New(p.LogHandler(slog.LevelInfo))
	log.InfoContext(ctx, "message accepted", "queue_id", "Q1")
	log.DebugContext(ctx, "below the level")
	span.End()
	shutdown(t, p)
	deadline := time.Now().Add(5 * time.Second)
	for len(rcv.Logs()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	logs := rcv.Logs()
	if len(logs) != 1 {
		t.Fatalf("received %d log records, want 1: %+v", len(logs), logs)
	}
	if l := logs[0]; l.Body != "message accepted" || l.TraceID != span.SpanContext().TraceID().String() ||
		l.Attributes["queue_id"] != "Q1" || l.Resource["service.name"] != "hubd-test" {
		t.Errorf("log record: %+v", l)
	}
	if !strings.Contains(buf.String(), "message accepted") {
		t.Errorf("stderr lost the line: %q", buf.String())
	}
}
