package queue

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hubd/hub"
)

// workBenchN is the queue size the Work benchmarks run at.
const workBenchN = 1_000_000

var workBenchIDs = sync.OnceValue(func() []hub.QueueID { return newIDs(workBenchN) })

// scheduledWork is a LocalWork with workBenchN messages due at random
// times in the first millisecond after workT0.
func scheduledWork(b *testing.B) (*LocalWork, []hub.QueueID) {
	b.Helper()
	ids := workBenchIDs()
	w := NewLocalWork()
	for _, id := range ids {
		w.Schedule(id, afterT0(time.Duration(rand.Int64N(int64(time.Millisecond)))))
	}
	return w, ids
}

// BenchmarkWorkClaim: claimers goroutines each Claim up to 16 messages at
// a time from 1,000,000 due ones, Defer every lease to an hour later, and
// Schedule the message back into the due pool (so the pool stays full and
// each claimed message costs a Claim share, a Defer and a Schedule). One
// op is claimsPerOp claimed messages; ns/claim is per claimed message.
func BenchmarkWorkClaim(b *testing.B) {
	const claimsPerOp = 1 << 16
	for _, claimers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("claimers=%d", claimers), func(b *testing.B) {
			w, _ := scheduledWork(b)
			now := afterT0(time.Second)
			var claimed atomic.Int64
			b.ResetTimer()
			for range b.N {
				claimed.Store(0)
				var wg sync.WaitGroup
				for range claimers {
					wg.Go(func() {
						for claimed.Load() < claimsPerOp {
							ls := w.Claim(now, 16, time.Minute)
							if len(ls) == 0 {
								b.Error("the due pool ran dry")
								return
							}
							for _, l := range ls {
								if err := w.Defer(l, now.Add(time.Hour)); err != nil {
									b.Error(err)
									return
								}
								w.Schedule(l.ID, afterT0(time.Duration(rand.Int64N(int64(time.Millisecond)))))
							}
							claimed.Add(int64(len(ls)))
						}
					})
				}
				wg.Wait()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(int64(b.N)*claimed.Load()), "ns/claim")
		})
	}
}

// BenchmarkWorkScheduleMemory: the heap LocalWork keeps per message at
// 1,000,000 scheduled ones (slab, index and heap slots; the IDs
// themselves are the caller's and not counted).
func BenchmarkWorkScheduleMemory(b *testing.B) {
	ids := workBenchIDs()
	var perMsg float64
	for range b.N {
		before := heapNow()
		w, _ := scheduledWork(b)
		after := heapNow()
		runtime.KeepAlive(w)
		perMsg = float64(after-before) / float64(len(ids))
	}
	b.ReportMetric(perMsg, "B/msg")
}

// BenchmarkWorkSchedule: Schedule moving an existing message to a new
// random due time within an hour, at 1,000,000 scheduled messages. One op
// is schedulesPerOp of them, so that -benchtime 1x measures something;
// ns/schedule is per Schedule.
func BenchmarkWorkSchedule(b *testing.B) {
	const schedulesPerOp = 1 << 16
	w, ids := scheduledWork(b)
	b.ResetTimer()
	for i := range b.N {
		for j := range schedulesPerOp {
			w.Schedule(ids[(i*schedulesPerOp+j)%len(ids)], afterT0(time.Duration(rand.Int64N(int64(time.Hour)))))
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*schedulesPerOp), "ns/schedule")
}
