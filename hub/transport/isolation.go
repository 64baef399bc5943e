package transport

import (
	"hubd/hub/queue"
)

// Crash attribution: which message a process death is blamed on.
//
// A panic in the categorizer or a deliverer is recovered and names its
// message: it counts one crash at once. A process death (SIGKILL, the OOM
// killer, a fatal runtime error, a power cut) names nobody: every message in
// flight at that moment (marked active: a pass or a delivery running, not
// work waiting in a queue) is equally likely to have caused it, and usually
// none did. So a death is only recorded against them (queue.State.
// Interrupted, with the crash delay: no attempt before the ladder's first
// rung), and counted as a crash only against a message it can be pinned on:
//
//  1. A message interrupted at suspectAfter deaths in a row (no clean pass
//     or delivery between), or with a death counted already, is a suspect.
//  2. Suspects are processed in isolation: at most one suspect has a pass
//     or a delivery in flight at any time (it may have several at once);
//     other suspects wait, without a goroutine each, until it has none.
//     Non-suspect mail runs beside it as usual.
//  3. A death while a suspect is the isolated one in flight (its mark says
//     so: queue.Mark.Isolated) counts one crash against it (queue.State.
//     Crashes and Deaths). The other messages in flight then are only
//     interrupted. At Hub.PoisonThreshold crashes, deaths and panics
//     together, the message is parked in the poison queue.
//  4. When a pass or a delivery of an interrupted message ends cleanly (no
//     panic, nothing else of it in flight), it was not the culprit: its
//     interruptions are reset and its counted deaths taken back (panics
//     stay counted). A message that crashes the process every time never
//     ends cleanly, so it still reaches the threshold.
//
// Why three deaths in a row before isolation, where one would do: under
// deaths that have nothing to do with the mail (an operator's kill -9, the
// OOM killer, a crash loop caused elsewhere), a healthy message must not
// be poisoned. The messages one death interrupts are all due again
// together (at their crash delay); isolated at once, they would run one by
// one, so the next death would very likely find one of them isolated (one
// count), and one more death in that message's own isolated run, a few
// tens of milliseconds under load, would poison it. Each interruption
// required first is one more death that must land while that very message
// is in flight. Measured with cmd/hubd's crash test (SIGKILL every 0.3 to
// 1.2 s under load, poison_threshold 2): with suspectAfter 1, 18 deaths
// were counted against healthy messages in 72 kills and one of 3 runs
// poisoned one; with 2, 6 in about 160 kills (a run would poison one a few
// percent of the time); with 3, none in 128. The cost: a message that
// really kills the process is parked after suspectAfter+PoisonThreshold
// deaths (5 by default) instead of 3, each after the crash delay, so a
// crash loop is still never a retry storm.
const suspectAfter = 3

// suspect reports whether a message in state st must be processed in
// isolation.
func suspect(st queue.State) bool {
	return st.Interrupted >= suspectAfter || st.Deaths > 0
}

// cleared returns st for a pass or delivery that ended cleanly: the
// message was not the cause of the deaths it was interrupted by.
func cleared(st queue.State) queue.State {
	st.Crashes -= st.Deaths
	st.Deaths, st.Interrupted = 0, 0
	return st
}

// isolation is the one slot for a suspect in flight. Guarded by
// Transport.mu.
type isolation struct {
	holder  *entry // the suspect in flight, nil when none
	running int    // its passes and deliveries admitted and not ended
	// waiting are suspects' passes and work items that found the slot
	// taken, oldest first.
	waiting []isoWaiter
}

type isoWaiter struct {
	e  *entry
	it *workItem // nil: a pass
}

// admitLocked takes the slot for one pass or delivery of suspect e, or
// reports that another suspect holds it. t.mu is held.
func (t *Transport) admitLocked(e *entry) bool {
	if t.iso.holder != nil && t.iso.holder != e {
		return false
	}
	t.iso.holder = e
	t.iso.running++
	return true
}

// releaseLocked ends one admitted pass or delivery of the holder; when it
// was the last, the slot goes to the oldest waiter (with every other waiter
// of the same message). A waiting work item goes back to the front of its
// next hop's queue, which admits it if it may start now (or it waits there
// for a connection like any other item). t.mu is held.
func (t *Transport) releaseLocked() {
	if t.iso.running--; t.iso.running > 0 {
		return
	}
	t.iso.holder = nil
	waiting := t.iso.waiting
	t.iso.waiting = nil
	var keep []isoWaiter
	for _, w := range waiting {
		if t.iso.holder != nil && t.iso.holder != w.e {
			keep = append(keep, w)
			continue
		}
		if w.it != nil {
			t.requeueLocked(w.it)
			continue
		}
		if !w.e.passWaiting {
			continue // started meanwhile by a dispatch of its own
		}
		w.e.passWaiting = false
		if w.e.busy || w.e.removing || t.closed {
			continue // a running pass reschedules it when it ends
		}
		if !w.e.suspect {
			t.startPassLocked(w.e, false)
		} else if t.admitLocked(w.e) {
			t.startPassLocked(w.e, true)
		}
	}
	// pumpLocked may have queued new waiters meanwhile; the older ones
	// keep their place ahead of them.
	t.iso.waiting = append(keep, t.iso.waiting...)
}

// waitPassLocked parks the pass of suspect e until the slot is free.
// t.mu is held.
func (t *Transport) waitPassLocked(e *entry) {
	if !e.passWaiting {
		e.passWaiting = true
		t.iso.waiting = append(t.iso.waiting, isoWaiter{e: e})
	}
}

// startPassLocked starts a pass over e; isolated: e holds the slot for it.
// t.mu is held.
func (t *Transport) startPassLocked(e *entry, isolated bool) {
	e.busy = true
	e.passWaiting = false
	t.queueJobLocked(job{e: e, isolated: isolated})
}
