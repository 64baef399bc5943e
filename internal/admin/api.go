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
	Version      string    `json:"version"`
	PID          int       `json:"pid"`
	Started      time.Time `json:"started"`
	Uptime       int64     `json:"uptime_seconds"`
	Hostname     string    `json:"hostname"`
	ConfigPath   string    `json:"config_path"`
	ConfigHash   string    `json:"config_hash"` // sha256 of the files in force, "sha256:<hex>"
	ConfigLoaded time.Time `json:"config_loaded"`
	BackPressure string    `json:"back_pressure"` // "normal", "medium", "high"
	Messages     int       `json:"messages"`
	Recipients   int       `json:"recipients"` // pending
	Poisoned     int       `json:"poisoned"`
	Held         int       `json:"held"`
	Overrides    []string  `json:"overrides,omitempty"` // runtime overrides in force, e.g. "connector inbound stopped"
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
