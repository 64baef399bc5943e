package maildrop

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hubd/hub"
	"hubd/policy"
)

// recorder is the hub's Submitter as the pickup sees it: it keeps what it
// was given, or fails with err.
type recorder struct {
	mu   sync.Mutex
	envs []hub.Envelope
	msgs []string
	err  error
}

func (r *recorder) Submit(ctx context.Context, env hub.Envelope, body io.Reader) (hub.QueueID, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return "", r.err
	}
	r.envs = append(r.envs, env)
	r.msgs = append(r.msgs, string(b))
	return env.ID, nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.envs)
}

func dropOne(t *testing.T, dir, msg string) hub.QueueID {
	t.Helper()
	return dropWith(t, dir, msg, nil)
}

// dropWith is dropOne calling before(id) before the file becomes final.
func dropWith(t *testing.T, dir, msg string, before func(hub.QueueID)) hub.QueueID {
	t.Helper()
	d, err := Create(dir, Envelope{From: "a@example.test", Recipients: []Recipient{{Address: "b@example.test", Notify: []string{"NEVER"}}}, UID: 1, User: "liar"})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(d, msg)
	if before != nil {
		before(d.ID())
	}
	id, err := d.Commit()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestPickupSweep: a good file is submitted under its own id with our
// Received:, Message-ID and Date, hub-internal fields removed, then removed;
// a corrupt one goes to corrupt/ once; a stale temporary file is removed,
// a fresh one left; a file whose id is queued already is only removed; a
// file the queue refuses for now stays.
func TestPickupSweep(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "maildrop")
	if err := Prepare(dir, ""); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	queued := map[hub.QueueID]bool{}
	var qmu sync.Mutex
	p, err := Start(Options{Dir: dir, Submitter: rec, Hostname: func() string { return "mx.example.test" }, SweepInterval: time.Hour,
		Queued: func(id hub.QueueID) bool { qmu.Lock(); defer qmu.Unlock(); return queued[id] }})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop(context.Background())

	id := dropOne(t, dir, "Subject: s\r\nX-Hubd-Forged: 1\r\n\r\nbody\r\n")
	deadline := time.Now().Add(10 * time.Second)
	for rec.count() < 1 { // woken by inotify: the periodic sweep is an hour away
		if time.Now().After(deadline) {
			t.Fatal("not picked up within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	env, msg := rec.envs[0], rec.msgs[0]
	if env.ID != id || env.Connector != "pickup" || env.From != "a@example.test" || env.Recipients[0].Notify[0] != "NEVER" ||
		env.MessageID != "<"+string(id)+"@mx.example.test>" {
		t.Errorf("envelope %+v", env)
	}
	uid := os.Getuid()
	wantReceived := "Received: by mx.example.test (hubd pickup, from userid "
	if !strings.HasPrefix(msg, wantReceived) || strings.Contains(msg, "liar") || strings.Contains(msg, "X-Hubd-Forged") ||
		!strings.Contains(msg, "\r\nMessage-ID: <"+string(id)+"@mx.example.test>\r\n") || !strings.Contains(msg, "\r\nDate: ") {
		t.Errorf("uid %d, message:\n%s", uid, msg)
	}
	waitGone(t, filepath.Join(dir, string(id)))

	// Corrupt, stale, fresh temporary, already queued, refused for now.
	bad := filepath.Join(dir, string(hub.NewQueueID(time.Now())))
	os.WriteFile(bad, []byte("hubd-maildrop 1\n{\"from\":\"x\"}\n"), 0o644)
	stale := filepath.Join(dir, tmpPrefix+"old")
	os.WriteFile(stale, nil, 0o644)
	old := time.Now().Add(-2 * time.Hour)
	os.Chtimes(stale, old, old)
	fresh := filepath.Join(dir, tmpPrefix+"new")
	os.WriteFile(fresh, nil, 0o644)
	dropWith(t, dir, "x\r\n", func(id hub.QueueID) {
		qmu.Lock()
		queued[id] = true
		qmu.Unlock()
	})
	p.Sweep(context.Background())
	if got := entries(t, filepath.Join(dir, CorruptDir)); len(got) != 1 || got[0] != filepath.Base(bad) {
		t.Errorf("corrupt/: %v", got)
	}
	if got := entries(t, dir); strings.Join(got, " ") != ".tmp.new corrupt" {
		t.Errorf("maildrop after sweep: %v", got)
	}
	if rec.count() > 1 {
		t.Errorf("the queued file was submitted again")
	}
	rec.mu.Lock()
	rec.err = &policy.Reply{Code: 452, Enhanced: "4.3.1", Text: "Insufficient system storage"}
	rec.mu.Unlock()
	later := dropOne(t, dir, "x\r\n")
	p.Sweep(context.Background())
	if _, err := os.Stat(filepath.Join(dir, string(later))); err != nil {
		t.Errorf("a file the queue refused for now is gone: %v", err)
	}
}

func waitGone(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still there", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FuzzParse: no input makes the reader panic, and what it accepts is valid.
func FuzzParse(f *testing.F) {
	f.Add([]byte("hubd-maildrop 1\n{\"from\":\"a@b.c\",\"recipients\":[{\"address\":\"d@e.f\"}]}\nbody"))
	f.Add([]byte("hubd-maildrop 1\n{}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := parse(bytes.NewReader(b))
		if err == nil {
			if verr := file.Envelope.Validate(); verr != nil {
				t.Fatalf("accepted an invalid envelope: %v", verr)
			}
		}
	})
}
