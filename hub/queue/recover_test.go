package queue

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hubd/hub"
)

// TestActiveMarksRecordDeaths: messages still marked active when the store
// is reopened (the process died processing them) come back with the death
// recorded, durably: an isolated mark counts a crash, any mark one more
// interruption, and pending recipients are held back until the time the
// mark named; a cleared mark records nothing.
func TestActiveMarksRecordDeaths(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		dir := t.TempDir()
		ctx := context.Background()
		s, err := e.open(dir)
		if err != nil {
			t.Fatal(err)
		}
		isolated, beside, clean := newMessage("a@example.com", "b@example.com"), newMessage("c@example.com"), newMessage("d@example.com")
		for _, m := range []*Message{isolated, beside, clean} {
			if err := s.Put(ctx, m, strings.NewReader("x\r\n")); err != nil {
				t.Fatal(err)
			}
		}
		st := isolated.State
		st.Recipients[1].Status = Delivered
		if err := s.Update(ctx, isolated.ID, st); err != nil {
			t.Fatal(err)
		}
		notBefore := time.Now().Add(time.Hour).Truncate(time.Millisecond)
		mark := func(s Store) {
			t.Helper()
			if err := s.MarkActive(isolated.ID, Mark{NotBefore: notBefore, Isolated: true}); err != nil {
				t.Fatal(err)
			}
			if err := s.MarkActive(beside.ID, Mark{NotBefore: notBefore}); err != nil {
				t.Fatal(err)
			}
		}
		mark(s)
		if err := s.MarkActive(clean.ID, Mark{NotBefore: notBefore}); err != nil {
			t.Fatal(err)
		}
		s.ClearActive(clean.ID)
		s.Close() // the marks stay, as after SIGKILL

		for round := 1; round <= 2; round++ {
			s2, err := e.open(dir)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s2.Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 3 || got[0].ID != isolated.ID || got[1].ID != beside.ID {
				t.Fatalf("round %d: loaded %+v", round, got)
			}
			i, b, c := got[0], got[1], got[2]
			if i.Crashes != round || i.Deaths != round || i.Interrupted != round || !i.Recipients[0].NextAttempt.Equal(notBefore) ||
				i.Recipients[1].Status != Delivered || !i.Recipients[1].NextAttempt.IsZero() {
				t.Fatalf("round %d: isolated %+v", round, i.State)
			}
			if b.Crashes != 0 || b.Deaths != 0 || b.Interrupted != round || !b.Recipients[0].NextAttempt.Equal(notBefore) {
				t.Fatalf("round %d: beside %+v", round, b.State)
			}
			if c.Crashes != 0 || c.Interrupted != 0 || !c.Recipients[0].NextAttempt.IsZero() {
				t.Fatalf("round %d: clean %+v", round, c.State)
			}
			if marks := e.marksLeft(t, dir); len(marks) != 0 {
				t.Fatalf("round %d: marks left behind: %v", round, marks)
			}
			mark(s2) // die again while processing them
			s2.Close()
		}
	})
}

// TestInterruptedRecoveryCountsOnce: a Load that persisted the deaths but
// died before deleting the marks must not make the next Load count the
// same death again.
func TestInterruptedRecoveryCountsOnce(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openTest(t, dir)
	m := newMessage("a@example.com")
	if err := s.Put(ctx, m, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkActive(m.ID, Mark{NotBefore: time.Now(), Isolated: true}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	markPath := filepath.Join(dir, "queue", string(m.ID)+".active")
	saved, err := os.ReadFile(markPath)
	if err != nil {
		t.Fatal(err)
	}
	s2 := openTest(t, dir)
	if got, err := s2.Load(ctx); err != nil || got[0].Crashes != 1 {
		t.Fatalf("first Load: %+v, %v", got, err)
	}
	s2.Close()
	// As if that Load had been killed after its group commit, before it
	// deleted the mark.
	if err := os.WriteFile(markPath, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := openTest(t, dir).Load(ctx)
	if err != nil || got[0].Crashes != 1 || got[0].Interrupted != 1 {
		t.Fatalf("second Load counted the same death again: %+v, %v", got[0].State, err)
	}
	if marks := activeMarks(t, dir); len(marks) != 0 {
		t.Fatalf("marks left behind: %v", marks)
	}
}

// TestTornMarkStillRecordsDeath: a mark left empty (the process died
// between creating and writing it) records an interruption, not a crash,
// and holds the message back for CrashDelay.
func TestTornMarkStillRecordsDeath(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s := openTest(t, dir)
	m := newMessage("a@example.com")
	if err := s.Put(ctx, m, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	os.WriteFile(filepath.Join(dir, "queue", string(m.ID)+".active"), nil, 0o600)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s2, err := OpenDisk(DiskOptions{Dir: dir, CrashDelay: time.Hour, Clock: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.Load(ctx)
	if err != nil || got[0].Interrupted != 1 || got[0].Crashes != 0 || !got[0].Recipients[0].NextAttempt.Equal(now.Add(time.Hour)) {
		t.Fatalf("Load: %+v, %v", got[0].State, err)
	}
}

func activeMarks(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "queue"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".active") {
			out = append(out, e.Name())
		}
	}
	return out
}

// putMarked puts n messages and marks each active, then closes the store,
// as a process killed with n messages in flight leaves its spool.
func putMarked(t testing.TB, dir string, n int) []hub.QueueID {
	t.Helper()
	s, err := OpenDisk(DiskOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var ids []hub.QueueID
	for range n {
		m := newMessage("a@example.com")
		if err := s.Put(context.Background(), m, strings.NewReader("x\r\n")); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkActive(m.ID, Mark{NotBefore: time.Now()}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	return ids
}
