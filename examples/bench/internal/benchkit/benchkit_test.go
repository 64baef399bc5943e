package benchkit

import (
	"errors"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseProc(t *testing.T) {
	rollup := []byte("55d0c8a00000-7ffd1b3fe000 ---p 00000000 00:00 0                          [rollup]\n" +
		"Rss:               21712 kB\nPss:               20480 kB\nPss_Anon:          15000 kB\n")
	if v, err := RollupKB(rollup, "Rss:"); err != nil || v != 21712 {
		t.Errorf("Rss = %d, %v", v, err)
	}
	if v, err := RollupKB(rollup, "Pss:"); err != nil || v != 20480 {
		t.Errorf("Pss = %d, %v", v, err)
	}
	if _, err := RollupKB(rollup, "Swap:"); err == nil {
		t.Error("an absent Swap: line gave no error")
	}
	if v, err := StatusField([]byte("Name:\thubd\nThreads:\t11\n"), "Threads:"); err != nil || v != 11 {
		t.Errorf("Threads = %d, %v", v, err)
	}
	if v, err := IOField([]byte("rchar: 5\nwchar: 42\nwrite_bytes: 4096\n"), "write_bytes:"); err != nil || v != 4096 {
		t.Errorf("write_bytes = %d, %v", v, err)
	}
}

func TestParseExposition(t *testing.T) {
	m, err := ParseExposition(strings.NewReader(`# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 10049
go_memstats_heap_inuse_bytes 1.6498688e+08
hubd_smtp_connections_active{connector="idle",otel_scope_name="hubd"} 9000
hubd_smtp_connections_active{connector="other",otel_scope_name="hubd"} 1000
hubd_smtp_limit_refusals_total{connector="idle",limit="max_inbound_connections",otel_scope_name="hubd"} 7
hubd_smtp_limit_refusals_total{connector="other",limit="max_inbound_connections",otel_scope_name="hubd"} 1
hubd_smtp_limit_refusals_total{connector="idle",limit="max_inbound_connections_per_source",otel_scope_name="hubd"} 2
`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Get("go_goroutines") != 10049 || m.Get("go_memstats_heap_inuse_bytes") != 164986880 {
		t.Errorf("go metrics: %v", m)
	}
	if m.Get("hubd_smtp_connections_active") != 10000 {
		t.Errorf("active connections summed over connectors = %v", m.Get("hubd_smtp_connections_active"))
	}
	if !math.IsNaN(m.Get("absent")) {
		t.Error("an absent metric is not NaN")
	}
	by := m.ByLabel("hubd_smtp_limit_refusals_total", "limit")
	if len(by) != 2 || by["max_inbound_connections"] != 8 || by["max_inbound_connections_per_source"] != 2 {
		t.Errorf("refusals by limit = %v", by)
	}
}

func TestFreePortAndWaitListening(t *testing.T) {
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	exited := make(chan struct{})
	close(exited)
	if err := WaitListening(addr, 5*time.Second, exited); err == nil {
		t.Error("WaitListening on a free port with the process gone: no error")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skip("the port was taken meanwhile:", err)
	}
	defer ln.Close()
	if err := WaitListening(addr, 5*time.Second, nil); err != nil {
		t.Error(err)
	}
}

func TestRepoRoot(t *testing.T) {
	dir, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cmd", "hubd")); err != nil {
		t.Errorf("RepoRoot = %q: %v", dir, err)
	}
	t.Chdir(t.TempDir())
	if _, err := RepoRoot(); !errors.Is(err, ErrNoRepo) {
		t.Errorf("outside the repository: %v, want ErrNoRepo", err)
	}
}
