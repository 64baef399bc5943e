package queue

// Metrics of the stores (issue 10; docs/metrics.md): the size of each
// group-commit batch (how many changes shared one directory fsync, or one
// segment fdatasync in the log spool: the point of group commit, DESIGN.md
// invariant 2) and the latency of every fsync: of message, state and blob
// files, of spool directories, and of log segments. Instruments come from
// DiskOptions.MeterProvider or LogOptions.MeterProvider; without one the
// store keeps a nil *storeMetrics and measures nothing.

import (
	"context"
	"os"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

var (
	// One change per Put, Update or Remove, at most maxBatch per batch.
	batchBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}
	// An fsync takes tens of microseconds on NVMe with a write cache and
	// hundreds of milliseconds on a busy spinning disk.
	fsyncBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

	fileTarget = metric.WithAttributeSet(attribute.NewSet(attribute.String("target", "file")))
	dirTarget  = metric.WithAttributeSet(attribute.NewSet(attribute.String("target", "directory")))
	segTarget  = metric.WithAttributeSet(attribute.NewSet(attribute.String("target", "segment")))
)

// storeMetrics are the store's instruments; nil: metrics are off.
type storeMetrics struct {
	batch metric.Int64Histogram
	fsync metric.Float64Histogram
}

func newStoreMetrics(mp metric.MeterProvider) (*storeMetrics, error) {
	if mp == nil {
		return nil, nil
	}
	m := mp.Meter("hubd/hub/queue")
	batch, err := m.Int64Histogram("hubd.queue.commit.batch_size", metric.WithUnit("{change}"),
		metric.WithDescription("Changes (Put, Update, Remove) made durable by one directory fsync of the group commit."),
		metric.WithExplicitBucketBoundaries(batchBuckets...))
	if err != nil {
		return nil, err
	}
	fsync, err := m.Float64Histogram("hubd.queue.fsync.duration", metric.WithUnit("s"),
		metric.WithDescription("Latency of each fsync of the spool, by target (file: a message, state or blob file; directory: a spool directory at a group commit; segment: the fdatasync of a log segment at a group commit)."),
		metric.WithExplicitBucketBoundaries(fsyncBuckets...))
	if err != nil {
		return nil, err
	}
	return &storeMetrics{batch: batch, fsync: fsync}, nil
}

func (sm *storeMetrics) batchCommitted(n int) {
	if sm != nil {
		sm.batch.Record(context.Background(), int64(n))
	}
}

// syncFile is f.Sync, timed.
func (sm *storeMetrics) syncFile(f *os.File) error {
	if sm == nil {
		return f.Sync()
	}
	start := time.Now()
	err := f.Sync()
	sm.fsync.Record(context.Background(), time.Since(start).Seconds(), fileTarget)
	return err
}

// syncDir is sync(dir), timed.
func (sm *storeMetrics) syncDir(sync func(string) error, dir string) error {
	if sm == nil {
		return sync(dir)
	}
	start := time.Now()
	err := sync(dir)
	sm.fsync.Record(context.Background(), time.Since(start).Seconds(), dirTarget)
	return err
}

// syncSegment is the fdatasync of a log segment, timed.
func (sm *storeMetrics) syncSegment(datasync func(*os.File) error, f *os.File) error {
	if sm == nil {
		return datasync(f)
	}
	start := time.Now()
	err := datasync(f)
	sm.fsync.Record(context.Background(), time.Since(start).Seconds(), segTarget)
	return err
}
