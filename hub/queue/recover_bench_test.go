package queue

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"hubd/hub"
)

// BenchmarkLoadRecoversMarks: the start-up after a death with 10,000
// messages in flight, each left with its active mark. One op is an
// OpenDisk and Load that recovers every mark (run with -benchtime=1x for
// a single figure; make bench runs it). Measured on the 2-core CI-like
// machine (ext4): 26.7 s before group commit of the recovery (one Update,
// two fsyncs, per mark, serially), about 3 s after.
func BenchmarkLoadRecoversMarks(b *testing.B) {
	const n = 10000
	dir := b.TempDir()
	s, err := OpenDisk(DiskOptions{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	ids := make(chan hub.QueueID, n)
	var wg sync.WaitGroup
	for range 80 {
		wg.Go(func() {
			for range n / 80 {
				m := newMessage("a@example.com")
				if err := s.Put(context.Background(), m, strings.NewReader("x\r\n")); err != nil {
					b.Error(err)
					return
				}
				ids <- m.ID
			}
		})
	}
	wg.Wait()
	close(ids)
	var all []hub.QueueID
	for id := range ids {
		all = append(all, id)
	}
	s.Close()
	// "unmarked" is the same Load with nothing to recover: the difference
	// is the cost of recording the deaths.
	for _, marked := range []bool{true, false} {
		b.Run(map[bool]string{true: "marked", false: "unmarked"}[marked], func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				s, err := OpenDisk(DiskOptions{Dir: dir})
				if err != nil {
					b.Fatal(err)
				}
				for _, id := range all {
					if !marked {
						break
					}
					if err := s.MarkActive(id, Mark{NotBefore: time.Now()}); err != nil {
						b.Fatal(err)
					}
				}
				s.Close() // the marks stay, as after SIGKILL
				b.StartTimer()
				s, err = OpenDisk(DiskOptions{Dir: dir})
				if err != nil {
					b.Fatal(err)
				}
				msgs, err := s.Load(context.Background())
				if err != nil || len(msgs) != len(all) {
					b.Fatalf("loaded %d, %v", len(msgs), err)
				}
				s.Close()
			}
			b.ReportMetric(float64(len(all)), "msgs/op")
		})
	}
}
