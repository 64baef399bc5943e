// Command deadhop measures hubd with a large queue for a dead next hop
// (issue 11 acceptance): how long start-up recovery of N queued messages
// takes, what hubd holds in memory for them, what the admin commands cost,
// what one retry cycle of the unreachable next hop writes to disk and
// burns in CPU, and, once the next hop answers again, how fast the queue
// drains and whether every message arrives exactly once.
//
// It fills a fresh log spool (queue.LogStore) directly through the engine
// with N messages of -size bytes, each to one recipient u<i>@dead.test and
// shaped as Transport.Submit shapes a message; starts hubd on it with a
// send connector whose smart host is a closed loopback port and retry
// intervals of -retry; reads /proc/<pid>/{smaps_rollup,status,io,stat} and
// hubd's Prometheus /metrics; times `hubctl queue list` and `hubctl
// status`; then listens on the dead port with a counting SMTP sink, runs
// `hubctl queue retry` and waits for all N messages.
//
//	go run ./examples/bench/deadhop                  # 100,000 × 5,000 bytes
//	go run ./examples/bench/deadhop -n 1000000 -retry 30s
//
// hubd and hubctl are built from the repository unless -hubd and -hubctl
// name binaries. The spool lives in a temporary directory (-dir to choose
// where), removed at the end unless -keep. Linux only (/proc).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"hubd/examples/bench/internal/benchkit"
	"hubd/hub/queue"
	"hubd/internal/admin"
)

type options struct {
	n, size, workers int
	retry            time.Duration // quick, transient and long retry intervals alike
	cycles           int           // retry cycles measured
	hubd, hubctl     string
	dir              string // parent of the temporary directory
	keep             bool
	cold             bool // drop the page cache before hubd starts
	restart          bool // restart hubd after the retry cycles, the next hop still dead
	maxRSSGB         float64
	timeout          time.Duration
	slow             time.Duration // -slow: a live next hop answering each message after this
	filled           fillResult    // set by prepare
}

// prepare makes the run's directory, builds hubd and hubctl unless given,
// and fills the spool; it returns the directory and the spool in it.
func prepare(o *options, progress io.Writer) (work, spool string, err error) {
	if o.n < 1 || o.size < 300 || o.workers < 1 || o.cycles < 1 {
		return "", "", errors.New("need -n ≥ 1, -size ≥ 300, -workers ≥ 1, -cycles ≥ 1")
	}
	if work, err = os.MkdirTemp(o.dir, "deadhop-"); err != nil {
		return "", "", err
	}
	if o.keep {
		fmt.Fprintln(progress, "keeping", work)
	}
	for _, b := range []struct {
		path *string
		name string
	}{{&o.hubd, "hubd"}, {&o.hubctl, "hubctl"}} {
		if *b.path == "" {
			fmt.Fprintf(progress, "building %s...\n", b.name)
			if *b.path, err = benchkit.Build(work, b.name); err != nil {
				if errors.Is(err, benchkit.ErrNoRepo) {
					err = errors.New("run deadhop inside the hubd repository, or give -hubd and -hubctl")
				}
				return work, "", err
			}
		}
	}
	spool = filepath.Join(work, "spool")
	fmt.Fprintf(progress, "filling %s with %d messages of %d bytes...\n", spool, o.n, o.size)
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	if o.filled, err = fill(ctx, spool, o.n, o.size, o.workers, progress); err != nil {
		return work, spool, fmt.Errorf("fill: %w", err)
	}
	fmt.Fprintf(progress, "filled in %.1f s; spool %.2f GB\n", o.filled.elapsed.Seconds(), float64(dirSize(spool))/1e9)
	if o.cold {
		dropCaches(progress)
	}
	return work, spool, nil
}

func removeAll(dir string) { os.RemoveAll(dir) }

func main() {
	var o options
	flag.IntVar(&o.n, "n", 100000, "messages in the queue")
	flag.IntVar(&o.size, "size", 5000, "bytes per message")
	flag.IntVar(&o.workers, "workers", 256, "goroutines filling the spool")
	flag.DurationVar(&o.retry, "retry", 10*time.Second, "hubd's retry intervals (quick, transient and long alike)")
	flag.IntVar(&o.cycles, "cycles", 2, "retry cycles of the dead next hop to measure")
	flag.StringVar(&o.hubd, "hubd", "", "hubd binary (default: go build ./cmd/hubd)")
	flag.StringVar(&o.hubctl, "hubctl", "", "hubctl binary (default: go build ./cmd/hubctl)")
	flag.StringVar(&o.dir, "dir", "", "where to make the temporary directory (default $TMPDIR)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (spool, config, log excerpt)")
	flag.BoolVar(&o.restart, "restart", false, "after the retry cycles, restart hubd (SIGTERM, start) and measure the start with the next hop still in Retry")
	flag.BoolVar(&o.cold, "cold", false, "drop the page cache before starting hubd (root), so recovery reads the spool from disk")
	flag.Float64Var(&o.maxRSSGB, "max-rss", 15, "stop hubd when its RSS exceeds this many GB")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up after this long")
	flag.DurationVar(&o.slow, "slow", 0, "instead: the next hop is live but answers each message after this long; measure what hubd holds while all N are due for it")
	flag.Parse()
	if o.slow > 0 {
		r, err := measureSlow(o, os.Stderr)
		if r != nil {
			r.print(os.Stdout)
		}
		if err == nil {
			err = r.failure()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "deadhop:", err)
			os.Exit(1)
		}
		return
	}
	r, err := measure(o, os.Stderr)
	if r != nil {
		r.print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deadhop:", err)
		os.Exit(1)
	}
	if err := r.failure(); err != nil {
		fmt.Fprintln(os.Stderr, "deadhop: FAILED:", err)
		os.Exit(1)
	}
}

// cycle is one retry cycle of the dead next hop: from one failed probe to
// the next, every waiting message is due, handed to its queue and deferred
// again.
type cycle struct {
	from, to      sample
	tracking      int64 // growth of the tracking log
	logLines      int   // hubd's log lines
	logBytes      int64 // and their bytes
	deferredLines int   // of which "deferred"
}

type report struct {
	o                 options
	work              string
	pid               int
	fill              fillResult
	spoolBytes        int64
	recovery          time.Duration // process start to "queue recovered"
	atRecovery        sample
	firstPass         time.Duration // "queue recovered" to every recipient deferred
	start, afterFirst sample        // process start (zeroes) and after the first pass
	steady            sample
	cycles            []cycle
	queueName         string
	listTimes         []time.Duration
	statusTimes       []time.Duration
	retryCmd          time.Duration
	drain             time.Duration // hubctl queue retry to the last message at the sink
	emptied           time.Duration // hubctl queue retry to hubd counting no message
	restartRecovery   time.Duration // -restart: process start to "queue recovered"
	atRestart         sample        // -restart: 5 s after "queue recovered"
	restartLines      map[string]int
	afterDrain        sample
	sink              sinkCounts
	missing           int
	missingSome       []int
	left              int        // messages Inspect finds in the spool after hubd stopped
	mu                sync.Mutex // guards peakRSSKB and killed (the watchdog writes them)
	peakRSSKB         float64
	killed            string
	logExcerpt        string
}

func measure(o options, progress io.Writer) (r *report, err error) {
	if o.n < 1 || o.size < 300 || o.workers < 1 || o.cycles < 1 {
		return nil, errors.New("need -n ≥ 1, -size ≥ 300, -workers ≥ 1, -cycles ≥ 1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	r = &report{o: o}
	var spool string
	if r.work, spool, err = prepare(&r.o, progress); err != nil {
		return r, err
	}
	if !o.keep {
		defer removeAll(r.work)
	}
	r.fill = r.o.filled
	r.spoolBytes = dirSize(spool)

	// The dead next hop: a free port where nothing listens until the sink does.
	deadPort, err := benchkit.FreePort()
	if err != nil {
		return r, err
	}
	h, err := startHubd(r.o.hubd, r.work, deadPort, o.retry)
	if err != nil {
		return r, err
	}
	r.pid = h.pid()
	defer func() {
		h.stop()
		r.logExcerpt = h.logExcerpt()
	}()
	go r.watchdog(ctx, h)
	tracking := filepath.Join(r.work, "log", "tracking")

	// Start-up recovery.
	if err := h.waitFor(o.timeout, `"queue recovered"`, func() bool { return !h.recovered.IsZero() }); err != nil {
		return r, r.why(err)
	}
	h.mu.Lock()
	r.recovery = h.recovered.Sub(h.started)
	recovered := h.recovered
	h.mu.Unlock()
	r.atRecovery = takeSample(r.pid, h.metricsURL, true)
	fmt.Fprintf(progress, "queue recovered %.2f s after start; RSS %.0f MB\n", r.recovery.Seconds(), r.atRecovery.rssKB/1024)

	// The first pass: every message categorized, routed, its queue probed
	// once and the rest deferred in Retry.
	ac := admin.NewClient(h.socket, "")
	for {
		if err := ctx.Err(); err != nil || !h.alive() {
			return r, r.why(fmt.Errorf("waiting for the first pass: %v", err))
		}
		s := takeSample(r.pid, h.metricsURL, false)
		if s.recipients["deferred"] >= float64(o.n) && h.failed() > 0 {
			r.firstPass = time.Since(recovered)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.afterFirst = takeSample(r.pid, h.metricsURL, true)
	fmt.Fprintf(progress, "first pass done %.1f s after recovery; waiting for %d retry cycles of about %s...\n",
		r.firstPass.Seconds(), o.cycles, o.retry)

	// Retry cycles, from one failed probe to the next.
	base := h.failed() + 1
	var prev sample
	var prevTrack int64
	var prevLog map[string]int
	var prevLines int
	var prevBytes int64
	for k := base; k <= base+o.cycles; k++ {
		if _, err := h.waitFailures(k, 10*o.retry+time.Minute); err != nil {
			return r, r.why(err)
		}
		s := takeSample(r.pid, h.metricsURL, false)
		track := dirSize(tracking)
		byMsg, lines, bytes := h.logCounts()
		if k > base {
			r.cycles = append(r.cycles, cycle{from: prev, to: s, tracking: track - prevTrack,
				logLines: lines - prevLines, logBytes: bytes - prevBytes, deferredLines: byMsg["deferred"] - prevLog["deferred"]})
			c := r.cycles[len(r.cycles)-1]
			fmt.Fprintf(progress, "  cycle %d: %.1f s, %.1f MB written, %.0f fsyncs, %.2f CPU s\n", len(r.cycles),
				c.to.at.Sub(c.from.at).Seconds(), (c.to.writeBytes-c.from.writeBytes)/1e6, sum(c.to.fsyncs)-sum(c.from.fsyncs), c.to.cpu-c.from.cpu)
		}
		prev, prevTrack, prevLog, prevLines, prevBytes = s, track, byMsg, lines, bytes
	}
	r.steady = takeSample(r.pid, h.metricsURL, true)

	// The admin commands, with the whole queue waiting.
	qs, err := ac.Queues(ctx)
	if err != nil {
		return r, r.why(err)
	}
	for _, q := range qs {
		if q.Kind == "smtp" {
			r.queueName = q.Name
		}
	}
	if r.queueName == "" {
		return r, r.why(fmt.Errorf("no smtp queue in %+v", qs))
	}
	for i := 0; i < 3; i++ {
		d, _, err := r.hubctl(h, "queue", "list")
		if err != nil {
			return r, r.why(err)
		}
		r.listTimes = append(r.listTimes, d)
		if d, _, err = r.hubctl(h, "status"); err != nil {
			return r, r.why(err)
		}
		r.statusTimes = append(r.statusTimes, d)
	}
	_, out, _ := r.hubctl(h, "queue", "list")
	fmt.Fprintf(progress, "$ hubctl queue list\n%s", out)

	if o.restart {
		// The next hop is still dead: the new process should park the
		// queue at once from the spool's HOP record, without a pass.
		fmt.Fprintln(progress, "restarting hubd on the same spool...")
		h.stop()
		if h, err = startHubd(r.o.hubd, r.work, deadPort, o.retry); err != nil {
			return r, err
		}
		r.pid = h.pid()
		go r.watchdog(ctx, h)
		if err := h.waitFor(o.timeout, `"queue recovered"`, func() bool { return !h.recovered.IsZero() }); err != nil {
			return r, r.why(err)
		}
		h.mu.Lock()
		r.restartRecovery = h.recovered.Sub(h.started)
		h.mu.Unlock()
		time.Sleep(5 * time.Second) // what it does right after: a pass per message would show here
		r.atRestart = takeSample(r.pid, h.metricsURL, true)
		r.restartLines, _, _ = h.logCounts()
		fmt.Fprintf(progress, "restarted: recovered in %.2f s; RSS %.0f MB; log lines %v\n", r.restartRecovery.Seconds(),
			r.atRestart.rssKB/1024, r.restartLines)
		ac = admin.NewClient(h.socket, "")
	}

	// The next hop comes back.
	sk, err := startSink(fmt.Sprintf("127.0.0.1:%d", deadPort), o.n)
	if err != nil {
		return r, fmt.Errorf("sink on the dead port: %w", err)
	}
	defer sk.close()
	fmt.Fprintf(progress, "sink listening on port %d; hubctl queue retry %s\n", deadPort, r.queueName)
	began := time.Now()
	if r.retryCmd, _, err = r.hubctl(h, "queue", "retry", r.queueName); err != nil {
		return r, r.why(err)
	}
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
wait:
	for {
		select {
		case <-sk.done:
			break wait
		case <-h.exited:
			return r, r.why(errors.New("hubd exited while draining"))
		case <-ctx.Done():
			break wait
		case <-tick.C:
			c := sk.counts()
			fmt.Fprintf(progress, "  drain: %d of %d at the sink (%.0f/s)\n", c.unique, o.n, float64(c.unique)/time.Since(began).Seconds())
		}
	}
	r.sink = sk.counts()
	if r.sink.unique == o.n {
		r.drain = r.sink.last.Sub(began)
	}
	for ctx.Err() == nil {
		st, err := ac.Status(ctx)
		if err == nil && st.Messages == 0 {
			r.emptied = time.Since(began)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // stragglers: a duplicate would arrive now
	r.sink = sk.counts()
	r.missingSome, r.missing = sk.missing(10)
	r.afterDrain = takeSample(r.pid, h.metricsURL, true)
	r.notePeak(r.afterDrain.hwmKB)
	h.stop()
	snap, err := queue.Inspect(context.Background(), spool)
	if err != nil {
		return r, fmt.Errorf("inspecting the spool after hubd stopped: %w", err)
	}
	r.left = len(snap.Messages)
	return r, ctx.Err()
}

// hubctl runs hubctl on hubd's socket and returns how long it took.
func (r *report) hubctl(h *hubdProc, args ...string) (time.Duration, string, error) {
	cmd := exec.Command(r.o.hubctl, append([]string{"-socket", h.socket}, args...)...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return d, string(out), fmt.Errorf("hubctl %v: %w\n%s", args, err, out)
	}
	return d, string(out), nil
}

// watchdog stops hubd when its RSS passes -max-rss or the run its timeout.
func (r *report) watchdog(ctx context.Context, h *hubdProc) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-h.exited:
			return
		case <-ctx.Done():
			r.kill(h, "the run's -timeout passed")
			return
		case <-t.C:
			s := takeSample(r.pid, "", false)
			r.notePeak(s.hwmKB)
			if s.rssKB > r.o.maxRSSGB*1e6 {
				r.kill(h, fmt.Sprintf("RSS %.1f GB passed -max-rss %.0f GB", s.rssKB/1e6, r.o.maxRSSGB))
				return
			}
		}
	}
}

// notePeak keeps the highest VmHWM seen (NaN once hubd has exited).
func (r *report) notePeak(kb float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !math.IsNaN(kb) {
		r.peakRSSKB = math.Max(r.peakRSSKB, kb)
	}
}

func (r *report) kill(h *hubdProc, why string) {
	r.mu.Lock()
	r.killed = why
	r.mu.Unlock()
	h.cmd.Process.Kill()
}

// killedWhy says why the watchdog killed hubd, or "".
func (r *report) killedWhy() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.killed
}

func (r *report) why(err error) error {
	if k := r.killedWhy(); k != "" {
		return fmt.Errorf("%w (hubd killed: %s)", err, k)
	}
	return err
}

// dropCaches asks the kernel to forget the page cache (root only), so that
// recovery reads the spool from disk as after a reboot; otherwise it says
// that recovery ran on a warm cache.
func dropCaches(progress io.Writer) {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
		fmt.Fprintln(progress, "page cache not dropped (not root): recovery reads a warm spool")
		return
	}
	fmt.Fprintln(progress, "page cache dropped: recovery reads the spool from disk")
}

func sum(m map[string]float64) float64 {
	t := 0.0
	for _, v := range m {
		t += v
	}
	return t
}

// failure says what went wrong with the messages, or nil.
func (r *report) failure() error {
	var why []string
	if r.sink.duplicates > 0 {
		why = append(why, fmt.Sprintf("%d duplicates", r.sink.duplicates))
	}
	if r.missing > 0 {
		why = append(why, fmt.Sprintf("%d missing (e.g. %v)", r.missing, r.missingSome))
	}
	if r.sink.foreign > 0 {
		why = append(why, fmt.Sprintf("%d messages not ours or to the wrong recipient", r.sink.foreign))
	}
	if r.left > 0 {
		why = append(why, fmt.Sprintf("%d messages left in the spool", r.left))
	}
	if k := r.killedWhy(); k != "" {
		why = append(why, "hubd killed: "+k)
	}
	if len(why) == 0 {
		return nil
	}
	return fmt.Errorf("%v", why)
}
