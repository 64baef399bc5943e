package transport

import (
	"context"

	"hubd/hub/categorizer"
	"hubd/hub/delivery"
	"hubd/hub/queue"
	"hubd/policy"
)

// Next hops in Retry across a restart (queue.HopStore).
//
// A queue going into Retry, each failed probe, and its recovery are
// written to the store as the next hop's state (one HOP record each:
// O(1) per retry cycle, not per waiting message). At Start, a message
// whose every pending recipient is deferred for a next hop the store
// says is in Retry is parked on that hop's queue at once, as it was
// before the restart: no pass, no connection, no log line per message,
// and one probe at the recorded retry time. Without this, a restart with
// a million messages waiting on a dead destination ran a million passes
// to learn again, in one retry cycle, what the store knew.
//
// The queue is keyed by its delivery.NextHop, which a name does not
// give back: the first message that parks on a hop routes one of its
// recipients with the current configuration, and the hop's queue is
// created only if that route still names the recorded next hop (a
// Reload since may send the mail elsewhere: then nothing is parked and
// the passes route it). A store that keeps no next-hop state (not a
// HopStore) costs the old cycle.

// saveHop writes q's Retry state (or its end) to the store. t.mu is not
// held: the write waits for a group commit.
func (t *Transport) saveHop(q *hopQueue) {
	hs, ok := t.store.(queue.HopStore)
	if !ok {
		return
	}
	t.hopMu.Lock() // the latest state of q is the one the store keeps last
	defer t.hopMu.Unlock()
	t.mu.Lock()
	h := queue.HopState{Hop: q.hop.String()}
	if q.failures > 0 && t.queues[q.hop] == q {
		h.Until, h.Since, h.Attempts, h.Reason = q.retryAt, q.since, q.failures, q.lastError
	}
	t.mu.Unlock()
	if err := hs.SetHop(context.Background(), h); err != nil {
		t.log.Warn("cannot record the next hop's retry state", "queue", h.Hop, "err", err)
	}
}

// forgetIdleHopsLocked clears, after Start's load, the Retry state of
// every next hop no loaded message waits for (its mail left the queue
// before the restart, or a Reload routes it elsewhere): a queue in Retry
// exists while it holds or remembers work, and after a restart new mail
// for such a hop dials it at once, as it would for a queue dropped while
// idle. t.mu is held (Start: nothing else runs yet).
func (t *Transport) forgetIdleHopsLocked(ctx context.Context, r *retryAtLoad) {
	hs, ok := t.store.(queue.HopStore)
	if !ok {
		return
	}
	names := make([]string, 0, len(r.states))
	if r.states == nil { // an empty queue: Scan called nothing
		for _, h := range hs.Hops() {
			names = append(names, h.Hop)
		}
	}
	for name := range r.states {
		if r.queues[name] == nil {
			names = append(names, name)
		}
	}
	for _, name := range names {
		if err := hs.SetHop(ctx, queue.HopState{Hop: name}); err != nil {
			t.log.Warn("cannot clear the next hop's retry state", "queue", name, "err", err)
			continue
		}
		t.log.Info("next hop was in retry before the restart; nothing waits for it now, its retry state is cleared", "queue", name)
	}
}

// routeAsIs routes recipient rs of m with cfg, in memory, and returns its
// next hop if the categorizer delivers it to that address unchanged: no
// alias, list or owner in between.
func routeAsIs(cfg *policy.Config, m *queue.Message, rs queue.RecipientState) (delivery.NextHop, bool) {
	out, err := categorizeSafely(cfg, categorizer.Message{Size: m.Size}, []categorizer.Input{{Address: rs.Address, DSN: rs.DSN}})
	if err != nil || len(out) != 1 || out[0].Disposition != categorizer.Deliver || out[0].Address != rs.Address ||
		len(out[0].Lists) > 0 || out[0].Sender != "" {
		return delivery.NextHop{}, false
	}
	return out[0].NextHop, true
}

// retryAtLoad is what Start knows of the next hops in Retry.
type retryAtLoad struct {
	states map[string]queue.HopState // by name; nil until read
	queues map[string]*hopQueue      // created from them, by name
}

// parkAtLoadLocked parks e, just loaded, on the queue of the next hop in
// Retry that all its pending recipients wait for, and reports whether it
// did. e.msg is loaded; t.mu is held.
//
// Work a queue in Retry turned away was deferred in memory only (a
// queue going into Retry writes nothing per waiting message), so most
// such messages are loaded as they were queued: recipients never tried,
// perhaps not even expanded. They are routed here, in memory, with the
// current configuration (no store write, no log line); a message whose
// expansion would change anything (an alias, a list, a failure) is left
// to its pass. What parks them is set in memory as the deferral was
// before the restart, and dropped with the Message (evict.go).
func (t *Transport) parkAtLoadLocked(e *entry, r *retryAtLoad) bool {
	hs, ok := t.store.(queue.HopStore)
	if !ok {
		return false
	}
	if r.states == nil { // read at the first message: the store has scanned the log by then
		r.states, r.queues = map[string]queue.HopState{}, map[string]*hopQueue{}
		for _, h := range hs.Hops() {
			r.states[h.Hop] = h
		}
	}
	m := e.msg
	if len(r.states) == 0 || m.Held || m.Poisoned {
		return false
	}
	cfg := t.cfg.Load()
	name := ""               // the next hop every pending recipient waits for
	var key delivery.NextHop // its queue's key, once a recipient was routed to it
	routed := false
	var pending []int
	for i, rs := range m.Recipients {
		if rs.Status.Settled() {
			if !rs.Notified {
				return false // a DSN is owed: a pass queues it
			}
			continue
		}
		hop := rs.NextHop
		switch {
		case rs.Status == queue.Deferred && hop != "" && hop != unreachableQueue:
		case rs.Status == queue.Queued:
			if key, ok = routeAsIs(cfg, m, rs); !ok {
				return false // its expansion or routing changes something: the pass does it
			}
			hop, routed = key.String(), true
		default:
			return false
		}
		if name != "" && hop != name {
			return false
		}
		name = hop
		pending = append(pending, i)
	}
	st, inRetry := r.states[name]
	if len(pending) == 0 || !inRetry {
		return false
	}
	q := r.queues[name]
	if q == nil {
		if !routed {
			if key, ok = routeAsIs(cfg, m, m.Recipients[pending[0]]); !ok || key.String() != name {
				return false // routed elsewhere now: the passes decide
			}
		}
		if q = t.queues[key]; q == nil {
			q = &hopQueue{hop: key, suspended: t.suspended[name]}
			t.queues[key] = q
		}
		q.failures, q.retryAt, q.since, q.lastError = max(1, st.Attempts), st.Until, st.Since, st.Reason
		r.queues[name] = q
		t.scheduleWakeLocked(q)
		t.log.Info("next hop still in retry after the restart; its messages are parked", "queue", name,
			"retry_at", st.Until, "failures", q.failures, "err", st.Reason)
	}
	if !m.Expanded {
		// The envelope's own recipients, each routed as it is (checked
		// above): what expand would record, and does again on the pass.
		m.Expanded = true
	}
	for _, i := range pending {
		rs := &m.Recipients[i]
		if rs.Status == queue.Queued {
			rs.Status, rs.NextHop = queue.Deferred, name
			rs.LastReply = queue.Reply{Code: 451, Enhanced: "4.4.1", Text: retryText(q)}
			rs.NextAttempt = q.retryAt
		}
	}
	t.parkLocked(e, q)
	return true
}
