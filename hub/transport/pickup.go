package transport

import "hubd/hub"

// Queued reports whether the message id is in the queue (recovered or
// submitted since start). The maildrop pickup asks before it submits a file
// named by a reserved id, so that a file submitted by a pickup that died
// before removing it is not queued twice.
func (t *Transport) Queued(id hub.QueueID) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.msgs[id]
	if !ok {
		_, ok = t.asleepLocked(id)
	}
	return ok
}
