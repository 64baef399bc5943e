package jsqueue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// connect opens a connection of its own to ns, as a hub would.
func connect(t testing.TB, ns *server.Server) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func openSlots(t testing.TB, ns *server.Server, node string, ttl time.Duration) *Slots {
	t.Helper()
	s, err := OpenSlots(context.Background(), PlainSetup(connect(t, ns)), node, 1, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// idle reports whether s holds no slot and watches no hop.
func (s *Slots) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held) == 0 && len(s.watches) == 0
}

// TestSlotsLimitHoldsAcrossHubs: three hubs, six acquirers each, one hop
// of limit 2: never more than two hold a slot at once, and every
// acquirer gets its turns. The TTL is long: the waiters' rescans come
// after the test's deadline, so every hand-over is a watched release.
func TestSlotsLimitHoldsAcrossHubs(t *testing.T) {
	ns := startServer(t, t.TempDir())
	const hop, limit, perHub, rounds = "smtp:out[mx:example.net]", 2, 6, 8
	var holders, peak, done atomic.Int64
	var wg sync.WaitGroup
	var hubs []*Slots
	for _, node := range []string{"a", "b", "c"} {
		s := openSlots(t, ns, node, 3*time.Minute)
		hubs = append(hubs, s)
		for range perHub {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range rounds {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					release, err := s.Acquire(ctx, hop, limit)
					cancel()
					if err != nil {
						t.Errorf("%s: Acquire: %v", node, err)
						return
					}
					n := holders.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					// The delivery: a round trip to the cluster while the
					// slot is held, so that holders overlap.
					if _, err := s.kv.Status(context.Background()); err != nil {
						t.Errorf("%s: %v", node, err)
					}
					holders.Add(-1)
					release()
					done.Add(1)
				}
			}()
		}
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(50 * time.Second):
		t.Fatalf("acquirers stuck: %d of %d acquisitions done", done.Load(), 3*perHub*rounds)
	}
	if p := peak.Load(); p > limit {
		t.Errorf("%d holders at once, limit %d", p, limit)
	} else if p < limit {
		t.Errorf("at most %d holder at once: the slots were not shared", p)
	}
	for _, s := range hubs {
		if !s.idle() {
			t.Errorf("hub %s holds or watches after every release", s.node)
		}
	}
}

// TestSlotsOfDeadHubExpire: a hub that stops refreshing its slots (it
// died: Close without release) loses them after the TTL to a waiting
// hub; a live hub's long hold is kept past the TTL.
func TestSlotsOfDeadHubExpire(t *testing.T) {
	ns := startServer(t, t.TempDir())
	ttl := time.Second
	const hop = "lmtp:mail.example.net:24"
	dead, live, waiter := openSlots(t, ns, "dead", ttl), openSlots(t, ns, "live", ttl), openSlots(t, ns, "waiter", ttl)
	ctx := context.Background()
	if _, err := dead.Acquire(ctx, hop, 2); err != nil {
		t.Fatal(err)
	}
	release, err := live.Acquire(ctx, hop, 2)
	if err != nil {
		t.Fatal(err)
	}
	dead.Close()
	began := time.Now()
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	got, err := waiter.Acquire(wctx, hop, 2)
	if err != nil {
		t.Fatalf("the dead hub's slot was not taken over: %v", err)
	}
	if d := time.Since(began); d < ttl/2 {
		t.Errorf("slot taken over after %v, before the TTL", d)
	}
	// The live hub's slot outlives two TTLs: the waiter does not get it.
	sctx, scancel := context.WithTimeout(ctx, 2*ttl)
	defer scancel()
	if _, err := waiter.Acquire(sctx, hop, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Acquire while the live hub holds its slot: %v", err)
	}
	release()
	got()
	waitFor(t, func() bool { return waiter.idle() && live.idle() })
}

// TestSlotsReleaseWakesWaiter: a slot released goes to a hub waiting for
// it through the watch, long before its rescan (TTL/3: a minute here).
func TestSlotsReleaseWakesWaiter(t *testing.T) {
	ns := startServer(t, t.TempDir())
	const hop = "smtp:out[mx:example.org]"
	a, b := openSlots(t, ns, "a", 3*time.Minute), openSlots(t, ns, "b", 3*time.Minute)
	ctx := context.Background()
	release, err := a.Acquire(ctx, hop, 1)
	if err != nil {
		t.Fatal(err)
	}
	taken := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		r, err := b.Acquire(wctx, hop, 1)
		if err == nil {
			r()
		}
		taken <- err
	}()
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.watches) == 1 })
	release()
	if err := <-taken; err != nil {
		t.Fatalf("Acquire after release: %v", err)
	}
	waitFor(t, func() bool { return a.idle() && b.idle() })
}

// TestSlotsExpiryIsWatched pins down the server behaviour the waiters
// rely on (nats-server 2.15): a key that expires by the bucket's TTL
// produces a watch event only when the bucket keeps limit markers
// (LimitMarkerTTL); without, it vanishes silently.
func TestSlotsExpiryIsWatched(t *testing.T) {
	ns := startServer(t, t.TempDir())
	js := connect(t, ns)
	ctx := context.Background()
	ttl := time.Second
	watch := func(bucket string, marker time.Duration) (jetstream.KeyValue, jetstream.KeyWatcher) {
		kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1, TTL: ttl, LimitMarkerTTL: marker})
		if err != nil {
			t.Fatal(err)
		}
		w, err := kv.Watch(ctx, "slot.*", jetstream.UpdatesOnly())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Stop() })
		if _, err := kv.Create(ctx, "slot.0", []byte("x")); err != nil {
			t.Fatal(err)
		}
		if e := <-w.Updates(); e == nil || e.Operation() != jetstream.KeyValuePut {
			t.Fatalf("%s: first event %v", bucket, e)
		}
		return kv, w
	}
	_, marked := watch("marked", ttl)
	plain, silent := watch("plain", 0)
	select {
	case e := <-marked.Updates():
		if e == nil || e.Key() != "slot.0" || e.Operation() != jetstream.KeyValuePurge {
			t.Fatalf("expiry event %v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event for an expiry with limit markers")
	}
	waitFor(t, func() bool {
		_, err := plain.Get(ctx, "slot.0")
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
	// Anything the expiry wrote would come before this.
	if _, err := plain.Put(ctx, "slot.1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if e := <-silent.Updates(); e == nil || e.Key() != "slot.1" {
		t.Fatalf("without limit markers, an expiry was seen: %v", e)
	}
}
