package daemon

import (
	"context"
	"errors"

	"hubd/hub/tracking"
	"hubd/internal/admin"
)

// The daemon half of the admin API (admin.Daemon).

var errNotYet = errors.New("not implemented yet")

func (d *Daemon) Status(ctx context.Context) (admin.Status, error) { return admin.Status{}, errNotYet }
func (d *Daemon) Connectors(ctx context.Context) ([]admin.ConnectorInfo, error) {
	return nil, errNotYet
}
func (d *Daemon) StopConnector(ctx context.Context, name string) error  { return errNotYet }
func (d *Daemon) StartConnector(ctx context.Context, name string) error { return errNotYet }
func (d *Daemon) Routes(ctx context.Context, addresses []string) (admin.RoutesReport, error) {
	return admin.RoutesReport{}, errNotYet
}
func (d *Daemon) Track(ctx context.Context, f tracking.Filter, limit int) ([]tracking.Event, error) {
	return nil, errNotYet
}
func (d *Daemon) Reload(ctx context.Context) (admin.ReloadResult, error) {
	return admin.ReloadResult{}, errNotYet
}

var _ admin.Daemon = (*Daemon)(nil)
