package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"hubd/examples/bench/internal/benchkit"
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
	smtpPort, err := benchkit.FreePort()
	if err != nil {
		return nil, err
	}
	metricsPort, err := benchkit.FreePort()
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
	if err := benchkit.WaitListening(h.addr, 30*time.Second, h.exited); err != nil {
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
