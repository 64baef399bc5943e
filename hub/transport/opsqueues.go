package transport

import (
	"context"
	"slices"
	"time"

	"hubd/hub/ops"
	"hubd/hub/queue"
)

// Queues lists the delivery queues (with work, in Retry or suspended, and
// the next hops deferred recipients wait for), then "submission",
// "unreachable" and "poison". A held message is counted in the queue it
// waits in, as Exchange shows a suspended message in its queue.
//
// The counts come from the depth shares (depth.go), so that they agree
// with the queue depth metrics and no message is read for them. A queue's
// next retry and last error are its next hop's while it is in Retry (the
// probe's time and the error that put it there); otherwise they come from
// its deferred recipients (the earliest retry, the oldest message's
// reply), which only the messages know: those with deferred recipients in
// such a queue are read, from the store when they wait with their Message
// dropped. A million messages parked on a dead next hop cost no read.
func (t *Transport) Queues(ctx context.Context) ([]ops.QueueInfo, error) {
	st := t.opsState()
	byName := map[string]*ops.QueueInfo{}
	var names []string
	add := func(name, kind, state string) *ops.QueueInfo {
		qi := &ops.QueueInfo{Name: name, Kind: kind, State: state}
		byName[name] = qi
		names = append(names, name)
		return qi
	}
	for _, h := range st.hops {
		qi := add(h.name, h.kind, h.state)
		qi.Active, qi.NextRetry, qi.LastError = h.active, h.retryAt.UTC(), h.lastError
		if h.retryAt.IsZero() {
			qi.NextRetry = time.Time{}
		}
		if h.suspended {
			qi.Override = "suspended (runtime override)"
		}
	}
	for name := range st.suspended {
		if byName[name] == nil {
			add(name, hopKind(name), StateSuspended).Override = "suspended (runtime override)"
		}
	}
	special := []string{submissionQueue, unreachableQueue, poisonQueue}
	for _, name := range special {
		state := StateReady
		if name == poisonQueue {
			state = StateSuspended // never delivered from: only released by an operator
		}
		add(name, name, state)
	}
	// needsRecipients: the queue's next retry or last error comes from
	// its deferred recipients.
	needsRecipients := func(qi *ops.QueueInfo) bool {
		return qi.Name != poisonQueue && (qi.State != StateRetry || qi.LastError == "")
	}
	var deferred []arrival // messages to read for that, oldest first
	err := t.walk(ctx, firstPos, 4*walkChunk, func(a arrival) bool {
		var in []string // the queues counted for this message
		read := false
		for _, c := range a.rcpts {
			name := c.queue
			qi := byName[name]
			if qi == nil {
				qi = add(name, hopKind(name), StateReady)
			}
			if !slices.Contains(in, name) {
				in = append(in, name)
				qi.Messages++
				if at := time.Unix(0, a.pos.arrived).UTC(); qi.Oldest.IsZero() || at.Before(qi.Oldest) {
					qi.Oldest = at
				}
			}
			qi.Recipients += int(c.n)
			if name == submissionQueue && a.e != nil && t.passRunning(a.e) {
				qi.Active += int(c.n)
				qi.State = StateActive
			}
			read = read || (c.state == depthDeferred && needsRecipients(qi))
		}
		if read {
			deferred = append(deferred, a)
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	for _, a := range deferred {
		mv, ok := t.arrivalView(a, st)
		if !ok {
			continue
		}
		for i, r := range mv.st.Recipients {
			name, _ := mv.where(i)
			qi := byName[name]
			if qi == nil || r.Status != queue.Deferred || !mv.waiting(i) || mv.st.Held || name == poisonQueue {
				continue
			}
			if qi.State != StateRetry && (qi.NextRetry.IsZero() || r.NextAttempt.Before(qi.NextRetry)) {
				qi.NextRetry = r.NextAttempt.UTC()
			}
			if qi.LastError == "" {
				qi.LastError = replyString(r.LastReply)
			}
		}
	}
	// Delivery queues by name, then the three of the hub's own.
	hops := slices.DeleteFunc(slices.Clone(names), func(n string) bool { return slices.Contains(special, n) })
	slices.Sort(hops)
	out := make([]ops.QueueInfo, 0, len(names))
	for _, n := range append(hops, special...) {
		out = append(out, *byName[n])
	}
	return out, nil
}

// passRunning reports whether a pass over e (categorization, routing)
// runs now.
func (t *Transport) passRunning(e *entry) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return e.busy
}

// pendingHopNames are the next hops pending recipients wait for, from the
// depth shares; and those a poisoned message's deferred recipients waited
// for, read from the poison queue (operators suspend a queue by the name
// a listing showed them).
func (t *Transport) pendingHopNames() map[string]bool {
	names := map[string]bool{}
	var poisoned []*entry
	t.walk(context.Background(), firstPos, 4*walkChunk, func(a arrival) bool {
		for _, c := range a.rcpts {
			if q := c.queue; q != submissionQueue && q != unreachableQueue && q != poisonQueue {
				names[q] = true
			}
		}
		if a.poisoned && a.e != nil { // a poisoned message never sleeps (dormant.go)
			poisoned = append(poisoned, a.e)
		}
		return true
	})
	for _, e := range poisoned {
		e.mu.Lock()
		if m, err := t.view(e); err == nil {
			for _, r := range m.Recipients {
				if r.Status == queue.Deferred && r.NextHop != "" && r.NextHop != unreachableQueue {
					names[r.NextHop] = true
				}
			}
		}
		e.mu.Unlock()
	}
	return names
}
