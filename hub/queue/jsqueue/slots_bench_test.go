package jsqueue

import (
	"context"
	"testing"
	"time"
)

// BenchmarkSlotsAcquireRelease: one Acquire and its release of one hop,
// no contention, on one node (R1, every write fsynced, as startServer
// runs it). The two halves are reported apart.
func BenchmarkSlotsAcquireRelease(b *testing.B) {
	ns := startServer(b, b.TempDir())
	s := openSlots(b, ns, "a", 30*time.Second)
	benchSlots(b, s)
}

func benchSlots(b *testing.B, s *Slots) {
	ctx := context.Background()
	var acq, rel time.Duration
	for b.Loop() {
		t0 := time.Now()
		release, err := s.Acquire(ctx, "smtp:out[mx:example.net]", 10)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		release()
		rel += time.Since(t1)
		acq += t1.Sub(t0)
	}
	b.ReportMetric(float64(acq.Microseconds())/float64(b.N), "acquire-µs/op")
	b.ReportMetric(float64(rel.Microseconds())/float64(b.N), "release-µs/op")
}
