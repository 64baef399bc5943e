package transport

// Metrics of the queue and of delivery (issue 10; docs/metrics.md lists
// each with its Prometheus name and a query). Instruments come from
// Options.MeterProvider; without one the Transport keeps a nil *hubMetrics
// and a nil depth tracker, and every method returns at once: no attribute
// is built, no share is computed.
//
// The gauges (queue depth, held, poisoned, oldest message) are read by one
// callback per collection from the depth tracker (depth.go), which is kept
// up to date where the queue changes; a scrape never walks the messages.
//
// next_hop and queue labels name delivery queues as hubctl shows them
// (delivery.NextHop.String: "maildir", "lmtp:<host>",
// "smtp:<connector>[mx:<domain>]"); their number is the number of next
// hops the hub talks to, bounded for a hub with smart hosts and growing
// with the destination domains of one that routes by MX, which an operator
// who needs fewer series can drop with a Prometheus relabel rule.

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/metric"

	"hubd/hub/delivery"
	"hubd/hub/dsn"
	"hubd/hub/queue"
	"hubd/internal/otelattr"
)

// Outcomes of hubd.delivery.attempts, one per recipient per attempt.
const (
	attemptDelivered = "delivered"
	attemptDeferred  = "deferred"
	attemptFailed    = "failed"
)

// DSN kinds of hubd.dsn.queued.
const dsnExpired = "expired" // failed because the message expired (4.4.7)

// Bucket boundaries, in seconds: one attempt takes milliseconds (a local
// Maildir) to minutes (a slow remote MTA, RFC 5321 §4.5.3.2's timeouts);
// a message's stay ranges from a second to message_expiration (2 days).
var (
	attemptBuckets  = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	endToEndBuckets = []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800}
	bgCtx           = context.Background()

	kindKeys    = [3]string{"kind"}
	attemptKeys = [3]string{"next_hop", "outcome"}
	depthKeys   = [3]string{"queue", "state"}
)

// hubMetrics are the transport's instruments; nil: metrics are off.
type hubMetrics struct {
	attrs    otelattr.Cache // the attribute sets seen, so that a measurement allocates nothing
	attempts metric.Int64Counter
	latency  metric.Float64Histogram
	endToEnd metric.Float64Histogram
	dsns     metric.Int64Counter
}

// newHubMetrics creates the instruments and registers the gauges' callback
// over depth.
func newHubMetrics(mp metric.MeterProvider, depth *depthTracker, clock func() time.Time) (*hubMetrics, error) {
	m := mp.Meter("hubd/hub/transport")
	var hm hubMetrics
	var errs [9]error
	hm.attempts, errs[0] = m.Int64Counter("hubd.delivery.attempts", metric.WithUnit("{attempt}"),
		metric.WithDescription("Delivery attempts, one per recipient per attempt, by next hop and outcome."))
	hm.latency, errs[1] = m.Float64Histogram("hubd.delivery.duration", metric.WithUnit("s"),
		metric.WithDescription("Time one delivery attempt took (one connection's transaction, or one Maildir write), by next-hop kind."),
		metric.WithExplicitBucketBoundaries(attemptBuckets...))
	hm.endToEnd, errs[2] = m.Float64Histogram("hubd.delivery.end_to_end", metric.WithUnit("s"),
		metric.WithDescription("Time from a message's arrival in the queue to a recipient's delivery, by next-hop kind."),
		metric.WithExplicitBucketBoundaries(endToEndBuckets...))
	hm.dsns, errs[3] = m.Int64Counter("hubd.dsn.queued", metric.WithUnit("{dsn}"),
		metric.WithDescription("Delivery status notifications queued, by kind (failed, expired, delayed, delivered, relayed, expanded)."))
	var recipients, messages, held, poisoned, oldest metric.Int64ObservableGauge
	recipients, errs[4] = m.Int64ObservableGauge("hubd.queue.recipients", metric.WithUnit("{recipient}"),
		metric.WithDescription("Recipients pending in the queue, by queue (next hop, submission, unreachable, poison) and state."))
	messages, errs[5] = m.Int64ObservableGauge("hubd.queue.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Messages in the queue, poisoned ones included."))
	held, errs[6] = m.Int64ObservableGauge("hubd.queue.held.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Messages held by an operator."))
	poisoned, errs[7] = m.Int64ObservableGauge("hubd.queue.poison.messages", metric.WithUnit("{message}"),
		metric.WithDescription("Messages in the poison queue."))
	oldest, errs[8] = m.Int64ObservableGauge("hubd.queue.oldest_message.age", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest message in the queue (poisoned ones excepted); 0 when the queue is empty."))
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	_, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := depth.snapshot()
		for k, n := range s.rcpts {
			o.ObserveInt64(recipients, n, hm.attrs.Get("depth", depthKeys, k.queue, k.state.String()))
		}
		o.ObserveInt64(messages, s.messages)
		o.ObserveInt64(held, s.held)
		o.ObserveInt64(poisoned, s.poisoned)
		age := int64(0)
		if at, ok := depth.oldest(); ok {
			age = max(0, int64(clock().Sub(at)/time.Second))
		}
		o.ObserveInt64(oldest, age)
		return nil
	}, recipients, messages, held, poisoned, oldest)
	if err != nil {
		return nil, err
	}
	return &hm, nil
}

// attempted counts one attempt's results for next hop hop, and its
// duration, and the end-to-end time of each recipient delivered.
func (hm *hubMetrics) attempted(hop delivery.NextHop, took time.Duration, m *queue.Message, results []delivery.Result, now time.Time) {
	if hm == nil {
		return
	}
	kind := hm.attrs.Get("kind", kindKeys, string(hop.Kind))
	hm.latency.Record(bgCtx, took.Seconds(), kind)
	name := hop.String()
	var counts [3]int64
	for _, r := range results {
		switch r.Status {
		case delivery.Delivered:
			counts[0]++
			hm.endToEnd.Record(bgCtx, now.Sub(m.Arrived).Seconds(), kind)
		case delivery.Failed:
			counts[2]++
		default:
			counts[1]++
		}
	}
	for i, outcome := range [3]string{attemptDelivered, attemptDeferred, attemptFailed} {
		if counts[i] > 0 {
			hm.attempts.Add(bgCtx, counts[i], hm.attrs.Get("attempt", attemptKeys, name, outcome))
		}
	}
}

// dsnQueued counts one DSN of action a for recipients idx of m; a failure
// because the message expired (RFC 3463 4.4.7) is kind "expired".
func (hm *hubMetrics) dsnQueued(a dsn.Action, m *queue.Message, idx []int) {
	if hm == nil {
		return
	}
	kind := string(a)
	if a == dsn.Failed {
		expired := len(idx) > 0
		for _, i := range idx {
			expired = expired && m.Recipients[i].LastReply.Enhanced == "4.4.7"
		}
		if expired {
			kind = dsnExpired
		}
	}
	hm.dsns.Add(bgCtx, 1, hm.attrs.Get("dsn", kindKeys, kind))
}
