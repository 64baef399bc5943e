package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// hubdLimits are the receive connector's limit settings in the generated
// config. With defaultLimits the connector keeps hubd's defaults, so a run
// shows what an operator who raised nothing would hit.
type hubdLimits struct {
	conns         int // connections to hold open
	perSource     int // the most any one source address holds
	defaultLimits bool
}

// hclLimits returns the connector attributes that let conns connections in,
// perSource from each source address:
//   - max_inbound_connections (default 5000): twice conns, so that sessions
//     still closing never count against a new one;
//   - max_inbound_connections_per_source (default 20);
//   - max_inbound_connections_percentage_per_source (default 2): a source
//     may hold that percentage of the connector's remaining slots, which
//     shrink to a few as it fills; 100 with twice the slots needed keeps
//     the share above perSource;
//   - connection_inactivity_timeout (default 5m) and connection_timeout
//     (default 10m): an hour, so that no session times out while idle.
func (l hubdLimits) hcl() string {
	if l.defaultLimits {
		return ""
	}
	return fmt.Sprintf(`  max_inbound_connections                       = %d
  max_inbound_connections_per_source            = %d
  max_inbound_connections_percentage_per_source = 100
  connection_inactivity_timeout                 = "1h"
  connection_timeout                            = "1h"
`, 2*l.conns+100, max(20, 2*l.perSource))
}

// hubdConfig is the generated configuration: one receive connector for all
// of 127/8 (no relay right: the sessions only say EHLO), metrics on a
// Prometheus endpoint for the goroutine count, nothing else.
func hubdConfig(dir string, smtpPort, metricsPort int, l hubdLimits) string {
	return fmt.Sprintf(`hub {
  hostname  = "idleconns.hubd.test"
  spool_dir = %q
}
receive_connector "idle" {
  bind             = ["127.0.0.1:%d"]
  remote_ip_ranges = ["127.0.0.0/8"]
%s}
telemetry {
  metrics {
    prometheus_listen = "127.0.0.1:%d"
  }
}
`, filepath.Join(dir, "spool"), smtpPort, l.hcl(), metricsPort)
}

// hubdProc is a running hubd child.
type hubdProc struct {
	cmd        *exec.Cmd
	exited     chan struct{}
	logPath    string
	addr       string // SMTP, host:port
	metricsURL string
}

// startHubd writes the config into dir (empty, private to this run) and
// starts binary on it, logging warnings and errors to dir/hubd.log.
func startHubd(binary, dir string, l hubdLimits) (*hubdProc, error) {
	smtpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	metricsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	configPath := filepath.Join(dir, "hubd.hcl")
	if err := os.WriteFile(configPath, []byte(hubdConfig(dir, smtpPort, metricsPort, l)), 0o644); err != nil {
		return nil, err
	}
	h := &hubdProc{
		logPath:    filepath.Join(dir, "hubd.log"),
		addr:       fmt.Sprintf("127.0.0.1:%d", smtpPort),
		metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort),
	}
	logFile, err := os.Create(h.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	// warn: refusals and failures are logged, not every session.
	h.cmd = exec.Command(binary, "run", "-config", configPath, "-log-level", "warn")
	h.cmd.Stdout, h.cmd.Stderr = logFile, logFile
	if err := h.cmd.Start(); err != nil {
		return nil, err
	}
	h.exited = make(chan struct{})
	go func() { h.cmd.Wait(); close(h.exited) }()
	if err := waitListening(h.addr, 30*time.Second, h.exited); err != nil {
		h.stop()
		return nil, fmt.Errorf("hubd: %w\n%s", err, h.log())
	}
	return h, nil
}

func (h *hubdProc) pid() int { return h.cmd.Process.Pid }

func (h *hubdProc) alive() bool {
	select {
	case <-h.exited:
		return false
	default:
		return true
	}
}

// log is what hubd has written so far (its last 4 KB).
func (h *hubdProc) log() string {
	b, _ := os.ReadFile(h.logPath)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// stop sends SIGTERM and waits (SIGKILL after 30 s).
func (h *hubdProc) stop() {
	if h.cmd == nil || h.cmd.Process == nil {
		return
	}
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(30 * time.Second):
		h.cmd.Process.Kill()
		<-h.exited
	}
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before hubd binds it; hubd then fails to start, loudly.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitListening polls addr until it accepts a connection, the process
// exits, or within passes.
func waitListening(addr string, within time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before listening on %s", addr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("nothing listens on %s after %s", addr, within)
}

// buildHubd builds ./cmd/hubd of the repository around the working
// directory into dir and returns the binary's path.
func buildHubd(dir string) (string, error) {
	repo, err := repoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "hubd")
	build := exec.Command("go", "build", "-o", bin, "./cmd/hubd")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/hubd: %w\n%s", err, out)
	}
	return bin, nil
}

// repoRoot is the nearest directory upwards from the working directory that
// holds go.mod with "module hubd".
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && len(b) > 11 && string(b[:11]) == "module hubd" {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run idleconns inside the hubd repository, or give -hubd")
		}
		dir = parent
	}
}
