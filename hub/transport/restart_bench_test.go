package transport

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"hubd/hub/queue"
)

// BenchmarkRestartParked times a Start on a spool of 20,000 messages
// parked on a next hop that is still in Retry (its HOP record): the
// messages are parked again at once and fall asleep (dormant.go).
func BenchmarkRestartParked(b *testing.B) {
	const n = 20000
	spool := b.TempDir()
	ls, err := queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		b.Fatal(err)
	}
	cfg := config(b, spool, `quick_retry_interval = "1h"
  transient_retry_interval = "1h"
  retry_interval = "1h"
  max_per_domain_outbound_connections = 1`)
	clock := newFakeClock()
	h := startStore(b, cfg, &fake{result: ok}, &fake{result: unreachableResult}, clock.Now, ls)
	h.tr.log = slog.New(slog.DiscardHandler)
	parkMany(b, h, n)
	h.close()
	b.ResetTimer()
	for range b.N {
		ls, err := queue.OpenLog(queue.LogOptions{Dir: spool})
		if err != nil {
			b.Fatal(err)
		}
		tr, err := New(cfg, Options{Clock: clock.Now, Store: ls, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		if err := tr.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if s := tr.Stats(); s.Messages != n {
			b.Fatalf("%d messages after the restart, want %d", s.Messages, n)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		tr.Close(ctx)
		cancel()
		b.StartTimer()
	}
}
