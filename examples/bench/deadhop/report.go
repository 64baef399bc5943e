package main

import (
	"fmt"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const mb = 1 << 20

func (r *report) print(w io.Writer) {
	o := r.o
	fmt.Fprintf(w, "\ndeadhop: %d messages × %d bytes to one dead next hop; hubd %s (pid %d); retry intervals %s\n",
		o.n, o.size, filepath.Base(o.hubd), r.pid, o.retry)
	row := func(name, format string, args ...any) {
		fmt.Fprintf(w, "  %-44s %s\n", name, fmt.Sprintf(format, args...))
	}
	fmt.Fprintln(w, "fill and start-up")
	if r.fill.elapsed > 0 {
		row(fmt.Sprintf("fill (LogStore.Put, %d goroutines)", o.workers), "%.1f s, %.0f msg/s, %.0f MB/s; spool %.2f GB",
			r.fill.elapsed.Seconds(), float64(r.fill.n)/r.fill.elapsed.Seconds(),
			float64(r.fill.bytes)/1e6/r.fill.elapsed.Seconds(), float64(r.spoolBytes)/1e9)
	}
	if r.recovery > 0 {
		row(`recovery (start → "queue recovered")`, "%.2f s (%.1f µs per message)", r.recovery.Seconds(),
			float64(r.recovery.Microseconds())/float64(o.n))
	}
	if r.firstPass > 0 {
		s := r.afterFirst
		row("first pass (categorize, route, defer)", "%.1f s after recovery; %.0f MB written, %.0f write calls, fsyncs %s, CPU %.1f s",
			r.firstPass.Seconds(), s.writeBytes/1e6, s.syscw, fsyncText(s.fsyncs), s.cpu)
	}
	if r.restartRecovery > 0 {
		s := r.atRestart
		row("restart, next hop still dead (-restart)", "recovered in %.2f s; 5 s later: CPU %.1f s since its start, %.0f write calls, %d \"deferred\" log lines",
			r.restartRecovery.Seconds(), s.cpu, s.syscw, r.restartLines["deferred"])
	}
	fmt.Fprintln(w, "memory and goroutines (heap: in use; live: marked by the last GC)")
	fmt.Fprintf(w, "  %-22s %9s %9s %9s %9s %11s %8s %14s\n", "when", "RSS MB", "PSS MB", "heap MB", "live MB", "goroutines", "threads", "RSS KB/message")
	for _, p := range []struct {
		name string
		s    sample
	}{{"after recovery", r.atRecovery}, {"after the first pass", r.afterFirst}, {"steady (in Retry)", r.steady},
		{"5 s after a restart", r.atRestart}, {"after the drain", r.afterDrain}} {
		s := p.s
		if s.at.IsZero() {
			continue
		}
		fmt.Fprintf(w, "  %-22s %9.0f %9.0f %9.0f %9.0f %11.0f %8.0f %14.2f\n", p.name, s.rssKB/1024, s.pssKB/1024,
			s.heapInuse/mb, s.liveHeap/mb, s.goroutines, s.threads, s.rssKB/float64(o.n))
	}
	r.mu.Lock()
	peak := r.peakRSSKB
	r.mu.Unlock()
	if peak > 0 {
		row("peak RSS (VmHWM)", "%.0f MB", peak/1024)
	}
	if len(r.cycles) > 0 {
		fmt.Fprintln(w, "retry cycles of the dead next hop (failed probe to failed probe)")
		fmt.Fprintf(w, "  %-6s %7s %11s %10s %11s %-28s %8s %12s %12s\n", "cycle", "s", "written MB", "wchar MB", "write calls",
			"fsyncs", "CPU s", "tracking MB", "log lines")
		for i, c := range r.cycles {
			d := func(get func(sample) float64) float64 { return get(c.to) - get(c.from) }
			fs := map[string]float64{}
			for k, v := range c.to.fsyncs {
				fs[k] = v - c.from.fsyncs[k]
			}
			fmt.Fprintf(w, "  %-6d %7.1f %11.2f %10.2f %11.0f %-28s %8.2f %12.2f %12d\n", i+1, c.to.at.Sub(c.from.at).Seconds(),
				d(func(s sample) float64 { return s.writeBytes })/1e6, d(func(s sample) float64 { return s.wchar })/1e6,
				d(func(s sample) float64 { return s.syscw }), fsyncText(fs), d(func(s sample) float64 { return s.cpu }),
				float64(c.tracking)/1e6, c.logLines)
		}
		first, last := r.cycles[0].from, r.cycles[len(r.cycles)-1].to
		var track int64
		lines, deferred := 0, 0
		for _, c := range r.cycles {
			track += c.tracking
			lines += c.logLines
			deferred += c.deferredLines
		}
		per := float64(o.n * len(r.cycles))
		fmt.Fprintf(w, "  mean per cycle: %.1f s, %.1f MB written (%.1f MB of it the tracking log), %.0f write calls, %.2f CPU s, %.0f log lines\n",
			last.at.Sub(first.at).Seconds()/float64(len(r.cycles)), (last.writeBytes-first.writeBytes)/1e6/float64(len(r.cycles)),
			float64(track)/1e6/float64(len(r.cycles)), (last.syscw-first.syscw)/float64(len(r.cycles)),
			(last.cpu-first.cpu)/float64(len(r.cycles)), float64(lines)/float64(len(r.cycles)))
		fmt.Fprintf(w, "  per queued message per cycle: %.0f bytes written, %.2f write calls, %.1f µs CPU, %.2f log lines (%.2f \"deferred\")\n",
			(last.writeBytes-first.writeBytes)/per, (last.syscw-first.syscw)/per, (last.cpu-first.cpu)*1e6/per,
			float64(lines)/per, float64(deferred)/per)
	}
	fmt.Fprintln(w, "admin commands with the queue waiting")
	if len(r.listTimes) > 0 {
		row("hubctl queue list (3 runs)", "%s", durations(r.listTimes))
		row("hubctl status (3 runs)", "%s", durations(r.statusTimes))
	}
	if r.retryCmd > 0 {
		row("hubctl queue retry "+r.queueName, "%s", durations([]time.Duration{r.retryCmd}))
	}
	fmt.Fprintln(w, "the next hop back")
	if r.drain > 0 {
		row("drain (retry → last message at the sink)", "%.1f s, %.0f msg/s, over %d connections", r.drain.Seconds(),
			float64(o.n)/r.drain.Seconds(), r.sink.conns)
	} else if r.sink.conns > 0 {
		row("drain", "NOT complete: %d of %d at the sink", r.sink.unique, o.n)
	}
	if r.emptied > 0 {
		row("retry → hubd counts no message", "%.1f s", r.emptied.Seconds())
	}
	if r.sink.conns > 0 || r.drain > 0 {
		row("delivered once / duplicates / missing", "%d / %d / %d (not ours: %d)", r.sink.unique, r.sink.duplicates, r.missing, r.sink.foreign)
		row("left in the spool (queue.Inspect)", "%d", r.left)
		s := r.afterDrain
		row("drain: written, CPU (steady → drained)", "%.0f MB, %.0f write calls, fsyncs %s, CPU %.1f s",
			(s.writeBytes-r.steady.writeBytes)/1e6, s.syscw-r.steady.syscw, fsyncText(diff(s.fsyncs, r.steady.fsyncs)), s.cpu-r.steady.cpu)
	}
	if k := r.killedWhy(); k != "" {
		row("hubd KILLED", "%s", k)
	}
	if err := r.failure(); err == nil && r.drain > 0 {
		fmt.Fprintln(w, "result: every message delivered exactly once, spool empty")
	} else if err != nil {
		fmt.Fprintln(w, "result: FAILED:", err)
	}
}

func diff(a, b map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range a {
		out[k] = v - b[k]
	}
	return out
}

// fsyncText is "segment 3, directory 1" (the fsync histogram's counts).
func fsyncText(m map[string]float64) string {
	if len(m) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// durations is "min 12 ms, median 13 ms, max 15 ms", or one value.
func durations(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) string {
		return fmt.Sprintf("%.0f ms", math.Round(float64(d.Microseconds())/1000))
	}
	if len(s) == 1 {
		return ms(s[0])
	}
	return fmt.Sprintf("min %s, median %s, max %s", ms(s[0]), ms(s[len(s)/2]), ms(s[len(s)-1]))
}
