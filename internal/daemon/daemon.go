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
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"hubd/connectors"
	"hubd/hub/backpressure"
	"hubd/hub/delivery"
	"hubd/hub/delivery/lmtp"
	"hubd/hub/delivery/maildir"
	"hubd/hub/delivery/smtpout"
	"hubd/hub/queue/jsqueue"
	"hubd/hub/tracking"
	"hubd/hub/transport"
	"hubd/internal/admin"
	"hubd/internal/clusterops"
	"hubd/internal/maildrop"
	"hubd/internal/natsnode"
	"hubd/internal/resolver"
	"hubd/policy"
)

// Options adjust a Daemon; the zero value is production's.
type Options struct {
	Logger *slog.Logger // nil → discard
	// TracerProvider and MeterProvider are built from the telemetry block
	// (internal/telemetry) by the caller and handed to every stage; nil:
	// no tracing, no metrics.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Resolver       smtpout.Resolver // MX routing's DNS; nil → DNS (a test's fake)
	// SMTP timeouts for outbound delivery; zero values take smtpout's
	// RFC 5321 §4.5.3.2 defaults.
	SMTPDialTimeout, SMTPCommandTimeout, SMTPDataTimeout time.Duration
	// SMTPPort is the port MX hosts are dialled on; 0 → 25. Tests point
	// it at their remote MTAs.
	SMTPPort int
	// PressureProbe replaces the system's free-space and memory figures
	// for back pressure (tests); nil → statfs and /proc.
	PressureProbe backpressure.Probe
	// ConfigPath is the file or directory the configuration was loaded
	// from: Reload loads it again, and status shows it. "": no Reload.
	ConfigPath string
	// Version is the running build's version, for status.
	Version string
	// DiagnosticsOut, when set, gets the diagnostics of a refused reload
	// with their source snippets, as `hubd check` prints them (hubd: its
	// stderr); the log has them one line each either way.
	DiagnosticsOut io.Writer
	// ReloadStarting and ReloadFinished, when set, are called around every
	// reload, whoever asked for it (SIGHUP or the admin API's POST
	// /v1/reload), one reload at a time: hubd tells systemd with them
	// (internal/sdnotify: RELOADING=1, then READY=1). errors counts what
	// refused the reload, 0 when it was applied.
	ReloadStarting func()
	ReloadFinished func(res admin.ReloadResult, errors int)
}

// Daemon is a running hub.
type Daemon struct {
	log       *slog.Logger
	opts      Options
	started   time.Time
	state     atomic.Pointer[inForce] // the configuration in force (reload.go)
	reloadMu  sync.Mutex              // serialises reloads
	reloads   metric.Int64Counter     // hubd.config.reloads; nil without a MeterProvider (metrics.go)
	resolver  smtpout.Resolver
	dns       *resolver.Servers // hub.dns_servers; Set on reload
	Transport *transport.Transport
	Service   *connectors.Service
	tracking  *tracking.Log
	// trackingDir is where tracking writes: its settings are read at start.
	trackingDir string
	smtp        *smtpout.Deliverer
	lmtp        *lmtp.Deliverer
	Pressure    *backpressure.Monitor
	admin       *admin.Server     // the admin API (internal/admin), started last
	nats        *natsnode.Node    // the JetStream queue's NATS node (cluster.go); nil on the local spool
	jsq         *jsqueue.Store    // the JetStream queue; nil on the local spool
	slots       *jsqueue.Slots    // next hops' connection slots shared by the cluster; nil on the local spool
	cops        *clusterops.Queue // the cluster's queue for the admin API, serving the other hubs; nil on the local spool
	Pickup      *maildrop.Pickup
}

// Start opens the queue (recovering whatever it holds), starts delivery,
// then starts the receive connectors. ctx bounds start-up only.
func Start(ctx context.Context, cfg *policy.Config, opts Options) (*Daemon, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dns := resolver.New(cfg.Hub.DNSServers)
	mx := opts.Resolver
	if mx == nil {
		mx = smtpout.NetResolver{R: dns.Resolver()}
	}
	d := &Daemon{log: log, opts: opts, started: time.Now(), resolver: mx, dns: dns}
	d.state.Store(&inForce{cfg: cfg, hash: cfg.Hash(), loaded: d.started})
	// The tracking log's settings are read at start; a reload that changes
	// them needs a restart (logged by Apply).
	track, err := tracking.OpenConfig(cfg.Hub.TrackingLog, trackingNode(cfg), log)
	if err != nil {
		return nil, fmt.Errorf("tracking log: %w", err)
	}
	d.tracking, d.trackingDir = track, cfg.Hub.TrackingLog.Dir
	// Back pressure watches the spool's filesystem and the process's memory
	// from the start, so that nothing is accepted that cannot be stored.
	d.Pressure = backpressure.New(backpressure.Options{Dir: cfg.Hub.SpoolDir, Config: cfg.Hub.BackPressure, Logger: log,
		Probe: opts.PressureProbe})
	// An instrument the provider refuses costs its metric, never the mail.
	if err := d.Pressure.RegisterMetrics(opts.MeterProvider); err != nil {
		log.Warn("metrics: back pressure level not published", "err", err)
	}
	if d.reloads, err = newReloadCounter(opts.MeterProvider); err != nil {
		log.Warn("metrics: reloads not counted", "err", err)
	}
	// The queue engine before the deliverers: on a cluster, the SMTP
	// deliverer shares each next hop's connections through it.
	store, err := d.openQueue(ctx, cfg)
	if err != nil {
		d.tracking.Close()
		d.Pressure.Stop()
		return nil, err
	}
	d.smtp = smtpout.New(smtpout.Options{Logger: log, Resolver: mx, Hostname: cfg.Hub.Hostname, Port: opts.SMTPPort,
		DialTimeout: opts.SMTPDialTimeout, CommandTimeout: opts.SMTPCommandTimeout, DataTimeout: opts.SMTPDataTimeout,
		TracerProvider: d.opts.TracerProvider, Slots: d.slotsOrNil(),
		SlotLimit: func() int { return d.Config().Hub.MaxPerDomainOutboundConnections }})
	d.lmtp = lmtp.New(lmtp.Options{Logger: log, Hostname: cfg.Hub.Hostname, TracerProvider: d.opts.TracerProvider})
	deliverers := map[delivery.Kind]delivery.Deliverer{
		delivery.KindMaildir: maildir.New(maildir.Options{Logger: log, Hostname: cfg.Hub.Hostname}),
		delivery.KindLMTP:    d.lmtp,
		delivery.KindSMTP:    d.smtp,
	}
	deliverers = hookDeliverers(deliverers) // a test hook in -tags crashhook builds only
	tr, err := transport.New(cfg, transport.Options{Logger: log, TracerProvider: d.opts.TracerProvider,
		MeterProvider: d.opts.MeterProvider, Deliverers: deliverers, Tracking: track, Pressure: d.Pressure, Store: store})
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
	svc, err := connectors.New(connectors.Options{Config: cfg, Submitter: tr, Logger: log, Pressure: d.Pressure, Resolver: d.dns.Resolver(),
		TracerProvider: d.opts.TracerProvider, MeterProvider: d.opts.MeterProvider})
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
	d.startTakeover()
	if err := d.startAdmin(cfg); err != nil {
		svc.Shutdown(context.Background())
		tr.Close(context.Background())
		d.closeOutbound()
		return nil, err
	}
	return d, nil
}

// startAdmin serves the admin API (queue half over the transport, or on a
// cluster over the whole cluster's queue; daemon half over d) on the
// configured socket and, optionally, TCP. Its settings are read at start;
// a reload that changes them needs a restart.
func (d *Daemon) startAdmin(cfg *policy.Config) error {
	a := cfg.Admin
	q, err := d.opsQueue()
	if err != nil {
		return err
	}
	d.admin = admin.New(admin.Options{Queue: q, Daemon: d, Logger: d.log})
	err = d.admin.Listen(admin.ListenConfig{Socket: a.Socket, SocketMode: a.SocketMode, SocketGID: a.SocketGID,
		TCP: a.Listen, Token: a.Token})
	if err != nil {
		d.closeOps()
	}
	return err
}

// AdminSocket is the admin API's Unix socket path ("" when none), and
// AdminTCP its TCP address (nil when none).
func (d *Daemon) AdminSocket() string { return d.admin.SocketPath() }
func (d *Daemon) AdminTCP() net.Addr  { return d.admin.TCPAddr() }

// Config returns the configuration in force.
func (d *Daemon) Config() *policy.Config { return d.inForce().cfg }

// inForce returns the configuration in force with its hash and load time.
func (d *Daemon) inForce() *inForce { return d.state.Load() }

// Addrs returns where each bind address of the configuration listens.
func (d *Daemon) Addrs() map[string]net.Addr { return d.Service.Addrs() }

// Shutdown stops accepting, lets sessions in DATA finish until ctx ends, then
// gives deliveries in flight up to deliveryGrace before stopping them.
// Whatever was not delivered stays queued and resumes at the next start.
func (d *Daemon) Shutdown(ctx context.Context, deliveryGrace time.Duration) error {
	if err := d.admin.Shutdown(ctx); err != nil {
		d.log.Warn("admin API shutdown", "err", err)
	}
	d.closeOps() // the other hubs' requests, before the transport that answers them
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
	d.closeQueue()
}
