package queue

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"hubd/hub"
)

// failingSync is a syncDir seam that fails while fail is set, and counts
// its calls.
type failingSync struct {
	fail  atomic.Bool
	calls atomic.Int32
}

func (f *failingSync) syncDir(dir string) error {
	f.calls.Add(1)
	if f.fail.Load() {
		return fmt.Errorf("fsync %s: %w", dir, syscall.EIO)
	}
	return nil
}

func spoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"queue", "tmp", "quarantine"} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			out = append(out, sub+"/"+e.Name())
		}
	}
	return out
}

// TestFailedDirSyncWithdrawsPuts: when the directory fsync of a group
// commit fails after its renames, every Put of the batch fails and none of
// their messages stays in queue/: the clients were told 4xx and will send
// again, so a message left behind would be delivered twice.
func TestFailedDirSyncWithdrawsPuts(t *testing.T) {
	dir := t.TempDir()
	fs := &failingSync{}
	s, err := OpenDisk(DiskOptions{Dir: dir, syncDir: fs.syncDir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	kept := newMessage("kept@example.com")
	if err := s.Put(ctx, kept, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	fs.fail.Store(true)
	before := fs.calls.Load()
	const n = 16
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range n {
		wg.Go(func() {
			err := s.Put(ctx, newMessage("a@example.com"), strings.NewReader("x\r\n"))
			if errors.Is(err, syscall.EIO) {
				failed.Add(1)
			} else {
				t.Errorf("Put under a failing fsync: %v", err)
			}
		})
	}
	wg.Wait()
	if failed.Load() != n {
		t.Fatalf("%d of %d Puts failed", failed.Load(), n)
	}
	if calls := fs.calls.Load() - before; calls < 2 {
		t.Errorf("%d directory fsyncs: the withdrawal was not made durable", calls)
	}
	if files := spoolFiles(t, dir); !slices.Equal(files, []string{"queue/" + string(kept.ID) + ".msg"}) {
		t.Fatalf("spool after failed Puts: %v", files)
	}
	fs.fail.Store(false)
	if err := s.Put(ctx, newMessage("b@example.com"), strings.NewReader("x\r\n")); err != nil {
		t.Fatalf("Put after the disk recovered: %v", err)
	}
	if got, err := s.Load(ctx); err != nil || len(got) != 2 {
		t.Fatalf("Load: %d messages, %v", len(got), err)
	}
}

// TestFailedDirSyncKeepsRemovedMessage: a Remove whose directory fsync
// fails puts the message back, with its last state, so that the caller
// can persist the final state and the next start removes it.
func TestFailedDirSyncKeepsRemovedMessage(t *testing.T) {
	dir := t.TempDir()
	fs := &failingSync{}
	s, err := OpenDisk(DiskOptions{Dir: dir, syncDir: fs.syncDir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := newMessage("a@example.com")
	if err := s.Put(ctx, m, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	st := m.State
	st.Recipients = []RecipientState{{Address: "a@example.com", Status: Deferred, Attempts: 1}}
	if err := s.Update(ctx, m.ID, st); err != nil {
		t.Fatal(err)
	}
	fs.fail.Store(true)
	if err := s.Remove(m.ID); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Remove under a failing fsync: %v", err)
	}
	want := []string{"queue/" + string(m.ID) + ".msg", "queue/" + string(m.ID) + ".state"}
	if files := spoolFiles(t, dir); !slices.Equal(files, want) {
		t.Fatalf("spool after a failed Remove: %v, want %v", files, want)
	}
	fs.fail.Store(false)
	st.Recipients[0].Status, st.Recipients[0].Attempts = Delivered, 2
	if err := s.Update(ctx, m.ID, st); err != nil {
		t.Fatalf("Update after the failed Remove: %v", err)
	}
	s.Close()
	got, err := openTest(t, dir).Load(ctx)
	if err != nil || len(got) != 1 || got[0].Recipients[0].Status != Delivered {
		t.Fatalf("Load: %+v, %v", got, err)
	}
}

// TestFailedDirSyncUpdate: an Update whose directory fsync fails reports
// the error and leaves the new state (the caller keeps it in memory too):
// never the old one under a new name, never a torn one.
func TestFailedDirSyncUpdate(t *testing.T) {
	dir := t.TempDir()
	fs := &failingSync{}
	s, err := OpenDisk(DiskOptions{Dir: dir, syncDir: fs.syncDir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := newMessage("a@example.com")
	if err := s.Put(ctx, m, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	fs.fail.Store(true)
	st := m.State
	st.Recipients = []RecipientState{{Address: "a@example.com", Status: Deferred, Attempts: 1}}
	if err := s.Update(ctx, m.ID, st); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Update under a failing fsync: %v", err)
	}
	s.Close()
	got, err := openTest(t, dir).Load(ctx)
	if err != nil || len(got) != 1 || got[0].Recipients[0].Attempts != 1 {
		t.Fatalf("Load: %+v, %v", got, err)
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ not empty: %v", tmp)
	}
}

// TestFailedDirSyncFailsRecovery: when the group commit of start-up
// recovery fails, Load fails, and the marks stay for the next start.
func TestFailedDirSyncFailsRecovery(t *testing.T) {
	dir := t.TempDir()
	putMarked(t, dir, 3)
	fs := &failingSync{}
	fs.fail.Store(true)
	s, err := OpenDisk(DiskOptions{Dir: dir, syncDir: fs.syncDir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(context.Background()); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Load under a failing fsync: %v", err)
	}
	s.Close()
	if marks := activeMarks(t, dir); len(marks) != 3 {
		t.Fatalf("marks after a failed recovery: %v", marks)
	}
	got, err := openTest(t, dir).Load(context.Background())
	if err != nil || len(got) != 3 || got[0].Interrupted != 1 {
		t.Fatalf("Load after the disk recovered: %+v, %v", got, err)
	}
}

// TestUnreadableFileFailsStartup: an error reading a message that is not
// proven corruption fails Load with the file and the errno named, and
// leaves the spool exactly as it was — no quarantine (not even of a truly
// corrupt neighbour), no orphan deleted, no mark consumed. Two ways: a
// real error (a directory where a message should be: EISDIR on read), and
// injected ones through the openFile seam (EACCES, EIO, EMFILE; the tests
// run as root, so chmod 000 would not give EACCES).
func TestUnreadableFileFailsStartup(t *testing.T) {
	cases := []struct {
		name, errno string
		setup       func(t *testing.T, dir string, victim hub.QueueID) DiskOptions
	}{
		{"directory as message", "EISDIR", func(t *testing.T, dir string, victim hub.QueueID) DiskOptions {
			p := filepath.Join(dir, "queue", string(victim)+".msg")
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			return DiskOptions{Dir: dir}
		}},
		{"permission denied", "EACCES", injectOpenError(syscall.EACCES)},
		{"I/O error", "EIO", injectOpenError(syscall.EIO)},
		{"too many open files", "EMFILE", injectOpenError(syscall.EMFILE)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			ids := putMarked(t, dir, 3)
			// A corrupt neighbour and an orphan, which a successful Load
			// would quarantine and delete.
			os.WriteFile(filepath.Join(dir, "queue", "00000000000000000000a.msg"), []byte("x"), 0o600)
			os.WriteFile(filepath.Join(dir, "queue", "00000000000000000000b.state"), []byte("x"), 0o600)
			opts := c.setup(t, dir, ids[1])
			before := spoolFiles(t, dir)
			s, err := OpenDisk(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_, err = s.Load(context.Background())
			victim := filepath.Join(dir, "queue", string(ids[1])+".msg")
			if err == nil || !strings.Contains(err.Error(), victim) || !strings.Contains(err.Error(), c.errno) {
				t.Fatalf("Load: %v; want an error naming %s and %s", err, victim, c.errno)
			}
			t.Logf("Load: %v", err)
			if after := spoolFiles(t, dir); !slices.Equal(after, before) {
				t.Fatalf("spool changed by a failed Load:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func injectOpenError(errno syscall.Errno) func(*testing.T, string, hub.QueueID) DiskOptions {
	return func(_ *testing.T, dir string, victim hub.QueueID) DiskOptions {
		return DiskOptions{Dir: dir, openFile: func(name string) (*os.File, error) {
			if filepath.Base(name) == string(victim)+".msg" {
				return nil, &os.PathError{Op: "open", Path: name, Err: errno}
			}
			return os.Open(name)
		}}
	}
}
