package main

import (
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"hubd/examples/bench/internal/benchkit"
)

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
			s.rssKB = orNaN(benchkit.RollupKB(b, "Rss:"))
			s.pssKB = orNaN(benchkit.RollupKB(b, "Pss:"))
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
		s.hwmKB = orNaN(benchkit.StatusField(b, "VmHWM:"))
		s.threads = orNaN(benchkit.StatusField(b, "Threads:"))
		if !withSmaps {
			s.rssKB = orNaN(benchkit.StatusField(b, "VmRSS:"))
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "io")); err == nil {
		s.writeBytes = orNaN(benchkit.IOField(b, "write_bytes:"))
		s.wchar = orNaN(benchkit.IOField(b, "wchar:"))
		s.syscw = orNaN(benchkit.IOField(b, "syscw:"))
	}
	if b, err := os.ReadFile(filepath.Join(dir, "stat")); err == nil {
		s.cpu = statCPU(string(b))
	}
	if metricsURL != "" {
		if m, err := benchkit.Scrape(metricsURL, 30*time.Second); err == nil {
			s.goroutines = m.Get("go_goroutines")
			s.heapInuse = m.Get("go_memstats_heap_inuse_bytes")
			s.liveHeap = m.Get("go_memstats_next_gc_bytes") / (1 + m.Get("go_gc_gogc_percent")/100)
			s.fsyncs = m.ByLabel("hubd_queue_fsync_duration_seconds_count", "target")
			s.recipients = m.ByLabel("hubd_queue_recipients", "state")
		}
	}
	return s
}

// orNaN is a /proc figure read by benchkit, NaN when it could not be read.
func orNaN(v uint64, err error) float64 {
	if err != nil {
		return math.NaN()
	}
	return float64(v)
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
