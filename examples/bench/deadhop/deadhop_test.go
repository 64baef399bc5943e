package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"hubd/examples/bench/internal/benchkit"
)

type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestDeadHop runs the whole measurement with 300 messages and 2-second
// retry intervals: the spool is filled, hubd recovers it, defers it through
// two retry cycles without writing a state per message, and once the next
// hop answers delivers every message exactly once and empties the spool.
func TestDeadHop(t *testing.T) {
	if _, err := os.Stat("/proc/self/smaps_rollup"); err != nil {
		t.Skip("needs Linux /proc with smaps_rollup:", err)
	}
	dir := t.TempDir()
	hubd, err := benchkit.Build(dir, "hubd")
	if err != nil {
		t.Skip("cannot build hubd:", err)
	}
	hubctl, err := benchkit.Build(dir, "hubctl")
	if err != nil {
		t.Skip("cannot build hubctl:", err)
	}
	const n = 300
	r, err := measure(options{n: n, size: 2000, workers: 32, retry: 2 * time.Second, cycles: 2,
		hubd: hubd, hubctl: hubctl, dir: dir, maxRSSGB: 2, timeout: 2 * time.Minute}, logWriter{t})
	var out bytes.Buffer
	if r != nil {
		r.print(&out)
		t.Log("\n" + out.String())
		if r.logExcerpt != "" && (err != nil || r.failure() != nil) {
			t.Log("hubd's log:\n" + r.logExcerpt)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := r.failure(); err != nil {
		t.Fatal(err)
	}
	if r.sink.unique != n || r.sink.duplicates != 0 || r.missing != 0 || r.left != 0 {
		t.Fatalf("sink has %d of %d (duplicates %d, missing %d); %d left in the spool", r.sink.unique, n, r.sink.duplicates, r.missing, r.left)
	}
	if r.recovery <= 0 || len(r.cycles) != 2 || len(r.listTimes) != 3 {
		t.Errorf("figures missing: recovery %s, %d cycles, %d queue list timings", r.recovery, len(r.cycles), len(r.listTimes))
	}
	for i, c := range r.cycles {
		// A queue in Retry defers its waiting messages in memory only: no
		// group commit of the spool in a cycle (the probe's mark is not
		// fsynced).
		if seg := c.to.fsyncs["segment"] - c.from.fsyncs["segment"]; seg > 2 {
			t.Errorf("retry cycle %d: %.0f segment fdatasyncs", i+1, seg)
		}
	}
	for _, want := range []string{"recovery (start", "retry cycles of the dead next hop", "hubctl queue list", "result: every message delivered exactly once"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestMsgID(t *testing.T) {
	for _, i := range []int{0, 7, 999999} {
		if got := parseMsgID(msgID(i)); got != i {
			t.Errorf("parseMsgID(msgID(%d)) = %d", i, got)
		}
	}
	for _, id := range []string{"", "<x.deadhop@bench.test>", "<-1.deadhop@bench.test>", "<3@other>"} {
		if got := parseMsgID(id); got != -1 {
			t.Errorf("parseMsgID(%q) = %d", id, got)
		}
	}
	if h := header(5); !strings.Contains(h, "Message-ID: <5.deadhop@bench.test>\r\n") || !strings.HasSuffix(h, "\r\n\r\n") {
		t.Errorf("header: %q", h)
	}
	if got := len(header(99999)) + len(filler(5000)); got < 4800 || got > 5000 {
		t.Errorf("message of %d bytes for -size 5000", got)
	}
}

func TestLogMsg(t *testing.T) {
	for line, want := range map[string]string{
		`time=2026-12-05T12:00:00Z level=INFO msg="queue recovered" messages=3`: "queue recovered",
		`time=2026-12-05T12:00:00Z level=INFO msg=deferred id=x`:                "deferred",
		`Error: No enabled receive connector`:                                   "(no msg)",
	} {
		if got := logMsg(line); got != want {
			t.Errorf("logMsg(%q) = %q, want %q", line, got, want)
		}
	}
}
