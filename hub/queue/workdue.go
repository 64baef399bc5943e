package queue

import (
	"time"

	"hubd/hub"
)

// Due is when id is next due: its due time, or while it is leased the
// time Scheduled since its Claim (applied when the lease ends); zero when
// it is not due or not known.
func (w *LocalWork) Due(id hub.QueueID) time.Time {
	if !id.Valid() {
		return time.Time{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	slot := w.t.lookup(keyOf(id))
	if slot < 0 {
		return time.Time{}
	}
	return timeOf(w.t.items[slot].due)
}
