package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The /proc and Prometheus readers below are trimmed copies of
// examples/bench/idleconns (proc.go) and examples/bench/relaybench
// (procstat.go): each bench is a program of its own.

// clockTicks is USER_HZ, the unit of utime/stime in /proc/<pid>/stat (100
// on every Linux architecture Go supports; asking sysconf needs cgo).
const clockTicks = 100

// sample is hubd's state at one moment. Figures that could not be read are
// NaN (metrics) or 0.
type sample struct {
	at           time.Time
	rssKB, pssKB float64 // /proc/<pid>/smaps_rollup
	hwmKB        float64 // VmHWM: peak RSS
	cpu          float64 // utime+stime, seconds
	writeBytes   float64 // /proc/<pid>/io write_bytes (what reached the block layer)
	wchar, syscw float64 // /proc/<pid>/io: bytes handed to write(2) & co., and those calls
	threads      float64
	// From hubd's /metrics.
	goroutines float64
	heapInuse  float64
	liveHeap   float64            // the heap marked live by the last GC: next_gc / (1 + GOGC/100)
	fsyncs     map[string]float64 // hubd_queue_fsync_duration_seconds_count by target
	recipients map[string]float64 // hubd_queue_recipients by state
}

// takeSample reads /proc for pid and, when metricsURL is set, /metrics.
func takeSample(pid int, metricsURL string, withSmaps bool) sample {
	s := sample{at: time.Now(), rssKB: math.NaN(), pssKB: math.NaN(), goroutines: math.NaN(), heapInuse: math.NaN(),
		liveHeap: math.NaN()}
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	if withSmaps {
		if b, err := os.ReadFile(filepath.Join(dir, "smaps_rollup")); err == nil {
			s.rssKB = field(b, "Rss:")
			s.pssKB = field(b, "Pss:")
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
		s.hwmKB = field(b, "VmHWM:")
		s.threads = field(b, "Threads:")
		if !withSmaps {
			s.rssKB = field(b, "VmRSS:")
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "io")); err == nil {
		s.writeBytes = field(b, "write_bytes:")
		s.wchar = field(b, "wchar:")
		s.syscw = field(b, "syscw:")
	}
	if b, err := os.ReadFile(filepath.Join(dir, "stat")); err == nil {
		s.cpu = statCPU(string(b))
	}
	if metricsURL != "" {
		if m, err := scrape(metricsURL); err == nil {
			s.goroutines = m.get("go_goroutines")
			s.heapInuse = m.get("go_memstats_heap_inuse_bytes")
			s.liveHeap = m.get("go_memstats_next_gc_bytes") / (1 + m.get("go_gc_gogc_percent")/100)
			s.fsyncs = m.byLabel("hubd_queue_fsync_duration_seconds_count", "target")
			s.recipients = m.byLabel("hubd_queue_recipients", "state")
		}
	}
	return s
}

// field returns the first number after key in a /proc file of "key value"
// lines (smaps_rollup, status, io); NaN when absent.
func field(b []byte, key string) float64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == key {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				return v
			}
		}
	}
	return math.NaN()
}

// statCPU is utime+stime (fields 14 and 15 of /proc/<pid>/stat) in
// seconds. The command name may hold spaces: fields count from the last ')'.
func statCPU(line string) float64 {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return math.NaN()
	}
	rest := strings.Fields(line[i+1:]) // rest[0] is field 3
	if len(rest) < 13 {
		return math.NaN()
	}
	u, err1 := strconv.ParseFloat(rest[14-3], 64)
	s, err2 := strconv.ParseFloat(rest[15-3], 64)
	if err1 != nil || err2 != nil {
		return math.NaN()
	}
	return (u + s) / clockTicks
}

// dirSize is the apparent size of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// metrics are the samples of one Prometheus text exposition: each series
// under its name with labels as exposed, and under its bare name the sum.
type metrics map[string]float64

func (m metrics) get(name string) float64 {
	if v, ok := m[name]; ok {
		return v
	}
	return math.NaN()
}

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

var metricsClient = &http.Client{Timeout: 30 * time.Second}

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

// parseExposition reads the Prometheus text format ("name{labels} value"
// lines; comments skipped).
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
