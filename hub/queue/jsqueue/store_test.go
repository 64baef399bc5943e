package jsqueue

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"hubd/hub"
	"hubd/hub/queue"
)

// startServer runs a single JetStream node in this process (R1, every
// write fsynced), with its store in dir.
func startServer(t testing.TB, dir string) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{ServerName: "t", DontListen: true, JetStream: true, StoreDir: dir,
		SyncAlways: true, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

func openStore(t *testing.T, ns *server.Server, node string, ttl time.Duration) *Store {
	t.Helper()
	js := connect(t, ns)
	s, err := Open(context.Background(), Options{Setup: PlainSetup(js), Node: node, Replicas: 1, InlineMax: 1024, NodeTTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newMessage(rcpts ...string) *queue.Message {
	m := &queue.Message{Envelope: hub.Envelope{From: "a@example.org"}}
	for _, r := range rcpts {
		m.Envelope.Recipients = append(m.Envelope.Recipients, hub.Recipient{Address: r})
		m.Recipients = append(m.Recipients, queue.RecipientState{Address: r, Status: queue.Queued})
	}
	return m
}

func readAll(t *testing.T, s *Store, id hub.QueueID) string {
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

func TestStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ns := startServer(t, dir)
	s := openStore(t, ns, "a", time.Second)
	ctx := context.Background()

	small, large := newMessage("b@example.net"), newMessage("c@example.net", "d@example.net")
	bigBody := strings.Repeat("0123456789abcdef", 1000) // 16 KB: over InlineMax, into the object store
	if err := s.Put(ctx, small, strings.NewReader("Subject: hi\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, large, strings.NewReader(bigBody)); err != nil {
		t.Fatal(err)
	}
	if small.ID == "" || small.Size != 21 || large.Size != int64(len(bigBody)) {
		t.Fatalf("ids/sizes: %q %d %d", small.ID, small.Size, large.Size)
	}
	if got := readAll(t, s, large.ID); got != bigBody {
		t.Fatalf("large body differs: %d bytes", len(got))
	}
	st := large.State
	st.Expanded = true
	st.Recipients[0].Status = queue.Delivered
	if err := s.Update(ctx, large.ID, st); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(small.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.get(ctx, small.ID); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("Get of a removed message: %v", err)
	}
	got, err := s.Get(ctx, large.ID)
	if err != nil || !got.Expanded || got.Recipients[0].Status != queue.Delivered || got.Size != large.Size {
		t.Fatalf("Get: %+v %v", got, err)
	}

	// Everything survives the server's restart.
	s.Close()
	ns.Shutdown()
	ns.WaitForShutdown()
	ns = startServer(t, dir)
	s = openStore(t, ns, "a", time.Second)
	ms, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 1 || ms[0].ID != large.ID || ms[0].Recipients[0].Status != queue.Delivered {
		t.Fatalf("Load after restart: %+v", ms)
	}
	if got := readAll(t, s, large.ID); got != bigBody {
		t.Fatal("large body differs after restart")
	}
	if err := s.Update(ctx, large.ID, st); err != nil {
		t.Fatalf("Update after restart: %v", err)
	}
	if err := s.Remove(large.ID); err != nil {
		t.Fatal(err)
	}
	if ms, _ := s.Load(ctx); len(ms) != 0 {
		t.Fatalf("left after Remove: %d", len(ms))
	}
	if _, err := s.bodies.GetInfo(ctx, string(large.ID)); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("body object after Remove: %v", err)
	}
}

// A hub whose heartbeat stops loses its messages to a live one; its own
// writes then fail with ErrLeaseLost and it is told (Lost).
func TestTakeOverFromDeadHub(t *testing.T) {
	ns := startServer(t, t.TempDir())
	ttl := 500 * time.Millisecond
	a := openStore(t, ns, "a", ttl)
	var lostMu sync.Mutex
	var lost []hub.QueueID
	a.SetLost(func(id hub.QueueID) { lostMu.Lock(); lost = append(lost, id); lostMu.Unlock() })
	ctx := context.Background()
	var ids []hub.QueueID
	for i := 0; i < 10; i++ {
		m := newMessage("x@example.net")
		if err := a.Put(ctx, m, bytes.NewReader([]byte("body"))); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	// One of them was updated: its owner is in its state entry.
	st := queue.State{Expanded: true, Recipients: []queue.RecipientState{{Address: "x@example.net", Status: queue.Deferred}}}
	if err := a.Update(ctx, ids[0], st); err != nil {
		t.Fatal(err)
	}

	b := openStore(t, ns, "b", ttl)
	if ms, err := b.Load(ctx); err != nil || len(ms) != 0 {
		t.Fatalf("b loads a's messages: %d %v", len(ms), err)
	}
	adopted := make(chan *queue.Message, 20)
	b.StartTakeover(func(m *queue.Message, from string) {
		if from != "a" {
			t.Errorf("taken over from %q", from)
		}
		adopted <- m
	})
	// a is alive (its heartbeat bucket entry was written at Open, but
	// a never started its loop): it expires after ttl, then b takes over.
	deadline := time.After(20 * time.Second)
	got := map[hub.QueueID]*queue.Message{}
	for len(got) < len(ids) {
		select {
		case m := <-adopted:
			got[m.ID] = m
		case <-deadline:
			t.Fatalf("b took over %d of %d", len(got), len(ids))
		}
	}
	if m := got[ids[0]]; m.Recipients[0].Status != queue.Deferred || !m.Expanded {
		t.Fatalf("taken over without its state: %+v", m.State)
	}
	// a comes back to life: it may not settle what it lost.
	if err := a.Remove(ids[1]); !errors.Is(err, queue.ErrLeaseLost) {
		t.Fatalf("a's Remove after take-over: %v", err)
	}
	if err := a.Update(ctx, ids[0], st); !errors.Is(err, queue.ErrLeaseLost) {
		t.Fatalf("a's Update after take-over: %v", err)
	}
	if _, err := a.Open(ids[2]); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("a opens a message it lost: %v", err)
	}
	waitFor(t, func() bool { lostMu.Lock(); defer lostMu.Unlock(); return len(lost) == 3 })
	if err := b.Remove(ids[1]); err != nil {
		t.Fatalf("b's Remove: %v", err)
	}
	// a restarting does not find what b owns.
	a2 := openStore(t, ns, "a", ttl)
	if ms, _ := a2.Load(ctx); len(ms) != 0 {
		t.Fatalf("a reloads %d messages b owns", len(ms))
	}
}

// waitFor polls cond until it holds, for at most 30 s.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30 s")
		}
		<-tick.C
	}
}

// TestHealth: Health says the heartbeat is acknowledged from Open on,
// and once the cluster is gone that it fails, since when and why.
func TestHealth(t *testing.T) {
	ns := startServer(t, t.TempDir())
	js := connect(t, ns)
	opened := time.Now()
	s, err := Open(context.Background(), Options{Setup: PlainSetup(js), Node: "a", Replicas: 1,
		NodeTTL: 250 * time.Millisecond, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if ok, since, lastErr := s.Health(); !ok || since.Before(opened) || lastErr != "" {
		t.Fatalf("after Open: %v %v %q", ok, since, lastErr)
	}
	beat0, err := s.nodes.Get(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	s.StartTakeover(func(*queue.Message, string) {})
	waitFor(t, func() bool { // a heartbeat of the loop
		e, err := s.nodes.Get(context.Background(), "a")
		return err == nil && e.Revision() > beat0.Revision()
	})
	if ok, _, lastErr := s.Health(); !ok || lastErr != "" {
		t.Fatalf("while beating: %v %q", ok, lastErr)
	}
	down := time.Now()
	ns.Shutdown()
	waitFor(t, func() bool { ok, _, _ := s.Health(); return !ok })
	if _, since, lastErr := s.Health(); since.Before(down) || !strings.Contains(lastErr, "heartbeat of a: queue cluster did not acknowledge the write") {
		t.Errorf("failing since %v (down at %v): %q", since, down, lastErr)
	}
}

// A hub that dies with a message in flight records the death at its next
// start: one interruption, a crash when the mark was isolated, and no
// attempt before the crash delay.
func TestDeathRecordedAtRestart(t *testing.T) {
	ns := startServer(t, t.TempDir())
	marks := t.TempDir()
	js := connect(t, ns)
	open := func() *Store {
		s, err := Open(context.Background(), Options{Setup: PlainSetup(js), Node: "a", Replicas: 1, NodeTTL: time.Second,
			MarksDir: marks, CrashDelay: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	ctx := context.Background()
	m := newMessage("x@example.net")
	if err := s.Put(ctx, m, strings.NewReader("body")); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkActive(m.ID, queue.Mark{NotBefore: time.Now().Add(time.Hour), Isolated: true}); err != nil {
		t.Fatal(err)
	}
	s.Close() // dies: no ClearActive

	s = open()
	ms, err := s.Load(ctx)
	if err != nil || len(ms) != 1 {
		t.Fatalf("Load: %d %v", len(ms), err)
	}
	got := ms[0]
	if got.Interrupted != 1 || got.Crashes != 1 || got.Deaths != 1 || got.Recipients[0].NextAttempt.Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("after the death: %+v", got.State)
	}
	// Recorded durably, once: a third start counts nothing more.
	s.Close()
	s = open()
	if ms, _ := s.Load(ctx); len(ms) != 1 || ms[0].Crashes != 1 || ms[0].Interrupted != 1 {
		t.Fatalf("third start: %+v", ms[0].State)
	}
	if entries, _ := os.ReadDir(marks); len(entries) != 0 {
		t.Errorf("%d marks left", len(entries))
	}
}
