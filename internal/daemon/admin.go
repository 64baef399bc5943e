package daemon

// The daemon half of the admin API (admin.Daemon): status, receive
// connectors and their runtime overrides, routes, the tracking log.
// Reload is in reload.go.

import (
	"context"
	"errors"
	"os"
	"time"

	"hubd/connectors"
	"hubd/hub/routing"
	"hubd/hub/tracking"
	"hubd/internal/admin"
)

// DefaultTrackLimit bounds Track when the caller sets no limit.
const DefaultTrackLimit = 1000

// Status is `hubctl status`.
func (d *Daemon) Status(ctx context.Context) (admin.Status, error) {
	in := d.inForce()
	now := time.Now()
	st := admin.Status{
		Version: d.opts.Version, PID: os.Getpid(), Started: d.started.UTC(),
		Uptime: int64(now.Sub(d.started) / time.Second), Hostname: in.cfg.Hub.Hostname,
		ConfigPath: d.opts.ConfigPath, ConfigHash: in.hash, ConfigLoaded: in.loaded.UTC(),
		BackPressure: d.Pressure.Level().String(),
	}
	stats := d.Transport.Stats()
	st.Messages, st.Recipients, st.Poisoned, st.Held = stats.Messages, stats.PendingRecipients, stats.Poisoned, stats.Held
	for _, name := range d.Service.Stopped() {
		st.Overrides = append(st.Overrides, "connector "+name+" "+connectors.StateStopped)
	}
	// Not Queues: status stays O(1) however long the queue (issue 11).
	for _, name := range d.Transport.Suspended() {
		st.Overrides = append(st.Overrides, "queue "+name+" suspended (runtime override); gone at restart")
	}
	st.Queue = d.queueStatus()
	return st, nil
}

// Connectors is `hubctl connector list`.
func (d *Daemon) Connectors(ctx context.Context) ([]admin.ConnectorInfo, error) {
	states := d.Service.Connectors()
	out := make([]admin.ConnectorInfo, 0, len(states))
	for _, s := range states {
		out = append(out, admin.ConnectorInfo{Name: s.Name, Usage: s.Usage, Bindings: s.Bind,
			RemoteIPRanges: s.RemoteIPRanges, Enabled: s.Enabled, State: s.State, Override: s.Stopped,
			Sessions: s.Sessions, Accepted: s.Accepted, Refused: s.Refused})
	}
	return out, nil
}

// StopConnector stops a receive connector until it is started again, or
// the next reload or restart (connectors/runtime.go).
func (d *Daemon) StopConnector(ctx context.Context, name string) error {
	_, err := d.Service.StopConnector(name)
	return connectorError(err)
}

// StartConnector ends StopConnector's override.
func (d *Daemon) StartConnector(ctx context.Context, name string) error {
	_, err := d.Service.StartConnector(name)
	return connectorError(err)
}

// connectorError gives the connectors' errors their API kinds.
func connectorError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, connectors.ErrUnknownConnector):
		return admin.NotFound(err)
	case errors.Is(err, connectors.ErrDisabledByConfig), errors.Is(err, connectors.ErrConnectorStopped),
		errors.Is(err, connectors.ErrConnectorRunning):
		return admin.Conflict(err)
	}
	return err
}

// Routes is `hubd routes` over the configuration in force, with the MX
// hosts as the daemon's resolver sees them.
func (d *Daemon) Routes(ctx context.Context, addresses []string, size int64) (admin.RoutesReport, error) {
	return routing.Build(ctx, d.Config(), addresses, routing.Options{Size: size, Resolver: d.resolver}), nil
}

// Track searches the tracking log the daemon writes, oldest first.
func (d *Daemon) Track(ctx context.Context, f tracking.Filter, limit int) ([]tracking.Event, error) {
	if d.tracking == nil {
		return nil, admin.Conflict(errors.New("the message tracking log is disabled (hub { tracking_log { enabled = false } })"))
	}
	if limit <= 0 {
		limit = DefaultTrackLimit
	}
	out := []tracking.Event{}
	err := tracking.Search(d.trackingDir, f, func(e tracking.Event) bool {
		out = append(out, e)
		return len(out) < limit && ctx.Err() == nil
	})
	if err == nil {
		err = ctx.Err()
	}
	return out, err
}

var _ admin.Daemon = (*Daemon)(nil)
