// Package admintest starts an in-process hub (internal/daemon, the wiring
// `hubd run` uses) with the admin API served on a Unix socket in the
// test's temporary directory, for the tests of the admin API and hubctl.
// It also drives SMTP load for the reload-under-load tests (load.go).
//
// Until the admin socket is part of the daemon (the admin block), the
// test serves admin.New(...).Handler() itself, as the daemon will.
//
// The configuration is a real file (`{{dir}}` in the HCL is replaced by
// the temporary directory), so Reload reads it again as SIGHUP does.
package admintest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hubd/internal/admin"
	"hubd/internal/daemon"
	"hubd/internal/logbuf"
	"hubd/policy"
)

// Hub is a running daemon with its admin API.
type Hub struct {
	*daemon.Daemon
	Dir        string
	ConfigPath string
	Socket     string
	Client     *admin.Client
	Logs       *logbuf.Buffer // the daemon's log

	t   testing.TB
	srv *http.Server
}

// Start writes hcl, starts a daemon on it and serves the admin API on
// Dir/admin.sock; both stop at the end of the test.
func Start(t testing.TB, hcl string) *Hub {
	t.Helper()
	dir := t.TempDir()
	h := &Hub{t: t, Dir: dir, ConfigPath: filepath.Join(dir, "hubd.hcl"), Socket: filepath.Join(dir, "admin.sock"),
		Logs: &logbuf.Buffer{}}
	h.Write(hcl)
	h.start()
	t.Cleanup(func() {
		h.stop()
		if t.Failed() {
			t.Logf("hubd log:\n%s", h.Logs.String())
		}
	})
	return h
}

// Write replaces the configuration file (a reload reads it).
func (h *Hub) Write(hcl string) {
	h.t.Helper()
	hcl = strings.ReplaceAll(hcl, "{{dir}}", h.Dir)
	if err := os.WriteFile(h.ConfigPath, []byte(hcl), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// Restart stops the daemon and starts a new one on the configuration
// file, as a restart of hubd does: runtime overrides are gone.
func (h *Hub) Restart() {
	h.t.Helper()
	h.stop()
	h.start()
}

func (h *Hub) start() {
	h.t.Helper()
	cfg, err := policy.Load(h.ConfigPath)
	if err != nil {
		h.t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(h.Logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d, err := daemon.Start(context.Background(), cfg, daemon.Options{Logger: log, ConfigPath: h.ConfigPath,
		Version: "test", DiagnosticsOut: h.Logs, SMTPDialTimeout: 2 * time.Second})
	if err != nil {
		h.t.Fatal(err)
	}
	h.Daemon = d
	os.Remove(h.Socket)
	ln, err := net.Listen("unix", h.Socket)
	if err != nil {
		h.t.Fatal(err)
	}
	h.srv = &http.Server{Handler: admin.New(admin.Options{Daemon: d, Logger: log}).Handler()}
	go h.srv.Serve(ln)
	h.Client = admin.NewClient(h.Socket, "")
}

func (h *Hub) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		h.t.Errorf("admin server shutdown: %v", err)
	}
	if err := h.Daemon.Shutdown(ctx, 5*time.Second); err != nil {
		h.t.Errorf("daemon shutdown: %v", err)
	}
}

// Addr returns where bind listens now.
func (h *Hub) Addr(bind string) string {
	h.t.Helper()
	a, ok := h.Addrs()[bind]
	if !ok {
		h.t.Fatalf("no listener for %s (have %v)", bind, h.Addrs())
	}
	return a.String()
}
