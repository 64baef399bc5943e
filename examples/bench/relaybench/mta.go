package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"hubd/examples/bench/internal/benchkit"
)

// mta is one relay under test, started afresh (new spool/queue) for each run.
type mta interface {
	name() string
	// start brings the MTA up in the empty directory dir, relaying to
	// 127.0.0.1:sinkPort, and returns where it listens and the pid whose
	// process tree is measured.
	start(dir string, sinkPort int) (addr string, pid int, err error)
	// stop shuts it down and waits for it.
	stop() error
}

// hubdRelay is A: the hubd binary built from this repository (or given by
// -hubd); with -against, B too.
type hubdRelay struct {
	label    string // "hubd" or "base"
	binary   string
	sessions int
	cmd      *exec.Cmd
	exited   chan struct{}
	logPath  string
}

func (h *hubdRelay) name() string { return h.label }

func (h *hubdRelay) start(dir string, sinkPort int) (string, int, error) {
	port, err := benchkit.FreePort()
	if err != nil {
		return "", 0, err
	}
	// Closing sessions still count for a moment, hence the margin.
	conns := max(h.sessions*2, 100)
	config := fmt.Sprintf(`hub {
  hostname  = "bench.hubd.test"
  spool_dir = %q
}
receive_connector "relay" {
  bind             = ["127.0.0.1:%d"]
  remote_ip_ranges = ["127.0.0.1/32"]
  max_inbound_connections_per_source = %d
  permissions {
    anonymous = ["submit", "relay"]
  }
}
send_connector "sink" {
  address_spaces = ["*"]
  smart_hosts    = ["127.0.0.1:%d"]
  tls            = "none"
}
`, filepath.Join(dir, "spool"), port, conns, sinkPort)
	configPath := filepath.Join(dir, "hubd.hcl")
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		return "", 0, err
	}
	h.logPath = filepath.Join(dir, "hubd.log")
	logFile, err := os.Create(h.logPath)
	if err != nil {
		return "", 0, err
	}
	defer logFile.Close()
	// info: hubd logs every message, as Postfix does to its maillog.
	h.cmd = exec.Command(h.binary, "run", "-config", configPath, "-log-level", "info")
	h.cmd.Stdout, h.cmd.Stderr = logFile, logFile
	if err := h.cmd.Start(); err != nil {
		return "", 0, err
	}
	h.exited = make(chan struct{})
	go func() { h.cmd.Wait(); close(h.exited) }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := benchkit.WaitListening(addr, 30*time.Second, h.exited); err != nil {
		h.stop()
		log, _ := os.ReadFile(h.logPath)
		return "", 0, fmt.Errorf("hubd: %w\n%s", err, log)
	}
	return addr, h.cmd.Process.Pid, nil
}

func (h *hubdRelay) stop() error {
	if h.cmd == nil || h.cmd.Process == nil {
		return nil
	}
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(30 * time.Second):
		h.cmd.Process.Kill()
		<-h.exited
	}
	h.cmd = nil
	return nil
}

// postfixRelay is B: a private Postfix instance run by postfix-relay.sh.
type postfixRelay struct {
	script string
	env    []string
}

func (p *postfixRelay) name() string { return "postfix" }

func (p *postfixRelay) run(args ...string) (string, error) {
	cmd := exec.Command("bash", append([]string{p.script}, args...)...)
	cmd.Env = append(os.Environ(), p.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", p.script, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func (p *postfixRelay) start(dir string, sinkPort int) (string, int, error) {
	port, err := benchkit.FreePort()
	if err != nil {
		return "", 0, err
	}
	p.env = []string{
		"PFDIR=" + filepath.Join(dir, "postfix"),
		"LISTEN_PORT=" + strconv.Itoa(port),
		"SINK_PORT=" + strconv.Itoa(sinkPort),
	}
	if _, err := p.run("start"); err != nil {
		return "", 0, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if err := benchkit.WaitListening(addr, 30*time.Second, nil); err != nil {
		p.stop()
		return "", 0, fmt.Errorf("postfix: %w", err)
	}
	out, err := p.run("pid")
	if err != nil {
		p.stop()
		return "", 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		p.stop()
		return "", 0, fmt.Errorf("postfix master pid %q: %w", out, err)
	}
	return addr, pid, nil
}

func (p *postfixRelay) stop() error {
	_, err := p.run("clean")
	return err
}
