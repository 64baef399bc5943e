package queue

import (
	"container/heap"
	"hash/maphash"
)

// workItem is LocalWork's record of one message: 56 bytes, the key inline.
//
// Times are Unix nanoseconds, 0 meaning none (see nanos). The heap orders
// items by their effective time (at): the lease end while leased, else the
// due time; an item with neither is not in the heap (pos -1).
type workItem struct {
	// due is when the message is next due (0: not due, it waits for an
	// event). While it is leased: the time Scheduled during the lease (0:
	// none), applied when the lease ends in Defer.
	due int64
	// until is when the current lease lapses; 0: not leased.
	until int64
	// rev is the revision handed out by the latest Claim of the message.
	rev uint64
	key Key
	// pos is the item's position in the heap, -1 when not in it. In a free
	// slot it is the next free slot, -1 ending the list.
	pos int32
	// lapsed counts the message's leases that lapsed (Lease.Lapsed).
	lapsed uint32
	// note is the holder's word kept with the message (Work.SetNote).
	note uint64
}

// at is the item's effective time: the key the heap orders by.
func (it *workItem) at() int64 {
	if it.until != 0 {
		return it.until
	}
	return it.due
}

// workTable holds LocalWork's items in a slab, finds them by key through an
// open-addressing hash index, and orders the ones with an effective time in
// a binary heap of slab slots. The caller holds LocalWork's mutex.
//
// Per message: the item (56 B, plus up to a quarter for the slab's append
// growth), an index bucket (5 to 11 B) and a heap slot with its time
// (12 B): 84 B measured at 1,000,000 (BenchmarkWorkScheduleMemory; 72 B
// before the item kept a note).
//
// Why not a Go map: at 1,000,000 messages a map[Key]uint32 measured 44.5
// B/entry (its tables were half full at that size) and map[Key]*workItem
// 104 B/entry with the item, against a budget of 80 B/message for all of
// it (the note, added since, costs 8 B more). The index here is a power-of-two []uint32 between three eighths and
// three quarters full, with linear probing and backward-shift deletion (no
// tombstones). Freed slots are reused from a free list threaded through
// pos. Neither the slab nor the index shrinks: they keep the high-water
// mark of the queue.
type workTable struct {
	items []workItem // the slab; slots in the free list are zero but for pos
	free  int32      // the first free slot, -1: none
	count int        // live items

	index []uint32 // slab slot + 1 per bucket, 0: empty bucket
	seed  maphash.Seed

	// The heap (dueOrder): slab slots, and beside each its workItem.at, so
	// that sifting compares times in this array instead of missing the
	// cache on two random slab items per level (at 1,000,000 messages that
	// made a claimed message cost ~6 µs instead of ~2 µs: BenchmarkWorkClaim).
	order   []uint32
	orderAt []int64
}

func newWorkTable() *workTable {
	return &workTable{free: -1, seed: maphash.MakeSeed()}
}

func (t *workTable) bucket(k Key) int {
	return int(maphash.Comparable(t.seed, k) & uint64(len(t.index)-1))
}

// lookup returns k's slot, or -1.
func (t *workTable) lookup(k Key) int32 {
	_, slot := t.find(k)
	return slot
}

// find returns k's bucket and slot, or -1, -1.
func (t *workTable) find(k Key) (int, int32) {
	if len(t.index) == 0 {
		return -1, -1
	}
	mask := len(t.index) - 1
	for b := t.bucket(k); ; b = (b + 1) & mask {
		s := t.index[b]
		if s == 0 {
			return -1, -1
		}
		if t.items[s-1].key == k {
			return b, int32(s - 1)
		}
	}
}

// add makes a fresh item for k, which must not be present, and returns
// its slot. The item is neither due nor leased.
func (t *workTable) add(k Key) int32 {
	if (t.count+1)*4 > len(t.index)*3 {
		t.grow()
	}
	var slot int32
	if t.free >= 0 {
		slot = t.free
		t.free = t.items[slot].pos
	} else {
		slot = int32(len(t.items))
		t.items = append(t.items, workItem{})
	}
	t.items[slot] = workItem{key: k, pos: -1}
	t.place(slot)
	t.count++
	return slot
}

// place puts slot into the first empty bucket from its key's.
func (t *workTable) place(slot int32) {
	mask := len(t.index) - 1
	b := t.bucket(t.items[slot].key)
	for t.index[b] != 0 {
		b = (b + 1) & mask
	}
	t.index[b] = uint32(slot) + 1
}

func (t *workTable) grow() {
	old := t.index
	t.index = make([]uint32, max(16, 2*len(old)))
	for _, s := range old {
		if s != 0 {
			t.place(int32(s - 1))
		}
	}
}

// remove forgets the item in slot: out of the heap, the index and the slab.
func (t *workTable) remove(slot int32) {
	it := &t.items[slot]
	if it.pos >= 0 {
		heap.Remove((*dueOrder)(t), int(it.pos))
	}
	b, _ := t.find(it.key)
	t.unindex(b)
	*it = workItem{pos: t.free}
	t.free = slot
	t.count--
}

// unindex empties bucket b and moves later buckets of its probe run back
// into the hole, so that every key stays reachable from its own bucket
// without tombstones (Knuth, TAOCP vol. 3, §6.4, Algorithm R).
func (t *workTable) unindex(b int) {
	mask := len(t.index) - 1
	t.index[b] = 0
	for j := (b + 1) & mask; t.index[j] != 0; j = (j + 1) & mask {
		home := t.bucket(t.items[t.index[j]-1].key)
		// The entry at j may move to the hole at b unless its home lies
		// cyclically in (b, j]: then b is before where its probe starts.
		if b <= j && (home <= b || home > j) || b > j && home <= b && home > j {
			t.index[b], t.index[j] = t.index[j], 0
			b = j
		}
	}
}

// reorder puts slot where its effective time belongs in the heap: in it,
// moved, or out of it when the item has no effective time.
func (t *workTable) reorder(slot int32) {
	it := &t.items[slot]
	switch at := it.at(); {
	case at == 0 && it.pos >= 0:
		heap.Remove((*dueOrder)(t), int(it.pos))
	case at != 0 && it.pos < 0:
		// heap.Push without boxing the slot into an interface: append,
		// then Fix sifts the new last element up.
		it.pos = int32(len(t.order))
		t.order = append(t.order, uint32(slot))
		t.orderAt = append(t.orderAt, at)
		heap.Fix((*dueOrder)(t), int(it.pos))
	case at != 0:
		t.orderAt[it.pos] = at
		heap.Fix((*dueOrder)(t), int(it.pos))
	}
}

// first returns the slot at the top of the heap (the earliest effective
// time), or -1 when the heap is empty.
func (t *workTable) first() int32 {
	if len(t.order) == 0 {
		return -1
	}
	return int32(t.order[0])
}

// dueOrder is workTable seen as a heap.Interface over order.
type dueOrder workTable

func (h *dueOrder) Len() int { return len(h.order) }

func (h *dueOrder) Less(i, j int) bool { return h.orderAt[i] < h.orderAt[j] }

func (h *dueOrder) Swap(i, j int) {
	h.order[i], h.order[j] = h.order[j], h.order[i]
	h.orderAt[i], h.orderAt[j] = h.orderAt[j], h.orderAt[i]
	h.items[h.order[i]].pos = int32(i)
	h.items[h.order[j]].pos = int32(j)
}

func (h *dueOrder) Push(x any) {
	slot := x.(uint32)
	h.items[slot].pos = int32(len(h.order))
	h.order = append(h.order, slot)
	h.orderAt = append(h.orderAt, h.items[slot].at())
}

// Pop drops the last element; it returns nothing, so that heap.Remove
// boxes no slot.
func (h *dueOrder) Pop() any {
	last := h.order[len(h.order)-1]
	h.items[last].pos = -1
	h.order = h.order[:len(h.order)-1]
	h.orderAt = h.orderAt[:len(h.orderAt)-1]
	return nil
}
