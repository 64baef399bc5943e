package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"hubd/hub/delivery/smtpout"
	"hubd/hub/ops"
	"hubd/hub/queue"
	"hubd/hub/queue/jsqueue"
	"hubd/internal/admin"
	"hubd/internal/clusterops"
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
	s, err := jsqueue.Open(ctx, jsqueue.Options{Setup: node, Node: q.Node, Replicas: q.Replicas, Logger: d.log,
		MarksDir: filepath.Join(cfg.Hub.SpoolDir, "jsmarks"), CrashDelay: cfg.Hub.QuickRetryInterval})
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

// opsQueue is the queue the admin API serves: on a cluster, the
// cluster's (internal/clusterops), which also starts answering the other
// hubs' requests for this hub's transport; on a single hub, the transport.
func (d *Daemon) opsQueue() (ops.Queue, error) {
	if d.nats == nil {
		return d.Transport, nil
	}
	c := clusterops.New(clusterops.Options{Local: d.Transport, Conn: d.nats.Conn(), Node: d.nats.Name(),
		Live: d.jsq.Live, Logger: d.log})
	if err := c.Serve(); err != nil {
		return nil, fmt.Errorf("queue cluster: %w", err)
	}
	d.cops = c
	return c, nil
}

// closeOps stops answering the other hubs' requests (before the transport
// they are answered by closes). Idempotent.
func (d *Daemon) closeOps() {
	if d.cops != nil {
		if err := d.cops.Close(); err != nil {
			d.log.Warn("cluster queue requests: close", "err", err)
		}
	}
}

// clusterStreams are the streams `hubctl cluster status` reports: the
// messages and their states (hub/queue/jsqueue).
var clusterStreams = []string{"HUBD_MSGS", "KV_hubd_state"}

// statusTimeout bounds the request for the live hubs in Cluster: without
// a quorum it is not answered.
const statusTimeout = 2 * time.Second

// Cluster is `hubctl cluster status`: the NATS node's view of the
// cluster and its streams, and the live hubs.
func (d *Daemon) Cluster(ctx context.Context) (admin.ClusterStatus, error) {
	if d.nats == nil {
		return admin.ClusterStatus{Engine: admin.EngineLocal,
			Note: "the queue engine is local: this hub keeps its queue in its own spool and shares it with no other hub (a cluster is queue { engine = \"jetstream\" })"}, nil
	}
	st, err := d.nats.Status(ctx, clusterStreams...)
	if err != nil {
		return admin.ClusterStatus{}, err
	}
	cs := admin.ClusterStatus{Engine: admin.EngineJetStream, Node: d.nats.Name(), Mode: st.Mode,
		Connected: st.Connected, Server: st.Server, Cluster: st.Cluster, Quorum: st.Quorum, MetaLeader: st.MetaLeader,
		ClusterSize: st.ClusterSize, QuorumNeeded: st.QuorumNeeded, PeersFrom: st.PeersFrom, Peers: clusterPeers(st.Peers),
		Errors: st.Errors}
	for _, s := range st.Streams {
		cs.Streams = append(cs.Streams, admin.ClusterStream{Name: s.Name, Replicas: s.Replicas, Leader: s.Leader,
			Quorum: s.Quorum, Messages: s.Messages, Peers: clusterPeers(s.Peers), Error: s.Error})
	}
	lctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	if cs.Hubs, err = d.jsq.Live(lctx); err != nil {
		cs.HubsError = err.Error()
	}
	return cs, nil
}

func clusterPeers(ps []natsnode.Peer) []admin.ClusterPeer {
	var out []admin.ClusterPeer
	for _, p := range ps {
		out = append(out, admin.ClusterPeer{Name: p.Name, Leader: p.Leader, Current: p.Current, Offline: p.Offline,
			ActiveNS: p.ActiveNS, Lag: p.Lag})
	}
	return out
}

// queueStatus is the queue section of `hubctl status`; on a cluster,
// whether this hub's heartbeat is acknowledged (jsqueue.Store.Health):
// no request is made.
func (d *Daemon) queueStatus() admin.QueueStatus {
	if d.jsq == nil {
		return admin.QueueStatus{Engine: admin.EngineLocal}
	}
	ok, since, lastErr := d.jsq.Health()
	if !d.nats.Healthy() {
		why := "not connected to the NATS cluster"
		if ok {
			since = time.Time{} // the heartbeat has not failed yet
		} else {
			why += "; last heartbeat: " + lastErr
		}
		ok, lastErr = false, why
	}
	qs := admin.QueueStatus{Engine: admin.EngineJetStream, Node: d.nats.Name(), Quorum: &ok, Since: since.UTC()}
	if !ok {
		qs.Error = lastErr
	}
	return qs
}

// closeQueue closes the slots and the NATS node after the transport
// closed the store and the deliverers their connections.
func (d *Daemon) closeQueue() {
	d.closeOps()
	if d.slots != nil {
		d.slots.Close()
	}
	if d.nats != nil {
		d.nats.Close()
	}
}
