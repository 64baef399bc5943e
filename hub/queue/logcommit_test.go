package queue

import (
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"hubd/hub"
)

// countSyncs is a datasync hook that counts the fdatasyncs of segments.
func countSyncs(n *atomic.Int64) func(f *os.File) error {
	return func(f *os.File) error {
		n.Add(1)
		return fdatasync(f)
	}
}

// TestLogRemoveSharesAPutsFdatasync: while Puts are arriving, a Remove
// waits for the next Put and both are made durable by one fdatasync; the
// Remove returns only then, and the spool holds the Put and not the
// removed message after a reopen.
func TestLogRemoveSharesAPutsFdatasync(t *testing.T) {
	dir := t.TempDir()
	var syncs atomic.Int64
	s := openLogTest(t, LogOptions{Dir: dir, putWait: time.Hour, putsRecent: time.Hour, datasync: countSyncs(&syncs)})
	mustLoad(t, s)
	old := putBody(t, s, "delivered\r\n")
	before := syncs.Load()
	removed := make(chan error, 1)
	go func() { removed <- s.Remove(old.ID) }()
	select {
	case err := <-removed:
		t.Fatalf("Remove returned (%v) before a Put came to share its fdatasync", err)
	case <-time.After(100 * time.Millisecond):
	}
	if n := syncs.Load(); n != before {
		t.Fatalf("%d fdatasyncs while the Remove waited, want 0", n-before)
	}
	next := putBody(t, s, "next\r\n")
	if err := <-removed; err != nil {
		t.Fatal(err)
	}
	if n := syncs.Load() - before; n != 1 {
		t.Fatalf("the Remove and the Put took %d fdatasyncs, want 1", n)
	}
	s.Close()
	checkBodies(t, openLogTest(t, LogOptions{Dir: dir}), map[hub.QueueID]string{next.ID: "next\r\n"})
}

// TestLogRemoveWithoutPutsDoesNotWait: with no Put lately (a queue
// draining), a Remove is made durable at once, whatever putWait says.
func TestLogRemoveWithoutPutsDoesNotWait(t *testing.T) {
	// Puts count as recent for a nanosecond: by the Remove, the Put is
	// long past.
	s := openLogTest(t, LogOptions{Dir: t.TempDir(), putWait: time.Hour, putsRecent: time.Nanosecond})
	mustLoad(t, s)
	m := putBody(t, s, "x\r\n")
	removed := make(chan error, 1)
	go func() { removed <- s.Remove(m.ID) }()
	select {
	case err := <-removed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Remove with no recent Put waited for one")
	}
}

// TestLogCloseEndsTheWaitForAPut: Close while a Remove waits for a Put
// commits the Remove (it returns nil, and a reopen no longer has the
// message) instead of leaving it waiting.
func TestLogCloseEndsTheWaitForAPut(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir, putWait: time.Hour, putsRecent: time.Hour})
	mustLoad(t, s)
	m := putBody(t, s, "x\r\n")
	removed := make(chan error, 1)
	go func() { removed <- s.Remove(m.ID) }()
	// Closed once the committer holds the Remove and waits for a Put.
	deadline := time.Now().Add(10 * time.Second)
	for !s.awaitingPut.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the committer never waited for a Put")
		}
		runtime.Gosched()
	}
	s.Close()
	select {
	case err := <-removed:
		if err != nil {
			t.Fatalf("Remove waiting at Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close left a Remove waiting")
	}
	checkBodies(t, openLogTest(t, LogOptions{Dir: dir}), map[hub.QueueID]string{})
}
