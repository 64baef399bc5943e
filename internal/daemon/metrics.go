package daemon

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Outcomes of hubd.config.reloads.
const (
	reloadApplied = "applied" // the new configuration is in force
	reloadRefused = "refused" // it had errors, or the connectors could not take it; the old one stays
)

// newReloadCounter is hubd.config.reloads (docs/metrics.md); nil mp: nil.
func newReloadCounter(mp metric.MeterProvider) (metric.Int64Counter, error) {
	if mp == nil {
		return nil, nil
	}
	return mp.Meter("hubd/daemon").Int64Counter("hubd.config.reloads", metric.WithUnit("{reload}"),
		metric.WithDescription("Configuration reloads (SIGHUP, POST /v1/reload), by outcome."))
}

// countReload counts one reload; a nil counter (metrics off) does nothing.
func countReload(c metric.Int64Counter, applied bool) {
	if c == nil {
		return
	}
	outcome := reloadRefused
	if applied {
		outcome = reloadApplied
	}
	c.Add(context.Background(), 1, metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", outcome))))
}
