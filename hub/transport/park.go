package transport

import (
	"time"

	"hubd/hub"
	"hubd/hub/queue"
)

// Parking: what a next hop in Retry costs while it stays down.
//
// A next hop that cannot be reached goes into Retry (hopqueue.go): its
// waiting work is deferred without dialling, until its retry time. Were
// each message then rescheduled at that time, every retry cycle would run
// one pass per waiting message (categorize, route, deferral, log line,
// tracking event, active mark): with a million messages waiting on a dead
// destination, a million passes each cycle to learn what one connection
// tells. Instead the message is parked on the queue:
//
//   - A message whose work a queue in Retry deferred is put on that queue's
//     parked list (one pointer) and leaves the scheduler, except for its
//     deadlines: its expiry (Hub.MessageExpiration: it then fails 4.4.7
//     like any deferred message) and its delay DSN (Hub.DelayDSNAfter), and
//     the due times of recipients waiting for other next hops.
//   - At the queue's retry time one parked message is woken (scheduled
//     now) as the probe: its pass routes it to the queue, which dials once
//     (pumpLocked: one connection in Retry). Nothing else runs.
//   - If the probe reaches the next hop, the messages parked on the queue
//     are woken, oldest first, their recipients waiting for that queue due
//     at once whatever their retry time said — in batches (drainLocked): a
//     batch of drainBatch is woken, and the next one only when less than
//     half a batch of the woken work is left to deliver, so that a million
//     parked messages are not all read back into RAM at once to wait for a
//     connection. If the probe does not get through, the queue's retry
//     time moves up the ladder and the probe is parked again: O(1) work
//     per cycle, however many wait.
//   - If the probe's pass queued nothing for the queue (the message was
//     held, deleted or poisoned meanwhile, or a Reload routes it elsewhere),
//     every parked message is woken and routed again: what parked them may
//     no longer hold.
//   - An operator's retry of the queue (RetryQueue) moves its retry time to
//     now: the same probe, at once.
//
// A queue out of Retry parks messages too, the same way, when its backlog
// is full (backlog.go): its drain wakes them as its work items go.
//
// What is parked is only in memory: after a restart the messages are due
// at their persisted retry times and the queue learns again, in one cycle,
// that its next hop is down. A recipient's state while parked is the one
// its last deferral left (Deferred, NextHop naming the queue).
//
// Parked messages are guarded by Transport.mu: entry.parkedOn names the
// queue (or, asleep, the message's note: dormant.go), hopQueue.parked
// lists their keys in order of parking. A message that leaves (woken,
// removed) has parkedOn cleared and stays in the list until the list is
// next compacted or emptied; nParked counts the live ones, asleep or not;
// popping an asleep one wakes it. A
// woken entry's wakeFor names the queue whose deferred recipients are due
// at once (nextDue, route): its retry time may have moved up since they
// were deferred (an operator's retry), and the probe found it reachable.

// parkLocked puts e on q's parked list. t.mu is held.
func (t *Transport) parkLocked(e *entry, q *hopQueue) {
	if e.parkedOn == q {
		return
	}
	t.unparkLocked(e)
	e.parkedOn = q
	q.nParked++
	if len(q.parked) > 2*q.nParked+64 {
		live := q.parked[:0]
		for _, k := range q.parked {
			if t.parkedHereLocked(k.ID(), q) {
				live = append(live, k)
			}
		}
		q.parked = live
	}
	q.parked = append(q.parked, keyOf(e.id))
}

// parkedHereLocked reports whether the message id is parked on q, with an
// entry or asleep (dormant.go). t.mu is held.
func (t *Transport) parkedHereLocked(id hub.QueueID, q *hopQueue) bool {
	if e := t.msgs[id]; e != nil {
		return e.parkedOn == q
	}
	note, asleep := t.asleepLocked(id)
	return asleep && t.parkedQueueLocked(note) == q
}

// unparkLocked takes e off its queue's parked list, if it is on one.
// t.mu is held.
func (t *Transport) unparkLocked(e *entry) {
	if q := e.parkedOn; q != nil {
		q.nParked--
		e.parkedOn = nil
	}
}

// inRetryLocked reports whether q is the live queue of its next hop and in
// Retry: its work is deferred without dialling. t.mu is held.
func (t *Transport) inRetryLocked(q *hopQueue) bool {
	return q != nil && q.failures > 0 && t.queues[q.hop] == q
}

// scheduleWakeLocked arranges for q's probe at its retry time. t.mu is
// held.
func (t *Transport) scheduleWakeLocked(q *hopQueue) {
	t.sched.addHop(q, q.retryAt)
}

// wakeHop is called by the scheduler at a queue's retry time (at): unless
// something already probes it, one parked message is woken to do so.
func (t *Transport) wakeHop(q *hopQueue, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || !t.inRetryLocked(q) || !q.retryAt.Equal(at) || q.active > 0 || len(q.items) > 0 || q.probe != nil {
		return // recovered, a stale time, or a delivery will probe it anyway
	}
	t.wakeProbeLocked(q)
}

// wakeProbeLocked wakes the oldest message parked on q as its probe.
// t.mu is held.
func (t *Transport) wakeProbeLocked(q *hopQueue) {
	if e := t.popParkedLocked(q); e != nil {
		q.probe = e
		e.probeOf = q
		t.wakeLocked(e, q)
	}
}

// popParkedLocked takes the oldest message still parked on q off its list
// (nil: none left). t.mu is held.
func (t *Transport) popParkedLocked(q *hopQueue) *entry {
	for len(q.parked) > 0 {
		id := q.parked[0].ID()
		q.parked = q.parked[1:]
		if !t.parkedHereLocked(id, q) {
			continue // left the list before: woken, or parked elsewhere
		}
		e := t.msgs[id]
		if e == nil {
			e = t.wakeAsleepLocked(id) // dormant.go
		}
		t.unparkLocked(e)
		if !e.removing {
			return e
		}
	}
	q.parked = nil
	return nil
}

// wakeLocked makes e, just taken off q's parked list, due with its
// recipients waiting for q (route): due before anything else (wokenDue),
// since q waits for it. A running pass reschedules e itself when it ends,
// then due. t.mu is held.
func (t *Transport) wakeLocked(e *entry, q *hopQueue) {
	e.wakeFor.Store(q)
	if !e.busy {
		t.scheduleLocked(e, wokenDue)
	}
}

// wokenDue is the due time of a message a probe or a drain woke: earlier
// than any other, so that the scheduler claims it first. Were it due now,
// it would wait behind every message already due: after a start-up with
// a million due for a slow next hop (all of them due, most then parked on
// its backlog: backlog.go), the next hop sat idle for half a minute while
// the first passes went through the rest (deadhop -n 1000000 -slow 2ms).
var wokenDue = time.Unix(0, 0)

// drainBatch is how much work of a next hop that is reachable again is
// woken at once (drainLocked): enough to keep its connections busy while
// the next batch's passes run, few enough that the messages read back for
// it stay a bounded part of RAM.
func drainBatch(perDomain int) int { return max(256, 8*perDomain) }

// drainLocked wakes the next batch of the messages parked on q, a queue
// out of Retry, when less than half a batch of the work woken before is
// left: waiting in q, being delivered, or woken and not yet routed. It
// is called whenever q's work moves on (pumpLocked) and when a woken
// message's pass ends (process), so the drain never stalls. t.mu is held.
func (t *Transport) drainLocked(q *hopQueue) {
	if q.nParked == 0 || t.closed || t.inRetryLocked(q) || q.failures > 0 || q.suspended {
		return
	}
	batch := drainBatch(t.cfg.Load().Hub.MaxPerDomainOutboundConnections)
	pending := len(q.items) + q.active
	if pending > batch/2 {
		return
	}
	// The woken not yet routed: route clears wakeFor; a message that
	// left, or that a pass found held or poisoned, no longer counts.
	live := q.woken[:0]
	for _, e := range q.woken {
		if e.wakeFor.Load() == q && !e.removing {
			live = append(live, e)
		}
	}
	clear(q.woken[len(live):])
	q.woken = live
	pending += len(live)
	if pending > batch/2 {
		return
	}
	for ; pending < batch; pending++ {
		e := t.popParkedLocked(q)
		if e == nil {
			break
		}
		t.wakeLocked(e, q)
		q.woken = append(q.woken, e)
	}
	if q.nParked == 0 {
		q.woken = nil
	}
}

// wakeAllLocked wakes every message parked on q: their recipients waiting
// for it are due now. t.mu is held.
func (t *Transport) wakeAllLocked(q *hopQueue) {
	for len(q.parked) > 0 {
		id := q.parked[0].ID()
		q.parked = q.parked[1:]
		if note, asleep := t.asleepLocked(id); asleep {
			if t.parkedQueueLocked(note) == q {
				t.wakeParkedAsleepLocked(id, q, note) // stays asleep: dormant.go
			}
			continue
		}
		if e := t.msgs[id]; e != nil && e.parkedOn == q {
			t.unparkLocked(e)
			if !e.removing {
				t.wakeLocked(e, q)
			}
		}
	}
	q.parked = nil
}

// probeEndedLocked is called when a pass over e ends, after its work items
// were queued: if e was q's probe and queued nothing that will dial q,
// what parked the others may no longer hold, so they are all woken.
// t.mu is held.
func (t *Transport) probeEndedLocked(e *entry) {
	q := e.probeOf
	if q == nil {
		return
	}
	e.probeOf = nil
	if q.probe != e {
		return
	}
	q.probe = nil
	if q.active == 0 && len(q.items) == 0 && t.inRetryLocked(q) {
		t.log.Info("next hop's probe was not routed to it; waking the messages parked on it", "queue", q.hop.String(),
			"parked", q.nParked)
		t.wakeAllLocked(q)
	}
}

// parkingQueue is the queue in Retry e's deferred recipients wait for, if
// e is parked on one or retryQ (whose deferral of e's work just ended, now
// or while a pass over e ran) is one, and the name of its next hop. e.mu
// is held.
func (t *Transport) parkingQueue(e *entry, retryQ *hopQueue) (*hopQueue, string) {
	if e.msg.Held || e.msg.Poisoned {
		return nil, ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if retryQ != nil {
		// Kept until a reschedule decides: if a pass over e is running,
		// its own reschedule, not this one, parks e.
		e.parkHint = retryQ
	}
	q := e.parkedOn
	if q == nil && t.inRetryLocked(e.parkHint) {
		q = e.parkHint
	}
	if q == nil {
		return nil, ""
	}
	return q, q.hop.String()
}

// parked reports whether recipient r waits for the queue parkHop names.
// A recipient held back by the queue's backlog (backlog.go) is Queued or
// Deferred.
func parked(r queue.RecipientState, parkHop string) bool {
	return parkHop != "" && (r.Status == queue.Deferred || r.Status == queue.Queued) && r.NextHop == parkHop
}
