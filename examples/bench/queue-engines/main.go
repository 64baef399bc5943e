// Command queueengines is a measurement spike for issue 11 (a queue engine
// that scales): it runs one workload against several storage engines so
// that the choice written in docs/queue.md rests on figures, not opinion.
//
// Workload, per run: N messages of S bytes from W concurrent submitters;
// a submit is a durable write of envelope + body, returned only after
// fsync (the 250 of RFC 5321 §4.2.5 is only sent after it). Then, again
// from W workers, per message two small durable state records (deferred
// until T, delivered) and its settlement (deletion). With -retry K, the
// run instead queues K messages and times "a next hop goes into Retry":
// K per-message updates (today's hubd) against one per-hop record.
//
// Engines: disk (today's hubd DiskStore, imported through a replace
// directive), segment (own append-only segment log with group commit),
// pebble (github.com/cockroachdb/pebble/v2, Sync writes) and bbolt
// (go.etcd.io/bbolt, db.Batch). One result line (key=value) per run goes
// to stdout; -summarize reads such lines back and prints medians.
//
// This is not production code: no recovery, no compaction, no leases.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// engine is the small surface the workload needs from a store.
type engine interface {
	// Submit makes envelope and body of message id durable.
	Submit(id uint64, env, body []byte) error
	// State durably records a small state change of message id.
	State(id uint64, kind byte, payload []byte) error
	// Settle durably forgets message id.
	Settle(id uint64) error
	// HopRetry durably records that every message waiting for hop is
	// deferred until a time: one record, whatever the number waiting.
	// ok is false when the engine has no such record (today's DiskStore).
	HopRetry(hop string, until time.Time) (ok bool, err error)
	// Fsyncs is the number of fsync/fdatasync calls the engine issued,
	// or -1 when it cannot tell (then count them with strace -c).
	Fsyncs() int64
	Close() error
}

func openEngine(name, dir string) (engine, error) {
	switch name {
	case "disk":
		return openDisk(dir)
	case "segment":
		return openSegment(dir, 256<<20)
	case "pebble":
		return openPebble(dir)
	case "bbolt":
		return openBolt(dir, *boltDelay)
	}
	return nil, fmt.Errorf("unknown engine %q (disk, segment, pebble, bbolt)", name)
}

var (
	engineName  = flag.String("engine", "segment", "disk | segment | pebble | bbolt")
	count       = flag.Int("n", 5000, "messages")
	size        = flag.Int("size", 5000, "body bytes per message")
	writers     = flag.Int("w", 8, "concurrent submitters / workers")
	dirFlag     = flag.String("dir", "", "work directory (default: a fresh temp dir, removed after)")
	retry       = flag.Int("retry", 0, "if > 0: queue this many messages, then time a next hop going into Retry")
	boltDelay   = flag.Duration("bolt-delay", time.Millisecond, "bbolt MaxBatchDelay (bbolt's default is 10ms)")
	summarize   = flag.String("summarize", "", "read result lines from this file and print medians")
	segPrealloc = flag.Bool("seg-prealloc", false, "segment: fallocate each 256 MiB segment when it is created")
	probe       = flag.Int("index-probe", 0, "if > 0: only measure the heap bytes per message of an in-RAM index of this many messages")
)

func main() {
	flag.Parse()
	if *probe > 0 {
		indexProbe(*probe)
		return
	}
	if *summarize != "" {
		if err := summarizeFile(*summarize); err != nil {
			fail(err)
		}
		return
	}
	dir := *dirFlag
	if dir == "" {
		d, err := os.MkdirTemp("/var/tmp", "queue-engines-")
		if err != nil {
			fail(err)
		}
		defer os.RemoveAll(d)
		dir = d
	}
	eng, err := openEngine(*engineName, dir)
	if err != nil {
		fail(err)
	}
	var res result
	if *retry > 0 {
		res, err = runRetry(eng, *retry)
	} else {
		res, err = runWorkload(eng)
	}
	if cerr := eng.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fail(err)
	}
	fmt.Println(res.String())
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "queueengines:", err)
	os.Exit(1)
}

// result is one run's figures, printed as key=value pairs.
type result []struct{ k, v string }

func (r *result) add(k string, format string, v ...any) {
	*r = append(*r, struct{ k, v string }{k, fmt.Sprintf(format, v...)})
}

func (r result) String() string {
	var b strings.Builder
	for i, kv := range r {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv.k + "=" + kv.v)
	}
	return b.String()
}

// envelope builds a JSON envelope of realistic size (~250 bytes).
func envelope(id uint64) []byte {
	e := map[string]any{
		"From":       fmt.Sprintf("sender%d@example.org", id),
		"Recipients": []map[string]any{{"Address": fmt.Sprintf("rcpt%d@example.net", id), "Notify": []string{"FAILURE", "DELAY"}}},
		"Body":       "8BITMIME",
		"ReceivedAt": time.Unix(1700000000, 0).UTC(),
		"Helo":       "client.example.org",
		"Client":     "192.0.2.10",
	}
	b, _ := json.Marshal(e)
	return b
}

func body(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = "abcdefghijklmnopqrstuvwxyz0123456789\r\n"[i%38]
	}
	return b
}

// parallel runs fn(id) for ids 1..n from w goroutines and returns the elapsed time.
func parallel(n, w int, fn func(id uint64) error) (time.Duration, error) {
	ids := make(chan uint64, n)
	for i := 1; i <= n; i++ {
		ids <- uint64(i)
	}
	close(ids)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	start := time.Now()
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range ids {
				if err := fn(id); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), first
}

type usage struct {
	cpu        time.Duration
	writeBytes int64 // /proc/self/io write_bytes: what reached the block layer
	wchar      int64 // /proc/self/io wchar: what write(2) was asked to write
}

func sample() usage {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	u := usage{cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
	if b, err := os.ReadFile("/proc/self/io"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ": ")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "write_bytes":
				u.writeBytes = n
			case "wchar":
				u.wchar = n
			}
		}
	}
	return u
}

func maxRSSMiB() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Maxrss) / 1024
}

func runWorkload(eng engine) (result, error) {
	var res result
	n, w := *count, *writers
	b := body(*size)
	deferred := []byte(time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano))
	delivered := []byte("250 2.0.0 ok")
	before := sample()
	submit, err := parallel(n, w, func(id uint64) error { return eng.Submit(id, envelope(id), b) })
	if err != nil {
		return nil, err
	}
	fsyncSubmit := eng.Fsyncs()
	states, err := parallel(n, w, func(id uint64) error {
		if err := eng.State(id, 'D', deferred); err != nil {
			return err
		}
		if err := eng.State(id, 'S', delivered); err != nil {
			return err
		}
		return eng.Settle(id)
	})
	if err != nil {
		return nil, err
	}
	after := sample()
	res.add("engine", "%s", *engineName)
	res.add("w", "%d", w)
	res.add("n", "%d", n)
	res.add("size", "%d", *size)
	res.add("submit_msgs_s", "%.0f", float64(n)/submit.Seconds())
	// state phase: 2 state records + 1 settlement per message
	res.add("state_recs_s", "%.0f", float64(2*n)/states.Seconds())
	res.add("settled_msgs_s", "%.0f", float64(n)/states.Seconds())
	if f := eng.Fsyncs(); f >= 0 {
		res.add("fsyncs_submit", "%d", fsyncSubmit)
		res.add("fsyncs_total", "%d", f)
	}
	res.add("cpu_us_msg", "%.0f", float64((after.cpu-before.cpu).Microseconds())/float64(n))
	res.add("maxrss_mib", "%.1f", maxRSSMiB())
	res.add("disk_bytes_msg", "%.0f", float64(after.writeBytes-before.writeBytes)/float64(n))
	res.add("wchar_bytes_msg", "%.0f", float64(after.wchar-before.wchar)/float64(n))
	return res, nil
}

func runRetry(eng engine, k int) (result, error) {
	var res result
	w := *writers
	b := body(*size)
	if _, err := parallel(k, w, func(id uint64) error { return eng.Submit(id, envelope(id), b) }); err != nil {
		return nil, err
	}
	until := time.Now().Add(10 * time.Minute)
	payload := []byte(until.UTC().Format(time.RFC3339Nano))
	f0, u0 := eng.Fsyncs(), sample()
	perMsg, err := parallel(k, w, func(id uint64) error { return eng.State(id, 'D', payload) })
	if err != nil {
		return nil, err
	}
	f1, u1 := eng.Fsyncs(), sample()
	start := time.Now()
	ok, err := eng.HopRetry("mx.dead.example", until)
	if err != nil {
		return nil, err
	}
	one := time.Since(start)
	f2 := eng.Fsyncs()
	res.add("engine", "%s", *engineName)
	res.add("w", "%d", w)
	res.add("waiting", "%d", k)
	res.add("per_msg_ms", "%.1f", float64(perMsg.Microseconds())/1000)
	res.add("per_msg_cpu_ms", "%.1f", float64((u1.cpu-u0.cpu).Microseconds())/1000)
	res.add("per_msg_wchar_kib", "%.0f", float64(u1.wchar-u0.wchar)/1024)
	if f0 >= 0 {
		res.add("per_msg_fsyncs", "%d", f1-f0)
	}
	if ok {
		res.add("one_record_ms", "%.3f", float64(one.Microseconds())/1000)
		if f0 >= 0 {
			res.add("one_record_fsyncs", "%d", f2-f1)
		}
	}
	return res, nil
}
