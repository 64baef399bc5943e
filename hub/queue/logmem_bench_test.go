package queue

import (
	"bytes"
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// logMemSpool writes a log spool of n messages of 5 KB (writeLogSpool).
func logMemSpool(b *testing.B, n int) string {
	return writeLogSpool(b, n, bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdef\r\n"), 64))
}

// writeLogSpool writes a log spool of n messages with body (one
// recipient; every tenth with a newer STATE record) under a fresh
// directory, from 64 writers, and closes it.
func writeLogSpool(b *testing.B, n int, body []byte) string {
	b.Helper()
	dir := b.TempDir()
	s, err := OpenLog(LogOptions{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
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
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	return dir
}

// heapNow is the live heap after a full collection.
func heapNow() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// heapPeak runs f while sampling HeapAlloc every millisecond and returns
// the highest sample (a lower bound of the true peak, close to it when
// f runs for many samples).
func heapPeak(f func()) uint64 {
	var peak atomic.Uint64
	sample := func() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapAlloc > peak.Load() {
			peak.Store(ms.HeapAlloc)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sample()
			}
		}
	})
	f()
	sample()
	close(stop)
	wg.Wait()
	return peak.Load()
}

// BenchmarkLogIndexMemory: the heap a LogStore retains per queued
// message once Load has built its index and the caller has dropped the
// Messages it returned (the index, and nothing else of the messages).
// One op is one OpenLog and Load of 100,000 messages; read B/msg.
func BenchmarkLogIndexMemory(b *testing.B) {
	if testing.Short() {
		b.Skip("writes 100,000 messages")
	}
	const n = 100000
	dir := logMemSpool(b, n)
	var perMsg float64
	for b.Loop() {
		before := heapNow()
		s, err := OpenLog(LogOptions{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		msgs, err := s.Load(context.Background())
		if err != nil || len(msgs) != n {
			b.Fatalf("loaded %d, %v", len(msgs), err)
		}
		msgs = nil
		after := heapNow()
		perMsg = float64(int64(after)-int64(before)) / n
		runtime.KeepAlive(s)
		s.Close()
	}
	b.ReportMetric(perMsg, "B/msg")
}

// BenchmarkLogLoadPeakHeap: the highest heap seen while a LogStore
// recovers 50,000 messages of 5 KB, above the heap before OpenLog.
// "load" holds what Load returns until it returns; one op is one OpenLog
// and Load (or Scan). Read peak-MB and peak-B/msg. The figure includes
// garbage not yet collected: the collector runs as the heap doubles
// (GOGC=100), so a peak near twice the live heap is normal.
func BenchmarkLogLoadPeakHeap(b *testing.B) {
	if testing.Short() {
		b.Skip("writes 50,000 messages")
	}
	const n = 50000
	dir := logMemSpool(b, n)
	b.Run("load", func(b *testing.B) {
		peakOfRead(b, dir, n, func(s *LogStore) (int, error) {
			msgs, err := s.Load(context.Background())
			return len(msgs), err
		})
	})
	// "scan" keeps nothing of the messages it is handed: the peak is the
	// index and Scan's own working set.
	b.Run("scan", func(b *testing.B) {
		peakOfRead(b, dir, n, func(s *LogStore) (int, error) {
			got := 0
			err := s.Scan(context.Background(), func(*Message) error {
				got++
				return nil
			})
			return got, err
		})
	})
}

// peakOfRead opens the spool in dir each round, reports the heap's peak
// above where it stood while read recovers it, and checks that read saw
// all n messages.
func peakOfRead(b *testing.B, dir string, n int, read func(*LogStore) (int, error)) {
	var peak uint64
	for b.Loop() {
		before := heapNow()
		s, err := OpenLog(LogOptions{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		var got int
		p := heapPeak(func() {
			if got, err = read(s); err != nil {
				b.Fatal(err)
			}
		})
		if got != n {
			b.Fatalf("read %d messages, want %d", got, n)
		}
		peak = p - before
		s.Close()
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-MB")
	b.ReportMetric(float64(peak)/float64(n), "peak-B/msg")
}
