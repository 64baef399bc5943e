// Command idleconns measures what an idle SMTP connection costs hubd (issue
// 11's acceptance: under 50 KB per connection with 10,000 of them open).
//
//	go run ./examples/bench/idleconns                  # 10,000 connections from 1,000 addresses
//	go run ./examples/bench/idleconns -n 2000 -sources 100
//	go run ./examples/bench/idleconns -hubd bin/hubd   # an existing binary instead of building one
//	go run ./examples/bench/idleconns -default-limits  # the connector's limits left at their defaults
//	go test ./examples/bench/idleconns/                # the same with 200 connections, as a test
//
// # Set-up
//
// idleconns builds hubd from the repository (go build ./cmd/hubd; or takes
// -hubd) and starts it as a child process on a temporary spool with one
// receive connector on a free 127.0.0.1 port serving 127.0.0.0/8, and a
// Prometheus endpoint on another free port (for go_goroutines, the Go heap
// and stack figures, and hubd_smtp_connections_active). The connector's limits
// are raised so that -n connections get in (hubd.go says which and why);
// -default-limits leaves them at hubd's defaults and shows what refuses.
//
// Every connection comes from one of -sources loopback addresses (127.0.0.2,
// 127.0.0.3, ...; Linux routes all of 127/8 to lo, so no set-up is needed),
// -n/-sources from each: hubd's per-source limits apply per address, as they
// would to real clients. idleconns raises its own RLIMIT_NOFILE soft limit to
// the hard one (hubd, a Go program, does the same for itself) and stops if
// either process cannot hold -n descriptors.
//
// # Measurement
//
//  1. baseline: hubd idle, no connection, after -settle.
//  2. -parallel workers open -n connections; each reads the 220 greeting,
//     says EHLO, reads the 250 reply, and then stays idle. The time from the
//     first dial to the last reply is reported.
//  3. idle: after -settle, the same figures again, and the checks that hubd
//     counts every connection as open.
//  4. The difference divided by the connections held: per idle connection,
//     RSS and PSS (Rss and Pss of /proc/<pid>/smaps_rollup), the Go heap in
//     use and goroutine stacks (go_memstats_*_inuse_bytes), goroutines
//     (go_goroutines), and file descriptors (/proc/<pid>/fd).
//  5. Every connection is closed (no QUIT: the clients just go away);
//     idleconns waits up to -drain for hubd to count no connection and to be
//     back within 10 goroutines of the baseline, samples again, and runs one
//     whole session (220, EHLO 250, QUIT 221) to show hubd is healthy.
//
// Limits of the figures: RSS and PSS are hubd's user-space memory; the
// kernel's socket structures and buffers (a few KB per idle TCP connection,
// charged to no process) are not in them. The goroutine and connection
// counts must come down at once when the clients go; memory does not: an
// idle hubd collects its heap only when the runtime forces a collection
// (every 2 minutes), and returns the freed pages to the kernel later still
// (with 10,000 connections, RSS fell from 236 MB to 45 MB about 4 minutes
// after they closed). -memwait waits for the heap in use, not for RSS.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"hubd/examples/bench/internal/benchkit"
)

type options struct {
	n             int
	sources       int
	hubd          string
	parallel      int
	settle        time.Duration
	drain         time.Duration
	memWait       time.Duration
	defaultLimits bool
}

func main() {
	var o options
	flag.IntVar(&o.n, "n", 10000, "idle SMTP connections to open")
	flag.IntVar(&o.sources, "sources", 1000, "distinct 127.x.y.z source addresses the connections come from")
	flag.StringVar(&o.hubd, "hubd", "", "hubd binary to run (default: go build ./cmd/hubd of this repository)")
	flag.IntVar(&o.parallel, "parallel", 64, "connections being opened at once")
	flag.DurationVar(&o.settle, "settle", 3*time.Second, "wait before each measurement")
	flag.DurationVar(&o.drain, "drain", 30*time.Second, "how long hubd may take to let go of closed connections")
	flag.DurationVar(&o.memWait, "memwait", 3*time.Minute, "after closing, how long to wait for the Go heap to shrink back (the runtime forces a collection every 2 minutes); 0: do not wait")
	flag.BoolVar(&o.defaultLimits, "default-limits", false, "leave the connector's connection limits and timeouts at hubd's defaults")
	flag.Parse()
	r, err := measure(o, os.Stderr)
	if r != nil {
		r.print(os.Stdout)
	}
	if err == nil {
		err = r.failure()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		os.Exit(1)
	}
}

// report is one run's figures.
type report struct {
	o                  options
	binary             string
	pid                int
	ourNofile          uint64 // our RLIMIT_NOFILE soft limit, after raising it
	ourNofileWas       uint64
	hubdSoft, hubdHard uint64
	open               openResult
	held               int
	base, idle, closed sample
	drained            bool // no connection and goroutines back within drainSlack
	drainedAfter       time.Duration
	heapBack           bool // the heap in use came back (only with memWait)
	heapBackAfter      time.Duration
	health             error  // the final session
	hubdLog            string // hubd's log if something failed
}

// drainSlack is how many goroutines above the baseline still count as
// "back": the metrics scrapes' HTTP connections, timers.
const drainSlack = 10

// heapBackShare: the heap in use counts as back once at most this share of
// its increase is left.
const heapBackShare = 0.25

// measure runs the whole measurement; progress goes to progress. A report
// comes back whenever hubd was started, even with an error.
func measure(o options, progress io.Writer) (*report, error) {
	if o.n < 1 || o.sources < 1 || o.parallel < 1 {
		return nil, errors.New("-n, -sources and -parallel must be at least 1")
	}
	o.sources = min(o.sources, o.n)
	r := &report{o: o}

	// Descriptors: ours (one per connection) and hubd's (one per connection,
	// plus its listeners, spool and log).
	need := uint64(o.n + 256)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return nil, err
	}
	r.ourNofileWas = lim.Cur
	if lim.Max < need {
		return nil, fmt.Errorf("RLIMIT_NOFILE hard limit is %d, %d connections need %d descriptors in this process and as many in hubd: raise it (ulimit -Hn as root, LimitNOFILE= under systemd) or lower -n", lim.Max, o.n, need)
	}
	if lim.Cur < need {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return nil, fmt.Errorf("raising RLIMIT_NOFILE to %d: %w", lim.Max, err)
		}
	}
	r.ourNofile = lim.Cur

	work, err := os.MkdirTemp("", "idleconns-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	r.binary = o.hubd
	if r.binary == "" {
		fmt.Fprintln(progress, "building hubd (go build ./cmd/hubd)...")
		if r.binary, err = benchkit.Build(work, "hubd"); err != nil {
			if errors.Is(err, benchkit.ErrNoRepo) {
				err = errors.New("run idleconns inside the hubd repository, or give -hubd")
			}
			return nil, err
		}
	}
	perSource := (o.n + o.sources - 1) / o.sources
	h, err := startHubd(r.binary, work, hubdLimits{conns: o.n, perSource: perSource, defaultLimits: o.defaultLimits})
	if err != nil {
		return nil, err
	}
	defer h.stop()
	r.pid = h.pid()
	if r.hubdSoft, r.hubdHard, err = nofileLimits(r.pid); err != nil {
		return r, err
	}
	if r.hubdSoft < need {
		// Carry on: the run then shows what an operator would see.
		fmt.Fprintf(progress, "warning: hubd's RLIMIT_NOFILE is %d, it needs about %d for %d connections\n", r.hubdSoft, need, o.n)
	}

	time.Sleep(o.settle)
	r.base = takeSample(r.pid, h.metricsURL)
	if math.IsNaN(r.base.goroutines) {
		fmt.Fprintf(progress, "warning: no go_goroutines from %s; counting threads only\n", h.metricsURL)
	}

	fmt.Fprintf(progress, "opening %d connections from %d source addresses, %d at a time...\n", o.n, o.sources, o.parallel)
	r.open = openIdle(h.addr, o.n, sourceAddrs(o.sources), o.parallel)
	r.held = len(r.open.conns)
	fmt.Fprintf(progress, "%d open in %.2f s; measuring after %s\n", r.held, r.open.elapsed.Seconds(), o.settle)
	time.Sleep(o.settle)
	r.idle = takeSample(r.pid, h.metricsURL)
	if !h.alive() {
		r.hubdLog = h.log()
		return r, errors.New("hubd exited while the connections were open")
	}

	fmt.Fprintf(progress, "closing them; waiting up to %s for hubd to let go...\n", o.drain)
	closeAll(r.open.conns, o.parallel)
	closedAt := time.Now()
	for {
		s := takeSample(r.pid, h.metricsURL)
		if drained(s, r.base) {
			r.drained, r.drainedAfter = true, time.Since(closedAt)
			break
		}
		if time.Since(closedAt) > o.drain {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if o.memWait > 0 && !math.IsNaN(r.idle.heapInuse) {
		fmt.Fprintf(progress, "waiting up to %s for the Go heap to shrink back...\n", o.memWait)
		limit := r.base.heapInuse + heapBackShare*(r.idle.heapInuse-r.base.heapInuse)
		for {
			if s := takeSample(r.pid, h.metricsURL); s.heapInuse <= limit {
				r.heapBack, r.heapBackAfter = true, time.Since(closedAt)
				break
			}
			if time.Since(closedAt) > o.memWait {
				break
			}
			time.Sleep(time.Second)
		}
	}
	time.Sleep(o.settle)
	r.closed = takeSample(r.pid, h.metricsURL)
	r.health = healthCheck(h.addr)
	if r.failure() != nil {
		r.hubdLog = h.log()
	}
	return r, nil
}

// drained says whether hubd has let go of the closed connections: it
// counts none open and its goroutines are back within drainSlack of the
// baseline; without metrics, its descriptors are back within drainSlack.
func drained(s, base sample) bool {
	if math.IsNaN(s.goroutines) || math.IsNaN(base.goroutines) {
		return s.fds >= 0 && s.fds <= base.fds+drainSlack
	}
	return s.activeConns == 0 && s.goroutines <= base.goroutines+drainSlack
}

// failure says what went wrong with the run, or nil.
func (r *report) failure() error {
	var why []string
	if r.held == 0 {
		why = append(why, "no connection could be opened and held")
	}
	if !math.IsNaN(r.idle.activeConns) && r.idle.activeConns != float64(r.held) {
		why = append(why, fmt.Sprintf("hubd counted %.0f open connections while %d were held", r.idle.activeConns, r.held))
	}
	if !r.drained {
		why = append(why, fmt.Sprintf("after closing, hubd still had %.0f connections and %.0f goroutines (baseline %.0f) after %s",
			r.closed.activeConns, r.closed.goroutines, r.base.goroutines, r.o.drain))
	}
	if r.o.memWait > 0 && !math.IsNaN(r.idle.heapInuse) && !r.heapBack {
		why = append(why, fmt.Sprintf("the Go heap in use was still %.1f MB (baseline %.1f, %.1f with the connections) %s after closing them",
			r.closed.heapInuse/mb, r.base.heapInuse/mb, r.idle.heapInuse/mb, r.o.memWait))
	}
	if r.health != nil {
		why = append(why, "final session: "+r.health.Error())
	}
	if len(why) == 0 {
		return nil
	}
	return errors.New(strings.Join(why, "; "))
}

// perConn is (idle − base) / held.
func (r *report) perConn(get func(sample) float64) float64 {
	if r.held == 0 {
		return math.NaN()
	}
	return (get(r.idle) - get(r.base)) / float64(r.held)
}

const mb = 1 << 20

func (r *report) print(w io.Writer) {
	o := r.o
	fmt.Fprintf(w, "idleconns: hubd %s (pid %d), %d connections from %d source addresses (≤ %d each), %d opened at a time\n",
		filepath.Base(r.binary), r.pid, o.n, o.sources, (o.n+o.sources-1)/o.sources, o.parallel)
	if o.defaultLimits {
		fmt.Fprintln(w, "connector limits: hubd's defaults (-default-limits)")
	}
	fmt.Fprintf(w, "RLIMIT_NOFILE: idleconns %d (%d at start, Go's runtime raises it to the hard limit itself), hubd soft %d / hard %d\n",
		r.ourNofile, r.ourNofileWas, r.hubdSoft, r.hubdHard)
	op := r.open
	fmt.Fprintf(w, "opened and held %d of %d in %.2f s (%.0f/s); refused %d; failed %d\n",
		r.held, o.n, op.elapsed.Seconds(), float64(r.held)/op.elapsed.Seconds(), op.refused, op.failed)
	for _, s := range sortedReplies(op.replies) {
		fmt.Fprintf(w, "  refused: %s\n", s)
	}
	if len(r.idle.limitRefusals) > 0 {
		fmt.Fprintf(w, "  hubd_smtp_limit_refusals_total by limit: %s\n", strings.Join(sortedCounts(r.idle.limitRefusals), ", "))
	}
	if op.firstErr != "" {
		fmt.Fprintf(w, "  first failure: %s\n", op.firstErr)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-14s %10s %9s %9s %9s %9s %11s %8s %7s\n",
		"phase", "hubd conns", "RSS MB", "PSS MB", "heap MB", "stack MB", "goroutines", "threads", "fds")
	for _, row := range []struct {
		name string
		s    sample
	}{{"baseline", r.base}, {fmt.Sprintf("%d idle", r.held), r.idle}, {"after close", r.closed}} {
		s := row.s
		fmt.Fprintf(w, "%-14s %10.0f %9.1f %9.1f %9.1f %9.1f %11.0f %8d %7d\n", row.name, s.activeConns,
			s.rssKB/1024, s.pssKB/1024, s.heapInuse/mb, s.stackInuse/mb, s.goroutines, s.threads, s.fds)
	}
	fmt.Fprintln(w)
	rss := r.perConn(func(s sample) float64 { return s.rssKB })
	pss := r.perConn(func(s sample) float64 { return s.pssKB })
	fmt.Fprintf(w, "per idle connection: RSS %.1f KB, PSS %.1f KB (Go heap %.1f KB, goroutine stacks %.1f KB), goroutines %.2f, threads %.3f, fds %.2f\n",
		rss, pss,
		r.perConn(func(s sample) float64 { return s.heapInuse })/1024,
		r.perConn(func(s sample) float64 { return s.stackInuse })/1024,
		r.perConn(func(s sample) float64 { return s.goroutines }),
		r.perConn(func(s sample) float64 { return float64(s.threads) }),
		r.perConn(func(s sample) float64 { return float64(s.fds) }))
	verdict := "met"
	if !(rss < 50 && pss < 50) {
		verdict = "NOT met"
	}
	fmt.Fprintf(w, "issue 11 acceptance, < 50 KB per idle connection (RSS and PSS): %s\n", verdict)
	if r.drained {
		fmt.Fprintf(w, "after close: no connection open and goroutines back to %.0f (baseline %.0f) within %.1f s\n",
			r.closed.goroutines, r.base.goroutines, r.drainedAfter.Seconds())
	} else {
		fmt.Fprintf(w, "after close: NOT drained within %s: %.0f connections, %.0f goroutines (baseline %.0f)\n",
			o.drain, r.closed.activeConns, r.closed.goroutines, r.base.goroutines)
	}
	switch {
	case o.memWait == 0:
		fmt.Fprintln(w, "after close: memory not waited for (-memwait 0)")
	case r.heapBack:
		fmt.Fprintf(w, "after close: Go heap in use back to %.1f MB (baseline %.1f) within %.0f s; RSS %.1f MB, PSS %.1f MB (the runtime returns freed pages gradually)\n",
			r.closed.heapInuse/mb, r.base.heapInuse/mb, r.heapBackAfter.Seconds(), r.closed.rssKB/1024, r.closed.pssKB/1024)
	default:
		fmt.Fprintf(w, "after close: Go heap in use NOT back within %s: %.1f MB (baseline %.1f)\n",
			o.memWait, r.closed.heapInuse/mb, r.base.heapInuse/mb)
	}
	if r.health == nil {
		fmt.Fprintln(w, "health after close: 220, EHLO 250, QUIT 221: ok")
	} else {
		fmt.Fprintf(w, "health after close: FAILED: %v\n", r.health)
	}
	if r.hubdLog != "" {
		fmt.Fprintf(w, "hubd's log (end):\n%s\n", r.hubdLog)
	}
}
