package connectors

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"hubd/internal/logbuf"
)

// sumOf is the value of the Int64 sum (counter or up-down counter) name
// over the data points whose attributes include want.
func sumOf(t *testing.T, r *sdkmetric.ManualReader, name string, want ...attribute.KeyValue) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				t.Fatalf("%s is a %T", name, m.Data)
			}
		points:
			for _, dp := range sum.DataPoints {
				for _, kv := range want {
					if v, ok := dp.Attributes.Value(kv.Key); !ok || v != kv.Value {
						continue points
					}
				}
				total += dp.Value
			}
		}
	}
	return total
}

// TestMetricsOfLimitsAndAuth: the brute-force defence's block, the refusal
// it causes and the tarpitted replies are counted per connector, with the
// limit's name.
func TestMetricsOfLimitsAndAuth(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := loadLimitsConfig(t, dir, bruteHCL(2, 10))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	h := &limitHarness{harness: &harness{t: t, sub: &capture{}, dir: dir, pool: x509.NewCertPool()},
		clock: newFakeClock(), logs: &logbuf.Buffer{}}
	svc, err := New(Options{Config: cfg, Submitter: h.sub, Clock: h.clock.now, MeterProvider: mp,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, h.logs), nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	h.svc = svc
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		svc.Shutdown(ctx)
	})

	c := h.authFrom("127.0.0.1")
	if got := sumOf(t, reader, "hubd.smtp.connections.active", attribute.String("connector", "in")); got != 1 {
		t.Errorf("connections active %d, want 1", got)
	}
	c.expect(authPlain("alice@example.com", "wrong"), "535 5.7.8 ")
	c.expect(authPlain("alice@example.com", "wrong"), "535 5.7.8 ") // trips max_auth_failures_per_source
	// Blocked, and the third logon failure of the session (max_logon_failures):
	// the 454 becomes a 421 and the connection ends.
	c.expect(authPlain("alice@example.com", alicePassword), "421 4.7.0 ")

	connector := attribute.String("connector", "in")
	limit := attribute.String("limit", "max_auth_failures_per_source")
	for _, w := range []struct {
		name  string
		attrs []attribute.KeyValue
		want  int64
	}{
		{"hubd.smtp.auth.blocked", []attribute.KeyValue{connector, limit}, 1},
		{"hubd.smtp.limit_refusals", []attribute.KeyValue{connector, limit}, 1},
		{"hubd.smtp.tarpit", []attribute.KeyValue{connector}, 3}, // two failures, one blocked AUTH
		{"hubd.smtp.auth.backend_errors", nil, 0},
	} {
		if got := sumOf(t, reader, w.name, w.attrs...); got != w.want {
			t.Errorf("%s%v = %d, want %d", w.name, w.attrs, got, w.want)
		}
	}
	eventually(t, "the session's end counted", func() bool {
		return sumOf(t, reader, "hubd.smtp.sessions", connector, attribute.String("outcome", sessionClosed)) == 1 &&
			sumOf(t, reader, "hubd.smtp.connections.active", connector) == 0
	})
}

// TestMetricsOffCostNothing: without a MeterProvider the Service has no
// instruments, and every measurement is a nil check: no allocation.
func TestMetricsOffCostNothing(t *testing.T) {
	h := start(t, `
receive_connector "in" {
  bind = ["127.0.0.1:0"]
  permissions { anonymous = ["submit"] }
}
`)
	if h.svc.meters != nil {
		t.Fatal("instruments without a MeterProvider")
	}
	var m *connMetrics
	allocs := testing.AllocsPerRun(100, func() {
		m.connectionOpened("in")
		m.transaction("in", 250)
		m.accepted("in", 1000)
		m.tarpitted("in", time.Second)
		m.limitRefusal("in", "message_rate_limit")
		m.authBlock("in", "max_auth_failures_per_source")
		m.authBackendError("in", "dovecot")
		m.connectionClosed("in", sessionQuit)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run with metrics off", allocs)
	}
}
