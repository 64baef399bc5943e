package jsqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"hubd/hub"
	"hubd/hub/queue"
)

// heartbeat writes this hub's entry in the nodes bucket; it expires after
// NodeTTL unless written again.
func (s *Store) heartbeat(ctx context.Context) error {
	hctx, cancel := s.ctx(ctx)
	defer cancel()
	_, err := s.nodes.Put(hctx, s.o.Node, []byte(s.o.Clock().UTC().Format(time.RFC3339Nano)))
	if err != nil {
		return fmt.Errorf("heartbeat of %s: %w: %w", s.o.Node, ErrNoQuorum, err)
	}
	return nil
}

// Live returns the hubs whose heartbeat has not expired, sorted. It asks
// the bucket's stream leader which subjects it holds (one request; no
// consumer, which could be placed on a peer that just died).
func (s *Store) Live(ctx context.Context) ([]string, error) {
	lctx, cancel := s.ctx(ctx)
	defer cancel()
	prefix := "$KV." + nodesBucket + "."
	info, err := s.nodesRaw.Info(lctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		keys = append(keys, strings.TrimPrefix(subj, prefix))
	}
	slices.Sort(keys)
	return keys, nil
}

// Scan calls fn with every message this hub owns, in stream order (oldest
// first). Messages of other hubs are left to them, dead or alive: a dead
// hub's are taken over by the heartbeat loop once this hub has itself been
// live for NodeTTL (StartTakeover), so that a hub starting into a cluster
// that just regained its quorum takes nothing from hubs whose heartbeats
// merely lapsed with it. Removed messages still in the stream (a Remove
// whose purge failed) are purged.
func (s *Store) Scan(ctx context.Context, fn func(*queue.Message) error) error {
	defer s.dropStaleMarks()
	return s.each(ctx, func(m *queue.Message, owner string, rev uint64, removed, object bool) error {
		if removed {
			if owner == s.o.Node {
				if err := s.purge(m.ID, object); err != nil {
					s.log.Warn("removed message not purged yet", "id", m.ID, "err", err)
				}
			}
			return nil
		}
		if owner != s.o.Node {
			return nil
		}
		s.mu.Lock()
		s.revs[m.ID] = rev
		if object {
			s.objects[m.ID] = true
		}
		s.mu.Unlock()
		s.recordDeath(m)
		return fn(m)
	})
}

// each calls fn with every message in the stream and its owner, the
// revision of its state entry (0: none) and whether it is removed. The
// state entries are read first (all of them: O(queue) memory for the
// length of a scan), then the records, one request each.
func (s *Store) each(ctx context.Context, fn func(m *queue.Message, owner string, rev uint64, removed, object bool) error) error {
	info, err := s.msgs.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.Msgs == 0 {
		return nil
	}
	states, err := s.allStates(ctx)
	if err != nil {
		return err
	}
	// The records one by one, each the next after the last (a direct get
	// with next_by_subj, which any replica answers): no consumer to place
	// on a peer that may be the one that just died.
	for seq := uint64(1); ; {
		gctx, cancel := s.ctx(ctx)
		raw, err := s.msgs.GetMsg(gctx, seq, jetstream.WithGetMsgSubject(msgSubject+"*"))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		seq = raw.Sequence + 1
		id := hub.QueueID(strings.TrimPrefix(raw.Subject, msgSubject))
		m, owner, err := decodeRecord(id, raw.Header)
		if err != nil {
			s.log.Error("unreadable message record skipped", "id", id, "err", err)
			continue
		}
		var rev uint64
		removed := false
		if e, ok := states[string(id)]; ok {
			var se stateEntry
			if err := json.Unmarshal(e.Value(), &se); err != nil {
				s.log.Error("unreadable message state skipped", "id", id, "err", err)
				continue
			}
			owner, rev, removed, m.State = se.Owner, e.Revision(), se.Removed, se.State
		}
		if err := fn(m, owner, rev, removed, isObject(raw.Header)); err != nil {
			return err
		}
	}
}

// allStates reads every state entry, bounded by the store's timeout for
// each entry it waits for (a watch whose consumer was on a hub that just
// died would otherwise wait for ever).
func (s *Store) allStates(ctx context.Context) (map[string]jetstream.KeyValueEntry, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.state.WatchAll(wctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	states := map[string]jetstream.KeyValueEntry{}
	idle := time.NewTimer(s.o.Timeout)
	defer idle.Stop()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("state watch closed")
			}
			if e == nil {
				return states, nil // the initial values are all in
			}
			states[e.Key()] = e
			idle.Reset(s.o.Timeout)
		case <-idle.C:
			return nil, fmt.Errorf("state watch: nothing for %v", s.o.Timeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// takeover is the heartbeat loop that also takes over dead hubs' messages.
type takeover struct {
	s     *Store
	adopt func(m *queue.Message, from string)

	stopOnce sync.Once
	stopc    chan struct{}
	done     chan struct{}

	mu    sync.Mutex
	since time.Time // the heartbeat has been acknowledged since; zero while it fails
	// For Health: the last heartbeat's error ("" when acknowledged), and
	// since when the heartbeat has been acknowledged, or failing.
	beatErr   string
	beatSince time.Time
}

// newTakeover is called once Open's heartbeat was acknowledged.
func newTakeover(s *Store) *takeover {
	return &takeover{s: s, stopc: make(chan struct{}), done: make(chan struct{}), beatSince: s.o.Clock()}
}

// Health reports whether this hub's last heartbeat was acknowledged (the
// cluster had the quorum to store it), since when the heartbeat has been
// acknowledged, or failing, and while it fails the last heartbeat's error.
// It makes no request: it lags the cluster by up to a heartbeat interval
// (NodeTTL/5) plus a write's timeout.
func (s *Store) Health() (ok bool, since time.Time, lastErr string) {
	t := s.takeover
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.beatErr == "", t.beatSince, t.beatErr
}

// setBeat records a heartbeat's outcome for Health.
func (t *takeover) setBeat(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if (err == nil) != (t.beatErr == "") {
		t.beatSince = t.s.o.Clock()
	}
	t.beatErr = ""
	if err != nil {
		t.beatErr = err.Error()
	}
}

// StartTakeover starts the heartbeat loop; adopt is given each message
// this hub took over from a dead one, and that hub's name (the
// transport schedules it: transport.Adopt).
func (s *Store) StartTakeover(adopt func(m *queue.Message, from string)) {
	s.takeover.adopt = adopt
	go s.takeover.run()
}

func (t *takeover) stop() {
	t.stopOnce.Do(func() { close(t.stopc) })
	if t.adopt != nil {
		<-t.done
	}
}

func (t *takeover) run() {
	defer close(t.done)
	beating := make(chan struct{})
	go func() { defer close(beating); t.beat() }()
	defer func() { <-beating }()
	s := t.s
	tick := time.NewTicker(s.o.NodeTTL / 5)
	defer tick.Stop()
	var leftoversAt time.Time
	prev := map[string]bool{}
	swept, shrank, liveFailing := false, false, false
	for {
		select {
		case <-t.stopc:
			return
		case <-tick.C:
		}
		now := s.o.Clock()
		healthySince := t.healthySince()
		if healthySince.IsZero() {
			swept = false // sweep again once healthy: hubs may have died meanwhile
			continue
		}
		live, err := s.Live(context.Background())
		if err != nil {
			if !liveFailing {
				s.log.Warn("cannot list the live hubs; take-overs wait", "err", err)
			}
			liveFailing = true
			continue
		}
		liveFailing = false
		cur := map[string]bool{}
		for _, n := range live {
			cur[n] = true
		}
		for n := range prev {
			if !cur[n] {
				shrank = true
			}
		}
		prev = cur
		// Take over only once this hub has been live for a whole NodeTTL:
		// by then every live hub has written its heartbeat again.
		if now.Sub(healthySince) < s.o.NodeTTL {
			continue
		}
		leftoversDue := !leftoversAt.IsZero() && !now.Before(leftoversAt)
		if swept && !shrank && !leftoversDue {
			continue
		}
		left, err := t.sweep(live, leftoversDue)
		swept, shrank, leftoversAt = true, false, time.Time{}
		switch {
		case err != nil:
			// The cluster is electing a leader for the stream (the dead
			// hub led it): sweep again at the next tick.
			s.log.Warn("take-over sweep ended early; trying again", "err", err)
			shrank = true
		case left > 0:
			// Left to the hubs they hash to; whatever they have not taken
			// within a NodeTTL (they died too), this hub takes.
			leftoversAt = now.Add(s.o.NodeTTL)
		}
	}
}

// beat writes the heartbeat every NodeTTL/5 until stop, in a goroutine
// of its own: a long sweep must not let it lapse.
func (t *takeover) beat() {
	s := t.s
	tick := time.NewTicker(s.o.NodeTTL / 5)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-t.stopc:
			return
		case <-tick.C:
		}
		err := s.heartbeat(context.Background())
		t.setBeat(err)
		if err != nil {
			if !failing {
				s.log.Error("heartbeat not acknowledged: if this lasts, other hubs take this hub's messages over", "err", err)
			}
			failing = true
			t.setHealthy(time.Time{})
			continue
		}
		if failing {
			s.log.Info("heartbeat acknowledged again")
		}
		failing = false
		if t.healthySince().IsZero() {
			t.setHealthy(s.o.Clock())
		}
	}
}

func (t *takeover) healthySince() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.since
}

func (t *takeover) setHealthy(since time.Time) {
	t.mu.Lock()
	t.since = since
	t.mu.Unlock()
}

// sweep takes over the messages of hubs not in live. Unless all, it takes
// only those whose ID hashes to this hub's place among the live ones, so
// that the survivors share the work; it returns how many it left to
// others.
func (t *takeover) sweep(live []string, all bool) (left int, err error) {
	s := t.s
	me := slices.Index(live, s.o.Node)
	if me < 0 {
		return 0, nil
	}
	alive := map[string]bool{}
	for _, n := range live {
		alive[n] = true
	}
	taken := map[string]int{}
	seen, lost := 0, 0
	ctx := context.Background()
	err = s.each(ctx, func(m *queue.Message, owner string, rev uint64, removed, object bool) error {
		seen++
		if removed || alive[owner] {
			return nil
		}
		if !all && int(hashOf(m.ID)%uint64(len(live))) != me {
			left++
			return nil
		}
		val, err := json.Marshal(stateEntry{Owner: s.o.Node, State: m.State})
		if err != nil {
			return err
		}
		wctx, cancel := s.ctx(ctx)
		next, err := s.state.Update(wctx, string(m.ID), val, rev)
		cancel()
		if err != nil {
			// Another hub took it first, or the cluster failed us: the
			// next sweep looks again.
			lost++
			return nil
		}
		s.mu.Lock()
		s.revs[m.ID] = next
		if object {
			s.objects[m.ID] = true
		}
		s.mu.Unlock()
		taken[owner]++
		t.adopt(m, owner)
		return nil
	})
	for owner, n := range taken {
		s.log.Warn("took over the messages of a hub whose heartbeat stopped", "from", owner, "messages", n)
	}
	s.log.Info("take-over sweep", "live", strings.Join(live, ","), "all", all, "records", seen,
		"taken", len(taken), "left_to_others", left, "taken_by_others", lost, "err", err)
	return left, err
}

func hashOf(id hub.QueueID) uint64 {
	h := fnv.New64a()
	h.Write([]byte(id))
	return h.Sum64()
}
