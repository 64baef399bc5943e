// Command relaybench measures hubd against Postfix as relays, side by side on
// loopback, and prints the ratio hubd/Postfix of each metric (issue 11,
// "Benchmarks that settle arguments").
//
//	go run ./examples/bench/relaybench                       # 20 sessions, 5,000 × 5,000 B, 2 rounds
//	go run ./examples/bench/relaybench -count 1000 -rounds 1 # a quick look
//	go run ./examples/bench/relaybench -conn-per-msg         # connect, EHLO, 1 message, QUIT
//	go run ./examples/bench/relaybench -only hubd            # hubd alone (no Postfix needed)
//	go run ./examples/bench/relaybench -hubd /tmp/new -against /tmp/old # two hubd builds
//
// # Set-up
//
// One in-process SMTP sink on a free loopback port is the next hop of both
// relays; it counts messages by Message-ID, so a message relayed twice counts
// once (and is reported in the "dup" column). A is hubd, built from the
// repository (go build ./cmd/hubd) and started with a temporary config: one
// receive connector on a free loopback port that lets 127.0.0.1 relay
// anonymously, one send connector to the sink with tls = "none", log level
// info (-hubd names a binary to run instead of building one). B is a private Postfix instance started by postfix-relay.sh (flag
// -postfix-script; default ../shared/bench/postfix-relay.sh from the
// repository root) with LISTEN_PORT, SINK_PORT and PFDIR set to free ports and
// a temporary directory; it needs root and Debian's postfix package. Without
// them relaybench says so and measures hubd alone. Both MTAs log every message
// and both make a message durable before their 250. With -against, B is
// another hubd binary started the same way as A ("base" in the table), so
// that two builds can be compared with the same interleaving.
//
// # Runs
//
// Each run starts its MTA on a fresh spool/queue, loads it, waits for the sink
// to have every accepted message, and stops it. The machine's speed drifts by
// ±40 % within minutes, so runs are interleaved A B B A, repeated -rounds
// times, and only ratios of neighbouring runs are reported: run i of hubd is
// paired with run i of Postfix (in A B B A they are adjacent), and the table
// ends with the median of those ratios per metric.
//
// # Load
//
// -sessions clients share -count messages of -size bytes (headers included;
// one sender, one recipient). By default a client keeps its session and sends
// RSET between transactions; -conn-per-msg makes it connect, EHLO, send one
// message and QUIT. Commands are sent one at a time, without PIPELINING.
//
// # Metrics
//
//   - accepted msg/s: accepted messages / time from the start of the load to
//     the last 250 after DATA.
//   - e2e msg/s: accepted messages / time from the start of the load until the
//     sink holds every one of them (5-minute limit; a run that misses it is
//     marked and has no e2e figure).
//   - CPU ms/msg: CPU time (user + system) of the MTA's process tree from just
//     before the load until the sink has everything, per accepted message.
//     Method: at both moments, for every living process in the tree rooted at
//     the measured pid (hubd's pid; Postfix's master, whose children are
//     smtpd, cleanup, qmgr, smtp, trivial-rewrite, postlogd …), the sum of
//     utime+stime+cutime+cstime from /proc/<pid>/stat. A live process counts
//     its own time; a child that exited and was reaped counts in its
//     reaper's cutime/cstime; so every process counts once. Limits: the clock
//     tick is 10 ms (USER_HZ = 100), so short runs are coarse; a process that
//     leaves the tree (double fork, reparented to init) or that exits but is
//     not yet reaped at the second sample (a zombie's time is still counted,
//     its children's time only once it is reaped) can be missed; work done
//     after the second sample (Postfix processes idling out) is not counted;
//     the kernel's own work for the sockets of the load generator and the
//     sink, which live in this process, is not counted for either MTA.
//   - accept p50/p99: per accepted message, the time from writing the final
//     "." of DATA to reading the 250 (nearest-rank percentiles).
//   - PSS MB: the sum of Pss in /proc/<pid>/smaps_rollup over the tree, taken
//     when the last 250 arrived (end of the accept phase). PSS shares each
//     shared page among its users, so a tree of processes sharing libraries is
//     not counted many times over.
//
// For msg/s higher is better; for CPU, latency and PSS lower is better: the
// summary names the good direction beside each ratio.
package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"hubd/examples/bench/internal/benchkit"
)

type options struct {
	sessions      int
	count         int
	size          int
	connPerMsg    bool
	rounds        int
	only          string
	postfixScript string
	e2eTimeout    time.Duration
	hubd          string // prebuilt hubd binary for A ("": build one)
	against       string // hubd binary for B instead of Postfix
	atAccept      string // shell command run when PSS is sampled (see -at-accept)
}

func main() {
	var o options
	flag.IntVar(&o.sessions, "sessions", 20, "concurrent SMTP sessions of the load")
	flag.IntVar(&o.count, "count", 5000, "messages per run")
	flag.IntVar(&o.size, "size", 5000, "bytes per message, headers included")
	flag.BoolVar(&o.connPerMsg, "conn-per-msg", false, "one connection per message (default: persistent sessions, RSET between)")
	flag.IntVar(&o.rounds, "rounds", 2, "rounds of A B B A (hubd, postfix, postfix, hubd)")
	flag.StringVar(&o.only, "only", "", "run only this MTA: hubd or postfix")
	flag.StringVar(&o.postfixScript, "postfix-script", "", "postfix-relay.sh (default ../shared/bench/postfix-relay.sh from the repository root)")
	flag.StringVar(&o.hubd, "hubd", "", "run this hubd binary as A instead of building ./cmd/hubd")
	flag.StringVar(&o.against, "against", "", "run this hubd binary as B (named base) instead of Postfix")
	flag.StringVar(&o.atAccept, "at-accept", "", "shell command run right after PSS is sampled, the load paused (env RB_PID, RB_MTA, RB_RUN, RB_DIR: the run's directory, hubd.log in it), e.g. to save /proc/$RB_PID/smaps")
	flag.DurationVar(&o.e2eTimeout, "e2e-timeout", 5*time.Minute, "how long to wait for the sink to have every accepted message")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "relaybench:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.sessions < 1 || o.count < 1 || o.rounds < 1 || o.size < 200 {
		return errors.New("-sessions, -count and -rounds must be at least 1, -size at least 200")
	}
	if o.only != "" && o.only != "hubd" && o.only != "postfix" {
		return fmt.Errorf("-only %q: want hubd or postfix", o.only)
	}
	repo, err := benchkit.RepoRoot()
	if errors.Is(err, benchkit.ErrNoRepo) {
		return fmt.Errorf("run relaybench inside the hubd repository (%w)", err)
	}
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "relaybench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	// Postfix's daemons run as the postfix user and must reach its queue
	// inside this directory, which MkdirTemp makes 0700.
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}

	var mtas []mta
	if o.only != "postfix" {
		bin := o.hubd
		if bin == "" {
			if bin, err = benchkit.Build(work, "hubd"); err != nil {
				return err
			}
		}
		mtas = append(mtas, &hubdRelay{label: "hubd", binary: bin, sessions: o.sessions})
	}
	if o.against != "" && o.only == "" {
		mtas = append(mtas, &hubdRelay{label: "base", binary: o.against, sessions: o.sessions})
	} else if o.only != "hubd" {
		script := o.postfixScript
		if script == "" {
			script = filepath.Join(repo, "..", "shared", "bench", "postfix-relay.sh")
		}
		if why := postfixMissing(script); why != "" {
			if o.only == "postfix" {
				return errors.New(why)
			}
			fmt.Printf("Postfix skipped: %s; hubd figures only.\n", why)
		} else {
			mtas = append(mtas, &postfixRelay{script: script})
		}
	}

	sk, err := startSink()
	if err != nil {
		return err
	}
	defer sk.close()

	mode := "persistent sessions (RSET between messages)"
	if o.connPerMsg {
		mode = "one connection per message"
	}
	fmt.Printf("relaybench: %d sessions, %d messages × %d B, %s, %d round(s)\n", o.sessions, o.count, o.size, mode, o.rounds)
	var results []runResult
	for round := 1; round <= o.rounds; round++ {
		order := mtas
		if len(mtas) == 2 {
			order = []mta{mtas[0], mtas[1], mtas[1], mtas[0]} // A B B A
		}
		for _, m := range order {
			r, err := measure(m, sk, o, work, len(results)+1)
			if err != nil {
				return err
			}
			printRun(r, len(results) == 0)
			results = append(results, r)
		}
	}
	names := make([]string, len(mtas))
	for i, m := range mtas {
		names[i] = m.name()
	}
	printSummary(results, names)
	return nil
}

// postfixMissing says why Postfix cannot be run here, or "" if it can.
func postfixMissing(script string) string {
	if _, err := exec.LookPath("postfix"); err != nil {
		if _, err := os.Stat("/usr/sbin/postfix"); err != nil {
			return `postfix is not installed (Debian: DEBIAN_FRONTEND=noninteractive apt-get install -y postfix, "No configuration")`
		}
	}
	if _, err := os.Stat("/etc/postfix/main.cf"); err != nil {
		// "No configuration" leaves no main.cf; postfix-relay.sh copies it as a template.
		return "/etc/postfix/main.cf is missing (postfix-relay.sh uses it as a template): cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf"
	}
	if os.Geteuid() != 0 {
		return "the private Postfix relay must be started as root"
	}
	if _, err := os.Stat(script); err != nil {
		return fmt.Sprintf("%s not found (flag -postfix-script)", script)
	}
	return ""
}

// runResult is one row of the table. Missing figures are NaN.
type runResult struct {
	n            int
	mta          string
	accepted     int
	failed       int
	firstErr     string
	duplicates   int
	acceptedRate float64 // msg/s
	e2eRate      float64 // msg/s
	cpuMsPerMsg  float64
	p50ms, p99ms float64
	pssMB        float64
}

func measure(m mta, sk *sink, o options, work string, n int) (runResult, error) {
	r := runResult{n: n, mta: m.name(), e2eRate: math.NaN(), cpuMsPerMsg: math.NaN(), pssMB: math.NaN()}
	dir := filepath.Join(work, fmt.Sprintf("run%d-%s", n, m.name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	sk.reset(0)
	addr, pid, err := m.start(dir, sk.port())
	if err != nil {
		return r, fmt.Errorf("run %d: starting %s: %w", n, m.name(), err)
	}
	defer m.stop()

	cpuBefore, cpuErr := treeCPUTicks("/proc", pid)
	load := runLoad(loadOptions{addr: addr, sessions: o.sessions, count: o.count, size: o.size,
		connPerMsg: o.connPerMsg, runID: fmt.Sprintf("rb%d-%d", time.Now().UnixNano(), n)})
	if kb, err := treePssKB("/proc", pid); err == nil {
		r.pssMB = float64(kb) / 1024
	}
	if o.atAccept != "" {
		// Where the PSS went: the command sees the MTA as it was sampled (the
		// load has ended; delivery to the sink goes on meanwhile).
		hook := exec.Command("sh", "-c", o.atAccept)
		hook.Env = append(os.Environ(), fmt.Sprintf("RB_PID=%d", pid), "RB_MTA="+m.name(), fmt.Sprintf("RB_RUN=%d", n), "RB_DIR="+dir)
		hook.Stdout, hook.Stderr = os.Stdout, os.Stderr
		if err := hook.Run(); err != nil {
			fmt.Printf("run %d: -at-accept: %v\n", n, err)
		}
	}
	r.accepted, r.failed, r.firstErr = load.accepted, load.failed, load.firstErr
	if load.accepted == 0 {
		return r, fmt.Errorf("run %d: %s accepted no message: %s", n, m.name(), load.firstErr)
	}
	r.acceptedRate = float64(load.accepted) / load.lastAccept.Sub(load.start).Seconds()
	r.p50ms = float64(percentile(load.latencies, 50)) / float64(time.Millisecond)
	r.p99ms = float64(percentile(load.latencies, 99)) / float64(time.Millisecond)

	select {
	case <-sk.expect(load.accepted):
		_, _, lastAt := sk.counts()
		r.e2eRate = float64(load.accepted) / lastAt.Sub(load.start).Seconds()
	case <-time.After(o.e2eTimeout):
		unique, _, _ := sk.counts()
		fmt.Printf("run %d (%s): the sink has %d of %d messages after %s\n", n, m.name(), unique, load.accepted, o.e2eTimeout)
	}
	if cpuAfter, err := treeCPUTicks("/proc", pid); err == nil && cpuErr == nil {
		ms := float64(cpuAfter-cpuBefore) * 1000 / clockTicks
		r.cpuMsPerMsg = ms / float64(load.accepted)
	}
	_, r.duplicates, _ = sk.counts()
	return r, nil
}

func printRun(r runResult, header bool) {
	if header {
		fmt.Printf("%-4s %-8s %9s %6s %12s %10s %10s %10s %10s %8s %4s\n",
			"run", "mta", "accepted", "failed", "accepted/s", "e2e/s", "cpu ms/msg", "p50 ms", "p99 ms", "PSS MB", "dup")
	}
	fmt.Printf("%-4d %-8s %9d %6d %12.0f %10.0f %10.3f %10.2f %10.2f %8.1f %4d\n",
		r.n, r.mta, r.accepted, r.failed, r.acceptedRate, r.e2eRate, r.cpuMsPerMsg, r.p50ms, r.p99ms, r.pssMB, r.duplicates)
	if r.firstErr != "" {
		fmt.Printf("     first failure: %s\n", r.firstErr)
	}
}

// metric names one column of runResult for the summary.
type metric struct {
	name   string
	better string // which way a hubd/Postfix ratio is good
	get    func(runResult) float64
}

var metrics = []metric{
	{"accepted msg/s", "higher is better", func(r runResult) float64 { return r.acceptedRate }},
	{"end-to-end msg/s", "higher is better", func(r runResult) float64 { return r.e2eRate }},
	{"CPU ms per message", "lower is better", func(r runResult) float64 { return r.cpuMsPerMsg }},
	{"accept latency p50", "lower is better", func(r runResult) float64 { return r.p50ms }},
	{"accept latency p99", "lower is better", func(r runResult) float64 { return r.p99ms }},
	{"PSS (end of accept)", "lower is better", func(r runResult) float64 { return r.pssMB }},
}

// printSummary prints, per metric, each MTA's median and the median of the
// paired ratios A/B (hubd/Postfix, or hubd/base with -against); names are
// the MTAs in the order A, B.
func printSummary(results []runResult, names []string) {
	byMTA := map[string][]runResult{}
	for _, r := range results {
		byMTA[r.mta] = append(byMTA[r.mta], r)
	}
	fmt.Println()
	if len(names) == 1 {
		fmt.Printf("%-20s %12s\n", "metric (median)", names[0])
		for _, m := range metrics {
			fmt.Printf("%-20s %12.3f\n", m.name, median(values(byMTA[names[0]], m.get)))
		}
		return
	}
	a, b := byMTA[names[0]], byMTA[names[1]]
	fmt.Printf("%-20s %12s %12s %16s  %s\n", "metric (median)", names[0], names[1], names[0]+"/"+names[1], "")
	for _, m := range metrics {
		h, p := values(a, m.get), values(b, m.get)
		fmt.Printf("%-20s %12.3f %12.3f %16.2f  (%s)\n", m.name, median(h), median(p), median(pairRatios(h, p)), m.better)
	}
	fmt.Println("ratios: median over the pairs of neighbouring runs (A B B A); latency in ms, PSS in MB")
}

func values(rs []runResult, get func(runResult) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = get(r)
	}
	return out
}
