package queue

import (
	"context"
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
