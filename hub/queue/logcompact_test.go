package queue

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"hubd/hub"
	"hubd/internal/logbuf"
)

// segOf is the segment holding id's MSG record (0: not queued).
func segOf(s *LogStore, id hub.QueueID) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, _, _ := s.idx.lookup(id)
	return e.msg.seg
}

// TestLogCompactionInSteps: a segment's live records are copied in steps
// of about compactChunk bytes, each its own batch, and a Put that comes
// during a compaction is committed between two steps instead of waiting
// for all of them. What the segment held survives, also a reopen: the
// messages with their latest states, and the SETTLE records in it that
// cancel messages of an older segment still there (without them, those
// removed messages would come back).
func TestLogCompactionInSteps(t *testing.T) {
	dir := t.TempDir()
	logs := &logbuf.Buffer{}
	const chunk = 1024
	var s *LogStore
	var (
		gateOnce  sync.Once
		entered   = make(chan struct{})
		release   = make(chan struct{})
		mu        sync.Mutex
		maxStep   int  // the largest batch written while compacting, in bytes
		markSteps = -1 // steps done when the batch with the marked Put was written
	)
	const marker = "put during the compaction"
	opts := LogOptions{Dir: dir, SegmentSize: 64 << 10, compactChunk: chunk,
		Logger: slog.New(slog.NewTextHandler(logs, nil)),
		writev: func(f *os.File, bufs [][]byte, off int64) (int, error) {
			// Called by the committer, which owns s.compact.
			if c := s.compact; c != nil {
				n, marked := 0, false
				for _, b := range bufs {
					n += len(b)
					marked = marked || bytes.Contains(b, []byte(marker))
				}
				mu.Lock()
				switch {
				case c.inStep:
					maxStep = max(maxStep, n)
				case marked:
					markSteps = c.steps
				}
				mu.Unlock()
			}
			return pwritev(f, bufs, off)
		},
		datasync: func(f *os.File) error {
			if c := s.compact; c != nil && c.inStep && c.steps == 1 {
				gateOnce.Do(func() { // the second step waits
					close(entered)
					<-release
				})
			}
			return fdatasync(f)
		},
	}
	s = openLogTest(t, opts)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	mustLoad(t, s)
	ctx := context.Background()
	body := func(p string, i int) string { return strings.Repeat(fmt.Sprintf("%s%d ", p, i), 40) }

	// Segment 1: messages that stay (it keeps more than a quarter live).
	var a []hub.QueueID
	want := map[hub.QueueID]string{}
	for i := 0; ; i++ {
		m := putBody(t, s, body("a", i))
		if segOf(s, m.ID) != 1 {
			s.Remove(m.ID)
			break
		}
		a = append(a, m.ID)
		want[m.ID] = body("a", i)
	}
	// Segment 2: every fifth message stays, some with a later state; three
	// of segment 1's are removed, their SETTLE records in segment 2.
	st := State{Recipients: []RecipientState{{Address: "a@example.com", Status: Deferred, Attempts: 4}}, Crashes: 2}
	var kept []hub.QueueID
	for i := 0; len(kept) < 200; i++ {
		m := putBody(t, s, body("b", i))
		if segOf(s, m.ID) > 2 {
			// Segment 2 is sealed and its compaction may start now:
			// no more waiting calls until the nudge below.
			want[m.ID] = body("b", i)
			break
		}
		switch {
		case i < 3:
			if err := s.Remove(a[i]); err != nil {
				t.Fatal(err)
			}
			delete(want, a[i])
		}
		if i%5 == 0 {
			kept = append(kept, m.ID)
			want[m.ID] = body("b", i)
			if len(kept)%2 == 1 {
				if err := s.Update(ctx, m.ID, st); err != nil {
					t.Fatal(err)
				}
			}
			continue
		}
		if err := s.Remove(m.ID); err != nil {
			t.Fatal(err)
		}
	}
	if len(kept) < 4 {
		t.Fatalf("only %d messages kept in segment 2", len(kept))
	}
	// Fillers seal segment 2 if need be; its compaction starts after the
	// batch that does, and its second step waits. Then a Put is sent: it
	// must be written between two steps.
	for last := kept[len(kept)-1]; segOf(s, last) == 2; {
		filler := strings.Repeat("n", 3000)
		m := putBody(t, s, filler)
		want[m.ID], last = filler, m.ID
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatalf("no compaction reached its second step; log:\n%s", logs)
	}
	putDone := make(chan *Message, 1)
	go func() {
		m := newMessage("a@example.com")
		if err := s.Put(ctx, m, strings.NewReader(marker)); err != nil {
			t.Error(err)
		}
		putDone <- m
	}()
	waitFor(t, "the Put queued behind the step", func() bool { return len(s.reqs) > 0 })
	close(release)
	m := <-putDone
	want[m.ID] = marker
	done := regexp.MustCompile(`compacted segment" segment=2 .* records_copied=(\d+) steps=(\d+)`)
	waitFor(t, "the compaction of segment 2 logged", func() bool { return done.MatchString(logs.String()) })
	if _, err := os.Stat(s.segPath(2)); !os.IsNotExist(err) {
		t.Fatalf("segment 2 still there after its compaction: %v", err)
	}
	line := done.FindStringSubmatch(logs.String())
	copied, _ := strconv.Atoi(line[1])
	steps, _ := strconv.Atoi(line[2])
	mu.Lock()
	defer mu.Unlock()
	t.Logf("segment 2: %d records copied in %d steps, the largest %d bytes; the marked Put after step %d", copied, steps, maxStep, markSteps)
	if copied < len(kept)+3 || steps < 3 {
		t.Errorf("%d records copied in %d steps; want at least %d records (the kept messages and 3 SETTLEs) in 3 steps or more", copied, steps, len(kept)+3)
	}
	if maxStep > chunk+2048 {
		t.Errorf("a step of %d bytes; want about %d (one record more at most)", maxStep, chunk)
	}
	if markSteps < 1 || markSteps >= steps {
		t.Errorf("the Put during the compaction was written after step %d of %d; want between two steps", markSteps, steps)
	}
	check := func(when string, s *LogStore) {
		t.Helper()
		checkBodies(t, s, want)
		for i, id := range kept {
			got, err := s.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if i%2 == 0 && (got.Crashes != 2 || got.Recipients[0].Attempts != 4) {
				t.Fatalf("%s: %s lost its latest state: %+v", when, id, got.State)
			}
		}
	}
	check("after the compaction", s)
	s.Close()
	check("after a reopen", openLogTest(t, LogOptions{Dir: dir, SegmentSize: 64 << 10}))
}

const compactChildEnv = "HUBD_LOGSTORE_COMPACT_CRASH_DIR"

// TestLogCompactionCrashChild is the child of TestLogCompactionCrashKill:
// with small segments and compaction steps of a few records, it puts
// messages, removes five in six and updates the others' state, until it
// is killed, printing what was acknowledged: "P <id> <n>" (put, body
// crashBody(id, n)), "U <id> <attempts>", "R <id>", and "r <id>" before
// a Remove it sends. Its store logs to the file the parent names.
func TestLogCompactionCrashChild(t *testing.T) {
	dir := os.Getenv(compactChildEnv)
	if dir == "" {
		t.Skip("run by TestLogCompactionCrashKill")
	}
	lf, err := os.OpenFile(os.Getenv(compactChildEnv+"_LOG"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	opts := LogOptions{Dir: dir, SegmentSize: 32 << 10, compactChunk: 600, Logger: slog.New(slog.NewTextHandler(lf, nil))}
	ctx := context.Background()
	childSpool(t, opts, 4, func(w int, s *LogStore, say func(string), fail func(error)) {
		var mine []hub.QueueID
		for i := 0; ; i++ {
			m := newMessage("a@example.com")
			m.ID = hub.NewQueueID(time.Now())
			n := 1 + (i*7+w)%30
			if err := s.Put(ctx, m, strings.NewReader(crashBody(string(m.ID), n))); err != nil {
				fail(err)
			}
			say(fmt.Sprintf("P %s %d", m.ID, n))
			if i%6 != 0 {
				say("r " + string(m.ID))
				if err := s.Remove(m.ID); err != nil {
					fail(err)
				}
				say("R " + string(m.ID))
				continue
			}
			mine = append(mine, m.ID)
			id := mine[(i/6)%len(mine)]
			st := State{Recipients: []RecipientState{{Address: "a@example.com", Status: Deferred, Attempts: i}}}
			if err := s.Update(ctx, id, st); err != nil {
				fail(err)
			}
			say(fmt.Sprintf("U %s %d", id, i))
		}
	})
}

// TestLogCompactionCrashKill SIGKILLs a process whose spool compacts all
// the time, in steps of a few records, at several points of its stream,
// and checks after each kill that every acknowledged message is there
// with its body and its latest acknowledged state, and every
// acknowledged removal stays removed.
func TestLogCompactionCrashKill(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	a := newAcked()
	attempts := map[hub.QueueID]int{} // the latest acknowledged Update
	childLog := filepath.Join(t.TempDir(), "child.log")
	for round := range 6 {
		env := []string{compactChildEnv + "=" + dir, compactChildEnv + "_LOG=" + childLog}
		runKilled(t, round, "TestLogCompactionCrashChild", env, 1500+700*round, func(f []string) bool {
			switch {
			case len(f) == 3 && f[0] == "P":
				n, _ := strconv.Atoi(f[2])
				a.put[hub.QueueID(f[1])] = n
			case len(f) == 2 && f[0] == "r":
				a.removing[hub.QueueID(f[1])] = true
			case len(f) == 2 && f[0] == "R":
				a.removed[hub.QueueID(f[1])] = true
			case len(f) == 3 && f[0] == "U":
				n, _ := strconv.Atoi(f[2])
				attempts[hub.QueueID(f[1])] = n
			default:
				return false
			}
			return true
		})
		s, err := OpenLog(LogOptions{Dir: dir, SegmentSize: 32 << 10})
		if err != nil {
			t.Fatal(err)
		}
		n := a.check(t, round, s, func(m *Message) {
			if want, ok := attempts[m.ID]; ok && len(m.Recipients) > 0 && m.Recipients[0].Attempts < want {
				// A later Update the kill cut may have landed; an older state must not.
				t.Fatalf("round %d: %s has the state of attempt %d; %d was acknowledged", round, m.ID, m.Recipients[0].Attempts, want)
			}
		})
		s.Close()
		t.Logf("round %d: %d messages queued, %d segments", round, n, len(segFiles(t, dir)))
	}
	b, err := os.ReadFile(childLog)
	if err != nil {
		t.Fatal(err)
	}
	n := strings.Count(string(b), "compacted segment")
	t.Logf("%d compactions in the children", n)
	if n < 6 {
		t.Errorf("%d compactions in the children; the test wants them compacting all the time", n)
	}
}
