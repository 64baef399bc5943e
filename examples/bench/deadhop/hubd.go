package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"hubd/examples/bench/internal/benchkit"
)

// hubdConfig: a receive connector only because hubd wants one (the queue
// is filled beforehand; nothing connects to it), one
// send connector sending everything to a smart host where nothing listens,
// short retry intervals so that retry cycles come within the run, a long
// expiry, no delay DSNs, a tracking log never pruned within the run, the
// admin socket for hubctl and /metrics on a free port.
func hubdConfig(dir string, smtpPort, deadPort, metricsPort int, retry time.Duration) string {
	return fmt.Sprintf(`hub {
  hostname                 = "deadhop.hubd.test"
  spool_dir                = %q
  quick_retry_interval     = %q
  transient_retry_interval = %q
  retry_interval           = %q
  message_expiration       = "720h"
  delay_dsn_after          = "0s"
  # Default limits but the directory's: at 1GB (the default) a million
  # deferrals a cycle rotate it away, and its size no longer says what
  # a cycle wrote.
  tracking_log {
    max_directory_size = "200GB"
  }
}
admin {
  socket = %q
}
receive_connector "unused" {
  bind             = ["127.0.0.1:%d"]
  remote_ip_ranges = ["127.0.0.1"]
}
send_connector "dead" {
  address_spaces = ["*"]
  smart_hosts    = ["[127.0.0.1]:%d"]
  tls            = "none"
}
telemetry {
  metrics {
    prometheus_listen = "127.0.0.1:%d"
  }
}
`, filepath.Join(dir, "spool"), retry, retry, retry, filepath.Join(dir, "admin.sock"), smtpPort, deadPort, metricsPort)
}

// hubdProc is a running hubd child whose log (stderr, text format) is read
// through a pipe: counted by message, never written to disk by hubd, so
// that its write_bytes are the spool's and the tracking log's.
type hubdProc struct {
	cmd        *exec.Cmd
	started    time.Time
	exited     chan struct{}
	metricsURL string
	socket     string
	logPath    string // warnings, errors and the log's tail, written at stop

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced at every event below
	recovered time.Time     // the "queue recovered" line
	failures  []time.Time   // each "next hop unreachable, queue in retry" line
	byMsg     map[string]int
	lines     int
	logBytes  int64
	notable   []string // WARN and ERROR lines other than the retry one (the first 50)
	tail      []string // the last 50 lines
}

func startHubd(binary, dir string, deadPort int, retry time.Duration) (*hubdProc, error) {
	metricsPort, err := benchkit.FreePort()
	if err != nil {
		return nil, err
	}
	smtpPort, err := benchkit.FreePort()
	if err != nil {
		return nil, err
	}
	configPath := filepath.Join(dir, "hubd.hcl")
	if err := os.WriteFile(configPath, []byte(hubdConfig(dir, smtpPort, deadPort, metricsPort, retry)), 0o644); err != nil {
		return nil, err
	}
	h := &hubdProc{
		metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort),
		socket:     filepath.Join(dir, "admin.sock"),
		logPath:    filepath.Join(dir, "hubd.log"),
		changed:    make(chan struct{}),
		byMsg:      map[string]int{},
	}
	h.cmd = exec.Command(binary, "run", "-config", configPath, "-log-level", "info")
	stderr, err := h.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	h.cmd.Stdout = h.cmd.Stderr
	h.started = time.Now()
	if err := h.cmd.Start(); err != nil {
		return nil, err
	}
	h.exited = make(chan struct{})
	read := make(chan struct{})
	go func() { h.readLog(stderr); close(read) }()
	go func() { <-read; h.cmd.Wait(); close(h.exited); h.notify() }()
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

func (h *hubdProc) notify() {
	h.mu.Lock()
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

// readLog counts hubd's log lines by msg and notes the events the
// measurement waits for.
func (h *hubdProc) readLog(r io.Reader) {
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			h.logLine(strings.TrimRight(line, "\n"))
		}
		if err != nil {
			return
		}
	}
}

func (h *hubdProc) logLine(line string) {
	msg := logMsg(line)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lines++
	h.logBytes += int64(len(line) + 1)
	h.byMsg[msg]++
	if len(h.tail) == 50 {
		h.tail = h.tail[1:]
	}
	h.tail = append(h.tail, line)
	event := true
	switch {
	case msg == "queue recovered" && h.recovered.IsZero():
		h.recovered = time.Now()
	case msg == "next hop unreachable, queue in retry":
		h.failures = append(h.failures, time.Now())
	default:
		event = false
		if (strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR")) && len(h.notable) < 50 {
			h.notable = append(h.notable, line)
		}
	}
	if event {
		close(h.changed)
		h.changed = make(chan struct{})
	}
}

// logMsg is the msg of a logfmt line: msg=word or msg="words".
func logMsg(line string) string {
	i := strings.Index(line, " msg=")
	if i < 0 {
		return "(no msg)"
	}
	v := line[i+5:]
	if strings.HasPrefix(v, `"`) {
		if j := strings.IndexByte(v[1:], '"'); j >= 0 {
			return v[1 : j+1]
		}
		return v[1:]
	}
	if j := strings.IndexByte(v, ' '); j >= 0 {
		return v[:j]
	}
	return v
}

// logCounts returns the lines counted so far by msg, and their total and bytes.
func (h *hubdProc) logCounts() (map[string]int, int, int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int, len(h.byMsg))
	for k, v := range h.byMsg {
		out[k] = v
	}
	return out, h.lines, h.logBytes
}

// waitFor waits until cond (called with h.mu held) holds, hubd exits, or
// timeout passes.
func (h *hubdProc) waitFor(timeout time.Duration, what string, cond func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		ok, ch := cond(), h.changed
		h.mu.Unlock()
		if ok {
			return nil
		}
		if !h.alive() {
			return fmt.Errorf("hubd exited while waiting for %s", what)
		}
		select {
		case <-ch:
		case <-h.exited:
		case <-deadline.C:
			return fmt.Errorf("no %s within %s", what, timeout)
		}
	}
}

// failed is the number of failed probes of the next hop so far.
func (h *hubdProc) failed() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.failures)
}

// waitFailures waits for the k-th failed probe of the dead next hop and
// returns when it was seen.
func (h *hubdProc) waitFailures(k int, timeout time.Duration) (time.Time, error) {
	var at time.Time
	err := h.waitFor(timeout, fmt.Sprintf("failed probe #%d of the next hop", k), func() bool {
		if len(h.failures) >= k {
			at = h.failures[k-1]
			return true
		}
		return false
	})
	return at, err
}

// stop sends SIGTERM and waits (SIGKILL after 60 s), then writes the
// notable lines and the tail of the log to logPath.
func (h *hubdProc) stop() {
	if h.cmd == nil || h.cmd.Process == nil {
		return
	}
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.exited:
	case <-time.After(60 * time.Second):
		h.cmd.Process.Kill()
		<-h.exited
	}
	os.WriteFile(h.logPath, []byte(h.logExcerpt()), 0o644)
}

func (h *hubdProc) logExcerpt() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return "# warnings and errors (first 50, retry lines left out)\n" + strings.Join(h.notable, "\n") +
		"\n# last 50 lines\n" + strings.Join(h.tail, "\n") + "\n"
}
