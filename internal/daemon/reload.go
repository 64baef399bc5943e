package daemon

// Reload: SIGHUP and the admin API's POST /v1/reload both come here.
//
// A reload loads the configuration file (or directory) again, validates all
// of it, and puts it in force only if it is valid and the receive
// connectors can take it (certificates load, new bind addresses listen);
// otherwise nothing changes. Either way the result says what happened, and
// the log tells the same story: a refused reload logs every diagnostic
// (file:line:col) and then one line saying the running configuration
// stays; an applied one logs one line per change at info level (connector
// started, stopped, changed; listener opened, closed; setting that needs a
// restart) and then "configuration reloaded" with the new hash. Reloads
// are serialised: two at once (a SIGHUP during an API call) run one after
// the other.
//
// Runtime overrides end at a reload (DESIGN.md invariant 5): a connector
// stopped by `hubctl connector stop` runs again if the configuration
// enables it. Queue suspensions belong to the transport and are not
// touched here.

import (
	"context"
	"errors"
	"maps"
	"net"
	"reflect"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/hcl/v2"

	"hubd/internal/admin"
	"hubd/policy"
)

// inForce is the configuration in force with what status shows of it.
type inForce struct {
	cfg    *policy.Config
	hash   string
	loaded time.Time
}

// Reload loads Options.ConfigPath again and applies it if it is valid.
// The error is for a daemon that cannot reload at all (no config path);
// a configuration refused is a ReloadResult with Applied false.
func (d *Daemon) Reload(ctx context.Context) (admin.ReloadResult, error) {
	if d.opts.ConfigPath == "" {
		return admin.ReloadResult{}, errors.New("reload: the daemon was started without a configuration path")
	}
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.opts.ReloadStarting != nil {
		d.opts.ReloadStarting()
	}
	res, errs := d.reload()
	countReload(d.reloads, res.Applied)
	if d.opts.ReloadFinished != nil {
		d.opts.ReloadFinished(res, errs)
	}
	return res, nil
}

// reload is Reload with d.reloadMu held; it also counts the errors that
// refused the configuration.
func (d *Daemon) reload() (res admin.ReloadResult, errs int) {
	path := d.opts.ConfigPath
	cfg, err := policy.Load(path)
	if err != nil {
		res := admin.ReloadResult{Diagnostics: diagnostics(err)}
		errs = 1
		var le *policy.LoadError
		if errors.As(err, &le) {
			errs = len(le.Diags.Errs())
			if d.opts.DiagnosticsOut != nil {
				le.Write(d.opts.DiagnosticsOut, false) // with source snippets, as `hubd check` shows them
			}
		}
		for _, line := range res.Diagnostics {
			d.log.Error("reload: " + line)
		}
		d.log.Error("reload refused: the configuration has errors; the running configuration stays in force",
			"config", path, "errors", errs, "config_hash", d.inForce().hash)
		return res, errs
	}
	res, err = d.apply(cfg)
	for _, w := range cfg.Warnings {
		line := diagnosticText(w)
		res.Diagnostics = append(res.Diagnostics, line)
		d.log.Warn("reload: " + line)
	}
	if err != nil {
		res.Diagnostics = append(res.Diagnostics, err.Error())
		d.log.Error("reload refused: the connectors cannot take the new configuration; the running configuration stays in force",
			"config", path, "err", err, "config_hash", d.inForce().hash)
		return res, 1
	}
	d.log.Info("configuration reloaded", "config", path, "config_hash", res.ConfigHash)
	return res, 0
}

// Apply puts a new, already validated configuration in force: new sessions
// and the next delivery attempts see it. If the connectors cannot take it,
// nothing changes and the error says why.
func (d *Daemon) Apply(cfg *policy.Config) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	_, err := d.apply(cfg)
	return err
}

// apply is Apply, returning what changed and logging it. d.reloadMu is held.
func (d *Daemon) apply(cfg *policy.Config) (admin.ReloadResult, error) {
	old := d.inForce()
	overrides := d.Service.Stopped()
	before := d.Service.Addrs()
	if err := d.Service.Reload(cfg); err != nil {
		return admin.ReloadResult{}, err
	}
	d.Transport.Reload(cfg)
	d.Pressure.Reload(cfg.Hub.BackPressure)
	d.dns.Set(cfg.Hub.DNSServers)
	now := &inForce{cfg: cfg, hash: cfg.Hash(), loaded: time.Now()}
	d.state.Store(now)

	res := admin.ReloadResult{Applied: true, ConfigHash: now.hash, OverridesEnded: overrides}
	res.Started, res.Stopped, res.Changed = connectorChanges(old.cfg, cfg, overrides)
	after := d.Service.Addrs()
	for _, bind := range slices.Sorted(maps.Keys(after)) {
		if _, ok := before[bind]; !ok {
			res.Opened = append(res.Opened, bind)
		}
	}
	for _, bind := range slices.Sorted(maps.Keys(before)) {
		if _, ok := after[bind]; !ok {
			res.Closed = append(res.Closed, bind)
		}
	}
	res.NeedsRestart = needsRestart(old.cfg, cfg)
	d.logChanges(res, after)
	return res, nil
}

// logChanges logs one info line per change of an applied reload.
func (d *Daemon) logChanges(res admin.ReloadResult, addrs map[string]net.Addr) {
	// Overrides ended are logged at warning level by the connectors.
	for _, name := range res.Started {
		d.log.Info("reload: receive connector started", "connector", name)
	}
	for _, name := range res.Stopped {
		d.log.Info("reload: receive connector stopped", "connector", name)
	}
	for _, name := range res.Changed {
		d.log.Info("reload: receive connector changed; new sessions use the new settings", "connector", name)
	}
	for _, bind := range res.Opened {
		d.log.Info("reload: listener opened", "bind", bind, "addr", addrs[bind].String())
	}
	for _, bind := range res.Closed {
		d.log.Info("reload: listener closed", "bind", bind)
	}
	for _, s := range res.NeedsRestart {
		d.log.Warn("reload: setting changed; it takes effect at the next restart", "setting", s)
	}
}

// connectorChanges compares the receive connectors of two configurations:
// started (enabled now, and absent, disabled or stopped by an override
// before), stopped (enabled before, absent or disabled now) and changed
// (enabled in both, settings differ).
func connectorChanges(old, cur *policy.Config, overrides []string) (started, stopped, changed []string) {
	enabled := func(cfg *policy.Config) map[string]*policy.ReceiveConnector {
		m := map[string]*policy.ReceiveConnector{}
		for i := range cfg.ReceiveConnectors {
			if rc := &cfg.ReceiveConnectors[i]; rc.Enabled {
				m[rc.Name] = rc
			}
		}
		return m
	}
	was, is := enabled(old), enabled(cur)
	for _, name := range slices.Sorted(maps.Keys(is)) {
		switch prev := was[name]; {
		case prev == nil || slices.Contains(overrides, name):
			started = append(started, name)
		case !reflect.DeepEqual(*prev, *is[name]):
			changed = append(changed, name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(was)) {
		if is[name] == nil {
			stopped = append(stopped, name)
		}
	}
	return started, stopped, changed
}

// needsRestart names the settings a running daemon read at start and a
// reload cannot change.
func needsRestart(old, cur *policy.Config) []string {
	var out []string
	if old.Hub.SpoolDir != cur.Hub.SpoolDir {
		out = append(out, "hub.spool_dir (the queue stays where it was opened)")
	}
	if old.Hub.TrackingLog != cur.Hub.TrackingLog {
		out = append(out, "hub.tracking_log (the log stays as it was opened)")
	}
	if old.Admin != cur.Admin {
		out = append(out, "admin (the admin API keeps the socket, listener and token it started with)")
	}
	if old.Hub.MaildropDir != cur.Hub.MaildropDir || old.Hub.MaildropGroup != cur.Hub.MaildropGroup {
		out = append(out, "hub.maildrop_dir, hub.maildrop_group (the pickup keeps the directory it started with)")
	}
	if old.Hub.Hostname != cur.Hub.Hostname {
		out = append(out, "hub.hostname (for the deliverers' default EHLO/LHLO name and Maildir file names; receive connectors use it now)")
	}
	if telemetryChanged(old.Telemetry, cur.Telemetry) {
		out = append(out, "telemetry (exporters, sampling, the Prometheus listener and the log format are built at start)")
	}
	if !reflect.DeepEqual(old.Queue, cur.Queue) {
		out = append(out, "queue (the queue engine, its node and its cluster are opened at start)")
	}
	return out
}

// telemetryChanged compares what internal/telemetry built at start;
// record_addresses is left out: the connectors read it from the
// configuration in force, session by session.
func telemetryChanged(old, cur policy.Telemetry) bool {
	old.RecordAddresses, cur.RecordAddresses = false, false
	return !reflect.DeepEqual(old, cur)
}

// diagnostics turns a load error into one line per diagnostic.
func diagnostics(err error) []string {
	var le *policy.LoadError
	if !errors.As(err, &le) {
		return []string{err.Error()}
	}
	out := make([]string, 0, len(le.Diags))
	for _, d := range le.Diags {
		out = append(out, diagnosticText(d))
	}
	return out
}

// diagnosticText is "file:line:col: severity: summary; detail".
func diagnosticText(d *hcl.Diagnostic) string {
	sev := "error"
	if d.Severity == hcl.DiagWarning {
		sev = "warning"
	}
	s := sev + ": " + d.Summary
	if d.Detail != "" {
		s += "; " + d.Detail
	}
	if r := d.Subject; r != nil {
		return r.Filename + ":" + strconv.Itoa(r.Start.Line) + ":" + strconv.Itoa(r.Start.Column) + ": " + s
	}
	return s
}
