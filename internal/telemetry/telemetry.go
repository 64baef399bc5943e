// Package telemetry builds hubd's OpenTelemetry providers from the
// telemetry block (policy.Telemetry): a TracerProvider, a MeterProvider and
// the slog handler every log line goes through. `hubd run` builds them once
// at start, hands them down in daemon.Options, and shuts them down after the
// daemon has stopped so that the spans of the last deliveries are flushed.
// Nothing here is global: no otel.SetTracerProvider, no init().
//
// What Build makes, by setting:
//
//   - traces.exporter = "none" (the default): a no-op TracerProvider, so
//     spans cost nothing and no trace context is created or persisted.
//     "otlp": an SDK TracerProvider with a BatchSpanProcessor in front of
//     otlptracegrpc or otlptracehttp; "stdout": the same in front of
//     stdouttrace (one JSON span per line on stdout, for debugging). The
//     sampler is ParentBased(TraceIDRatioBased(sampling_ratio)).
//   - metrics: an SDK MeterProvider with a Prometheus reader on a private
//     prometheus.Registry (never the client library's global one) served
//     at http://<prometheus_listen>/metrics, and/or a PeriodicReader
//     pushing over OTLP; neither: a no-op MeterProvider. The registry also
//     carries the Go runtime and process collectors.
//   - logs: text or JSON on stderr, every record written in a traced context
//     carrying trace_id and span_id (TraceHandler); with logs.otlp the
//     records also go to an OTLP log exporter through the otelslog bridge.
//
// Every provider carries one resource: service.name, service.version (the
// build's version), service.instance.id, and whatever
// OTEL_RESOURCE_ATTRIBUTES adds (the block's values win).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/bridges/otelslog"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"hubd/policy"
)

// InstrumentationName names hubd's tracers, meters and loggers.
const InstrumentationName = "hubd"

// Providers are the telemetry pipelines of one running hubd.
type Providers struct {
	TracerProvider trace.TracerProvider // never nil; a no-op without a trace exporter
	MeterProvider  metric.MeterProvider // never nil; a no-op without a metric reader

	cfg        policy.Telemetry
	stderr     io.Writer
	logs       *sdklog.LoggerProvider // nil without logs.otlp
	metricsSrv *http.Server           // nil without prometheus_listen
	metricsLn  net.Listener
	shutdowns  []func(context.Context) error // in order: traces, metrics, logs
}

// Build makes the providers the block asks for. It dials nothing itself
// (the exporters connect lazily, on their first export), but it binds
// prometheus_listen, so that a port in use is a start-up error. On error
// whatever was built is shut down again.
func Build(ctx context.Context, cfg policy.Telemetry, version string, stderr io.Writer) (*Providers, error) {
	p := &Providers{cfg: cfg, stderr: stderr,
		TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider()}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithAttributes(
		semconv.ServiceName(cfg.ServiceName),
		semconv.ServiceVersion(version),
		semconv.ServiceInstanceID(cfg.ServiceInstance),
	))
	if err != nil {
		// A malformed OTEL_RESOURCE_ATTRIBUTES: keep what could be read.
		fmt.Fprintf(stderr, "hubd: telemetry resource: %v\n", err)
	}
	fail := func(err error) (*Providers, error) {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(shutdownCtx)
		return nil, err
	}
	if err := p.buildTraces(ctx, res); err != nil {
		return fail(fmt.Errorf("telemetry traces: %w", err))
	}
	if err := p.buildMetrics(ctx, res); err != nil {
		return fail(fmt.Errorf("telemetry metrics: %w", err))
	}
	if cfg.Logs.OTLP != nil {
		exp, err := newLogExporter(ctx, *cfg.Logs.OTLP)
		if err != nil {
			return fail(fmt.Errorf("telemetry logs: %w", err))
		}
		p.logs = sdklog.NewLoggerProvider(sdklog.WithResource(res), sdklog.WithProcessor(sdklog.NewBatchProcessor(exp)))
		p.shutdowns = append(p.shutdowns, p.logs.Shutdown)
	}
	return p, nil
}

func (p *Providers) buildTraces(ctx context.Context, res *resource.Resource) error {
	var exp sdktrace.SpanExporter
	var err error
	switch t := p.cfg.Traces; t.Exporter {
	case policy.ExporterNone, "":
		return nil
	case policy.ExporterStdout:
		exp, err = stdouttrace.New()
	case policy.ExporterOTLP:
		exp, err = newTraceExporter(ctx, t.OTLP)
	default:
		return fmt.Errorf("unknown exporter %q", t.Exporter)
	}
	if err != nil {
		return err
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(p.cfg.Traces.SamplingRatio))),
		sdktrace.WithBatcher(exp),
	)
	p.TracerProvider = tp
	p.shutdowns = append(p.shutdowns, tp.Shutdown)
	return nil
}

func (p *Providers) buildMetrics(ctx context.Context, res *resource.Resource) error {
	m := p.cfg.Metrics
	opts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	if m.PrometheusListen != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		reader, err := otelprom.New(otelprom.WithRegisterer(reg))
		if err != nil {
			return err
		}
		opts = append(opts, sdkmetric.WithReader(reader))
		if err := p.serveMetrics(m.PrometheusListen, reg); err != nil {
			return err
		}
	}
	if m.OTLP != nil {
		exp, err := newMetricExporter(ctx, *m.OTLP)
		if err != nil {
			return err
		}
		opts = append(opts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(m.Interval))))
	}
	if m.PrometheusListen == "" && m.OTLP == nil {
		return nil
	}
	mp := sdkmetric.NewMeterProvider(opts...)
	p.MeterProvider = mp
	p.shutdowns = append(p.shutdowns, mp.Shutdown)
	return nil
}

// serveMetrics binds addr and serves reg at /metrics until Shutdown.
func (p *Providers) serveMetrics(addr string, reg *prometheus.Registry) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("prometheus_listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	p.metricsLn = ln
	p.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go p.metricsSrv.Serve(ln)
	return nil
}

// MetricsAddr is the address /metrics is served on; nil without
// prometheus_listen. (Tests listen on port 0 and ask.)
func (p *Providers) MetricsAddr() net.Addr {
	if p.metricsLn == nil {
		return nil
	}
	return p.metricsLn.Addr()
}

// LogHandler returns the handler for hubd's log: text or JSON on stderr
// at level, with trace_id and span_id from the record's context; with
// logs.otlp, every record is exported over OTLP as well (the otelslog
// bridge takes the trace context from the same ctx).
func (p *Providers) LogHandler(level slog.Leveler) slog.Handler {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if p.cfg.Logs.Format == "json" {
		h = slog.NewJSONHandler(p.stderr, opts)
	} else {
		h = slog.NewTextHandler(p.stderr, opts)
	}
	h = NewTraceHandler(h)
	if p.logs != nil {
		bridge := otelslog.NewHandler(InstrumentationName, otelslog.WithLoggerProvider(p.logs))
		h = fanout{h, leveled{bridge, level}}
	}
	return h
}

// Shutdown flushes and stops every pipeline (spans, metrics, log records
// still buffered go out) and closes the /metrics listener; ctx bounds the
// flush. It returns every error met.
func (p *Providers) Shutdown(ctx context.Context) error {
	var errs []error
	if p.metricsSrv != nil {
		if err := p.metricsSrv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, shutdown := range p.shutdowns {
		if err := shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	p.shutdowns = nil
	return errors.Join(errs...)
}
