package transport

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/queue"
)

// TestRestartKeepsNextHopInRetry: after a restart, the messages waiting
// for a next hop in Retry are parked on it again at once, from the
// store's next-hop state (hopstate.go): no pass, no connection and no
// write per message, one probe at the recorded retry time; when the next
// hop answers, each is delivered once.
func TestRestartKeepsNextHopInRetry(t *testing.T) {
	const waiting = 100
	var up atomic.Bool
	var calls atomic.Int64
	h, _, clock, _, ids := startParking(t, waiting, "", &up, &calls)
	retryAt, _, _, _ := h.partnerQueue()
	spool := h.tr.cfg.Load().Hub.SpoolDir
	cfg := h.tr.cfg.Load()
	h.close()

	ls, err := queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Store: ls}
	remote := &fake{result: func(n int, r delivery.Recipient) delivery.Result {
		calls.Add(1)
		if up.Load() {
			return ok(n, r)
		}
		return unreachableResult(n, r)
	}}
	h2 := startStore(t, cfg, &fake{result: ok}, remote, clock.Now, store)
	at, parked, probing, busy := h2.partnerQueue()
	if parked != waiting+1 || !at.Equal(retryAt) || probing || busy != 0 {
		t.Fatalf("after the restart: %d parked, retry at %v (want %d, %v), probing %v, %d busy", parked, at, waiting+1, retryAt,
			probing, busy)
	}
	if n := store.marks.Load(); n != 0 {
		t.Errorf("%d passes or deliveries ran at start-up, want 0", n)
	}
	if n := store.updates.Load(); n != 0 {
		t.Errorf("%d state writes at start-up, want 0", n)
	}
	if n := h2.loaded(); n != 0 {
		t.Errorf("%d parked messages read into RAM at start-up, want 0", n)
	}
	if !strings.Contains(h2.logs.String(), "next hop still in retry after the restart") {
		t.Errorf("start-up does not say the next hop is still in Retry:\n%s", h2.logs.String())
	}
	clock.set(h2, retryAt.Add(time.Second))
	eventually(t, "the recorded retry time: one probe, parked again", func() bool {
		next, parked, probing, busy := h2.partnerQueue()
		return calls.Load() == 2 && next.After(retryAt) && parked == waiting+1 && !probing && busy == 0
	})
	up.Store(true)
	next, _, _, _ := h2.partnerQueue()
	clock.set(h2, next.Add(time.Second))
	h2.waitIdle()
	h2.waitGone(ids)
	if got, want := calls.Load(), int64(2+waiting+1); got != want {
		t.Errorf("%d attempts in all, want %d: the first, one probe after the restart, then each message once", got, want)
	}
	if hops := store.Hops(); len(hops) != 0 {
		t.Errorf("the next hop answered, yet the store keeps it in Retry: %+v", hops)
	}
}

// TestRestartForgetsIdleHops: a next hop recorded in Retry that nothing
// waits for at start-up (its mail left before the restart) has its retry
// state cleared, so new mail dials it at once; recovery clears it too.
func TestRestartForgetsIdleHops(t *testing.T) {
	spool := t.TempDir()
	ls, err := queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		t.Fatal(err)
	}
	gone := queue.HopState{Hop: "smtp:partner[[192.0.2.5]:25]", Until: time.Now().Add(time.Hour), Since: time.Now(),
		Attempts: 3, Reason: "connection refused"}
	if err := ls.SetHop(t.Context(), gone); err != nil {
		t.Fatal(err)
	}
	if err := ls.Close(); err != nil {
		t.Fatal(err)
	}
	ls, err = queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		t.Fatal(err)
	}
	remote := &fake{result: ok}
	h := startStore(t, config(t, spool, `quick_retry_interval = "1h"`), &fake{result: ok}, remote, nil, ls)
	if hops := ls.Hops(); len(hops) != 0 {
		t.Errorf("after a start with nothing waiting, the store still has next hops in Retry: %+v", hops)
	}
	id := h.submit("x\r\n", "a@partner.example")
	h.waitIdle()
	h.waitGone([]hub.QueueID{id})
	if n := len(remote.seen()); n != 1 {
		t.Errorf("%d attempts for new mail to the cleared next hop, want 1 at once", n)
	}
}
