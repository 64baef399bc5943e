package queue

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hubd/hub"
)

func setHop(t *testing.T, s HopStore, h HopState) {
	t.Helper()
	if err := s.SetHop(context.Background(), h); err != nil {
		t.Fatal(err)
	}
}

func checkHops(t *testing.T, what string, s HopStore, want ...HopState) {
	t.Helper()
	got := s.Hops()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	for i := range got {
		// Compare instants, not monotonic readings or locations.
		got[i].Until, got[i].Since = got[i].Until.UTC(), got[i].Since.UTC()
	}
	for i := range want {
		want[i].Until, want[i].Since = want[i].Until.UTC(), want[i].Since.UTC()
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: Hops() = %+v, want %+v", what, got, want)
	}
}

func hopAt(hop string, attempts int) HopState {
	since := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	return HopState{Hop: hop, Since: since, Until: since.Add(time.Duration(attempts) * time.Minute),
		Attempts: attempts, Reason: fmt.Sprintf("421 4.4.2 attempt %d", attempts)}
}

// TestLogHopSurvivesReopen: hops in Retry are back after a reopen, the
// latest record of each winning; a cleared hop is gone, before and after.
func TestLogHopSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir})
	mustLoad(t, s)
	setHop(t, s, hopAt("smtp:mx.a.example", 1))
	setHop(t, s, hopAt("smtp:mx.b.example", 1))
	setHop(t, s, hopAt("smtp:mx.c.example", 1))
	putBody(t, s, "x") // records of both kinds interleave
	setHop(t, s, hopAt("smtp:mx.a.example", 2))
	setHop(t, s, HopState{Hop: "smtp:mx.c.example"}) // cleared
	want := []HopState{hopAt("smtp:mx.a.example", 2), hopAt("smtp:mx.b.example", 1)}
	checkHops(t, "before the reopen", s, want...)
	s.Close()

	s = openLogTest(t, LogOptions{Dir: dir})
	checkHops(t, "after OpenLog, before Load", s)
	if got := mustLoad(t, s); len(got) != 1 {
		t.Fatalf("loaded %d messages, want 1", len(got))
	}
	checkHops(t, "after the reopen", s, want...)
	if err := s.SetHop(context.Background(), HopState{}); err == nil {
		t.Error("SetHop of an unnamed hop succeeded")
	}
}

// TestLogHopTornTail: a HOP record torn at the tail (the process died
// writing it) is cut, and the hop's previous record stands; a torn
// record after a HOP record leaves it whole.
func TestLogHopTornTail(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir})
	mustLoad(t, s)
	setHop(t, s, hopAt("smtp:mx.a.example", 1))
	setHop(t, s, hopAt("smtp:mx.b.example", 1))
	setHop(t, s, hopAt("smtp:mx.a.example", 2))
	s.Close()
	seg := s.segPath(s.curSeq)
	fi, err := os.Stat(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(seg, fi.Size()-5); err != nil { // the last HOP record torn
		t.Fatal(err)
	}
	s = openLogTest(t, LogOptions{Dir: dir})
	mustLoad(t, s)
	checkHops(t, "torn HOP record", s, hopAt("smtp:mx.a.example", 1), hopAt("smtp:mx.b.example", 1))
	s.Close()

	// A torn record (a MSG) after the HOP records of this process.
	dir2 := t.TempDir()
	s = openLogTest(t, LogOptions{Dir: dir2})
	mustLoad(t, s)
	setHop(t, s, hopAt("smtp:mx.a.example", 3))
	m := putBody(t, s, strings.Repeat("torn ", 100))
	s.Close()
	seg = s.segPath(s.curSeq)
	if fi, err = os.Stat(seg); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(seg, fi.Size()-100); err != nil {
		t.Fatal(err)
	}
	s = openLogTest(t, LogOptions{Dir: dir2})
	if got := mustLoad(t, s); len(got) != 0 {
		t.Fatalf("loaded %v, want the torn %s cut", got, m.ID)
	}
	checkHops(t, "torn record after a HOP record", s, hopAt("smtp:mx.a.example", 3))
}

// TestLogHopCompactedAndReclaimed: a live HOP record in a segment that
// compaction empties is copied forward and survives the segment; once
// the hop is cleared and the segments with its older records are gone,
// no record of it is needed and a reopen finds no hop.
func TestLogHopCompactedAndReclaimed(t *testing.T) {
	dir := t.TempDir()
	opts := LogOptions{Dir: dir, SegmentSize: 8192}
	s := openLogTest(t, opts)
	mustLoad(t, s)
	ctx := context.Background()
	setHop(t, s, hopAt("smtp:mx.a.example", 4))
	setHop(t, s, hopAt("smtp:mx.b.example", 1))
	var keep hub.QueueID
	for i := range 60 {
		m := putBody(t, s, strings.Repeat(fmt.Sprintf("body %d ", i), 60))
		if i == 0 {
			keep = m.ID // keeps segment 1 from being reclaimed without compaction
			continue
		}
		if err := s.Remove(m.ID); err != nil {
			t.Fatal(err)
		}
	}
	first := s.segPath(1) // holds the HOP records
	waitFor(t, "the first segment to be compacted", func() bool {
		putBody(t, s, "nudge")
		_, err := os.Stat(first)
		return os.IsNotExist(err)
	})
	want := []HopState{hopAt("smtp:mx.a.example", 4), hopAt("smtp:mx.b.example", 1)}
	checkHops(t, "after compaction", s, want...)
	s.Close()
	s = openLogTest(t, opts)
	mustLoad(t, s)
	checkHops(t, "after compaction and a reopen", s, want...)
	if _, err := s.Get(ctx, keep); err != nil {
		t.Fatal(err)
	}

	// Clear both; churn until no segment holds an older record of them.
	setHop(t, s, HopState{Hop: "smtp:mx.a.example"})
	setHop(t, s, HopState{Hop: "smtp:mx.b.example"})
	checkHops(t, "cleared", s)
	waitFor(t, "the cleared hops to be forgotten", func() bool {
		m := putBody(t, s, strings.Repeat("churn ", 200))
		s.Remove(m.ID)
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.idx.hops) == 0
	})
	s.Close()
	s = openLogTest(t, opts)
	mustLoad(t, s)
	checkHops(t, "cleared, after a reopen", s)
	s.mu.Lock()
	n := len(s.idx.hops)
	s.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d hops in the index after a reopen, want none", n)
	}
}

// TestLogHopCostsNoFdatasync: a HOP record is written without an
// fdatasync of its own; the next Update's fdatasync covers it, and a
// segment sealed or closed with it unsynced is synced first.
func TestLogHopCostsNoFdatasync(t *testing.T) {
	dir := t.TempDir()
	var syncs atomic.Int64
	opts := LogOptions{Dir: dir, SegmentSize: 4096, datasync: func(f *os.File) error {
		syncs.Add(1)
		return fdatasync(f)
	}}
	s := openLogTest(t, opts)
	mustLoad(t, s)
	m := putBody(t, s, "x")
	before := syncs.Load()
	setHop(t, s, hopAt("smtp:mx.a.example", 1))
	setHop(t, s, hopAt("smtp:mx.a.example", 2))
	if n := syncs.Load() - before; n != 0 {
		t.Errorf("two SetHop calls cost %d fdatasyncs, want 0", n)
	}
	if err := s.Update(context.Background(), m.ID, m.State); err != nil {
		t.Fatal(err)
	}
	if n := syncs.Load() - before; n != 1 {
		t.Errorf("an Update after them cost %d fdatasyncs, want 1 (covering the HOP records)", n)
	}

	// The segment is sealed with a HOP record as its last batch: it is
	// synced before the next segment is created.
	setHop(t, s, hopAt("smtp:mx.b.example", 1))
	seg := s.curSeq
	before = syncs.Load()
	putBody(t, s, strings.Repeat("fills the segment ", 300))
	if s.curSeq == seg {
		t.Fatal("the Put did not start a new segment")
	}
	if n := syncs.Load() - before; n != 2 {
		t.Errorf("a rotation after an unsynced HOP record cost %d fdatasyncs, want 2 (the sealed segment, then the Put)", n)
	}

	// Close syncs an unsynced HOP record.
	setHop(t, s, hopAt("smtp:mx.b.example", 2))
	before = syncs.Load()
	s.Close()
	if n := syncs.Load() - before; n != 1 {
		t.Errorf("Close after an unsynced HOP record cost %d fdatasyncs, want 1", n)
	}
	s = openLogTest(t, LogOptions{Dir: dir, SegmentSize: 4096})
	mustLoad(t, s)
	checkHops(t, "after the reopen", s, hopAt("smtp:mx.a.example", 2), hopAt("smtp:mx.b.example", 2))
}
