package daemon

import (
	"context"
	"fmt"
	"time"

	"hubd/hub/delivery/smtpout"
	"hubd/hub/queue"
	"hubd/hub/queue/jsqueue"
	"hubd/internal/natsnode"
	"hubd/policy"
)

// The queue engine (docs/cluster.md): the local spool, opened by the
// transport itself, or the JetStream queue shared by the hubs of a
// cluster, opened here on an embedded NATS node or a connection to an
// existing cluster.

// slotTTL is how long a dead hub's next-hop connection slots outlive it
// (a live hub refreshes its own every third of it).
const slotTTL = 10 * time.Second

// trackingNode is the node named in tracking events: the queue block's
// node on a cluster, none on a single hub.
func trackingNode(cfg *policy.Config) string {
	if cfg.Queue.Engine == policy.QueueJetStream {
		return cfg.Queue.Node
	}
	return ""
}

// openQueue opens the JetStream queue when the queue block asks for it;
// nil, nil for the local spool. ctx bounds the wait for the cluster.
func (d *Daemon) openQueue(ctx context.Context, cfg *policy.Config) (queue.Store, error) {
	q := cfg.Queue
	if q.Engine != policy.QueueJetStream {
		return nil, nil
	}
	node, err := natsnode.Start(ctx, q, d.log)
	if err != nil {
		return nil, fmt.Errorf("queue cluster: %w", err)
	}
	s, err := jsqueue.Open(ctx, jsqueue.Options{Setup: node, Node: q.Node, Replicas: q.Replicas, Logger: d.log})
	if err != nil {
		node.Close()
		return nil, fmt.Errorf("queue cluster: %w", err)
	}
	slots, err := jsqueue.OpenSlots(ctx, node, q.Node, q.Replicas, slotTTL)
	if err != nil {
		s.Close()
		node.Close()
		return nil, fmt.Errorf("queue cluster: %w", err)
	}
	slots.SetLogger(d.log)
	d.nats, d.jsq, d.slots = node, s, slots
	d.log.Info("queue on JetStream", "node", q.Node, "replicas", q.Replicas, "embedded", q.Embedded())
	return s, nil
}

// startTakeover lets the JetStream queue hand this hub the messages of
// dead hubs, and take back those another hub took over, once the
// transport runs.
func (d *Daemon) startTakeover() {
	if d.jsq == nil {
		return
	}
	d.jsq.SetLost(d.Transport.Disown)
	d.jsq.StartTakeover(d.Transport.Adopt)
}

// slotsOrNil is the next hops' shared connection slots for smtpout: nil
// (no interface value holding a nil pointer) on a single hub.
func (d *Daemon) slotsOrNil() smtpout.Slots {
	if d.slots == nil {
		return nil
	}
	return d.slots
}

// closeQueue closes the slots and the NATS node after the transport
// closed the store and the deliverers their connections.
func (d *Daemon) closeQueue() {
	if d.slots != nil {
		d.slots.Close()
	}
	if d.nats != nil {
		d.nats.Close()
	}
}
