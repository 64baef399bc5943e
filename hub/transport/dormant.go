package transport

import "hubd/hub"

// Sleep: a waiting message keeps no entry (issue 11: ≤ 300 B of RAM per
// queued message).
//
// A message with nothing in flight whose Message was dropped (evict.go)
// still had its entry: queue ID, locks, flags, its depth share, its place
// on a parked list — about 190 bytes and a map slot, for a million
// messages waiting on a dead next hop. Such a message falls asleep
// instead: its entry leaves Transport.msgs, and the two facts only the
// entry knew go into the word the work-lease seam keeps with it
// (queue.Work.SetNote, 64 bits):
//
//	bit 63      asleep
//	bit 62      woken for that next hop: no longer parked, due now, and
//	            its recipients waiting for the next hop are due at once
//	            (entry.wakeFor) when it gets its entry back
//	bits 47–61  the next hop whose queue it is parked on (park.go), by
//	            number (Transport.hopList; 0: not parked)
//	bits 27–46  the queue its pending recipients are counted in (depth.go),
//	            by the tracker's number for the name (0: none pending)
//	bits 24–26  their state in the depth counts
//	bits 0–23   how many they are
//
// What else is known of it is where it was before: its due time in the
// seam, its arrival in the depth tracker's arrival list (a key, no
// pointer), its key on its queue's parked list, and everything else in
// the store. The depth totals keep counting it: its share moved into the
// note, and comes back with the entry.
//
// It falls asleep (sleepLocked) when it is as plain as that: no pass,
// delivery, notify or active mark running or waiting, nothing only memory
// knows (dirty, a DSN to retry, recipients in the unreachable queue that a
// Reload routes), not a suspect, not held, not poisoned, its pending
// recipients all in one queue and state, and not woken or hinted for a
// queue (wakeFor, probeOf, parkHint). Held, poisoned and suspect messages
// are few and keep their entries.
//
// It wakes (wakeAsleepLocked: a new entry, Message still dropped, read back by
// loadLocked when needed) when anything needs its entry: the scheduler
// claims it (dispatch), its parked list pops it (a probe or a drain), or
// an operator acts on it (lookup). When every message parked on a queue
// is woken at once (its probe went elsewhere: wakeAllLocked), an asleep
// one only has its note say so and is made due: it gets its entry when
// the scheduler claims it, at the pace of the pass workers. Listings and
// the queue summary read an
// asleep message without waking it (arrival, asleepView). Both moves hold
// t.mu (and sleep e.mu too), so whoever finds a message in msgs or asleep
// under t.mu finds one or the other.
//
// An entry that fell asleep is detached: code that obtained the pointer
// before and locks e.mu later sees e.asleep and looks the message up again
// (lockLoaded, makeDue) or leaves it (rescheduleFrom: nothing of it is
// due that the seam does not have); its depth share is gone, so that a
// stray update counts nothing twice.

// The note's fields.
const (
	noteAsleep     = uint64(1) << 63
	noteWoken      = uint64(1) << 62
	noteHopShift   = 47
	noteHopMax     = 1<<15 - 1
	noteNameShift  = 27
	noteNameMax    = 1<<20 - 1
	noteStateShift = 24
	noteNMax       = 1<<24 - 1
)

// noteHop is the number of the next hop an asleep message is parked on (0:
// none).
func noteHop(note uint64) int { return int(note >> noteHopShift & noteHopMax) }

// hopNumLocked is q's next hop's number for notes, numbering it if it has
// none; false when there are too many. t.mu is held.
func (t *Transport) hopNumLocked(q *hopQueue) (int, bool) {
	if n, ok := t.hopNum[q.hop]; ok {
		return n, true
	}
	if len(t.hopList) >= noteHopMax {
		return 0, false
	}
	t.hopList = append(t.hopList, q.hop)
	t.hopNum[q.hop] = len(t.hopList)
	return len(t.hopList), true
}

// parkedQueueLocked is the queue an asleep message whose note is note is
// parked on (nil: none). A queue with parked messages is never dropped
// (dropIdleLocked), so it is its next hop's live queue. t.mu is held.
func (t *Transport) parkedQueueLocked(note uint64) *hopQueue {
	if note&noteWoken != 0 {
		return nil
	}
	return t.notedQueueLocked(note)
}

// notedQueueLocked is the live queue of the next hop note names (nil:
// none). t.mu is held.
func (t *Transport) notedQueueLocked(note uint64) *hopQueue {
	n := noteHop(note)
	if n == 0 || n > len(t.hopList) {
		return nil
	}
	return t.queues[t.hopList[n-1]]
}

// wakeParkedAsleepLocked wakes the asleep message id, parked on q (its
// note is note), without
// giving it its entry back (wakeAllLocked: a million of them would all
// come back to RAM at once): it is no longer parked, it is due now, and
// its note says it was woken for q, which its entry gets when the
// scheduler claims it (wakeAsleepLocked). t.mu is held.
func (t *Transport) wakeParkedAsleepLocked(id hub.QueueID, q *hopQueue, note uint64) {
	t.work.SetNote(id, note|noteWoken)
	q.nParked--
	t.work.Schedule(id, t.clock())
}

// sleepLocked puts e to sleep if it is as plain as the comment at the top
// says. e.mu and t.mu are held.
func (t *Transport) sleepLocked(e *entry) {
	if e.msg != nil || e.asleep || e.dirty || e.unreachable || e.notifyRetry != 0 || len(e.inflight) > 0 ||
		e.busy || e.removing || e.suspect || e.passWaiting || e.probeOf != nil || e.parkHint != nil ||
		e.wakeFor.Load() != nil || t.closed || t.msgs[e.id] != e {
		return
	}
	if !e.notifyMu.TryLock() {
		return
	}
	defer e.notifyMu.Unlock()
	if !e.markMu.TryLock() {
		return
	}
	defer e.markMu.Unlock()
	if e.active != nil {
		return
	}
	if _, known := t.work.Note(e.id); !known {
		return // not scheduled at all (it waits for an operator)
	}
	var hop uint64
	if q := e.parkedOn; q != nil {
		n, ok := t.hopNumLocked(q)
		if !ok {
			return
		}
		hop = uint64(n)
	}
	share, ok := t.depth.sleep(e)
	if !ok {
		return
	}
	t.work.SetNote(e.id, noteAsleep|hop<<noteHopShift|share)
	e.asleep = true
	// Detached: the note has its place on the parked list now, so that a
	// holder of the old pointer cannot take it off twice (makeDue).
	e.parkedOn = nil
	delete(t.msgs, e.id)
}

// wakeAsleepLocked gives the asleep message id an entry again and returns it;
// nil when id is not asleep. Its Message stays dropped (loadLocked). t.mu
// is held.
func (t *Transport) wakeAsleepLocked(id hub.QueueID) *entry {
	note, asleep := t.asleepLocked(id)
	if !asleep {
		return nil
	}
	e := &entry{id: id, parkedOn: t.parkedQueueLocked(note)}
	if note&noteWoken != 0 {
		if q := t.notedQueueLocked(note); q != nil {
			e.wakeFor.Store(q)
		}
	}
	t.depth.wake(e, note)
	t.work.SetNote(id, 0)
	t.msgs[id] = e
	return e
}

// asleepLocked reports whether id is asleep, with its note (the queue it
// is parked on: parkedQueueLocked). t.mu is held.
func (t *Transport) asleepLocked(id hub.QueueID) (note uint64, asleep bool) {
	note, known := t.work.Note(id)
	return note, known && note&noteAsleep != 0
}

// sleep moves e's depth share into a note's low 47 bits; false when it
// does not fit (held, poisoned, a suspect, spread over several queues or
// states, or numbers too large). e.mu is held (and t.mu, above).
func (d *depthTracker) sleep(e *entry) (uint64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := &e.depth
	if !s.counted || s.gone || s.held || s.poisoned || s.suspect || len(s.more) > 0 {
		return 0, false
	}
	var note uint64
	if s.first.n > 0 {
		num := d.nameNum[s.first.queue]
		if num == 0 || num > noteNameMax || s.first.n > noteNMax {
			return 0, false
		}
		note = uint64(num)<<noteNameShift | uint64(s.first.state)<<noteStateShift | uint64(s.first.n)
	}
	*s = depthShare{gone: true} // counted in the totals through the note now
	return note, true
}

// wake gives e, just woken, the depth share its note kept.
func (d *depthTracker) wake(e *entry, note uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e.depth = d.shareOf(note)
}

// shareOf is the depth share a note keeps. d.mu is held.
func (d *depthTracker) shareOf(note uint64) depthShare {
	s := depthShare{counted: true}
	num := int(note >> noteNameShift & noteNameMax)
	if num == 0 || num > len(d.nameList) {
		return s
	}
	s.first = depthCount{queue: d.nameList[num-1], state: depthState(note >> noteStateShift & 7), n: int32(note & noteNMax)}
	return s
}
