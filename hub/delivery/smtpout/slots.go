package smtpout

import (
	"context"
	"sync"
	"time"

	"hubd/hub/delivery"
)

// Connection slots shared by the hubs of a cluster (docs/cluster.md).
//
// hub.max_per_domain_outbound_connections bounds the connections to one
// next hop. One hub enforces it by the number of deliveries it runs at once
// (hub/transport); several hubs sharing a queue would each open that many.
// With Options.Slots, every connection this deliverer opens holds one of
// the next hop's slots, shared by the cluster, from before its dial until
// it is closed: while it carries a transaction and while it waits idle in
// the pool for the next one. A dial waits for a free slot; a connection
// reused from the pool already has one. So the next hop sees at most the
// limit across the cluster, idle connections included.

// clusterIdleTimeout is the idle timeout with Slots (unless set).
const clusterIdleTimeout = 500 * time.Millisecond

// Slots shares each next hop's connection limit among the hubs of a
// cluster (hub/queue/jsqueue.Slots).
type Slots interface {
	// Acquire blocks until this hub holds one of limit slots of hop, or
	// ctx ends. release gives it back; it is called exactly once.
	Acquire(ctx context.Context, hop string, limit int) (release func(), err error)
}

// hopSlot is one slot held by this deliverer: for a dial, then for the
// connection it made. free gives it back once, however often it is called;
// a nil *hopSlot (no Slots configured) frees nothing.
type hopSlot struct {
	release func()
	once    sync.Once
}

func (s *hopSlot) free() {
	if s != nil {
		s.once.Do(s.release)
	}
}

// takeSlot acquires a slot of hop for a dial: nil, nil without Slots; a
// deferral when the cluster does not grant one (ctx ended, or no quorum).
func (d *Deliverer) takeSlot(ctx context.Context, hop delivery.NextHop) (*hopSlot, *delivery.Result) {
	if d.slots == nil {
		return nil, nil
	}
	limit := 1
	if d.slotLimit != nil {
		limit = max(1, d.slotLimit())
	}
	key := hop.String()
	d.slotMu.Lock()
	d.slotWaiters[key]++
	d.slotMu.Unlock()
	release, err := d.slots.Acquire(ctx, key, limit)
	d.slotMu.Lock()
	if d.slotWaiters[key]--; d.slotWaiters[key] == 0 {
		delete(d.slotWaiters, key)
	}
	d.slotMu.Unlock()
	if err != nil {
		return nil, &delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.3.0",
			Text: "no connection slot for " + hop.String() + " from the queue cluster: " + err.Error()}
	}
	return &hopSlot{release: release}, nil
}

// openWithSlot is open holding a slot of the hop: the connection it makes
// keeps the slot until it is closed; a failed open gives it back.
func (tr *transaction) openWithSlot(ctx context.Context, plain bool) (*conn, delivery.Result, nextAction) {
	slot, res := tr.d.takeSlot(ctx, tr.hop)
	if res != nil {
		res.Connection = false // the cluster's trouble, not the next hop's
		return nil, *res, nextHost
	}
	c, r, next := tr.open(ctx, plain)
	if c == nil || next != done {
		slot.free()
		return c, r, next
	}
	c.slot = slot
	return c, r, next
}

// slotWanted reports whether a dial of this deliverer waits for a slot of
// hop: a connection that would go idle then QUITs instead, so that the
// waiting dial gets its slot now rather than after the idle timeout.
func (d *Deliverer) slotWanted(hop delivery.NextHop) bool {
	if d.slots == nil {
		return false
	}
	d.slotMu.Lock()
	defer d.slotMu.Unlock()
	return d.slotWaiters[hop.String()] > 0
}
