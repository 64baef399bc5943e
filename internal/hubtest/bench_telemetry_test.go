package hubtest

import (
	"context"
	"io"
	"testing"
	"time"

	"hubd/internal/otlptest"
	"hubd/internal/telemetry"
	"hubd/policy"
)

// BenchmarkSubmitEndToEndTraced is BenchmarkSubmitEndToEnd with telemetry
// on as an operator would run it: traces exported over OTLP/HTTP with the
// SDK's batching (to a receiver in the test that decodes every request),
// at a sampling ratio of 1 and of 0.01, and every metric on a Prometheus
// endpoint nobody scrapes during the run. Compare with
// BenchmarkSubmitEndToEnd (telemetry off), interleaved (README, Observing
// hubd).
func BenchmarkSubmitEndToEndTraced(b *testing.B) {
	for _, bc := range []struct {
		name  string
		ratio float64
	}{{"ratio=1", 1}, {"ratio=0.01", 0.01}} {
		b.Run(bc.name, func(b *testing.B) {
			rcv := otlptest.New(b)
			p, err := telemetry.Build(context.Background(), policy.Telemetry{
				ServiceName: "hubd-bench", ServiceInstance: "bench",
				Traces: policy.TelemetryTraces{Exporter: policy.ExporterOTLP, SamplingRatio: bc.ratio,
					OTLP: policy.OTLPTarget{Protocol: policy.ProtocolHTTPProtobuf, Endpoint: rcv.Endpoint, Insecure: true}},
				Metrics: policy.TelemetryMetrics{PrometheusListen: "127.0.0.1:0"},
				Logs:    policy.TelemetryLogs{Format: "text"},
			}, "bench", io.Discard)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				p.Shutdown(ctx)
			})
			benchSubmitEndToEnd(b, Options{TracerProvider: p.TracerProvider, MeterProvider: p.MeterProvider})
		})
	}
}
