package transport

import (
	"fmt"
	"time"

	"hubd/policy"
)

// What Start does with each message its store hands back, and Adopt with
// each message taken over from a dead hub (cluster.go): poison it if it
// crashed too often, schedule it, and let it rest.

// poisonIfCrashedLocked parks e, found at Start or taken over, in the
// poison queue when its crashes reached the threshold: the process died
// processing it in isolation this often (or died after a panic's count).
// t.mu is held.
func (t *Transport) poisonIfCrashedLocked(e *entry, h policy.Hub) {
	m := e.msg
	if m.Poisoned || m.Crashes < h.PoisonThreshold {
		return
	}
	st := cloneState(m.State)
	st.Poisoned = true
	t.persist(e, st)
	t.recordPoison(m, m.Crashes, fmt.Sprintf(
		"crashed %d times (%d process deaths while it was the one suspect in flight)", m.Crashes, m.Deaths))
}

// scheduleLoadedLocked schedules e, found at Start or taken over and not
// parked: at its next due time, or now when it is settled but not removed
// (its final state was stored but its Remove was not: one pass removes
// it, and nothing else would ever schedule it). t.mu is held.
func (t *Transport) scheduleLoadedLocked(e *entry, now time.Time, h policy.Hub) {
	if due, ok := nextDue(e, now, h.DelayDSNAfter, h.MessageExpiration, ""); ok {
		t.scheduleLocked(e, due)
	} else if finished(e.msg.State) {
		t.scheduleLocked(e, now)
	}
}

// restLocked counts e, found at Start or taken over, in the depth, and
// drops what it need not keep in RAM while it waits (evict.go,
// dormant.go). t.mu is held.
func (t *Transport) restLocked(e *entry) {
	t.depth.update(e)
	e.mu.Lock()
	t.evictLocked(e)
	t.sleepLocked(e)
	e.mu.Unlock()
}
