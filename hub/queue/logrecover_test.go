package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"hubd/hub"
)

// TestLogTornMarkStillRecordsDeath: a last line of log/active without its
// newline (the process died writing it) records an interruption, not a
// crash, and holds the message back for CrashDelay.
func TestLogTornMarkStillRecordsDeath(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir})
	m := putBody(t, s, "x\r\n")
	s.Close()
	os.WriteFile(filepath.Join(dir, "log", "active"), []byte(string(m.ID)+" 0000000001"), 0o600)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s2 := openLogTest(t, LogOptions{Dir: dir, CrashDelay: time.Hour, Clock: func() time.Time { return now }})
	got := mustLoad(t, s2)
	if got[0].Interrupted != 1 || got[0].Crashes != 0 || !got[0].Recipients[0].NextAttempt.Equal(now.Add(time.Hour)) {
		t.Fatalf("Load: %+v", got[0].State)
	}
}

// TestLogInterruptedRecoveryCountsOnce: a Load that persisted the deaths
// but died before truncating log/active does not make the next Load count
// them again; a cleared mark records nothing.
func TestLogInterruptedRecoveryCountsOnce(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir})
	m, clean := putBody(t, s, "x\r\n"), putBody(t, s, "y\r\n")
	if err := s.MarkActive(m.ID, Mark{NotBefore: time.Now(), Isolated: true}); err != nil {
		t.Fatal(err)
	}
	s.MarkActive(clean.ID, Mark{NotBefore: time.Now(), Isolated: true})
	s.ClearActive(clean.ID)
	s.Close()
	active := filepath.Join(dir, "log", "active")
	saved, err := os.ReadFile(active)
	if err != nil {
		t.Fatal(err)
	}
	s2 := openLogTest(t, LogOptions{Dir: dir})
	if got := mustLoad(t, s2); got[0].Crashes != 1 || got[1].Interrupted != 0 {
		t.Fatalf("first Load: %+v, %+v", got[0].State, got[1].State)
	}
	s2.Close()
	if err := os.WriteFile(active, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	got := mustLoad(t, openLogTest(t, LogOptions{Dir: dir}))
	if got[0].Crashes != 1 || got[0].Interrupted != 1 {
		t.Fatalf("second Load counted the same death again: %+v", got[0].State)
	}
	if left := logMarksLeft(t, dir); len(left) != 0 {
		t.Fatalf("marks left: %v", left)
	}
}

// TestLogMarksRewritten: log/active does not grow without bound: past
// marksRewrite it is rewritten with the live marks only, which still
// record the death.
func TestLogMarksRewritten(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir})
	m, other := putBody(t, s, "x\r\n"), putBody(t, s, "y\r\n")
	if err := s.MarkActive(m.ID, Mark{Isolated: true}); err != nil {
		t.Fatal(err)
	}
	for range marksRewrite/60 + 100 {
		s.MarkActive(other.ID, Mark{})
		s.ClearActive(other.ID)
	}
	fi, err := os.Stat(filepath.Join(dir, "log", "active"))
	if err != nil || fi.Size() > marksRewrite {
		t.Fatalf("log/active: %v, %v", fi.Size(), err)
	}
	s.Close()
	got := mustLoad(t, openLogTest(t, LogOptions{Dir: dir}))
	if got[0].Crashes != 1 || got[1].Interrupted != 0 {
		t.Fatalf("after rewrite: %+v, %+v", got[0].State, got[1].State)
	}
}

// TestLogLoadReadErrorChangesNothing: a segment that cannot be read
// (EACCES) fails Load with the file and the errno named, and nothing is
// cut, quarantined or changed.
func TestLogLoadReadErrorChangesNothing(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir, SegmentSize: 1024})
	for i := range 6 {
		putBody(t, s, strings.Repeat(fmt.Sprint(i), 400))
	}
	s.Close()
	segs := segFiles(t, dir)
	// Tear the tail too: the failing Load must not cut it either.
	last := segs[len(segs)-1]
	fi, _ := os.Stat(last)
	os.Truncate(last, fi.Size()-3)
	denied := segs[1]
	s2 := openLogTest(t, LogOptions{Dir: dir, openFile: func(name string) (*os.File, error) {
		if name == denied {
			return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EACCES}
		}
		return os.Open(name)
	}})
	_, err := s2.Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), denied) || !strings.Contains(err.Error(), "EACCES") || !errors.Is(err, syscall.EACCES) {
		t.Fatalf("Load: %v", err)
	}
	if fi2, _ := os.Stat(last); fi2.Size() != fi.Size()-3 {
		t.Fatal("the failed Load cut the tail")
	}
	if q := dirNames(t, filepath.Join(dir, "quarantine")); len(q) != 0 {
		t.Fatalf("quarantine holds %v", q)
	}
	if got := segFiles(t, dir); len(got) != len(segs) {
		t.Fatalf("segments %v, want %v", got, segs)
	}
}

// makeDiskSpool writes a disk spool (DiskStore) with three messages, one
// with a 2 MiB body, one updated, and one left marked active (isolated),
// as a process killed under the old engine leaves it.
func makeDiskSpool(t *testing.T, dir string) (map[hub.QueueID]string, hub.QueueID) {
	t.Helper()
	d, err := OpenDisk(DiskOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	want := map[hub.QueueID]string{}
	var ids []hub.QueueID
	for _, body := range []string{"one\r\n", strings.Repeat("big body ", 2<<17), "three\r\n"} {
		m := putBody(t, d, body)
		want[m.ID] = body
		ids = append(ids, m.ID)
	}
	st := State{Expanded: true, Recipients: []RecipientState{{Address: "a@example.com", Status: Deferred, Attempts: 2}}}
	if err := d.Update(context.Background(), ids[2], st); err != nil {
		t.Fatal(err)
	}
	if err := d.MarkActive(ids[0], Mark{NotBefore: time.Now(), Isolated: true}); err != nil {
		t.Fatal(err)
	}
	return want, ids[0]
}

func checkImported(t *testing.T, s *LogStore, want map[hub.QueueID]string, marked hub.QueueID) {
	t.Helper()
	checkBodies(t, s, want)
	for _, m := range mustLoad(t, s) {
		switch {
		case m.ID == marked && (m.Crashes != 1 || m.Interrupted != 1):
			t.Fatalf("marked message: %+v, want its death recorded once", m.State)
		case m.ID != marked && m.Crashes != 0:
			t.Fatalf("%s: %+v", m.ID, m.State)
		case len(want[m.ID]) == 7 && m.ID > marked && (!m.Expanded || m.Recipients[0].Attempts != 2):
			t.Fatalf("updated message lost its state: %+v", m.State)
		}
	}
}

// TestLogImportsDiskSpool: OpenLog on a disk spool imports every message
// with its ID, state and body, records the death its active mark tells of
// once, and removes queue/ and tmp/.
func TestLogImportsDiskSpool(t *testing.T) {
	dir := t.TempDir()
	want, marked := makeDiskSpool(t, dir)
	s := openLogTest(t, LogOptions{Dir: dir})
	checkImported(t, s, want, marked)
	for _, sub := range []string{"queue", "tmp"} {
		if _, err := os.Stat(filepath.Join(dir, sub)); !os.IsNotExist(err) {
			t.Fatalf("%s/ still there: %v", sub, err)
		}
	}
	s.Close()
	checkImported(t, openLogTest(t, LogOptions{Dir: dir}), want, marked)
}

// TestLogImportInterrupted: an import killed after its group commit but
// before queue/ was deleted is run again by the next OpenLog, and gives
// every message exactly once.
func TestLogImportInterrupted(t *testing.T) {
	dir := t.TempDir()
	want, marked := makeDiskSpool(t, dir)
	// The disk spool as the first import's DiskStore Load left it (the
	// death recorded in a .state, the mark gone).
	d, err := OpenDisk(DiskOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	mustLoad(t, d)
	d.Close()
	saved := filepath.Join(t.TempDir(), "queue")
	copyDir(t, filepath.Join(dir, "queue"), saved)

	s := openLogTest(t, LogOptions{Dir: dir})
	s.Close()
	copyDir(t, saved, filepath.Join(dir, "queue")) // as if the deletion never happened
	s = openLogTest(t, LogOptions{Dir: dir})
	checkImported(t, s, want, marked)
	if _, err := os.Stat(filepath.Join(dir, "queue")); !os.IsNotExist(err) {
		t.Fatalf("queue/ still there: %v", err)
	}
}

const crashChildEnv = "HUBD_LOGSTORE_CRASH_DIR"

func crashBody(id string, n int) string {
	return strings.Repeat(id+"\n", n)
}

// TestLogCrashChild is the child of TestLogCrashKill: it puts and removes
// messages from 8 goroutines until it is killed, printing each one
// acknowledged ("P <id> <n> <remove>": put, body crashBody(id, n), and a
// Remove follows when remove is true; "R <id>": removed).
func TestLogCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("run by TestLogCrashKill")
	}
	childSpool(t, LogOptions{Dir: dir, SegmentSize: 64 << 10}, 8, func(w int, s *LogStore, say func(string), fail func(error)) {
		for i := 0; ; i++ {
			m := newMessage("a@example.com")
			m.ID = hub.NewQueueID(time.Now())
			n := 1 + (i*7+w)%50
			if i%97 == 13 {
				n = 60000 // 1.3 MiB: a blob
			}
			if err := s.Put(context.Background(), m, strings.NewReader(crashBody(string(m.ID), n))); err != nil {
				fail(err)
			}
			remove := i%3 == 0
			say(fmt.Sprintf("P %s %d %t", m.ID, n, remove))
			if remove {
				if err := s.Remove(m.ID); err != nil {
					fail(err)
				}
				say("R " + string(m.ID))
			}
		}
	})
}

// TestLogCrashKill SIGKILLs a process putting and removing messages in
// the middle of its stream, several times on the same spool, and checks
// after each kill that every acknowledged message is there with its body
// intact and every acknowledged removal stays removed.
func TestLogCrashKill(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	a := newAcked()
	for round := range 6 {
		runKilled(t, round, "TestLogCrashChild", []string{crashChildEnv + "=" + dir}, 200+150*round, func(f []string) bool {
			switch {
			case len(f) == 4 && f[0] == "P":
				n, _ := strconv.Atoi(f[2])
				a.put[hub.QueueID(f[1])] = n
				a.removing[hub.QueueID(f[1])] = f[3] == "true"
			case len(f) == 2 && f[0] == "R":
				a.removed[hub.QueueID(f[1])] = true
			default:
				return false
			}
			return true
		})
		s, err := OpenLog(LogOptions{Dir: dir, SegmentSize: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		n := a.check(t, round, s, nil)
		t.Logf("round %d: %d messages queued, %d segments", round, n, len(segFiles(t, dir)))
		s.Close()
	}
}
