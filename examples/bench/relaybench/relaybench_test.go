package main

import (
	"bufio"
	"math"
	"strings"
	"testing"
	"time"

	"hubd/examples/bench/internal/benchkit"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{5}, 5},
		{[]float64{math.NaN(), 1, 3}, 2},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if got := median(nil); !math.IsNaN(got) {
		t.Errorf("median(nil) = %v, want NaN", got)
	}
}

func TestPercentileNearestRank(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if got := percentile(ds, 50); got != 50*time.Millisecond {
		t.Errorf("p50 = %v, want 50ms", got)
	}
	if got := percentile(ds, 99); got != 99*time.Millisecond {
		t.Errorf("p99 = %v, want 99ms", got)
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("p99 of one = %v", got)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of none = %v", got)
	}
}

func TestPairRatios(t *testing.T) {
	// A B B A A B B A: hubd runs 1,4,5,8 and Postfix runs 2,3,6,7 pair in order.
	got := pairRatios([]float64{10, 20, 30, math.NaN()}, []float64{5, 10, 0, 4})
	if got[0] != 2 || got[1] != 2 || !math.IsNaN(got[2]) || !math.IsNaN(got[3]) {
		t.Errorf("pairRatios = %v", got)
	}
	if m := median(got); m != 2 {
		t.Errorf("median ratio = %v, want 2 (missing pairs ignored)", m)
	}
}

func TestParseStatCommWithSpacesAndParens(t *testing.T) {
	st, err := parseStat("101 (smtpd (x) y) S 100 100 100 0 -1 4194560 500 0 0 0 10 5 -1 2 20 0 1 0")
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{pid: 101, ppid: 100, utime: 10, stime: 5, cutime: 0, cstime: 2}
	if st != want {
		t.Errorf("parseStat = %+v, want %+v", st, want)
	}
	if _, err := parseStat("garbage"); err == nil {
		t.Error("parseStat(garbage): no error")
	}
}

// testdata/proc holds a tree 100 → 101 → 102 and an unrelated process 200.
func TestTreeCPUTicksFromFixture(t *testing.T) {
	got, err := treeCPUTicks("testdata/proc", 100)
	if err != nil {
		t.Fatal(err)
	}
	// 100: 250+50+7+3, 101: 10+5, 102: 1+2+3+4; 200 is not in the tree.
	if want := uint64(310 + 15 + 10); got != want {
		t.Errorf("treeCPUTicks = %d, want %d", got, want)
	}
	if _, err := treeCPUTicks("testdata/proc", 999); err == nil {
		t.Error("a missing root gave no error")
	}
}

func TestTreePssKBFromFixture(t *testing.T) {
	got, err := treePssKB("testdata/proc", 100)
	if err != nil {
		t.Fatal(err)
	}
	// 100 and 101 have smaps_rollup; 102 has none (skipped); 200 is not in the tree.
	if want := uint64(21000 + 4000); got != want {
		t.Errorf("treePssKB = %d, want %d", got, want)
	}
}

func TestMessageSizeAndID(t *testing.T) {
	body := message("run7", 42, 5000)
	if len(body) != 5000 {
		t.Errorf("message is %d bytes, want 5000", len(body))
	}
	id, err := benchkit.ReadMessage(bufio.NewReader(strings.NewReader(string(body) + ".\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	if id != messageID("run7", 42) {
		t.Errorf("sink read Message-ID %q, want %q", id, messageID("run7", 42))
	}
}

// The load generator against the sink directly, on a real loopback socket:
// every message arrives once, in both session modes.
func TestLoadIntoSink(t *testing.T) {
	sk, err := startSink()
	if err != nil {
		t.Fatal(err)
	}
	defer sk.close()
	for _, perMsg := range []bool{false, true} {
		sk.reset(0)
		res := runLoad(loadOptions{addr: sk.ln.Addr().String(), sessions: 4, count: 50, size: 1000,
			connPerMsg: perMsg, runID: "t"})
		if res.accepted != 50 || res.failed != 0 || len(res.latencies) != 50 {
			t.Fatalf("connPerMsg=%v: accepted %d failed %d (%s)", perMsg, res.accepted, res.failed, res.firstErr)
		}
		select {
		case <-sk.expect(50):
		case <-time.After(10 * time.Second):
			t.Fatal("the sink did not get 50 messages")
		}
		if unique, dups, _ := sk.counts(); unique != 50 || dups != 0 {
			t.Errorf("sink: %d unique, %d duplicates", unique, dups)
		}
	}
}
