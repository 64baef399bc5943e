package connectors

// lruTable is the store under every per-source limit table (limits.go):
// a map whose entries are also kept on a doubly linked list in order of
// last use, so that finding, touching, adding and dropping the least
// recently used entry are all O(1). It is ~70 lines on purpose: a
// dependency (hashicorp/golang-lru) would bring its own locking and
// callbacks we do not need, and container/list stores values as `any`
// (an allocation and a type assertion per entry). Not safe for concurrent
// use: its owner's mutex guards it.

// lruTable holds at most max entries; adding one more evicts the least
// recently used.
type lruTable[K comparable, V any] struct {
	max  int
	m    map[K]*lruEntry[K, V]
	root lruEntry[K, V] // sentinel: root.next is the most recently used, root.prev the least
}

type lruEntry[K comparable, V any] struct {
	key        K
	val        V
	prev, next *lruEntry[K, V]
}

func newLRUTable[K comparable, V any](max int) *lruTable[K, V] {
	t := &lruTable[K, V]{max: max, m: map[K]*lruEntry[K, V]{}}
	t.root.next, t.root.prev = &t.root, &t.root
	return t
}

func (t *lruTable[K, V]) len() int { return len(t.m) }

// get returns key's value and makes it the most recently used.
func (t *lruTable[K, V]) get(key K) (V, bool) {
	e := t.m[key]
	if e == nil {
		var zero V
		return zero, false
	}
	t.unlink(e)
	t.pushFront(e)
	return e.val, true
}

// add stores a key that is not in the table as the most recently used.
// When the table is full, the least recently used entry makes room; it is
// returned so the caller can tell whether something that mattered was lost.
func (t *lruTable[K, V]) add(key K, val V) (evicted V, ok bool) {
	var e *lruEntry[K, V]
	if len(t.m) >= t.max && t.root.prev != &t.root {
		// Full: the oldest entry's list element carries the new key.
		e = t.root.prev
		evicted, ok = e.val, true
		t.unlink(e)
		delete(t.m, e.key)
		e.key, e.val = key, val
	} else {
		e = &lruEntry[K, V]{key: key, val: val}
	}
	t.m[key] = e
	t.pushFront(e)
	return evicted, ok
}

// oldest returns the least recently used entry.
func (t *lruTable[K, V]) oldest() (key K, val V, ok bool) {
	if e := t.root.prev; e != &t.root {
		return e.key, e.val, true
	}
	return key, val, false
}

// removeOldest drops the least recently used entry, if any.
func (t *lruTable[K, V]) removeOldest() {
	if e := t.root.prev; e != &t.root {
		t.unlink(e)
		delete(t.m, e.key)
	}
}

func (t *lruTable[K, V]) unlink(e *lruEntry[K, V]) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (t *lruTable[K, V]) pushFront(e *lruEntry[K, V]) {
	e.prev, e.next = &t.root, t.root.next
	e.prev.next, e.next.prev = e, e
}

// trim drops up to n entries from the least recently used end while stale
// says they carry nothing worth keeping; it stops at the first that does.
func (t *lruTable[K, V]) trim(n int, stale func(V) bool) {
	for range n {
		_, v, ok := t.oldest()
		if !ok || !stale(v) {
			return
		}
		t.removeOldest()
	}
}
