package transport

import (
	"hubd/hub/delivery"
)

// The transport's goroutines are bounded by configuration, never by the
// length of the queue (issue 11):
//
//   - one scheduler (schedule.go);
//   - passWorkers workers running the jobs below, one at a time each;
//   - at most Hub.MaxOutboundConnections deliveries: a delivery starts
//     only with a global slot in hand (pumpLocked), and a queue that finds
//     none waits in t.starved until a slot comes back.
//
// A due message does not get a goroutine of its own: its pass is a job in a
// FIFO that the workers take in order. So is the deferral of the work an
// unreachable next hop leaves waiting (a queue going into Retry releases
// everything it holds at once; with 20,000 waiting that used to be 20,000
// goroutines).

// passWorkers is how many passes (categorizer runs and routing) and
// retry deferrals run at once. Passes wait on the store (group commit), so
// more workers make bigger commit batches; beyond a few dozen they only
// add contention for the transport's lock.
const passWorkers = 32

// job is one unit of work for the workers: a pass over e, or (it set) the
// deferral of a work item whose next hop is in Retry.
type job struct {
	e        *entry
	isolated bool // a pass: e holds the isolation slot for it

	q   *hopQueue
	it  *workItem
	res []delivery.Result
}

// queueJobLocked hands j to the workers; it counts in t.wg until it is run
// or dropped. t.mu is held.
func (t *Transport) queueJobLocked(j job) {
	if t.closed {
		// Closing: the message stays as the store has it, for the next Start.
		if j.it == nil {
			j.e.busy = false
		}
		return
	}
	t.wg.Add(1)
	t.jobs = append(t.jobs, j)
	if j.it == nil {
		t.passesQueued++
	}
	t.jobsReady.Signal()
}

// worker runs jobs until Close. Jobs still queued at Close are dropped:
// their messages are on disk as the last persisted state says, and the
// next Start schedules them again.
func (t *Transport) worker() {
	defer t.workers.Done()
	t.mu.Lock()
	for {
		for len(t.jobs) == 0 && !t.closed {
			t.jobsReady.Wait()
		}
		if t.closed {
			for _, j := range t.jobs {
				if j.it == nil {
					j.e.busy = false
				}
				t.wg.Done()
			}
			t.jobs, t.passesQueued = nil, 0
			t.mu.Unlock()
			return
		}
		j := t.jobs[0]
		t.jobs[0] = job{}
		t.jobs = t.jobs[1:]
		if len(t.jobs) == 0 {
			t.jobs = nil // let the backing array go once the backlog is done
		}
		if j.it == nil {
			if t.passesQueued--; t.passesQueued == maxQueuedPasses/2 {
				t.sched.poke() // room for a claim again (schedule.go)
			}
		}
		t.mu.Unlock()
		if j.it == nil {
			t.process(j.e, j.isolated)
		} else {
			t.complete(j.q, j.it, j.res, inRetry, "")
			t.wg.Done()
		}
		t.mu.Lock()
	}
}

// startWorkersLocked starts the workers. t.mu is held.
func (t *Transport) startWorkersLocked() {
	for range passWorkers {
		t.workers.Add(1)
		go t.worker()
	}
}

// stopWorkers wakes the workers after closed was set, and waits for them.
func (t *Transport) stopWorkers() {
	t.mu.Lock()
	t.jobsReady.Broadcast()
	t.mu.Unlock()
	t.workers.Wait()
}

// slotFreeLocked reports whether one of the global delivery slots
// (Hub.MaxOutboundConnections) is free; if none is, it remembers q, which
// the next slot given back pumps again. Slots are taken and given back
// only under t.mu, so a free slot stays free until takeSlotLocked. t.mu is
// held.
func (t *Transport) slotFreeLocked(q *hopQueue) bool {
	if len(t.global) < cap(t.global) {
		return true
	}
	if !q.starved {
		q.starved = true
		t.starved = append(t.starved, q)
	}
	return false
}

// takeSlotLocked takes the free slot slotFreeLocked found. t.mu is held.
func (t *Transport) takeSlotLocked() { t.global <- struct{}{} }

// giveSlot returns a delivery's global slot and lets the queues that
// found none start, oldest first. A delivery holds its slot until its
// outcome is persisted (complete), so the deliveries running or settling
// are at most Hub.MaxOutboundConnections.
func (t *Transport) giveSlot() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.giveSlotLocked()
}

// giveSlotLocked is giveSlot with t.mu held.
func (t *Transport) giveSlotLocked() {
	<-t.global
	for len(t.starved) > 0 && len(t.global) < cap(t.global) {
		q := t.starved[0]
		t.starved[0] = nil
		t.starved = t.starved[1:]
		q.starved = false
		t.pumpLocked(q)
	}
	if len(t.starved) == 0 {
		t.starved = nil
	}
}
