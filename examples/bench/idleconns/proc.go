package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"hubd/examples/bench/internal/benchkit"
)

// sample is hubd's state at one moment. Figures that could not be read are
// NaN (metrics) or -1 (counts).
type sample struct {
	rssKB, pssKB float64 // /proc/<pid>/smaps_rollup
	threads      int     // /proc/<pid>/status Threads
	fds          int     // entries of /proc/<pid>/fd
	// From hubd's Prometheus endpoint (Go runtime collector and hubd's own).
	goroutines  float64 // go_goroutines
	heapInuse   float64 // go_memstats_heap_inuse_bytes
	stackInuse  float64 // go_memstats_stack_inuse_bytes
	activeConns float64 // sum of hubd_smtp_connections_active
	// hubd_smtp_limit_refusals_total by its limit label.
	limitRefusals map[string]float64
}

// takeSample reads everything a sample holds; a missing source leaves its
// figures unset rather than failing the run.
func takeSample(pid int, metricsURL string) sample {
	s := sample{rssKB: math.NaN(), pssKB: math.NaN(), threads: -1, fds: -1,
		goroutines: math.NaN(), heapInuse: math.NaN(), stackInuse: math.NaN(),
		activeConns: math.NaN()}
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	if b, err := os.ReadFile(filepath.Join(dir, "smaps_rollup")); err == nil {
		if v, err := benchkit.RollupKB(b, "Rss:"); err == nil {
			s.rssKB = float64(v)
		}
		if v, err := benchkit.RollupKB(b, "Pss:"); err == nil {
			s.pssKB = float64(v)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
		if v, err := benchkit.StatusField(b, "Threads:"); err == nil {
			s.threads = int(v)
		}
	}
	if entries, err := os.ReadDir(filepath.Join(dir, "fd")); err == nil {
		s.fds = len(entries)
	}
	if metricsURL != "" {
		if m, err := benchkit.Scrape(metricsURL, 10*time.Second); err == nil {
			s.goroutines = m.Get("go_goroutines")
			s.heapInuse = m.Get("go_memstats_heap_inuse_bytes")
			s.stackInuse = m.Get("go_memstats_stack_inuse_bytes")
			s.activeConns = m.Get("hubd_smtp_connections_active")
			if math.IsNaN(s.activeConns) {
				s.activeConns = 0 // the gauge appears with the first connection
			}
			s.limitRefusals = m.ByLabel("hubd_smtp_limit_refusals_total", "limit")
		}
	}
	return s
}

// nofileLimits returns the soft and hard "Max open files" of a process from
// /proc/<pid>/limits ("unlimited" is returned as math.MaxInt64).
func nofileLimits(pid int) (soft, hard uint64, err error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "limits"))
	if err != nil {
		return 0, 0, err
	}
	return parseNofile(b)
}

func parseNofile(limits []byte) (soft, hard uint64, err error) {
	for _, line := range strings.Split(string(limits), "\n") {
		if !strings.HasPrefix(line, "Max open files") {
			continue
		}
		f := strings.Fields(strings.TrimPrefix(line, "Max open files"))
		if len(f) < 2 {
			break
		}
		parse := func(s string) (uint64, error) {
			if s == "unlimited" {
				return math.MaxInt64, nil
			}
			return strconv.ParseUint(s, 10, 64)
		}
		if soft, err = parse(f[0]); err != nil {
			return 0, 0, err
		}
		if hard, err = parse(f[1]); err != nil {
			return 0, 0, err
		}
		return soft, hard, nil
	}
	return 0, 0, fmt.Errorf("no \"Max open files\" line in limits")
}
