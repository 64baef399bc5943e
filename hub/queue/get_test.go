package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"hubd/hub"
)

func mustGet(t testing.TB, s Store, id hub.QueueID) *Message {
	t.Helper()
	m, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestGet: Get returns what Load does, the state of the last Update, a
// copy the caller may change, and ErrNotFound once the message is
// removed; after a reopen it agrees with Load, deaths recorded included.
func TestGet(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		dir := t.TempDir()
		s := openEngine(t, e, dir)
		ctx := context.Background()
		mustLoad(t, s)
		a, b := newMessage("a@example.com", "b@example.net"), newMessage("c@example.com")
		for _, m := range []*Message{a, b} {
			if err := s.Put(ctx, m, strings.NewReader("hello\r\n")); err != nil {
				t.Fatal(err)
			}
		}
		if got := mustGet(t, s, a.ID); !sameMessage(got, a) {
			t.Fatalf("Get after Put:\n%+v\nwant\n%+v", got, a)
		}
		st := State{Expanded: true, Crashes: 1, Recipients: []RecipientState{{Address: "a@example.com", Status: Deferred, Attempts: 2}}}
		if err := s.Update(ctx, a.ID, st); err != nil {
			t.Fatal(err)
		}
		got := mustGet(t, s, a.ID)
		if !sameMessage(got.State, st) || !sameMessage(got.Envelope, a.Envelope) {
			t.Fatalf("Get after Update: %+v", got)
		}
		got.Recipients[0].Status = Delivered
		got.Envelope.Recipients[0].Address = "changed"
		if again := mustGet(t, s, a.ID); again.Recipients[0].Status != Deferred || again.Envelope.Recipients[0].Address != "a@example.com" {
			t.Fatalf("a change to one Get's Message shows in the next: %+v", again)
		}
		if err := s.Remove(b.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, b.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get after Remove: %v", err)
		}
		if _, err := s.Get(ctx, hub.NewQueueID(a.Arrived)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get of an unknown id: %v", err)
		}
		if err := s.MarkActive(a.ID, Mark{Isolated: true}); err != nil {
			t.Fatal(err)
		}
		s.Close()

		s = openEngine(t, e, dir)
		loaded := mustLoad(t, s)
		if len(loaded) != 1 || loaded[0].Crashes != 2 {
			t.Fatalf("Load after reopen: %+v", loaded)
		}
		if got := mustGet(t, s, a.ID); !sameMessage(got, loaded[0]) {
			t.Fatalf("Get after reopen:\n%+v\nLoad:\n%+v", got, loaded[0])
		}
	})
}

// TestGetRacesUpdateAndRemove: Gets running while a message is updated
// and then removed see its states in order, each whole, then ErrNotFound
// and never the message again. With the log spool's small segments,
// compaction and reclaiming run under the Gets and Opens too.
func TestGetRacesUpdateAndRemove(t *testing.T) {
	for _, e := range append(engines, engine{name: "log-small-segments", open: func(dir string) (Store, error) {
		return OpenLog(LogOptions{Dir: dir, SegmentSize: 4096})
	}}) {
		t.Run(e.name, func(t *testing.T) { raceGets(t, e) })
	}
}

func raceGets(t *testing.T, e engine) {
	dir := t.TempDir()
	s := openEngine(t, e, dir)
	ctx := context.Background()
	mustLoad(t, s)
	const kept, rounds = 8, 60
	var ids []hub.QueueID
	bodies := map[hub.QueueID]string{}
	for i := range kept {
		body := strings.Repeat(fmt.Sprintf("kept %d,", i), 50)
		ids = append(ids, putBody(t, s, body).ID)
		bodies[ids[i]] = body
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			last := map[hub.QueueID]int{}
			gone := map[hub.QueueID]bool{}
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, id := range ids {
					m, err := s.Get(ctx, id)
					switch {
					case errors.Is(err, ErrNotFound):
						gone[id] = true
						continue
					case err != nil:
						errs <- err
						return
					case gone[id]:
						errs <- fmt.Errorf("%s found after ErrNotFound", id)
						return
					case m.ID != id || m.Envelope.From != "sender@example.org" || len(m.Recipients) != 1:
						errs <- fmt.Errorf("%s: torn message %+v", id, m)
						return
					case m.Recipients[0].Attempts < last[id]:
						errs <- fmt.Errorf("%s: attempts %d after %d", id, m.Recipients[0].Attempts, last[id])
						return
					}
					last[id] = m.Recipients[0].Attempts
					if rc, err := s.Open(id); err == nil {
						b := new(strings.Builder)
						_, err := fmt.Fprint(b, readAllString(rc))
						rc.Close()
						if err != nil || b.String() != bodies[id] && b.String() != "" {
							errs <- fmt.Errorf("%s: body %q", id, b.String())
							return
						}
					}
				}
			}
		})
	}
	for r := 1; r <= rounds; r++ {
		for _, id := range ids {
			st := State{Recipients: []RecipientState{{Address: "a@example.com", Status: Deferred, Attempts: r}}}
			if err := s.Update(ctx, id, st); err != nil {
				t.Fatal(err)
			}
		}
		for range 4 { // churn: settled messages leave segments to reclaim and compact
			if err := s.Remove(putBody(t, s, strings.Repeat("churn,", 60)).ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range ids[:kept/2] {
		if err := s.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	loaded := map[hub.QueueID]*Message{}
	for _, m := range mustLoad(t, s) {
		loaded[m.ID] = m
	}
	for i, id := range ids {
		got, err := s.Get(ctx, id)
		if i < kept/2 {
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("removed %s: %v", id, err)
			}
			continue
		}
		if err != nil || !sameMessage(got, loaded[id]) || got.Recipients[0].Attempts != rounds {
			t.Fatalf("%s: Get %+v, %v; Load %+v", id, got, err, loaded[id])
		}
	}
	if ls, ok := s.(*LogStore); ok && ls.segSize == 4096 {
		if _, err := os.Stat(ls.segPath(1)); !os.IsNotExist(err) {
			t.Fatalf("the first segment was not compacted away: %v", err)
		}
	}
}

// sameMessage compares a and b as the store keeps them (JSON): times
// without their monotonic reading or location, nil and empty lists alike.
func sameMessage(a, b any) bool {
	ja, erra := json.Marshal(a)
	jb, errb := json.Marshal(b)
	return erra == nil && errb == nil && string(ja) == string(jb)
}

func readAllString(rc interface{ Read([]byte) (int, error) }) string {
	var b strings.Builder
	buf := make([]byte, 512)
	for {
		n, err := rc.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// TestLogGetCorrupt: a record damaged after Load is ErrCorrupt for Get,
// which quarantines nothing.
func TestLogGetCorrupt(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir})
	mustLoad(t, s)
	m := putBody(t, s, "hello")
	b, err := os.ReadFile(s.segPath(1))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(b), "sender@example.org")
	f, err := os.OpenFile(s.segPath(1), os.O_WRONLY, 0)
	if err != nil || i < 0 {
		t.Fatal(i, err)
	}
	f.WriteAt([]byte("S"), int64(i))
	f.Close()
	if _, err := s.Get(context.Background(), m.ID); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get of a damaged record: %v", err)
	}
	if q := dirNames(t, dir+"/quarantine"); len(q) != 0 {
		t.Fatalf("Get quarantined %v", q)
	}
}
