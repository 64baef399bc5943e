package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"hubd/internal/admin"
	"hubd/internal/daemon"
	"hubd/internal/sdnotify"
	"hubd/internal/telemetry"
)

// reload is SIGHUP: the daemon loads the configuration again and puts it
// in force if it is valid, logging what changed or every diagnostic and
// that the running configuration stays (internal/daemon/reload.go; the
// admin API's POST /v1/reload does the same).
func reload(d *daemon.Daemon, log *slog.Logger) {
	if _, err := d.Reload(context.Background()); err != nil {
		log.Error("reload", "err", err)
	}
}

// shutdown stops accepting, lets sessions in DATA finish within the
// configured grace period, and gives deliveries in flight 10 s more.
func shutdown(d *daemon.Daemon) error {
	ctx, cancel := context.WithTimeout(context.Background(), d.Config().Hub.ShutdownGrace)
	defer cancel()
	return d.Shutdown(ctx, 10*time.Second)
}

// telemetryFlushTimeout bounds the flush of spans, metrics and log records
// still buffered at exit: a collector that is down must not hold hubd.
const telemetryFlushTimeout = 10 * time.Second

// flushTelemetry shuts the telemetry providers down once the daemon has
// stopped (the BatchSpanProcessor exports what it still holds).
func flushTelemetry(tel *telemetry.Providers, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), telemetryFlushTimeout)
	defer cancel()
	if err := tel.Shutdown(ctx); err != nil {
		log.Warn("telemetry flush at exit", "err", err)
	}
}

// statusInterval is how often `systemctl status` gets the queue's totals.
const statusInterval = 30 * time.Second

// serviceManager keeps systemd told how hubd is doing (sd_notify(3), see
// internal/sdnotify): READY once listening, RELOADING and READY around
// each reload, whoever asked for it, the queue's totals every
// statusInterval, STOPPING at shutdown. Without $NOTIFY_SOCKET it does
// nothing. A failure to notify is logged once at warning level and never
// stops hubd.
type serviceManager struct {
	notify     *sdnotify.Notifier
	log        *slog.Logger
	lastReload atomic.Pointer[string] // "" or how the last reload ended, kept in the periodic status
	warned     atomic.Bool
}

func newServiceManager(log *slog.Logger) *serviceManager {
	return &serviceManager{notify: sdnotify.FromEnvironment(), log: log}
}

// hooks are the daemon's reload hooks (daemon.Options).
func (m *serviceManager) hooks(opts *daemon.Options) {
	opts.ReloadStarting = func() { m.check(m.notify.Reloading("reloading the configuration")) }
	opts.ReloadFinished = func(res admin.ReloadResult, errors int) {
		s := "reload applied (config " + short(res.ConfigHash) + ")"
		if !res.Applied {
			s = fmt.Sprintf("reload refused: %d errors; the running configuration stays", errors)
		}
		m.lastReload.Store(&s)
		m.check(m.notify.Ready(s))
	}
}

// ready says that start-up is over: listeners bound, queue loaded.
func (m *serviceManager) ready(d *daemon.Daemon) {
	m.check(m.notify.Ready(m.statusLine(d)))
}

// startFailed puts the reason in `systemctl status` before hubd exits 1.
func (m *serviceManager) startFailed(err error) {
	m.check(m.notify.Status("start failed: " + err.Error()))
}

// status refreshes the status line (every statusInterval).
func (m *serviceManager) status(d *daemon.Daemon) {
	m.check(m.notify.Status(m.statusLine(d)))
}

// stopping says that shutdown begins.
func (m *serviceManager) stopping(grace time.Duration) {
	m.check(m.notify.Stopping(fmt.Sprintf("stopping: sessions in DATA have %v to finish", grace)))
}

// statusLine is what `systemctl status` shows while hubd runs.
func (m *serviceManager) statusLine(d *daemon.Daemon) string {
	st := d.Transport.Stats()
	s := fmt.Sprintf("accepting mail on %d listeners; %d messages queued, %d recipients pending",
		len(d.Addrs()), st.Messages, st.PendingRecipients)
	if st.Held+st.Poisoned > 0 {
		s += fmt.Sprintf(", %d held, %d poisoned", st.Held, st.Poisoned)
	}
	if last := m.lastReload.Load(); last != nil {
		s += "; last " + *last
	}
	return s
}

// ticks returns the periodic status's channel; nil (never ready) when no
// service manager listens.
func (m *serviceManager) ticks() (<-chan time.Time, func()) {
	if !m.notify.Enabled() {
		return nil, func() {}
	}
	t := time.NewTicker(statusInterval)
	return t.C, t.Stop
}

func (m *serviceManager) check(err error) {
	if err != nil && m.warned.CompareAndSwap(false, true) {
		m.log.Warn("cannot notify the service manager (NOTIFY_SOCKET); carrying on", "err", err)
	}
}

// short is a configuration hash cut to 12 characters, as status shows it.
func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return hash
}
