// Package daemon wires one running hub: the transport (queue, categorizer,
// deliverers) and the receive connectors in front of it. `hubd run` and the
// in-process end-to-end tests (internal/hubtest) start hubs through it, so
// the tests exercise the same wiring as production. The data path reads
// straight through it: connectors → transport.Submit → queue → categorizer →
// deliverers.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"hubd/connectors"
	"hubd/hub/backpressure"
	"hubd/hub/delivery"
	"hubd/hub/delivery/lmtp"
	"hubd/hub/delivery/maildir"
	"hubd/hub/delivery/smtpout"
	"hubd/hub/tracking"
	"hubd/hub/transport"
	"hubd/internal/admin"
	"hubd/internal/maildrop"
	"hubd/policy"
)

// Options adjust a Daemon; the zero value is production's.
type Options struct {
	Logger   *slog.Logger     // nil → discard
	Resolver smtpout.Resolver // nil → the system resolver (net.Resolver)
	// SMTP timeouts for outbound delivery; zero values take smtpout's
	// RFC 5321 §4.5.3.2 defaults.
	SMTPDialTimeout, SMTPCommandTimeout, SMTPDataTimeout time.Duration
	// SMTPPort is the port MX hosts are dialled on; 0 → 25. Tests point
	// it at their remote MTAs.
	SMTPPort int
	// PressureProbe replaces the system's free-space and memory figures
	// for back pressure (tests); nil → statfs and /proc.
	PressureProbe backpressure.Probe
}

// Daemon is a running hub.
type Daemon struct {
	log       *slog.Logger
	config    atomic.Pointer[policy.Config]
	Transport *transport.Transport
	Service   *connectors.Service
	tracking  *tracking.Log
	smtp      *smtpout.Deliverer
	lmtp      *lmtp.Deliverer
	Pressure  *backpressure.Monitor
	admin     *admin.Server // the admin API (internal/admin), started last
	Pickup    *maildrop.Pickup
}

// Start opens the queue (recovering whatever it holds), starts delivery,
// then starts the receive connectors. ctx bounds start-up only.
func Start(ctx context.Context, cfg *policy.Config, opts Options) (*Daemon, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	resolver := opts.Resolver
	if resolver == nil {
		resolver = smtpout.NetResolver{}
	}
	d := &Daemon{log: log}
	d.config.Store(cfg)
	// The tracking log's settings are read at start; a reload that changes
	// them needs a restart (logged by Apply).
	track, err := tracking.OpenConfig(cfg.Hub.TrackingLog, log)
	if err != nil {
		return nil, fmt.Errorf("tracking log: %w", err)
	}
	d.tracking = track
	// Back pressure watches the spool's filesystem and the process's memory
	// from the start, so that nothing is accepted that cannot be stored.
	d.Pressure = backpressure.New(backpressure.Options{Dir: cfg.Hub.SpoolDir, Config: cfg.Hub.BackPressure, Logger: log,
		Probe: opts.PressureProbe})
	d.smtp = smtpout.New(smtpout.Options{Logger: log, Resolver: resolver, Hostname: cfg.Hub.Hostname, Port: opts.SMTPPort,
		DialTimeout: opts.SMTPDialTimeout, CommandTimeout: opts.SMTPCommandTimeout, DataTimeout: opts.SMTPDataTimeout})
	d.lmtp = lmtp.New(lmtp.Options{Logger: log, Hostname: cfg.Hub.Hostname})
	deliverers := map[delivery.Kind]delivery.Deliverer{
		delivery.KindMaildir: maildir.New(maildir.Options{Logger: log, Hostname: cfg.Hub.Hostname}),
		delivery.KindLMTP:    d.lmtp,
		delivery.KindSMTP:    d.smtp,
	}
	deliverers = hookDeliverers(deliverers) // a test hook in -tags crashhook builds only
	tr, err := transport.New(cfg, transport.Options{Logger: log, Deliverers: deliverers, Tracking: track, Pressure: d.Pressure})
	if err != nil {
		d.closeOutbound()
		return nil, err
	}
	if err := tr.Start(ctx); err != nil {
		d.closeOutbound()
		return nil, fmt.Errorf("queue: %w", err)
	}
	d.Pressure.Start() // the spool exists now: its filesystem can be watched
	// The maildrop pickup (sendmail's mail), after the transport it feeds.
	d.Pickup, err = maildrop.Start(maildrop.Options{Dir: cfg.Hub.MaildropDir, Group: cfg.Hub.MaildropGroup,
		Submitter: tr, Queued: tr.Queued, Hostname: func() string { return d.Config().Hub.Hostname }, Logger: log})
	if err != nil {
		tr.Close(context.Background())
		d.closeOutbound()
		return nil, err
	}
	svc, err := connectors.New(connectors.Options{Config: cfg, Submitter: tr, Logger: log, Pressure: d.Pressure})
	if err == nil {
		err = svc.Start()
	}
	if err != nil {
		d.Pickup.Stop(context.Background())
		tr.Close(context.Background())
		d.closeOutbound()
		return nil, err
	}
	d.Transport, d.Service = tr, svc
	if err := d.startAdmin(cfg); err != nil {
		svc.Shutdown(context.Background())
		tr.Close(context.Background())
		d.closeOutbound()
		return nil, err
	}
	return d, nil
}

// startAdmin serves the admin API (queue half over the transport, daemon
// half over d) on the configured socket and, optionally, TCP. Its settings
// are read at start; a reload that changes them needs a restart.
func (d *Daemon) startAdmin(cfg *policy.Config) error {
	a := cfg.Admin
	d.admin = admin.New(admin.Options{Queue: d.Transport, Daemon: d, Logger: d.log})
	return d.admin.Listen(admin.ListenConfig{Socket: a.Socket, SocketMode: a.SocketMode, SocketGID: a.SocketGID,
		TCP: a.Listen, Token: a.Token})
}

// AdminSocket is the admin API's Unix socket path ("" when none), and
// AdminTCP its TCP address (nil when none).
func (d *Daemon) AdminSocket() string { return d.config.Load().Admin.Socket }
func (d *Daemon) AdminTCP() net.Addr  { return d.admin.TCPAddr() }

// Config returns the configuration in force.
func (d *Daemon) Config() *policy.Config { return d.config.Load() }

// Addrs returns where each bind address of the configuration listens.
func (d *Daemon) Addrs() map[string]net.Addr { return d.Service.Addrs() }

// Apply puts a new, already validated configuration in force: new sessions
// and the next delivery attempts see it. If the connectors cannot take it,
// nothing changes and the error says why.
func (d *Daemon) Apply(cfg *policy.Config) error {
	if err := d.Service.Reload(cfg); err != nil {
		return err
	}
	d.Transport.Reload(cfg)
	d.Pressure.Reload(cfg.Hub.BackPressure)
	if old := d.config.Swap(cfg); old.Hub.TrackingLog != cfg.Hub.TrackingLog {
		d.log.Warn("tracking_log settings changed; they take effect at the next restart")
	}
	return nil
}

// Shutdown stops accepting, lets sessions in DATA finish until ctx ends, then
// gives deliveries in flight up to deliveryGrace before stopping them.
// Whatever was not delivered stays queued and resumes at the next start.
func (d *Daemon) Shutdown(ctx context.Context, deliveryGrace time.Duration) error {
	if err := d.admin.Shutdown(ctx); err != nil {
		d.log.Warn("admin API shutdown", "err", err)
	}
	errSvc := d.Service.Shutdown(ctx)
	d.Pickup.Stop(ctx) // before the transport it feeds; an unfinished file stays for the next start
	dctx, cancel := context.WithTimeout(context.Background(), deliveryGrace)
	defer cancel()
	errTr := d.Transport.Close(dctx)
	d.closeOutbound()
	if errSvc != nil {
		return errSvc
	}
	return errTr
}

// closeOutbound closes what outlives single deliveries: the SMTP and LMTP
// connections kept for reuse, and the tracking log.
func (d *Daemon) closeOutbound() {
	d.smtp.Close()
	d.lmtp.Close()
	d.tracking.Close()
	d.Pressure.Stop()
}
