// Package otelattr caches the attribute sets of metric measurements, so
// that counting an event with labels already seen allocates nothing: an
// attribute.Set is built (sorted, de-duplicated, allocated) once per
// distinct combination of label values, and label values in hubd are
// bounded (connector names, next hops, outcomes; see docs/metrics.md).
package otelattr

import (
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Cache maps up to three label values to the measurement option of their
// attribute set; the label keys are fixed per call site. The zero value is
// ready to use.
type Cache struct {
	mu   sync.RWMutex
	sets map[key]metric.MeasurementOption
}

type key struct {
	site    string
	a, b, c string
}

// Get returns the option for site's labels keys[i] = values[i] (at most
// three), building it the first time.
func (c *Cache) Get(site string, keys [3]string, values ...string) metric.MeasurementOption {
	var k key
	k.site = site
	if len(values) > 0 {
		k.a = values[0]
	}
	if len(values) > 1 {
		k.b = values[1]
	}
	if len(values) > 2 {
		k.c = values[2]
	}
	c.mu.RLock()
	opt, ok := c.sets[k]
	c.mu.RUnlock()
	if ok {
		return opt
	}
	kvs := make([]attribute.KeyValue, 0, len(values))
	for i, v := range values {
		kvs = append(kvs, attribute.String(keys[i], v))
	}
	opt = metric.WithAttributeSet(attribute.NewSet(kvs...))
	c.mu.Lock()
	if c.sets == nil {
		c.sets = map[key]metric.MeasurementOption{}
	}
	c.sets[k] = opt
	c.mu.Unlock()
	return opt
}
