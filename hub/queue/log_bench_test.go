package queue

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkLogPut: Puts of 4 KB messages from 1, 8 and 64 concurrent
// submitters (SMTP sessions); one op is one Put. msg/s is the throughput,
// fsyncs/msg the fdatasyncs and directory fsyncs per message (group
// commit at work: well under 1 with many submitters).
func BenchmarkLogPut(b *testing.B) {
	body := bytes.Repeat([]byte("0123456789abcde\n"), 256)
	for _, w := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("submitters=%d", w), func(b *testing.B) {
			s, err := OpenLog(LogOptions{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.SetBytes(int64(len(body)))
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range w {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if err := s.Put(context.Background(), newMessage("a@example.com"), bytes.NewReader(body)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msg/s")
			b.ReportMetric(float64(s.fsyncs.Load())/float64(b.N), "fsyncs/msg")
		})
	}
}

// BenchmarkLogLoad: start-up with 100,000 queued messages of 4 KB (about
// 10 % of them with a newer STATE record). One Load (OpenLog included)
// recovers all 100,000 and stands for 100,000 ops: it runs ceil(b.N /
// 100,000) times, so -benchtime 2000x is one Load. Read s/load (one
// whole Load) and ns/msg, not ns/op.
func BenchmarkLogLoad(b *testing.B) {
	if testing.Short() {
		b.Skip("writes 100,000 messages")
	}
	const n = 100000
	dir := b.TempDir()
	s, err := OpenLog(LogOptions{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	body := bytes.Repeat([]byte("0123456789abcde\n"), 256)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for i := next.Add(1); i <= n; i = next.Add(1) {
				m := newMessage("a@example.com")
				if err := s.Put(context.Background(), m, bytes.NewReader(body)); err != nil {
					b.Error(err)
					return
				}
				if i%10 == 0 {
					st := m.State
					st.Recipients[0].Status = Deferred
					if err := s.Update(context.Background(), m.ID, st); err != nil {
						b.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	s.Close()
	b.ResetTimer()
	loads := 0
	for done := 0; done < b.N; done += n {
		s, err := OpenLog(LogOptions{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		msgs, err := s.Load(context.Background())
		if err != nil || len(msgs) != n {
			b.Fatalf("loaded %d, %v", len(msgs), err)
		}
		s.Close()
		loads++
	}
	b.StopTimer()
	b.ReportMetric(b.Elapsed().Seconds()/float64(loads), "s/load")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(loads*n), "ns/msg")
}
