package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"hubd/hub"
)

// BenchmarkLogPut: Puts of 4 KB messages from 1, 8 and 64 concurrent
// submitters (SMTP sessions); one op is one Put. msg/s is the throughput,
// fsyncs/msg the fdatasyncs and directory fsyncs per message (group
// commit at work: well under 1 with many submitters), cpu-µs/msg the
// process's CPU time (user and system) per message.
func BenchmarkLogPut(b *testing.B) {
	benchLogPut(b, bytes.Repeat([]byte("0123456789abcde\n"), 256))
}

// BenchmarkLogPutLarge: the same with 100 KB messages.
func BenchmarkLogPutLarge(b *testing.B) {
	benchLogPut(b, bytes.Repeat([]byte("0123456789abcde\n"), 6400))
}

func benchLogPut(b *testing.B, body []byte) {
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
			start, cpu0 := time.Now(), processCPU()
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
			elapsed, cpu := time.Since(start), processCPU()-cpu0
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msg/s")
			b.ReportMetric(float64(s.fsyncs.Load())/float64(b.N), "fsyncs/msg")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
		})
	}
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
	dir := writeLogSpool(b, n, bytes.Repeat([]byte("0123456789abcde\n"), 256))
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

// logBenchSpool is a log spool holding n messages of 4 KB, loaded.
func logBenchSpool(b *testing.B, n int) (*LogStore, []hub.QueueID) {
	b.Helper()
	s, err := OpenLog(LogOptions{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if _, err := s.Load(context.Background()); err != nil {
		b.Fatal(err)
	}
	body := bytes.Repeat([]byte("0123456789abcde\n"), 256)
	ids := make([]hub.QueueID, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				m := newMessage("a@example.com")
				if err := s.Put(context.Background(), m, bytes.NewReader(body)); err != nil {
					b.Error(err)
					return
				}
				ids[i] = m.ID
			}
		})
	}
	wg.Wait()
	return s, ids
}

// BenchmarkLogOpen: Open, read and Close the 4 KB body of one of 1,000
// queued messages (inline in their segment); one op is one whole read.
// parallel runs GOMAXPROCS readers at once, as concurrent deliveries do.
func BenchmarkLogOpen(b *testing.B) {
	s, ids := logBenchSpool(b, 1000)
	read := func(id hub.QueueID, buf []byte) {
		rc, err := s.Open(id)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, rc, buf); err != nil {
			b.Fatal(err)
		}
		rc.Close()
	}
	b.Run("serial", func(b *testing.B) {
		buf := make([]byte, 32<<10)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			read(ids[i%len(ids)], buf)
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			buf := make([]byte, 32<<10)
			for pb.Next() {
				read(ids[next.Add(1)%int64(len(ids))], buf)
			}
		})
	})
}

// BenchmarkLogGet: Get one of 1,000 queued messages (4 KB inline body,
// which Get reads to check the record's CRC); every tenth has a newer
// STATE record. parallel runs GOMAXPROCS callers at once.
func BenchmarkLogGet(b *testing.B) {
	s, ids := logBenchSpool(b, 1000)
	for i, id := range ids {
		if i%10 == 0 {
			st := State{Recipients: []RecipientState{{Address: "a@example.com", Status: Deferred, Attempts: 1}}}
			if err := s.Update(context.Background(), id, st); err != nil {
				b.Fatal(err)
			}
		}
	}
	ctx := context.Background()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := s.Get(ctx, ids[i%len(ids)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var next atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Get(ctx, ids[next.Add(1)%int64(len(ids))]); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
