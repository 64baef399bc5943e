// Package hubtest starts a complete hub in-process for end-to-end tests:
// the HCL configuration given as a string, receive connectors on loopback
// ports chosen by the kernel, the real transport with its durable queue in a
// temporary directory, and the real Maildir and SMTP deliverers.
//
// Write `bind = ["127.0.0.1:0"]` in the HCL; Hub.Addr(connector) tells where
// that connector actually listens. `{{dir}}` in the HCL is replaced by the
// test's temporary directory.
package hubtest

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"hubd/hub/backpressure"
	"hubd/hub/delivery/smtpout"
	"hubd/internal/daemon"
	"hubd/policy"
)

// Hub is a running in-process hub.
type Hub struct {
	*daemon.Daemon
	Dir    string // temporary directory holding the config, spool and Maildirs
	Config *policy.Config
	stop   sync.Once
}

// Options adjust Start.
type Options struct {
	// Dir holds the configuration (hubd.hcl, written there) and replaces
	// "{{dir}}" in it; "" → a new temporary directory. A hub started on
	// the Dir of one stopped before (Hub.Stop) takes over its spool.
	Dir string
	// DNSServers (a dnstest server's address) replace "{{dns}}" in the
	// HCL, which belongs in its hub block, with dns_servers = [...]: the
	// hub asks them as production asks its own, reloads included.
	DNSServers []string
	Resolver   smtpout.Resolver // MX routing's DNS instead of a server (a fake); nil → the hub's resolver
	Logger     *slog.Logger     // nil → discard, or stderr when HUBTEST_LOG is set
	// SMTPPort is the port MX hosts are dialled on (the test's sinks share
	// one, see smtpsink.StartSamePort); 0 → 25.
	SMTPPort int
	// SMTPCommandTimeout bounds each SMTP reply awaited; default 10s.
	SMTPCommandTimeout time.Duration
	// PressureProbe fakes free disk space and memory for back pressure.
	PressureProbe backpressure.Probe
	// TracerProvider receives the hub's spans (an SDK provider with an
	// in-memory recorder, in the tracing tests); nil → none.
	TracerProvider trace.TracerProvider
	// Configure, when set, adjusts the loaded configuration before the hub
	// starts (for settings whose HCL is not the test's subject).
	Configure func(*policy.Config)
	// MeterProvider receives the hub's metrics; nil → none.
	MeterProvider metric.MeterProvider
}

// Start loads hcl, starts the hub through internal/daemon (the wiring `hubd
// run` uses) and stops it at the end of the test.
func Start(t testing.TB, hcl string, opts Options) *Hub {
	t.Helper()
	dir := opts.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	hcl = strings.ReplaceAll(hcl, "{{dir}}", dir)
	dns := ""
	if len(opts.DNSServers) > 0 {
		dns = `dns_servers = ["` + strings.Join(opts.DNSServers, `", "`) + `"]`
	}
	hcl = strings.ReplaceAll(hcl, "{{dns}}", dns)
	path := filepath.Join(dir, "hubd.hcl")
	if err := os.WriteFile(path, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := policy.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if opts.Configure != nil {
		opts.Configure(cfg)
	}
	log := opts.Logger
	if log == nil && os.Getenv("HUBTEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cmdTimeout := opts.SMTPCommandTimeout
	if cmdTimeout == 0 {
		cmdTimeout = 10 * time.Second
	}
	d, err := daemon.Start(context.Background(), cfg, daemon.Options{Logger: log, Resolver: opts.Resolver,
		SMTPPort: opts.SMTPPort, PressureProbe: opts.PressureProbe, TracerProvider: opts.TracerProvider, MeterProvider: opts.MeterProvider, ConfigPath: path, SMTPDialTimeout: 5 * time.Second, SMTPCommandTimeout: cmdTimeout, SMTPDataTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	h := &Hub{Daemon: d, Dir: dir, Config: cfg}
	t.Cleanup(h.Stop)
	return h
}

// Stop shuts the hub down (once; the test's end does it otherwise), so
// that another hub can be started on its directory.
func (h *Hub) Stop() {
	h.stop.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Shutdown(ctx, 5*time.Second)
	})
}

// Addr returns the address the named connector listens on (its first bind).
func (h *Hub) Addr(t testing.TB, connector string) string {
	t.Helper()
	for _, rc := range h.Config.ReceiveConnectors {
		if rc.Name == connector {
			if a, ok := h.Addrs()[rc.Bind[0]]; ok {
				return a.String()
			}
		}
	}
	t.Fatalf("no listening address for connector %q", connector)
	return ""
}

// WaitMaildir polls until the Maildir at dir has n messages in new/ and
// returns their contents, or fails the test after timeout.
func WaitMaildir(t testing.TB, dir string, n int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		entries, _ := os.ReadDir(filepath.Join(dir, "new"))
		if len(entries) >= n {
			var out []string
			for _, e := range entries {
				b, err := os.ReadFile(filepath.Join(dir, "new", e.Name()))
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, string(b))
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/new has %d messages after %v, want %d", dir, len(entries), timeout, n)
		}
		<-tick.C
	}
}
