package backpressure

import (
	"context"

	"go.opentelemetry.io/otel/metric"
)

// RegisterMetrics publishes the level as the observable gauge
// hubd.backpressure.level (0 normal, 1 medium, 2 high; docs/metrics.md),
// read at each collection with one atomic load. A nil mp does nothing.
func (m *Monitor) RegisterMetrics(mp metric.MeterProvider) error {
	if mp == nil {
		return nil
	}
	meter := mp.Meter("hubd/hub/backpressure")
	_, err := meter.Int64ObservableGauge("hubd.backpressure.level",
		metric.WithDescription("Back pressure level: 0 normal, 1 medium (anonymous MAIL refused with 452 4.3.1), 2 high (every new transaction refused)."),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(int64(m.Level()))
			return nil
		}))
	return err
}
