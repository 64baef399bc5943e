package jsqueue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Slots shares each next hop's delivery limit among the hubs of a cluster
// (transport.HopSlots): a hop of limit n has n slots, keys of the KV
// bucket hubd_slots, and a hub delivers to it only while it holds one.
//
//	key slot.<h>.<i>   h: 16 hex digits of the hop's FNV-64a, i in 0..limit-1
//	value             the holder: "<node>/<nonce>", unique to one hold
//
// A slot is taken by creating its key (KV Create: fails if the key
// exists and is not deleted) and given back by deleting it, conditional
// on the revision of the hold, so a hub never frees a slot it lost. The
// bucket's TTL is the hold's lease: the holder rewrites its key every
// TTL/3 (one goroutine per held slot; a hub holds at most as many as its
// transport runs deliveries), so a long delivery keeps its slot and the
// slots of a hub that died expire after the TTL. The bucket writes a
// marker when a key expires (LimitMarkerTTL): without it an expiry is not
// seen by watchers (nats-server 2.15: checked by
// TestSlotsExpiryIsWatched).
//
// A hub whose every slot of a hop is taken waits for one to be freed:
// while it has waiters for the hop it watches the hop's keys (one watch
// and one goroutine per hop, shared by its waiters), and each delete or
// expiry is handed to one waiter, which tries that slot. A waiter scans
// every slot again every TTL/3 in case a change was missed.
//
// Slot indexes above a lowered limit are not taken any more and expire
// or are freed as their holders finish. During a partition a slot whose
// holder cannot refresh it expires while its delivery may still run: the
// limit holds except across a lease lost that way.
type Slots struct {
	kv      jetstream.KeyValue
	node    string
	ttl     time.Duration
	timeout time.Duration // of every call to the cluster
	log     *slog.Logger

	mu      sync.Mutex
	closed  bool
	closing chan struct{} // closed by Close: waiters give up
	held    map[*hold]struct{}
	watches map[string]*hopWatch // by hop hash
}

const (
	slotsBucket = "hubd_slots"
	// freedBuffer is how many freed slots a hop's watch holds for its
	// waiters; beyond it they are dropped and found by the waiters'
	// rescans.
	freedBuffer = 64
)

// errSlotsClosed is what Acquire answers after Close.
var errSlotsClosed = errors.New("jsqueue: slots closed")

// OpenSlots creates (or finds) the slots bucket with replicas (as the
// store's) and ttl (default 30 s): how long a hub that died keeps its
// slots. node names this hub in the slots it holds.
func OpenSlots(ctx context.Context, setup Setup, node string, replicas int, ttl time.Duration) (*Slots, error) {
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	if replicas == 0 {
		replicas = 3
	}
	kv, err := setup.EnsureKV(ctx, jetstream.KeyValueConfig{
		Bucket: slotsBucket, History: 1, TTL: ttl, LimitMarkerTTL: max(ttl, time.Second),
		Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", slotsBucket, err)
	}
	return &Slots{kv: kv, node: node, ttl: ttl, timeout: min(10*time.Second, ttl/2),
		log: slog.New(slog.DiscardHandler), closing: make(chan struct{}),
		held: map[*hold]struct{}{}, watches: map[string]*hopWatch{}}, nil
}

// SetLogger sets where lost slots are reported.
func (s *Slots) SetLogger(l *slog.Logger) {
	s.log = l.With("component", "jsqueue-slots")
}

// Close makes Acquire fail and stops refreshing the slots still held,
// which expire after the TTL unless released before (a release after
// Close still frees its slot).
func (s *Slots) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.closing)
	held := make([]*hold, 0, len(s.held))
	for h := range s.held {
		held = append(held, h)
	}
	s.mu.Unlock()
	for _, h := range held {
		h.stopRefresh()
	}
}

// hold is one slot this hub holds.
type hold struct {
	key   string
	token []byte // the value: this hold's own
	rev   uint64 // of the last write; the refresher's until done is closed
	lost  bool   // the refresher found the slot taken by another hold

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func (h *hold) stopRefresh() {
	h.stopOnce.Do(func() { close(h.stop) })
	<-h.done
}

// hopPrefix is the hop's part of its slots' keys: "slot.<h>.".
func hopPrefix(hop string) string {
	f := fnv.New64a()
	f.Write([]byte(hop))
	return fmt.Sprintf("slot.%016x.", f.Sum64())
}

// Acquire blocks until this hub holds one of limit slots of hop, or ctx
// ends; see transport.HopSlots. An error other than ctx's says the
// cluster did not answer.
func (s *Slots) Acquire(ctx context.Context, hop string, limit int) (func(), error) {
	limit = max(limit, 1)
	prefix := hopPrefix(hop)
	if h, err := s.scan(ctx, prefix, limit); h != nil || err != nil {
		return s.releaser(h), err
	}
	// All taken: watch first, then look again, so that a slot freed
	// after this look is seen.
	w, err := s.join(ctx, prefix)
	if err != nil {
		return nil, err
	}
	defer s.leave(prefix, w)
	rescan := time.NewTimer(s.ttl / 3)
	defer rescan.Stop()
	for {
		h, err := s.scan(ctx, prefix, limit)
		if h != nil || err != nil {
			return s.releaser(h), err
		}
		rescan.Reset(s.ttl / 3)
	wait:
		for {
			select {
			case key := <-w.freed:
				i, err := strconv.Atoi(strings.TrimPrefix(key, prefix))
				if err != nil || i >= limit {
					continue // above this hub's limit: not one to take
				}
				h, err := s.take(ctx, key)
				if h != nil || err != nil {
					return s.releaser(h), err
				}
			case <-rescan.C:
				break wait
			case <-s.closing:
				return nil, errSlotsClosed
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
}

// scan tries every slot of the hop once, from a random one (holds do not
// pile up on the first slots, which every scan would then try in vain).
// nil, nil: all taken.
func (s *Slots) scan(ctx context.Context, prefix string, limit int) (*hold, error) {
	first := rand.IntN(limit)
	for n := range limit {
		h, err := s.take(ctx, prefix+strconv.Itoa((first+n)%limit))
		if h != nil || err != nil {
			return h, err
		}
	}
	return nil, nil
}

// take creates key for a new hold and starts its refresher. nil, nil: the
// slot is taken.
func (s *Slots) take(ctx context.Context, key string) (*hold, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, errSlotsClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	token := s.node + "/" + strconv.FormatUint(rand.Uint64(), 36)
	h := &hold{key: key, token: []byte(token), stop: make(chan struct{}), done: make(chan struct{})}
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	rev, err := s.kv.Create(cctx, key, h.token)
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch), wrongLastSequence(err):
		// The latter two: deleted, and taken between Create's read and
		// its write (nats.go returns that write's error unmapped).
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("slot %s: %w: %w", key, ErrNoQuorum, err)
	}
	h.rev = rev
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.free(h) // Close ran meanwhile
		return nil, errSlotsClosed
	}
	s.held[h] = struct{}{}
	s.mu.Unlock()
	go s.refresh(h)
	return h, nil
}

// releaser is the release of h (nil: none).
func (s *Slots) releaser(h *hold) func() {
	if h == nil {
		return nil
	}
	var once sync.Once
	return func() { once.Do(func() { s.release(h) }) }
}

// release stops h's refresher and frees its slot, unless it was lost.
func (s *Slots) release(h *hold) {
	h.stopRefresh()
	s.mu.Lock()
	delete(s.held, h)
	s.mu.Unlock()
	if !h.lost {
		s.free(h)
	}
}

// free deletes h's key, conditional on h's revision. A key rewritten by
// another hold is left alone; one that cannot be deleted now expires
// after the TTL.
func (s *Slots) free(h *hold) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	err := s.kv.Delete(ctx, h.key, jetstream.LastRevision(h.rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		if rev, ours := s.ours(ctx, h); ours {
			err = s.kv.Delete(ctx, h.key, jetstream.LastRevision(rev))
		} else {
			return
		}
	}
	if err != nil {
		s.log.Warn("next-hop slot not freed; it expires", "slot", h.key, "ttl", s.ttl, "err", err)
	}
}

// ours reports whether h's key still holds h's token, and its revision:
// a write of ours that timed out may have landed all the same.
func (s *Slots) ours(ctx context.Context, h *hold) (uint64, bool) {
	e, err := s.kv.Get(ctx, h.key)
	if err != nil || !bytes.Equal(e.Value(), h.token) {
		return 0, false
	}
	return e.Revision(), true
}

// refresh rewrites h's key every TTL/3 until stopped or lost.
func (s *Slots) refresh(h *hold) {
	defer close(h.done)
	tick := time.NewTicker(s.ttl / 3)
	defer tick.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		rev, err := s.kv.Update(ctx, h.key, h.token, h.rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			if cur, ours := s.ours(ctx, h); ours {
				rev, err = s.kv.Update(ctx, h.key, h.token, cur)
			}
		}
		cancel()
		switch {
		case err == nil:
			h.rev = rev
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			h.lost = true
			s.log.Warn("next-hop slot lost: it expired and was taken again while its delivery runs", "slot", h.key)
			return
		default:
			s.log.Warn("next-hop slot not refreshed", "slot", h.key, "err", err)
		}
	}
}

// hopWatch watches a hop's slots for this hub's waiters.
type hopWatch struct {
	n      int           // waiters; guarded by Slots.mu
	ready  chan struct{} // closed once w or err is set
	w      jetstream.KeyWatcher
	cancel context.CancelFunc // ends w
	err    error
	freed  chan string // keys deleted or expired, each for one waiter
}

// join returns the hop's watch, started by its first waiter.
func (s *Slots) join(ctx context.Context, prefix string) (*hopWatch, error) {
	s.mu.Lock()
	hw := s.watches[prefix]
	first := hw == nil
	if first {
		hw = &hopWatch{ready: make(chan struct{}), freed: make(chan string, freedBuffer)}
		s.watches[prefix] = hw
	}
	hw.n++
	s.mu.Unlock()
	if first {
		// The watch lasts as long as its context (nats.go unsubscribes
		// when it ends); its creation is bounded by the client's
		// JetStream timeout.
		var wctx context.Context
		wctx, hw.cancel = context.WithCancel(context.Background())
		hw.w, hw.err = s.kv.Watch(wctx, prefix+"*", jetstream.UpdatesOnly())
		if hw.err == nil {
			go pumpFreed(hw)
		} else {
			hw.cancel()
			hw.err = fmt.Errorf("watch of slots %s*: %w: %w", prefix, ErrNoQuorum, hw.err)
		}
		close(hw.ready)
	}
	select {
	case <-hw.ready:
	case <-ctx.Done():
		s.leave(prefix, hw)
		return nil, ctx.Err()
	}
	if hw.err != nil {
		s.leave(prefix, hw)
		return nil, hw.err
	}
	return hw, nil
}

// leave ends a waiter's share of hw; the last one stops the watch.
func (s *Slots) leave(prefix string, hw *hopWatch) {
	s.mu.Lock()
	hw.n--
	last := hw.n == 0
	if last && s.watches[prefix] == hw {
		delete(s.watches, prefix)
	}
	s.mu.Unlock()
	// The first waiter sets w before it leaves, and the others leave
	// before it only while it is still there: the last one sees w.
	if last && hw.w != nil {
		hw.w.Stop()
		hw.cancel()
	}
}

// pumpFreed hands every slot deleted or expired to a waiter, until the
// watch is stopped. It reads the watch to its end: the watch's own
// delivery blocks while its channel is full.
func pumpFreed(hw *hopWatch) {
	for e := range hw.w.Updates() {
		if e == nil {
			continue
		}
		if op := e.Operation(); op == jetstream.KeyValueDelete || op == jetstream.KeyValuePurge {
			select {
			case hw.freed <- e.Key():
			default: // the waiters' rescans find it
			}
		}
	}
}
