package main

import (
	"strings"
	"testing"
	"time"

	"hubd/internal/admin"
)

// TestPrintCluster: the tables of `hubctl cluster status` for a cluster of
// three embedded nodes, one of them down.
func TestPrintCluster(t *testing.T) {
	st := admin.ClusterStatus{Engine: "jetstream", Node: "a", Hubs: []string{"a", "b"}, Mode: "embedded",
		Connected: true, Server: "a", Cluster: "hubs", Quorum: true, MetaLeader: "b", ClusterSize: 3, QuorumNeeded: 2,
		PeersFrom: "b",
		Peers: []admin.ClusterPeer{{Name: "a", Current: true, ActiveNS: 300 * time.Millisecond},
			{Name: "b", Leader: true, Current: true}, {Name: "c", Offline: true, ActiveNS: 75 * time.Second, Lag: 12}},
		Streams: []admin.ClusterStream{
			{Name: "HUBD_MSGS", Replicas: 3, Leader: "a", Quorum: true, Messages: 42, Peers: []admin.ClusterPeer{
				{Name: "a", Leader: true, Current: true}, {Name: "b", Current: true, ActiveNS: 2 * time.Second},
				{Name: "c", Offline: true, Lag: 4, ActiveNS: 11 * time.Second}}},
			{Name: "KV_hubd_state", Replicas: 3, Error: "stream not found"},
		},
		Errors: []string{"meta leader b's view: timeout"},
	}
	var b strings.Builder
	printCluster(&b, st)
	want := `queue engine: jetstream, node a (embedded NATS server a, cluster hubs)
quorum:       yes: meta leader b, 3 servers, 2 needed (as b sees them)
live hubs:    a, b

NODE  HUB   NATS     LAG  LAST HEARD
a     live  current       now
b     live  leader
c     -     offline  12   1m15s ago

STREAM         REPLICAS  MESSAGES  QUORUM  REPLICA  ROLE     LAG  LAST HEARD
HUBD_MSGS      3         42        yes     a        leader
                                           b        current       2s ago
                                           c        offline  4    11s ago
KV_hubd_state  3         0         NO      -
stream KV_hubd_state: stream not found
not known: meta leader b's view: timeout
`
	if got := b.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestQueueEngineLine: status's queue engine line, local and on a
// cluster with and without its quorum.
func TestQueueEngineLine(t *testing.T) {
	yes, no := true, false
	since := time.Date(2026, 12, 4, 21, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		q    admin.QueueStatus
		want string
	}{
		{admin.QueueStatus{Engine: "local"}, "local (this hub's spool)"},
		{admin.QueueStatus{Engine: "jetstream", Node: "a", Quorum: &yes, Since: since},
			"jetstream, node a: quorum since 2026-12-04T21:00:00Z (hubctl cluster status for the nodes)"},
		{admin.QueueStatus{Engine: "jetstream", Node: "a", Quorum: &no, Since: since, Error: "heartbeat of a: queue cluster did not acknowledge the write: nats: timeout"},
			"jetstream, node a: NO QUORUM since 2026-12-04T21:00:00Z: heartbeat of a: queue cluster did not acknowledge the write: nats: timeout"},
	} {
		if got := queueEngine(c.q); got != c.want {
			t.Errorf("%+v:\n got %s\nwant %s", c.q, got, c.want)
		}
	}
}
