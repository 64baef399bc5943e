package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hubd/hub"
)

func openTest(t testing.TB, dir string) *DiskStore {
	t.Helper()
	s, err := OpenDisk(DiskOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newMessage(rcpts ...string) *Message {
	m := &Message{Envelope: hub.Envelope{From: "sender@example.org", Connector: "internet", TraceParent: "00-x"}}
	for _, r := range rcpts {
		m.Envelope.Recipients = append(m.Envelope.Recipients, hub.Recipient{Address: r, ORCPT: "rfc822;" + r})
		m.Recipients = append(m.Recipients, RecipientState{Address: r, Status: Queued, DSN: hub.Recipient{Address: r}})
	}
	return m
}

func readBody(t *testing.T, s Store, id hub.QueueID) string {
	t.Helper()
	rc, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestPutLoadRoundTrip(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		dir := t.TempDir()
		s := openEngine(t, e, dir)
		ctx := context.Background()
		m := newMessage("a@example.com", "b@example.net")
		body := "Subject: hi\r\n\r\nhello\r\n"
		if err := s.Put(ctx, m, strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
		if !validID(string(m.ID)) || m.Size != int64(len(body)) || m.Arrived.IsZero() {
			t.Fatalf("Put set id=%q size=%d arrived=%v", m.ID, m.Size, m.Arrived)
		}
		s.Close()

		s2 := openEngine(t, e, dir)
		got, err := s2.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 {
			t.Fatalf("loaded %d messages, want 1", len(got))
		}
		g := got[0]
		if g.ID != m.ID || g.Size != m.Size || !g.Arrived.Equal(m.Arrived) || g.Envelope.From != m.Envelope.From ||
			g.Envelope.TraceParent != "00-x" || len(g.Recipients) != 2 || g.Recipients[1].Address != "b@example.net" ||
			g.Envelope.Recipients[0].ORCPT != "rfc822;a@example.com" {
			t.Fatalf("loaded %+v, want %+v", g, m)
		}
		if b := readBody(t, s2, m.ID); b != body {
			t.Fatalf("body %q, want %q", b, body)
		}
	})
}

func TestUpdateDurableAcrossReopen(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		dir := t.TempDir()
		s := openEngine(t, e, dir)
		ctx := context.Background()
		m := newMessage("a@example.com", "b@example.com")
		if err := s.Put(ctx, m, strings.NewReader("x\r\n")); err != nil {
			t.Fatal(err)
		}
		next := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
		st := m.State
		st.Recipients = append([]RecipientState(nil), st.Recipients...)
		st.Expanded = true
		st.Recipients[0].Status = Delivered
		st.Recipients[0].LastReply = Reply{Code: 250, Enhanced: "2.0.0", Text: "ok"}
		st.Recipients[1].Status = Deferred
		st.Recipients[1].Attempts = 1
		st.Recipients[1].NextAttempt = next
		if err := s.Update(ctx, m.ID, st); err != nil {
			t.Fatal(err)
		}
		st.Recipients[1].Attempts = 2 // a second update replaces the first
		if err := s.Update(ctx, m.ID, st); err != nil {
			t.Fatal(err)
		}
		s.Close()

		got, err := openEngine(t, e, dir).Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r := got[0].Recipients
		if !got[0].Expanded || r[0].Status != Delivered || r[0].LastReply.Code != 250 || r[1].Status != Deferred ||
			r[1].Attempts != 2 || !r[1].NextAttempt.Equal(next) {
			t.Fatalf("state after reopen: %+v", got[0].State)
		}
	})
}

func TestRemove(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		dir := t.TempDir()
		s := openEngine(t, e, dir)
		ctx := context.Background()
		m := newMessage("a@example.com")
		if err := s.Put(ctx, m, strings.NewReader("x")); err != nil {
			t.Fatal(err)
		}
		if err := s.Update(ctx, m.ID, m.State); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(m.ID); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Load(ctx); len(got) != 0 {
			t.Fatalf("loaded %d after Remove", len(got))
		}
		if left, _ := os.ReadDir(filepath.Join(dir, "queue")); e.name == "disk" && len(left) != 0 {
			t.Fatalf("files left: %v", left)
		}
		if err := s.Update(ctx, m.ID, m.State); err == nil {
			t.Fatal("Update of a removed message succeeded")
		}
	})
}

// A crash can leave: a torn temp file (never renamed), a .msg whose bytes
// were damaged, a .state without its .msg (interrupted Remove). Load must
// keep going and return the intact rest.
func TestLoadSurvivesDebris(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	ctx := context.Background()
	var ids []hub.QueueID
	for i := range 3 {
		m := newMessage(fmt.Sprintf("u%d@example.com", i))
		if err := s.Put(ctx, m, strings.NewReader("body\r\n")); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	s.Close()

	// Torn write: half a message in tmp/.
	torn := filepath.Join(dir, "tmp", string(ids[0])+"x.msg.1")
	os.WriteFile(torn, []byte("Subject: half"), 0o600)
	// Corrupt record: flip a byte inside message 1's JSON trailer.
	p := filepath.Join(dir, "queue", string(ids[1])+".msg")
	b, _ := os.ReadFile(p)
	b[len(b)-trailerFixed-5] ^= 0xff
	os.WriteFile(p, b, 0o600)
	// Truncated file (a record whose trailer is missing entirely).
	os.WriteFile(filepath.Join(dir, "queue", "00000000000000000000a.msg"), []byte("x"), 0o600)
	// Orphan state from an interrupted Remove.
	orphan := filepath.Join(dir, "queue", "00000000000000000000b.state")
	os.WriteFile(orphan, []byte("whatever"), 0o600)

	s2 := openTest(t, dir)
	got, err := s2.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != ids[0] || got[1].ID != ids[2] {
		t.Fatalf("loaded %v, want %v and %v", got, ids[0], ids[2])
	}
	if _, err := os.Stat(torn); !os.IsNotExist(err) {
		t.Errorf("torn temp file still there: %v", err)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("orphan state still there: %v", err)
	}
	q, _ := os.ReadDir(filepath.Join(dir, "quarantine"))
	if len(q) != 2 {
		t.Errorf("quarantine holds %v, want the corrupt and the truncated message", q)
	}
}

func TestCorruptStateQuarantinesMessage(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	ctx := context.Background()
	m := newMessage("a@example.com")
	s.Put(ctx, m, strings.NewReader("x"))
	s.Update(ctx, m.ID, m.State)
	s.Close()
	os.WriteFile(filepath.Join(dir, "queue", string(m.ID)+".state"), []byte("garbage that is long enough"), 0o600)
	got, err := openTest(t, dir).Load(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("Load = %v, %v; want nothing (quarantined)", got, err)
	}
	q, _ := os.ReadDir(filepath.Join(dir, "quarantine"))
	if len(q) != 2 {
		t.Fatalf("quarantine holds %v, want .msg and .state", q)
	}
}

func TestBodyChecksumCheckedOnRead(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	m := newMessage("a@example.com")
	s.Put(context.Background(), m, strings.NewReader("hello world\r\n"))
	p := filepath.Join(dir, "queue", string(m.ID)+".msg")
	b, _ := os.ReadFile(p)
	b[0] = 'j'
	os.WriteFile(p, b, 0o600)
	rc, err := s.Open(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); err == nil {
		t.Fatal("damaged body read without error")
	}
}

func TestConcurrentPutsUniqueIDs(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		dir := t.TempDir()
		s := openEngine(t, e, dir)
		ctx := context.Background()
		const workers, each = 8, 50
		var mu sync.Mutex
		seen := map[hub.QueueID]string{}
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					body := fmt.Sprintf("w%d-%d\r\n", w, i)
					m := newMessage("a@example.com")
					if err := s.Put(ctx, m, strings.NewReader(body)); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					if _, dup := seen[m.ID]; dup {
						errs <- fmt.Errorf("duplicate id %s", m.ID)
					}
					seen[m.ID] = body
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		got, err := s.Load(ctx)
		if err != nil || len(got) != workers*each {
			t.Fatalf("loaded %d, %v; want %d", len(got), err, workers*each)
		}
		for i, m := range got {
			if i > 0 && got[i-1].ID >= m.ID {
				t.Fatalf("Load not ordered by id at %d", i)
			}
			if b := readBody(t, s, m.ID); b != seen[m.ID] {
				t.Fatalf("%s: body %q, want %q", m.ID, b, seen[m.ID])
			}
		}
	})
}

func TestIDsOrderedAndUniqueUnderSteppedClock(t *testing.T) {
	var g idGen
	fixed := time.Unix(1700000000, 0)
	prev := g.next(fixed)
	for range 10000 {
		id := g.next(fixed) // the clock does not move: still strictly increasing
		if id <= prev || !validID(string(id)) {
			t.Fatalf("id %q after %q", id, prev)
		}
		prev = id
	}
}

func TestPutHonoursCancelledContext(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		dir := t.TempDir()
		s := openEngine(t, e, dir)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.Put(ctx, newMessage("a@example.com"), strings.NewReader("x")); err == nil {
			t.Fatal("Put with a cancelled context succeeded")
		}
		if got, _ := s.Load(context.Background()); len(got) != 0 {
			t.Fatalf("cancelled Put left %d messages", len(got))
		}
	})
}

func BenchmarkPutParallel(b *testing.B) {
	for _, mode := range []struct {
		name     string
		syncEach bool
	}{{"group-commit", false}, {"dir-fsync-each", true}} {
		b.Run(mode.name, func(b *testing.B) {
			s, err := OpenDisk(DiskOptions{Dir: b.TempDir(), syncEach: mode.syncEach})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			body := bytes.Repeat([]byte("0123456789abcde\n"), 256) // 4 KB
			b.SetParallelism(16)                                   // many SMTP sessions at once
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := s.Put(context.Background(), newMessage("a@example.com"), bytes.NewReader(body)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// TestSpoolLocked: a second store on the same spool is refused while the
// first is open, and allowed once it is closed.
func TestSpoolLocked(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		dir := t.TempDir()
		first, err := e.open(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, other := range engines { // neither engine may share the spool
			if _, err := other.open(dir); err == nil || !strings.Contains(err.Error(), "in use by another process") {
				t.Fatalf("second open (%s): %v", other.name, err)
			}
		}
		first.Close()
		second, err := e.open(dir)
		if err != nil {
			t.Fatalf("open after close: %v", err)
		}
		second.Close()
	})
}

// TestQuarantineKeepsEarlierItems: a damaged file quarantined under a name
// that an earlier start already used does not overwrite the earlier one.
func TestQuarantineKeepsEarlierItems(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	name := "00000000000000000000a.msg"
	for round := range 2 {
		s := openTest(t, dir)
		os.WriteFile(filepath.Join(dir, "queue", name), []byte(fmt.Sprintf("damaged %d", round)), 0o600)
		if _, err := s.Load(ctx); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	q, err := os.ReadDir(filepath.Join(dir, "quarantine"))
	if err != nil || len(q) != 2 {
		t.Fatalf("quarantine holds %d items (%v), want 2", len(q), err)
	}
}

// Put reports the group commit that made it durable to an observer in its
// context (the hub.enqueue span's batch size); concurrent Puts share
// batches, and every batch size is at least one.
func TestPutReportsCommitBatch(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s := openEngine(t, e, t.TempDir())
		const n = 16
		sizes := make(chan int, n)
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx := WithCommitObserver(context.Background(), func(c CommitInfo) { sizes <- c.BatchSize })
				if err := s.Put(ctx, newMessage("a@example.com"), strings.NewReader("x\r\n")); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		close(sizes)
		got := 0
		for size := range sizes {
			if size < 1 || size > n {
				t.Errorf("batch size %d, want 1..%d", size, n)
			}
			got++
		}
		if got != n {
			t.Errorf("%d Puts reported, want %d", got, n)
		}
	})
}
