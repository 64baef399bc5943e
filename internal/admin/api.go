// Package admin is hubd's local admin API: HTTP + JSON over a Unix socket
// (and optionally TCP with a bearer token). hubctl, mailq, `sendmail -bp`
// and the tests are its clients; docs/admin-api.md documents every
// endpoint. The queue half is served over hub/ops.Queue, so a change of
// queue engine keeps the API; the daemon half (status, connectors, reload)
// over Daemon below.
//
// # Endpoints (all under /v1; JSON in and out; errors as Error)
//
//	GET  /v1/status                       Status
//	GET  /v1/cluster                      ClusterStatus
//	GET  /v1/queues                       []ops.QueueInfo
//	POST /v1/queues/{name}/retry          {"resubmit":bool} → ActionResult
//	POST /v1/queues/{name}/suspend        ActionResult
//	POST /v1/queues/{name}/resume         ActionResult
//	GET  /v1/messages?queue=&from=&to=&older_than=&state=&limit=   ops.MessageList
//	GET  /v1/messages/{id}                ops.MessageDetail
//	GET  /v1/messages/{id}/raw            the message, message/rfc822
//	POST /v1/messages/{action}            {"ids":[...],"ndr":bool} → []ActionResult   (hold, release, retry, delete)
//	GET  /v1/connectors                   []ConnectorInfo
//	POST /v1/connectors/{name}/stop       ActionResult
//	POST /v1/connectors/{name}/start      ActionResult
//	GET  /v1/routes?address=...&size=     RoutesReport
//	GET  /v1/track?message_id=&queue_id=&sender=&recipient=&since=&limit=   []tracking.Event
//	POST /v1/reload                       ReloadResult
package admin

import (
	"context"
	"errors"
	"time"

	"hubd/hub/ops"
	"hubd/hub/routing"
	"hubd/hub/tracking"
)

// Daemon is the part of the API that is not the queue: what the running
// daemon (internal/daemon) knows about itself and its connectors.
type Daemon interface {
	Status(ctx context.Context) (Status, error)
	Connectors(ctx context.Context) ([]ConnectorInfo, error)
	// StopConnector / StartConnector: a runtime override, never persisted,
	// gone after a restart or a reload (DESIGN.md invariant 5).
	StopConnector(ctx context.Context, name string) error
	StartConnector(ctx context.Context, name string) error
	// Routes is the routing table, and where each address goes for a
	// message of size octets (0: any size).
	Routes(ctx context.Context, addresses []string, size int64) (RoutesReport, error)
	// Track searches the message tracking log, oldest first, at most limit
	// events (0: 1000).
	Track(ctx context.Context, f tracking.Filter, limit int) ([]tracking.Event, error)
	// Reload loads the configuration file again and puts it in force if it
	// is valid; the result says what changed or why it was refused.
	Reload(ctx context.Context) (ReloadResult, error)
	// Cluster is the queue cluster as this hub sees it: its NATS nodes,
	// quorum, streams and live hubs; on a single hub only that the queue
	// engine is local.
	Cluster(ctx context.Context) (ClusterStatus, error)
}

// Error is the body of every non-2xx reply.
type Error struct {
	Error string `json:"error"`
}

// ActionResult is the outcome of one action on one queue, message or
// connector.
type ActionResult struct {
	ID      string `json:"id"`
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"` // what was done, for the operator
	Count   int    `json:"count,omitempty"`   // messages affected (queue retry)
}

// Status is `hubctl status`.
type Status struct {
	Version      string      `json:"version"`
	PID          int         `json:"pid"`
	Started      time.Time   `json:"started"`
	Uptime       int64       `json:"uptime_seconds"`
	Hostname     string      `json:"hostname"`
	ConfigPath   string      `json:"config_path"`
	ConfigHash   string      `json:"config_hash"` // sha256 of the files in force, "sha256:<hex>"
	ConfigLoaded time.Time   `json:"config_loaded"`
	BackPressure string      `json:"back_pressure"` // "normal", "medium", "high"
	Messages     int         `json:"messages"`
	Recipients   int         `json:"recipients"` // pending
	Poisoned     int         `json:"poisoned"`
	Held         int         `json:"held"`
	Overrides    []string    `json:"overrides,omitempty"` // runtime overrides in force, e.g. "connector inbound stopped"
	Queue        QueueStatus `json:"queue"`
}

// Queue engines, for QueueStatus and ClusterStatus.
const (
	EngineLocal     = "local"     // the spool under hub.spool_dir
	EngineJetStream = "jetstream" // a queue shared by the hubs of a cluster
)

// QueueStatus is the queue engine in Status.
type QueueStatus struct {
	Engine string `json:"engine"`         // EngineLocal or EngineJetStream
	Node   string `json:"node,omitempty"` // jetstream: this hub's name in the cluster
	// Quorum (jetstream only): this hub's last heartbeat was acknowledged,
	// so the cluster has the quorum to store its writes. It makes no
	// request: it lags the cluster by a few seconds (a heartbeat every
	// NodeTTL/5, each waiting up to the queue's write timeout).
	Quorum *bool `json:"quorum,omitempty"`
	// Since is when Quorum became what it is (jetstream only).
	Since time.Time `json:"since,omitzero"`
	// Error, without quorum, is why: the last heartbeat's error, or that
	// the connection to NATS is down.
	Error string `json:"error,omitempty"`
}

// ClusterStatus is `hubctl cluster status`: the JetStream queue as this
// hub sees it (internal/natsnode.Status, the live hubs of
// hub/queue/jsqueue). On a single hub only Engine and Note are set.
type ClusterStatus struct {
	Engine string `json:"engine"`         // EngineLocal or EngineJetStream
	Note   string `json:"note,omitempty"` // EngineLocal: what that means
	Node   string `json:"node,omitempty"` // this hub's name
	// Hubs are the hubs whose heartbeat is live, sorted; HubsError says
	// why they are not known.
	Hubs      []string `json:"hubs,omitempty"`
	HubsError string   `json:"hubs_error,omitempty"`

	// The NATS side, as natsnode.Status reports it.
	Mode      string `json:"mode,omitempty"` // "embedded" or "external"
	Connected bool   `json:"connected"`
	Server    string `json:"server,omitempty"`  // the NATS server this hub is connected to
	Cluster   string `json:"cluster,omitempty"` // its cluster's name
	// Quorum: JetStream can take writes (the meta group has a leader and a
	// majority of its peers are up).
	Quorum       bool   `json:"quorum"`
	MetaLeader   string `json:"meta_leader,omitempty"`
	ClusterSize  int    `json:"cluster_size,omitempty"`
	QuorumNeeded int    `json:"quorum_needed,omitempty"`
	// PeersFrom names the server whose view Peers is (the meta leader's
	// when it answered).
	PeersFrom string          `json:"peers_from,omitempty"`
	Peers     []ClusterPeer   `json:"peers,omitempty"`
	Streams   []ClusterStream `json:"streams,omitempty"`
	// Errors are what could not be found out.
	Errors []string `json:"errors,omitempty"`
}

// ClusterPeer is a member of a Raft group: the meta group's NATS servers,
// or a stream's replicas.
type ClusterPeer struct {
	Name    string `json:"name"`
	Leader  bool   `json:"leader,omitempty"`
	Current bool   `json:"current"` // caught up with the leader, heard from recently
	Offline bool   `json:"offline,omitempty"`
	// ActiveNS is how long ago the viewer last heard from it, in
	// nanoseconds.
	ActiveNS time.Duration `json:"active_ns,omitempty"`
	Lag      uint64        `json:"lag,omitempty"` // Raft entries behind the leader
}

// ClusterStream is a stream's replication state.
type ClusterStream struct {
	Name     string        `json:"name"`
	Replicas int           `json:"replicas,omitempty"`
	Leader   string        `json:"leader,omitempty"` // "" while it has none
	Quorum   bool          `json:"quorum"`
	Messages uint64        `json:"messages"`
	Peers    []ClusterPeer `json:"peers,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// ConnectorInfo is one receive connector (Exchange Get-ReceiveConnector).
type ConnectorInfo struct {
	Name           string   `json:"name"`
	Usage          string   `json:"usage"`
	Bindings       []string `json:"bindings"`
	RemoteIPRanges []string `json:"remote_ip_ranges"`
	Enabled        bool     `json:"enabled"` // as the config says
	// State is "running", "disabled" (by config), or
	// "stopped (runtime override; config says enabled)".
	State    string `json:"state"`
	Override bool   `json:"override,omitempty"`
	Sessions int    `json:"sessions"` // open now
	Accepted int64  `json:"accepted"` // messages accepted since start
	Refused  int64  `json:"refused"`  // connections and transactions refused since start
}

// RoutesReport is `hubctl routes`: the routing table and where each
// address goes and why, exactly as `hubd routes` prints it (both are built
// by hub/routing).
type RoutesReport = routing.Report

// ReloadResult is the outcome of a reload (SIGHUP or POST /v1/reload).
type ReloadResult struct {
	Applied      bool     `json:"applied"`
	Diagnostics  []string `json:"diagnostics,omitempty"`   // every error and warning, "file:line:col: severity: summary; detail"
	Started      []string `json:"started,omitempty"`       // connectors started (new or enabled)
	Stopped      []string `json:"stopped,omitempty"`       // connectors stopped (removed or disabled)
	Changed      []string `json:"changed,omitempty"`       // connectors whose settings changed (new sessions see them)
	Opened       []string `json:"opened,omitempty"`        // listener addresses opened
	Closed       []string `json:"closed,omitempty"`        // listener addresses closed
	NeedsRestart []string `json:"needs_restart,omitempty"` // settings that take effect only at the next start
	// OverridesEnded are the connectors a runtime override had stopped
	// (they run again if the configuration enables them).
	OverridesEnded []string `json:"overrides_ended,omitempty"`
	ConfigHash     string   `json:"config_hash,omitempty"` // of the configuration in force after the reload
}

// Kinds of Daemon (and Queue) errors, which the handlers answer with 404,
// 409 and 400; wrap an error with NotFound, Conflict or Invalid to give it
// a kind without changing its text.
var (
	ErrNotFound = ops.ErrNotFound
	ErrConflict = errors.New("conflict")
	ErrInvalid  = errors.New("invalid request")
)

// NotFound marks err as a 404 (no such connector, queue or message).
func NotFound(err error) error { return kindError{err, ErrNotFound} }

// Conflict marks err as a 409: the request is understood but the state
// forbids it (a connector already stopped, disabled by the configuration).
func Conflict(err error) error { return kindError{err, ErrConflict} }

// Invalid marks err as a 400.
func Invalid(err error) error { return kindError{err, ErrInvalid} }

type kindError struct{ err, kind error }

func (e kindError) Error() string   { return e.err.Error() }
func (e kindError) Unwrap() []error { return []error{e.err, e.kind} }
