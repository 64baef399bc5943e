package transport

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/queue"
)

// putWithState queues a message for rcpts straight into the spool, with
// the death counts of st, as a restart after process deaths finds it.
func putWithState(t *testing.T, spool string, st queue.State, rcpts ...string) hub.QueueID {
	t.Helper()
	s, err := queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := &queue.Message{Envelope: hub.Envelope{From: "sender@example.com", Connector: "in"}, State: st}
	for _, r := range rcpts {
		m.Envelope.Recipients = append(m.Envelope.Recipients, hub.Recipient{Address: r})
		m.Recipients = append(m.Recipients, queue.RecipientState{Address: r, DSN: hub.Recipient{Address: r}, Status: queue.Queued})
	}
	if err := s.Put(context.Background(), m, strings.NewReader("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	return m.ID
}

// gate is a deliverer that holds every delivery until the test lets one
// go, and records which messages were in its hands at once.
type gate struct {
	started chan hub.QueueID
	release chan struct{}

	mu      sync.Mutex
	holding map[hub.QueueID]bool
	watch   map[hub.QueueID]bool // the suspects
	maxHeld int                  // most suspects held at once
}

func newGate(suspects ...hub.QueueID) *gate {
	g := &gate{started: make(chan hub.QueueID, 16), release: make(chan struct{}),
		holding: map[hub.QueueID]bool{}, watch: map[hub.QueueID]bool{}}
	for _, id := range suspects {
		g.watch[id] = true
	}
	return g
}

func (g *gate) Deliver(ctx context.Context, _ delivery.NextHop, msg delivery.Message, rcpts []delivery.Recipient) []delivery.Result {
	g.mu.Lock()
	g.holding[msg.ID] = true
	n := 0
	for id := range g.holding {
		if g.watch[id] {
			n++
		}
	}
	g.maxHeld = max(g.maxHeld, n)
	g.mu.Unlock()
	g.started <- msg.ID
	status := delivery.Delivered
	select {
	case <-g.release:
	case <-ctx.Done():
		status = delivery.Deferred
	}
	g.mu.Lock()
	delete(g.holding, msg.ID)
	g.mu.Unlock()
	res := make([]delivery.Result, len(rcpts))
	for i := range res {
		res[i] = delivery.Result{Status: status, Code: 250, Enhanced: "2.0.0", Text: "ok"}
	}
	return res
}

// TestSuspectsProcessedInIsolation: messages interrupted at two process
// deaths in a row are delivered one at a time, each under an isolated
// mark and no other suspect marked meanwhile, while healthy mail flows
// beside them; each clean delivery clears its suspect.
func TestSuspectsProcessedInIsolation(t *testing.T) {
	spool := t.TempDir()
	var suspects []hub.QueueID
	for _, r := range []string{"s1@partner.example", "s2@partner.example", "s3@partner.example"} {
		suspects = append(suspects, putWithState(t, spool, queue.State{Interrupted: suspectAfter}, r))
	}
	g := newGate(suspects...)
	md := &fake{result: ok}
	cfg := config(t, spool, "")
	tr, err := New(cfg, Options{Deliverers: map[delivery.Kind]delivery.Deliverer{delivery.KindMaildir: md, delivery.KindSMTP: g}})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, tr: tr, maildir: md}
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.close)

	for n := range suspects {
		id := <-g.started
		marks := activeMarks(t, spool)
		for other := range marks {
			if !slices.Contains(suspects, other) {
				delete(marks, other) // healthy mail finishing beside it
			}
		}
		if len(marks) != 1 || marks[id] != 'i' {
			t.Fatalf("suspect %d (%s) in delivery: suspects' marks %v, want only its own, isolated", n, id, marks)
		}
		if n == 0 {
			if s := tr.Stats(); s.Suspects != len(suspects) {
				t.Errorf("Stats %+v, want %d suspects", s, len(suspects))
			}
			// Healthy mail is not held up by the suspect in flight.
			h.submit("x\r\n", "alice@example.com")
			eventually(t, "healthy mail delivered beside the suspect", func() bool { return len(md.seen()) == 1 })
		}
		g.release <- struct{}{}
	}
	h.waitIdle()
	if g.maxHeld != 1 {
		t.Errorf("%d suspects in delivery at once, want 1", g.maxHeld)
	}
	if s := tr.Stats(); s.Messages != 0 || s.Poisoned != 0 {
		t.Errorf("Stats %+v", s)
	}
}

// activeMarks maps each message with an active mark to 'i' (isolated) or
// '-' (not), read beside the transport that owns the spool.
func activeMarks(t *testing.T, spool string) map[hub.QueueID]byte {
	t.Helper()
	snap, err := queue.Inspect(context.Background(), spool)
	if err != nil {
		t.Fatal(err)
	}
	out := map[hub.QueueID]byte{}
	for id, mk := range snap.Active {
		out[id] = '-'
		if mk.Isolated {
			out[id] = 'i'
		}
	}
	return out
}

// TestCleanAttemptClearsSuspect: a suspect with a death counted against it
// whose isolated delivery ends cleanly (here deferred by the next hop) was
// not the culprit: its interruptions are reset and the counted death
// taken back, durably. A panic stays counted.
func TestCleanAttemptClearsSuspect(t *testing.T) {
	spool := t.TempDir()
	id := putWithState(t, spool, queue.State{Interrupted: 3, Crashes: 2, Deaths: 1}, "a@partner.example")
	sm := &fake{result: deferAll}
	h := start(t, config(t, spool, `poison_threshold = 3`), &fake{result: ok}, sm, nil)
	eventually(t, "one attempt", func() bool { return len(sm.seen()) >= 1 })
	eventually(t, "suspect cleared", func() bool {
		h.tr.mu.Lock()
		e := h.tr.msgs[id]
		h.tr.mu.Unlock()
		e.mu.Lock()
		defer e.mu.Unlock()
		m, err := h.tr.view(e)
		return err == nil && m.Interrupted == 0
	})
	h.close()
	if st := loadState(t, spool, id); st.Interrupted != 0 || st.Deaths != 0 || st.Crashes != 1 || st.Poisoned {
		t.Fatalf("state after a clean attempt: crashes %d, deaths %d, interrupted %d", st.Crashes, st.Deaths, st.Interrupted)
	}
}

// TestPanickingSuspectIsPoisoned: a suspect whose deliverer panics every
// time never ends cleanly, so its panics reach the threshold as before.
func TestPanickingSuspectIsPoisoned(t *testing.T) {
	spool := t.TempDir()
	putWithState(t, spool, queue.State{Interrupted: suspectAfter}, "crash@partner.example")
	var mu sync.Mutex
	panics := 0
	sm := &fake{result: func(int, delivery.Recipient) delivery.Result {
		mu.Lock()
		panics++
		mu.Unlock()
		panic("boom")
	}}
	h := start(t, config(t, spool, `poison_threshold = 2`), &fake{result: ok}, sm, nil)
	h.waitIdle()
	mu.Lock()
	defer mu.Unlock()
	if s := h.tr.Stats(); s.Poisoned != 1 || panics != 2 {
		t.Fatalf("Stats %+v after %d panics", s, panics)
	}
}
