package natsnode

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// statusTimeout bounds each request Status makes when ctx allows longer:
// a cluster without a leader does not answer, and Status must still return.
const statusTimeout = 2 * time.Second

// Status is a node's view of JetStream, for hubctl cluster status and the
// admin API (served as JSON).
type Status struct {
	// Node is this node's name.
	Node string `json:"node"`
	// Mode is "embedded" (nats-server runs in hubd) or "external".
	Mode string `json:"mode"`
	// Connected is Healthy: the connection is up.
	Connected bool `json:"connected"`
	// Server and Cluster name the NATS server the connection is on and its
	// cluster (embedded: this node, and the cluster block's name).
	Server  string `json:"server,omitempty"`
	Cluster string `json:"cluster,omitempty"`

	// Quorum: JetStream can take writes. Embedded, the meta group has a
	// leader and at least QuorumNeeded of its peers are up: not Offline,
	// and heard from within the last 10 s. A peer that shut down is
	// Offline at once, so Quorum turns false before the Raft leader, which
	// waits 10 s, steps down and MetaLeader empties. External, the meta
	// leader answered JetStream's account information request.
	Quorum bool `json:"quorum"`
	// MetaLeader is the meta group's leader, "" while there is none
	// (always "" for an external cluster: the client API does not say).
	MetaLeader   string `json:"meta_leader,omitempty"`
	ClusterSize  int    `json:"cluster_size,omitempty"`
	QuorumNeeded int    `json:"quorum_needed,omitempty"`
	// PeersFrom names the server whose Raft view Peers is. Only the meta
	// leader knows every follower's lag: Status asks it (through the
	// system account of the embedded node) and falls back to this node's
	// own view, in which the other followers are never current.
	PeersFrom string `json:"peers_from,omitempty"`
	// Peers are the meta group's members, the leader included, by name.
	// Empty for an external cluster.
	Peers []Peer `json:"peers,omitempty"`

	// Streams are the streams Status was asked about, in that order.
	Streams []StreamStatus `json:"streams,omitempty"`

	// Errors are what Status could not find out (a request without an
	// answer); what it did find is still filled in.
	Errors []string `json:"errors,omitempty"`
}

// Peer is a member of a Raft group (the meta group or a stream's).
type Peer struct {
	Name   string `json:"name"`
	Leader bool   `json:"leader,omitempty"`
	// Current: caught up with the leader and heard from recently.
	Current bool `json:"current"`
	// Offline: the server is known to be down: its shutdown was announced,
	// or nats-server has not heard from it for 150 s.
	Offline bool `json:"offline,omitempty"`
	// ActiveNS is how long ago the viewer last heard from the peer, in
	// nanoseconds (0 for the leader and the viewer itself).
	ActiveNS time.Duration `json:"active_ns,omitempty"`
	// Lag is how many Raft entries the peer is behind the leader.
	Lag uint64 `json:"lag,omitempty"`
}

// StreamStatus is a stream's replication state.
type StreamStatus struct {
	Name string `json:"name"`
	// Replicas is the configured replication factor.
	Replicas int `json:"replicas,omitempty"`
	// Leader is the stream's Raft leader, "" while it has none (it cannot
	// take writes then).
	Leader string `json:"leader,omitempty"`
	// Quorum: the stream has a leader and a majority of its replicas are
	// up, as for Status.Quorum (a leader that lost its followers keeps
	// the title for about 10 s, without being able to commit a write).
	Quorum   bool   `json:"quorum"`
	Messages uint64 `json:"messages"`
	// Peers are the stream's replicas, the leader included.
	Peers []Peer `json:"peers,omitempty"`
	// Error is why the stream's leader did not answer (no leader, not
	// found); the rest is then this node's own view when it holds a
	// replica.
	Error string `json:"error,omitempty"`
}

// Status reports this node's view of JetStream and of the streams named.
// It makes requests (each bounded by 2 s and by ctx) and reports what they
// could not find out in Status.Errors and StreamStatus.Error rather than
// failing; the error is ctx's, or that the node is closed.
func (n *Node) Status(ctx context.Context, streams ...string) (Status, error) {
	if n.nc.IsClosed() {
		return Status{}, errors.New("natsnode: node closed")
	}
	st := Status{Node: n.name, Connected: n.nc.IsConnected()}
	if n.ns != nil {
		n.embeddedStatus(ctx, &st)
	} else {
		n.externalStatus(ctx, &st)
	}
	for _, name := range streams {
		st.Streams = append(st.Streams, n.streamStatus(ctx, name))
	}
	return st, ctx.Err()
}

func (n *Node) externalStatus(ctx context.Context, st *Status) {
	st.Mode = "external"
	st.Server = n.nc.ConnectedServerName()
	st.Cluster = n.nc.ConnectedClusterName()
	rctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	if _, err := n.js.AccountInfo(rctx); err != nil {
		st.Errors = append(st.Errors, "JetStream account info: "+err.Error())
		return
	}
	st.Quorum = true
}

func (n *Node) embeddedStatus(ctx context.Context, st *Status) {
	st.Mode = "embedded"
	st.Server = n.ns.Name()
	local, err := n.ns.Jsz(nil)
	if err != nil || local.Disabled {
		st.Errors = append(st.Errors, fmt.Sprintf("JetStream disabled on %s: %v", st.Server, err))
		return
	}
	meta := local.Meta
	if meta == nil { // a single node: no meta group, always its own leader
		st.Quorum = true
		st.MetaLeader = st.Server
		st.ClusterSize, st.QuorumNeeded = 1, 1
		st.PeersFrom = st.Server
		st.Peers = []Peer{{Name: st.Server, Leader: true, Current: true}}
		return
	}
	st.Cluster = meta.Name
	st.MetaLeader = meta.Leader
	view, from := meta, st.Server
	if meta.Leader != "" && meta.Leader != st.Server {
		if lm, err := n.leaderMeta(ctx); err != nil {
			st.Errors = append(st.Errors, fmt.Sprintf("meta leader %s's view: %v", meta.Leader, err))
		} else {
			view, from = lm, meta.Leader
		}
	}
	st.PeersFrom = from
	st.ClusterSize = view.Size
	st.QuorumNeeded = view.QuorumNeeded
	if st.QuorumNeeded == 0 {
		st.QuorumNeeded = view.Size/2 + 1
	}
	st.Peers = peers(view.Replicas, view.Leader, from)
	st.Quorum = quorum(st.MetaLeader, st.Peers, st.QuorumNeeded)
}

// leaderMeta asks the meta leader for its view of the meta group: a
// request to every server's JSZ in the system account, which only the
// leader answers.
func (n *Node) leaderMeta(ctx context.Context) (*server.MetaClusterInfo, error) {
	nc, err := nats.Connect("", nats.InProcessServer(n.ns), nkeyAuth(n.sys),
		nats.Name(n.name+" status"), nats.NoReconnect())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	rctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	req, _ := json.Marshal(server.JSzOptions{LeaderOnly: true})
	msg, err := nc.RequestWithContext(rctx, "$SYS.REQ.SERVER.PING.JSZ", req)
	if err != nil {
		return nil, err
	}
	var resp server.ServerAPIJszResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, err
	}
	if resp.Error != nil {
		return nil, errors.New(resp.Error.Description)
	}
	if resp.Data == nil || resp.Data.Meta == nil {
		return nil, errors.New("no meta group in the answer")
	}
	return resp.Data.Meta, nil
}

// peers lists a Raft group's members from a viewer's cluster information,
// whose replicas leave out the viewer when it knows a leader.
func peers(replicas []*server.PeerInfo, leader, viewer string) []Peer {
	var ps []Peer
	for _, r := range replicas {
		if r.Name != viewer {
			ps = append(ps, peer(r.Name, r.Current, r.Offline, r.Active, r.Lag))
		}
	}
	ps = append(ps, Peer{Name: viewer, Current: true})
	for i := range ps {
		if ps[i].Name == leader {
			ps[i].Leader, ps[i].Current, ps[i].Offline, ps[i].ActiveNS = true, true, false, 0
		}
	}
	slices.SortFunc(ps, func(a, b Peer) int { return cmp.Compare(a.Name, b.Name) })
	return ps
}

// peer is a Peer from nats's peer information. A peer known to be offline
// is not current, whatever the last word from it was.
func peer(name string, current, offline bool, active time.Duration, lag uint64) Peer {
	return Peer{Name: name, Current: current && !offline, Offline: offline, ActiveNS: active, Lag: lag}
}

// streamStatus asks the stream's leader (the client API's stream info); if
// it does not answer, an embedded node that holds a replica reports its
// own view.
func (n *Node) streamStatus(ctx context.Context, name string) StreamStatus {
	ss := StreamStatus{Name: name}
	rctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	s, err := n.js.Stream(rctx, name)
	if err == nil {
		info := s.CachedInfo()
		ss.Replicas = info.Config.Replicas
		ss.Messages = info.State.Msgs
		if c := info.Cluster; c != nil {
			ss.Leader = c.Leader
			for _, r := range c.Replicas {
				ss.Peers = append(ss.Peers, peer(r.Name, r.Current, r.Offline, r.Active, r.Lag))
			}
			if c.Leader != "" {
				ss.Peers = append(ss.Peers, Peer{Name: c.Leader, Leader: true, Current: true})
			}
			slices.SortFunc(ss.Peers, func(a, b Peer) int { return cmp.Compare(a.Name, b.Name) })
		} else { // a single server: the stream is its own leader
			ss.Leader = n.nc.ConnectedServerName()
			ss.Peers = []Peer{{Name: ss.Leader, Leader: true, Current: true}}
		}
		ss.Quorum = quorum(ss.Leader, ss.Peers, ss.Replicas/2+1)
		return ss
	}
	ss.Error = err.Error()
	if n.ns != nil {
		n.localStream(&ss)
	}
	ss.Quorum = quorum(ss.Leader, ss.Peers, ss.Replicas/2+1)
	return ss
}

// silentPeer is how long a peer may go unheard before Status counts it
// out of a quorum: nats-server's own lostQuorumInterval, after which a Raft
// leader that has not heard from a majority steps down.
const silentPeer = 10 * time.Second

// quorum reports whether a Raft group has a leader and needed peers that
// are up: not known to be offline (nats-server learns that at once from a
// shutdown, but only after minutes of silence from a crash) and heard from
// within silentPeer.
func quorum(leader string, peers []Peer, needed int) bool {
	up := 0
	for _, p := range peers {
		if !p.Offline && p.ActiveNS < silentPeer {
			up++
		}
	}
	return leader != "" && up >= needed
}

// localStream fills ss from this node's replica of the stream, if it has
// one.
func (n *Node) localStream(ss *StreamStatus) {
	jsz, err := n.ns.Jsz(&server.JSzOptions{Account: server.DEFAULT_GLOBAL_ACCOUNT, Streams: true, Config: true})
	if err != nil {
		return
	}
	for _, acc := range jsz.AccountDetails {
		for _, sd := range acc.Streams {
			if sd.Name != ss.Name {
				continue
			}
			if sd.Config != nil {
				ss.Replicas = sd.Config.Replicas
			}
			ss.Messages = sd.State.Msgs
			if c := sd.Cluster; c != nil {
				ss.Leader = c.Leader
				ss.Peers = peers(c.Replicas, c.Leader, n.ns.Name())
			}
			return
		}
	}
}
