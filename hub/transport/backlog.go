package transport

import (
	"time"

	"hubd/hub/delivery"
	"hubd/hub/queue"
)

// Backlog: what a next hop slower than the mail for it costs.
//
// A pass routes a message's due recipients into work items, one per next
// hop (route), and each item waits in its queue for a connection
// (pumpLocked). An item holds its message's entry and Message in RAM. A
// next hop that is live but slower than the mail for it (a remote taking
// seconds per message at its connection limit, a queue an operator
// suspended) takes items more slowly than the passes make them: with a
// million messages due for it, it would hold a million items. So the
// delivery stage is bounded by configuration like the passes are
// (schedule.go), by the same parking that holds a next hop in Retry
// (park.go):
//
//   - A queue holds at most backlogCap items. A pass whose work item would
//     go beyond that, or into a queue that already has messages parked on
//     it (they were there first), parks the message on the queue instead
//     of queueing the item (holdBackLocked). Its recipients for the queue
//     are no longer in flight and are marked, in memory, as waiting for it
//     (NextHop names the queue; their status stays Queued or Deferred, and
//     no attempt is counted). Parked, the message is due only at its
//     deadlines (nextDue), and it falls asleep like any parked message
//     (dormant.go).
//   - The queue wakes its parked messages oldest first, a batch at a time,
//     as its items go (drainLocked, the drain of a next hop back from
//     Retry). A woken message's pass queues its item whatever the backlog:
//     it was woken for that queue. So a queue holds at most about
//     backlogCap items plus a batch, and new mail takes its turn behind
//     the parked.
//   - A message is parked on one queue at a time. If a pass finds a second
//     queue backlogged for it (or the message is parked on another queue
//     already), its recipients for that queue wait in memory, without an
//     attempt counted, for backlogRecheck at most, and are routed again
//     (sooner if the message is woken and read back, which forgets the
//     wait): a message for two slow next hops is not held back by the
//     slower one, nor by one in Retry.
//   - Across all queues, the items waiting are bounded too
//     (maxWaitingItems): beyond it the scheduler claims no more passes
//     (passRoom) until the deliveries have taken half of them, so that many
//     next hops with a few items each cannot add up beyond configuration
//     either. The messages not claimed wait in the engine, asleep.
//
// Nothing of this is written to the store (evict.go): after a restart the
// messages are due, the passes route them, and the queues fill and park
// again. A message read back from the store has lost the marks; the next
// pass over it makes them again.

// backlogCap is how many work items a delivery queue holds before the
// passes park what they would add (holdBackLocked): a drain batch, so
// that its connections stay busy while the next batch's passes run.
func backlogCap(perDomain int) int { return drainBatch(perDomain) }

// maxWaitingItems bounds the work items waiting in all delivery queues
// together (passRoom): the room of sixteen backlogged queues.
func maxWaitingItems(perDomain int) int { return 16 * backlogCap(perDomain) }

// backlogRecheck is how long recipients wait for a second backlogged
// queue while their message is parked on another (holdBackLocked).
const backlogRecheck = time.Minute

// backloggedLocked returns the queue of hop if an item for it must not be
// queued now: its items are at backlogCap, or messages are parked on it
// and the pass was not woken for it (woken). nil when the item may go in,
// and for a queue in Retry before its retry time, which defers the item
// at once without holding anything (queueItemLocked). t.mu is held.
func (t *Transport) backloggedLocked(hop delivery.NextHop, woken *hopQueue) *hopQueue {
	q := t.queues[hop]
	if q == nil || q == woken {
		return nil
	}
	if q.failures > 0 && !q.suspended && t.clock().Before(q.retryAt) {
		return nil
	}
	if q.nParked > 0 || len(q.items) >= backlogCap(t.cfg.Load().Hub.MaxPerDomainOutboundConnections) {
		return q
	}
	return nil
}

// queueItemsLocked queues the work items of a pass over e that woken woke
// (nil: none), holding back those whose queue is backlogged (see the top):
// e is parked on the first such queue, and its recipients for any other
// wait backlogRecheck. e.mu and t.mu are held; e's pass is over.
func (t *Transport) queueItemsLocked(e *entry, items []*workItem, woken *hopQueue) {
	var st *queue.State // e's state, copied at the first item held back
	now := t.clock()
	for _, it := range items {
		q := t.backloggedLocked(it.hop, woken)
		if q == nil {
			t.enqueueLocked(it)
			continue
		}
		if st == nil {
			c := cloneState(e.msg.State)
			st = &c
		}
		name := q.hop.String()
		park := e.parkedOn == nil || e.parkedOn == q
		for _, i := range it.indexes {
			st.Recipients[i].NextHop = name
			if !park {
				st.Recipients[i].NextAttempt = now.Add(backlogRecheck)
			}
		}
		if park {
			t.parkLocked(e, q) // rescheduleFrom keeps it there
		}
		e.landed(it.indexes)
	}
	if st != nil {
		e.msg.State = *st
	}
}

// itemsTakenLocked counts n work items gone from the delivery queues
// (delivered, deferred or pulled), and lets the scheduler claim again when
// the waiting ones fall below half of maxWaitingItems. t.mu is held.
func (t *Transport) itemsTakenLocked(n int) {
	if n == 0 {
		return
	}
	half := maxWaitingItems(t.cfg.Load().Hub.MaxPerDomainOutboundConnections) / 2
	before := t.itemsWaiting
	t.itemsWaiting -= n
	if before >= half && t.itemsWaiting < half && t.sched != nil {
		t.sched.poke()
	}
}
