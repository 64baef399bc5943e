package queue

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"
)

// TestInspectBesideTheOwner: Inspect reads a spool its owner holds open
// (no lock), sees what was made durable and the marks written, and
// changes nothing.
func TestInspectBesideTheOwner(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir})
	if _, err := s.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	kept, gone := newMessage("a@example.com"), newMessage("b@example.com")
	for _, m := range []*Message{kept, gone} {
		if err := s.Put(context.Background(), m, strings.NewReader("x\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	st := kept.State
	st.Recipients[0].Attempts = 3
	if err := s.Update(context.Background(), kept.ID, st); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(gone.ID); err != nil {
		t.Fatal(err)
	}
	notBefore := time.Now().Add(time.Hour).Truncate(time.Second)
	if err := s.MarkActive(kept.ID, Mark{NotBefore: notBefore, Isolated: true}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // twice: the first changed nothing
		snap, err := Inspect(context.Background(), dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(snap.Messages) != 1 || snap.Messages[0].ID != kept.ID || snap.Messages[0].Recipients[0].Attempts != 3 {
			t.Fatalf("messages %+v", snap.Messages)
		}
		if mk, ok := snap.Active[kept.ID]; len(snap.Active) != 1 || !ok || !mk.Isolated || !mk.NotBefore.Equal(notBefore) {
			t.Fatalf("marks %+v", snap.Active)
		}
	}
	s.ClearActive(kept.ID)
	snap, err := Inspect(context.Background(), dir)
	if err != nil || len(snap.Active) != 0 {
		t.Fatalf("after ClearActive: %+v, %v", snap, err)
	}
}

// TestReadLiveSegmentGone: a segment unlinked between the index scan and
// the reading (the owner reclaimed it while Inspect read) is an error
// wrapping fs.ErrNotExist, which Inspect retries on, whichever segment
// is acquired first; never a reader without its file.
func TestReadLiveSegmentGone(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir, SegmentSize: 1024})
	for i := range 8 {
		putBody(t, s, strings.Repeat(fmt.Sprintf("segment filler %d\r\n", i), 20))
	}
	s.Close()
	segs := segFiles(t, dir)
	if len(segs) < 4 {
		t.Fatalf("segments %v, want several", segs)
	}
	r := openLogTest(t, LogOptions{Dir: dir, SegmentSize: 1024})
	sc, err := r.scanLog(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.idx = sc.idx
	r.mu.Unlock()
	os.Remove(segs[1])
	for range 20 { // the places are taken in map order: any may come first
		err := r.readLive(context.Background(), func(*Message) error { return nil })
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("readLive with a segment gone: %v, want ErrNotExist", err)
		}
	}
}
