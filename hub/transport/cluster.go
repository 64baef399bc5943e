package transport

import (
	"time"

	"hubd/hub"
	"hubd/hub/queue"
	"hubd/hub/tracking"
)

// Several hubs on one shared queue (hub/queue/jsqueue, docs/cluster.md):
// every message has one owner hub, whose transport alone works on it. Two
// calls move a message between transports, both made by the store:
//
//   - Adopt: this hub took the message over from a hub that died. It is
//     scheduled as Start schedules what it recovers.
//   - Disown: another hub took the message over from this one (this hub
//     was thought dead: a stall or a partition longer than the heartbeat's
//     TTL). The store already refuses this hub's writes and reads of it;
//     the transport forgets it as soon as no pass, delivery or DSN of it
//     runs, without a DSN or a tracking event: it is not settled, only
//     someone else's now.

// Adopt schedules m, a message this hub took over from from, a hub that
// died, and tracks it (RESUBMIT, Reference: from).
func (t *Transport) Adopt(m *queue.Message, from string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.started || t.closed {
		return // it is this hub's in the store: the next Start loads it
	}
	if _, dup := t.msgs[m.ID]; dup {
		return
	}
	if _, known := t.work.Note(m.ID); known {
		return // asleep here already
	}
	if t.track != nil {
		ev := t.event(m, queue.RecipientState{})
		ev.Event, ev.Source, ev.Reference = tracking.Resubmit, "CLUSTER", from
		t.track.Record(ev)
	}
	e := newEntry(m)
	e.suspect = suspect(m.State)
	t.msgs[m.ID] = e
	t.poisonIfCrashedLocked(e, t.cfg.Load().Hub)
	if !m.Poisoned {
		t.scheduleLoadedLocked(e, t.clock(), t.cfg.Load().Hub)
	}
	t.restLocked(e)
}

// disownPoll is how often Disown looks again while the message is busy.
const disownPoll = 50 * time.Millisecond

// Disown forgets message id, which another hub took over; see above. It
// returns at once and finishes within a minute (a delivery in flight ends
// by its own timeouts; its outcome cannot be persisted).
func (t *Transport) Disown(id hub.QueueID) {
	if t.disownNow(id) {
		return
	}
	go func() {
		tick := time.NewTicker(disownPoll)
		defer tick.Stop()
		for range time.Minute / disownPoll {
			<-tick.C
			if t.disownNow(id) {
				return
			}
		}
		t.log.Error("message taken over by another hub is still busy here; it is forgotten at its next pass", "id", id)
	}()
}

// disownNow forgets id unless a pass, a delivery or a DSN of it runs.
func (t *Transport) disownNow(id hub.QueueID) bool {
	t.mu.Lock()
	e := t.msgs[id]
	if e == nil {
		if _, known := t.work.Note(id); known {
			// Asleep: woken now, its pass reads it back and finds it gone
			// (the store no longer gives it to this hub: passFailed).
			t.work.Schedule(id, t.clock())
		}
		t.mu.Unlock()
		return true
	}
	e.mu.Lock()
	idle := !e.busy && !e.removing && len(e.inflight) == 0 && e.notifyMu.TryLock()
	if idle {
		e.notifyMu.Unlock()
		e.removing, e.dirty = true, false
		t.unparkLocked(e)
		delete(t.msgs, id)
		t.work.Forget(id)
	}
	e.mu.Unlock()
	t.mu.Unlock()
	if idle {
		t.depth.forget(e) // after the engine forgot it (see remove)
		t.log.Warn("message taken over by another hub: forgotten here", "id", id)
	}
	return idle
}
