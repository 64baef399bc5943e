package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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
		if v, err := rollupKB(b, "Rss:"); err == nil {
			s.rssKB = float64(v)
		}
		if v, err := rollupKB(b, "Pss:"); err == nil {
			s.pssKB = float64(v)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
		if v, err := statusField(b, "Threads:"); err == nil {
			s.threads = int(v)
		}
	}
	if entries, err := os.ReadDir(filepath.Join(dir, "fd")); err == nil {
		s.fds = len(entries)
	}
	if metricsURL != "" {
		if m, err := scrape(metricsURL); err == nil {
			s.goroutines = m.get("go_goroutines")
			s.heapInuse = m.get("go_memstats_heap_inuse_bytes")
			s.stackInuse = m.get("go_memstats_stack_inuse_bytes")
			s.activeConns = m.get("hubd_smtp_connections_active")
			if math.IsNaN(s.activeConns) {
				s.activeConns = 0 // the gauge appears with the first connection
			}
			s.limitRefusals = m.byLabel("hubd_smtp_limit_refusals_total", "limit")
		}
	}
	return s
}

// rollupKB returns the value (kB) of the line starting with key ("Rss:",
// "Pss:") in a /proc/<pid>/smaps_rollup file.
func rollupKB(rollup []byte, key string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(rollup))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == key {
			return strconv.ParseUint(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s line in smaps_rollup", key)
}

// statusField returns the first number after key in /proc/<pid>/status.
func statusField(status []byte, key string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == key {
			return strconv.ParseUint(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s line in status", key)
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

// metrics are the samples of one Prometheus text exposition: each series
// under its name with labels as exposed (`name{a="x"}`), and under its bare
// name the sum over its labels.
type metrics map[string]float64

// byLabel returns the series of name by the value of one label.
func (m metrics) byLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	prefix := name + "{"
	for k, v := range m {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		i := strings.Index(k, label+`="`)
		if i < 0 {
			continue
		}
		val := k[i+len(label)+2:]
		if j := strings.IndexByte(val, '"'); j >= 0 {
			out[val[:j]] += v
		}
	}
	return out
}

func (m metrics) get(name string) float64 {
	if v, ok := m[name]; ok {
		return v
	}
	return math.NaN()
}

var metricsClient = &http.Client{Timeout: 10 * time.Second}

func scrape(url string) (metrics, error) {
	resp, err := metricsClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseExposition(resp.Body)
}

// parseExposition reads the Prometheus text format: "name{labels} value
// [timestamp]" lines, comments skipped. Label values cannot hold a "}" in
// what hubd exports, so the name ends at the first '{' or blank.
func parseExposition(r io.Reader) (metrics, error) {
	m := metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, series, rest := line, "", ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if strings.HasPrefix(rest, "{") {
			end := strings.LastIndexByte(rest, '}')
			if end < 0 {
				continue
			}
			series, rest = name+rest[:end+1], rest[end+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		m[name] += v
		if series != "" {
			m[series] += v
		}
	}
	return m, sc.Err()
}
