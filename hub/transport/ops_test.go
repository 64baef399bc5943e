package transport

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/ops"
	"hubd/hub/queue"
	"hubd/hub/tracking"
	"hubd/internal/logbuf"
	"hubd/policy"
)

// startTracked is start with a tracking log in dir (shared across restarts).
func startTracked(t *testing.T, cfg *policy.Config, dir string, md, sm *fake, clock func() time.Time) *harness {
	t.Helper()
	h := &harness{t: t, maildir: md, smtp: sm, logs: &logbuf.Buffer{}}
	track, err := tracking.Open(tracking.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { track.Close() })
	tr, err := New(cfg, Options{
		Logger:     slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Deliverers: map[delivery.Kind]delivery.Deliverer{delivery.KindMaildir: md, delivery.KindSMTP: sm},
		Clock:      clock,
		Tracking:   track,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.tr = tr
	t.Cleanup(func() { h.close() })
	return h
}

func (h *harness) summary(id hub.QueueID) (ops.MessageSummary, bool) {
	h.t.Helper()
	l, err := h.tr.Messages(context.Background(), ops.MessageFilter{})
	if err != nil {
		h.t.Fatal(err)
	}
	for _, m := range l.Messages {
		if m.ID == string(id) {
			return m, true
		}
	}
	return ops.MessageSummary{}, false
}

// switchable is a deliverer result that defers until turned on.
type switchable struct {
	mu sync.Mutex
	on bool
}

func (s *switchable) set(on bool) { s.mu.Lock(); s.on = on; s.mu.Unlock() }
func (s *switchable) result(n int, r delivery.Recipient) delivery.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.on {
		return ok(n, r)
	}
	return deferAll(n, r)
}

// TestHoldSurvivesRestart: a held message is never attempted, also after a
// restart (Postfix's hold queue), is listed as held with its queue, and
// Message shows its headers, trace id and every attempt from the tracking
// log; Release makes it due at once.
func TestHoldSurvivesRestart(t *testing.T) {
	spool, trackDir := t.TempDir(), t.TempDir()
	cfg := config(t, spool, `quick_retry_interval = "1h"`)
	sw := &switchable{}
	h := startTracked(t, cfg, trackDir, &fake{result: ok}, &fake{result: sw.result}, nil)
	id := h.submit("Subject: held\r\nX-Long: a\r\n b\r\n\r\nbody\r\n", "carol@partner.example")
	eventually(t, "first attempt deferred", func() bool {
		r, _ := h.recipient(id, 0)
		return r.Status == queue.Deferred
	})
	if err := h.tr.Hold(context.Background(), id2s(id)); err != nil {
		t.Fatal(err)
	}
	d, err := h.tr.Message(context.Background(), id2s(id))
	if err != nil {
		t.Fatal(err)
	}
	if d.State != ops.StateHeld || d.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("state %q trace %q", d.State, d.TraceID)
	}
	if !slices.Contains(d.Headers, ops.Header{Name: "X-Long", Value: "a b"}) {
		t.Errorf("headers %+v", d.Headers)
	}
	if a := d.Recipients[0].Attempts; len(a) != 1 || a[0].Event != "DEFER" || a[0].Reply != "451 4.3.0 try later" {
		t.Errorf("attempts %+v", a)
	}
	h.close()

	sw.set(true)
	sm := &fake{result: sw.result}
	h = startTracked(t, cfg, trackDir, &fake{result: ok}, sm, nil)
	// A barrier: another message to the same next hop is delivered while
	// the held one stays.
	other := h.submit("x\r\n", "dave@partner.example")
	eventually(t, "other delivered", func() bool { _, queued := h.recipient(other, 0); return !queued })
	s, ok := h.summary(id)
	if !ok || s.State != ops.StateHeld || !slices.Contains(s.Queues, "smtp:partner[[192.0.2.5]:25]") {
		t.Fatalf("after restart: %+v (listed %v)", s, ok)
	}
	if got := sm.addrsDelivered(); slices.Contains(got, "carol@partner.example") {
		t.Fatalf("held message attempted: %v", got)
	}
	if err := h.tr.Retry(context.Background(), id2s(id)); !errors.Is(err, ops.ErrConflict) {
		t.Errorf("Retry of a held message: %v", err)
	}
	if err := h.tr.Release(context.Background(), id2s(id)); err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	if got := sm.addrsDelivered(); !slices.Contains(got, "carol@partner.example") {
		t.Fatalf("released message not delivered: %v", got)
	}
	if err := h.tr.Release(context.Background(), id2s(id)); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("Release of a gone message: %v", err)
	}
}

func id2s(id hub.QueueID) string { return string(id) }

// TestReleasePoison: a poisoned message released by the operator has its
// crash counts cleared, is tracked (POISON, "released by operator") and is
// delivered.
func TestReleasePoison(t *testing.T) {
	spool, trackDir := t.TempDir(), t.TempDir()
	var mu sync.Mutex
	crash := true
	sm := &fake{result: func(n int, r delivery.Recipient) delivery.Result {
		mu.Lock()
		defer mu.Unlock()
		if crash {
			panic("boom")
		}
		return ok(n, r)
	}}
	h := startTracked(t, config(t, spool, `poison_threshold = 2`), trackDir, &fake{result: ok}, sm, nil)
	id := h.submit("x\r\n", "crash@partner.example")
	h.waitIdle()
	if s, _ := h.summary(id); s.State != ops.StatePoisoned || !slices.Contains(s.Queues, "poison") {
		t.Fatalf("not poisoned: %+v", s)
	}
	qs, _ := h.tr.Queues(context.Background())
	if p := qs[len(qs)-1]; p.Name != "poison" || p.Messages != 1 || p.Recipients != 1 {
		t.Errorf("poison queue %+v", p)
	}
	mu.Lock()
	crash = false
	mu.Unlock()
	if err := h.tr.Release(context.Background(), id2s(id)); err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	if got := sm.addrsDelivered(); !slices.Contains(got, "crash@partner.example") {
		t.Fatalf("released message not delivered: %v", got)
	}
	var released bool
	tracking.Search(trackDir, tracking.Filter{QueueID: string(id), Event: tracking.Poison}, func(e tracking.Event) bool {
		released = released || (e.Reply == "released by operator" && e.Source == "ADMIN")
		return true
	})
	if !released {
		t.Error("no POISON event for the release")
	}
}

// TestDeleteWithNDR: deleting a deferred message with ndr fails its
// pending recipients with 5.3.0 and its sender gets a DSN (here a local
// mailbox); without ndr it goes silently. Both leave the spool.
func TestDeleteWithNDR(t *testing.T) {
	spool, trackDir := t.TempDir(), t.TempDir()
	md := &fake{result: ok}
	h := startTracked(t, config(t, spool, `quick_retry_interval = "1h"`), trackDir, md, &fake{result: deferAll}, nil)
	bounced := h.submit("Subject: bounce me\r\n\r\nx\r\n", "carol@partner.example")
	silent := h.submit("Subject: drop me\r\n\r\nx\r\n", "dave@partner.example")
	for _, id := range []hub.QueueID{bounced, silent} {
		eventually(t, "deferred", func() bool { r, _ := h.recipient(id, 0); return r.Status == queue.Deferred })
	}
	if err := h.tr.Delete(context.Background(), id2s(bounced), true); err != nil {
		t.Fatal(err)
	}
	if err := h.tr.Delete(context.Background(), id2s(silent), false); err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	var dsns []call
	for _, c := range md.seen() {
		if slices.Contains(c.addrs, "sender@example.com") {
			dsns = append(dsns, c)
		}
	}
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs to the sender, want 1", len(dsns))
	}
	if b := dsns[0].body; !strings.Contains(b, "Status: 5.3.0") || !strings.Contains(b, "carol@partner.example") ||
		!strings.Contains(b, "deleted from the queue by the administrator") {
		t.Errorf("DSN:\n%s", b)
	}
	if files := spoolIDs(t, spool); len(files) != 0 {
		t.Errorf("spool not empty: %v", files)
	}
	fails := 0
	tracking.Search(trackDir, tracking.Filter{Event: tracking.Fail}, func(e tracking.Event) bool {
		if e.Source == "ADMIN" {
			fails++
		}
		return true
	})
	if fails != 2 {
		t.Errorf("%d FAIL events from ADMIN, want 2", fails)
	}
	if err := h.tr.Delete(context.Background(), id2s(bounced), true); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

// TestRetryQueueProbesNow: a delivery queue in Retry is probed at once by
// RetryQueue, without waiting for its retry time (the clock never moves).
func TestRetryQueueProbesNow(t *testing.T) {
	spool := t.TempDir()
	clock := newFakeClock()
	var mu sync.Mutex
	down := true
	sm := &fake{result: func(n int, r delivery.Recipient) delivery.Result {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.4.1", Text: "connection refused", Connection: true}
		}
		return ok(n, r)
	}}
	h := start(t, config(t, spool, `quick_retry_interval = "1h"`), &fake{result: ok}, sm, clock.Now)
	h.submit("x\r\n", "a@partner.example")
	const name = "smtp:partner[[192.0.2.5]:25]"
	// Parked: the failed attempt is settled. (Queues counts the message in
	// the queue from the moment its delivery starts, as the depth does; a
	// RetryQueue before it parks finds nothing to probe with, and the
	// message parks after it: a race of its own, park.go's.)
	eventually(t, "queue in retry", func() bool {
		qs, _ := h.tr.Queues(context.Background())
		_, parked, _, _ := h.partnerQueue()
		return parked == 1 && slices.ContainsFunc(qs, func(q ops.QueueInfo) bool {
			return q.Name == name && q.State == StateRetry && q.Messages == 1 && strings.Contains(q.LastError, "refused")
		})
	})
	mu.Lock()
	down = false
	mu.Unlock()
	n, err := h.tr.RetryQueue(context.Background(), name, false)
	if err != nil || n != 1 {
		t.Fatalf("RetryQueue = %d, %v", n, err)
	}
	h.waitIdle()
	if got := len(sm.seen()); got != 2 {
		t.Errorf("%d attempts, want 2 (the failure, then the probe)", got)
	}
	if _, err := h.tr.RetryQueue(context.Background(), "smtp:nowhere", false); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("unknown queue: %v", err)
	}
	if _, err := h.tr.RetryQueue(context.Background(), "poison", false); !errors.Is(err, ops.ErrConflict) {
		t.Errorf("poison queue: %v", err)
	}
}

// TestRetryQueueBeforeParking: an operator's retry that comes after the
// queue went into Retry but before the failed message was parked on it
// still gets the message probed at once: it parks on a queue whose retry
// time has come, and goes as the probe (the clock never moves, so nothing
// else would wake it).
func TestRetryQueueBeforeParking(t *testing.T) {
	spool := t.TempDir()
	clock := newFakeClock()
	var down atomic.Bool
	down.Store(true)
	sm := &fake{result: func(n int, r delivery.Recipient) delivery.Result {
		if down.Load() {
			return delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.4.1", Text: "connection refused", Connection: true}
		}
		return ok(n, r)
	}}
	h := start(t, config(t, spool, `quick_retry_interval = "1h"`), &fake{result: ok}, sm, clock.Now)
	h.submit("x\r\n", "a@partner.example")
	const name = "smtp:partner[[192.0.2.5]:25]"
	eventually(t, "queue in retry", func() bool {
		h.tr.mu.Lock()
		defer h.tr.mu.Unlock()
		for _, q := range h.tr.queues {
			if q.hop.String() == name && q.failures > 0 {
				return true
			}
		}
		return false
	})
	down.Store(false)
	if _, err := h.tr.RetryQueue(context.Background(), name, false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the message probed and delivered", func() bool { return len(sm.seen()) == 2 })
	h.waitIdle()
}

// TestOpenMessageAndFilters: export returns the body as queued; the
// listing filters by sender, recipient, state, queue and age.
func TestOpenMessageAndFilters(t *testing.T) {
	spool := t.TempDir()
	h := start(t, config(t, spool, `quick_retry_interval = "1h"`), &fake{result: ok}, &fake{result: deferAll}, nil)
	body := "Subject: export\r\n\r\nline\r\n"
	id := h.submit(body, "carol@partner.example")
	eventually(t, "deferred", func() bool { r, _ := h.recipient(id, 0); return r.Status == queue.Deferred })
	rc, err := h.tr.OpenMessage(context.Background(), id2s(id))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != body {
		t.Errorf("export %q", got)
	}
	for _, c := range []struct {
		f    ops.MessageFilter
		want int
	}{
		{ops.MessageFilter{From: "SENDER@example.com"}, 1},
		{ops.MessageFilter{From: "<>"}, 0},
		{ops.MessageFilter{To: "carol@partner.example"}, 1},
		{ops.MessageFilter{To: "nobody@partner.example"}, 0},
		{ops.MessageFilter{State: ops.StateDeferred}, 1},
		{ops.MessageFilter{State: ops.StateHeld}, 0},
		{ops.MessageFilter{Queue: "smtp:partner[[192.0.2.5]:25]"}, 1},
		{ops.MessageFilter{Queue: "unreachable"}, 0},
		{ops.MessageFilter{OlderThan: time.Hour}, 0},
	} {
		l, err := h.tr.Messages(context.Background(), c.f)
		if err != nil || len(l.Messages) != c.want {
			t.Errorf("%+v: %d messages (%v), want %d", c.f, len(l.Messages), err, c.want)
		}
	}
	if _, err := h.tr.OpenMessage(context.Background(), "nope"); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
}

// TestTraceIDOfTraceparent: the trace ID is the second of the four parts
// of a W3C traceparent; anything else has none.
func TestTraceIDOfTraceparent(t *testing.T) {
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	for tp, want := range map[string]string{
		"00-" + id + "-00f067aa0ba902b7-01":     id,
		"00-" + id + "-00f067aa0ba902b7":        "",
		"00-" + id + "-00f067aa0ba902b7-01-xx":  "",
		"00-" + id[1:] + "-00f067aa0ba902b7-01": "",
		"":                                      "",
		"garbage":                               "",
	} {
		if got := traceID(tp); got != want {
			t.Errorf("traceID(%q) = %q, want %q", tp, got, want)
		}
	}
}
