package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"time"

	"hubd/examples/bench/internal/benchkit"
	"hubd/hub/queue"
	"hubd/internal/admin"
)

// slowHop is the -slow run: the next hop is live but slow. The sink
// listens before hubd starts and answers each message's end of data only
// after -slow, so hubd, with all N messages due at once, can deliver them
// only at the next hop's pace (its connection limit over -slow): what it
// holds meanwhile is the delivery stage's backlog (hub/transport,
// backlog.go), sampled every half second until the last message arrives.
type slowHop struct {
	o        options
	pid      int
	recovery time.Duration
	drain    time.Duration // "queue recovered" to the last message at the sink
	peak     sample        // the sample with the highest RSS
	peakGo   float64       // the most goroutines seen
	peakHWM  float64       // VmHWM at the end: peak RSS over the run
	sink     sinkCounts
	missing  int
	left     int
}

func measureSlow(o options, progress io.Writer) (*slowHop, error) {
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	r := &slowHop{o: o}
	work, spool, err := prepare(&r.o, progress)
	if err != nil {
		return r, err
	}
	if !o.keep {
		defer removeAll(work)
	}
	port, err := benchkit.FreePort()
	if err != nil {
		return r, err
	}
	sk, err := startSlowSink(fmt.Sprintf("127.0.0.1:%d", port), o.n, o.slow)
	if err != nil {
		return r, err
	}
	defer sk.close()
	h, err := startHubd(r.o.hubd, work, port, o.retry)
	if err != nil {
		return r, err
	}
	r.pid = h.pid()
	defer h.stop()
	if err := h.waitFor(o.timeout, `"queue recovered"`, func() bool { return !h.recovered.IsZero() }); err != nil {
		return r, err
	}
	h.mu.Lock()
	r.recovery = h.recovered.Sub(h.started)
	recovered := h.recovered
	h.mu.Unlock()
	fmt.Fprintf(progress, "queue recovered %.2f s after start; the next hop answers each message after %s\n", r.recovery.Seconds(), o.slow)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	for done := false; !done; {
		select {
		case <-sk.done:
			done = true
		case <-h.exited:
			return r, errors.New("hubd exited while delivering")
		case <-ctx.Done():
			return r, ctx.Err()
		case <-tick.C:
			s := takeSample(r.pid, h.metricsURL, true)
			if math.IsNaN(r.peak.rssKB) || s.rssKB > r.peak.rssKB {
				r.peak = s
			}
			if s.goroutines > 2*r.peakGo && s.goroutines > 200 {
				fmt.Fprintf(progress, "  %.1f s after recovery: %.0f goroutines, %d at the sink\n",
					time.Since(recovered).Seconds(), s.goroutines, sk.counts().unique)
			}
			r.peakGo = math.Max(r.peakGo, s.goroutines)
			if time.Since(last) > 10*time.Second {
				last = time.Now()
				c := sk.counts()
				fmt.Fprintf(progress, "  %d of %d at the sink; RSS %.0f MB, heap %.0f MB, %.0f goroutines\n",
					c.unique, o.n, s.rssKB/1024, s.heapInuse/1e6, s.goroutines)
			}
		}
	}
	r.sink = sk.counts()
	r.drain = r.sink.last.Sub(recovered)
	end := takeSample(r.pid, h.metricsURL, false)
	r.peakHWM = end.hwmKB
	for ctx.Err() == nil {
		if c, err := countQueued(h); err == nil && c == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // stragglers: a duplicate would arrive now
	r.sink = sk.counts()
	_, r.missing = sk.missing(10)
	h.stop()
	snap, err := queue.Inspect(context.Background(), spool)
	if err != nil {
		return r, err
	}
	r.left = len(snap.Messages)
	return r, nil
}

func (r *slowHop) print(w io.Writer) {
	fmt.Fprintf(w, "\ndeadhop -slow: %d messages × %d bytes due at once for one live next hop answering each after %s; hubd %s\n",
		r.o.n, r.o.size, r.o.slow, filepath.Base(r.o.hubd))
	fmt.Fprintf(w, "  recovery %.2f s; delivered in %.1f s (%.0f msg/s) over %d connections\n", r.recovery.Seconds(),
		r.drain.Seconds(), float64(r.sink.unique)/r.drain.Seconds(), r.sink.conns)
	fmt.Fprintf(w, "  peak RSS %.0f MB (VmHWM %.0f MB); at it: heap %.0f MB, live %.0f MB, %.0f goroutines (most seen %.0f)\n",
		r.peak.rssKB/1024, r.peakHWM/1024, r.peak.heapInuse/1e6, r.peak.liveHeap/1e6, r.peak.goroutines, r.peakGo)
	fmt.Fprintf(w, "  at the sink: %d unique, %d duplicates, %d foreign, %d missing; left in the spool: %d\n",
		r.sink.unique, r.sink.duplicates, r.sink.foreign, r.missing, r.left)
}

func (r *slowHop) failure() error {
	if r.sink.duplicates > 0 || r.missing > 0 || r.sink.foreign > 0 || r.left > 0 {
		return fmt.Errorf("%d duplicates, %d missing, %d foreign, %d left", r.sink.duplicates, r.missing, r.sink.foreign, r.left)
	}
	return nil
}

// countQueued is how many messages hubd says it holds.
func countQueued(h *hubdProc) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := admin.NewClient(h.socket, "").Status(ctx)
	return st.Messages, err
}
