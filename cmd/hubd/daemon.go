package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"hubd/connectors"
	"hubd/hub/delivery"
	"hubd/hub/delivery/maildir"
	"hubd/hub/delivery/smtpout"
	"hubd/hub/transport"
	"hubd/policy"
)

// daemon is the wired hub: one Transport (queue, categorizer, deliverers)
// and one connectors Service in front of it. The data path is
// connectors → transport.Submit → queue → categorizer → deliverers.
type daemon struct {
	log       *slog.Logger
	config    atomic.Pointer[policy.Config]
	transport *transport.Transport
	service   *connectors.Service
}

func startDaemon(ctx context.Context, cfg *policy.Config, log *slog.Logger) (*daemon, error) {
	d := &daemon{log: log}
	d.config.Store(cfg)
	deliverers := map[delivery.Kind]delivery.Deliverer{
		delivery.KindMaildir: maildir.New(maildir.Options{Logger: log, Hostname: cfg.Hub.Hostname}),
		delivery.KindSMTP:    smtpout.New(smtpout.Options{Logger: log, Resolver: smtpout.NetResolver{}}),
	}
	tr, err := transport.New(cfg, transport.Options{Logger: log, Deliverers: deliverers})
	if err != nil {
		return nil, err
	}
	if err := tr.Start(ctx); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	svc, err := connectors.New(connectors.Options{Config: cfg, Submitter: tr, Logger: log})
	if err != nil {
		tr.Close(context.Background())
		return nil, err
	}
	if err := svc.Start(); err != nil {
		tr.Close(context.Background())
		return nil, err
	}
	for bind, addr := range svc.Addrs() {
		log.Info("listening", "bind", bind, "addr", addr.String())
	}
	d.transport, d.service = tr, svc
	return d, nil
}

func (d *daemon) cfg() *policy.Config { return d.config.Load() }

// reload loads the configuration again; on any error the running
// configuration stays in force and the diagnostics are printed.
func (d *daemon) reload(path string, diagOut io.Writer) {
	cfg, err := loadConfig(path, diagOut)
	if err != nil {
		d.log.Error("reload refused: configuration has errors; the running configuration stays in force", "config", path)
		return
	}
	if err := d.service.Reload(cfg); err != nil {
		d.log.Error("reload of connectors failed; the running configuration stays in force", "err", err)
		return
	}
	d.transport.Reload(cfg)
	d.config.Store(cfg)
	d.log.Info("configuration reloaded", "config", path)
}

// shutdown stops accepting, lets sessions in DATA finish up to the grace
// period, then stops delivery with everything consistent on disk.
func (d *daemon) shutdown() error {
	grace := d.cfg().Hub.ShutdownGrace
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	errSvc := d.service.Shutdown(ctx)
	// Deliveries in flight get a short while of their own; whatever is
	// not finished stays queued and resumes at the next start.
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	errTr := d.transport.Close(dctx)
	if errSvc != nil {
		return errSvc
	}
	return errTr
}
