package main

import (
	"bytes"
	"math"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"hubd/examples/bench/internal/benchkit"
)

type logWriter struct{ t *testing.T }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestIdleConnections runs the whole measurement with 200 connections from
// 20 addresses: every one is greeted and answered, hubd counts them, lets go
// of them when they close, and answers a session afterwards.
func TestIdleConnections(t *testing.T) {
	if _, err := os.Stat("/proc/self/smaps_rollup"); err != nil {
		t.Skip("needs Linux /proc with smaps_rollup:", err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Max < 1024 {
		t.Skipf("RLIMIT_NOFILE hard limit %d is too low (%v)", lim.Max, err)
	}
	dir := t.TempDir()
	bin, err := benchkit.Build(dir, "hubd")
	if err != nil {
		t.Skip("cannot build hubd:", err)
	}
	start := time.Now()
	r, err := measure(options{n: 200, sources: 20, hubd: bin, parallel: 32,
		settle: 200 * time.Millisecond, drain: 10 * time.Second}, logWriter{t})
	var out bytes.Buffer
	if r != nil {
		r.print(&out)
		t.Log("\n" + out.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := r.failure(); err != nil {
		t.Fatal(err)
	}
	if r.held != 200 || r.open.refused != 0 || r.open.failed != 0 {
		t.Fatalf("held %d, refused %d, failed %d of 200", r.held, r.open.refused, r.open.failed)
	}
	if r.idle.activeConns != 200 || r.idle.fds < r.base.fds+200 {
		t.Errorf("while idle hubd counts %.0f connections and %d descriptors (baseline %d)", r.idle.activeConns, r.idle.fds, r.base.fds)
	}
	if g := r.perConn(func(s sample) float64 { return s.goroutines }); math.IsNaN(g) || g < 0.9 {
		t.Errorf("goroutines per connection %.2f: the metrics endpoint is not being read", g)
	}
	if math.IsNaN(r.perConn(func(s sample) float64 { return s.pssKB })) {
		t.Error("no PSS figure")
	}
	for _, want := range []string{"per idle connection: RSS", "health after close: 220, EHLO 250, QUIT 221: ok"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	t.Logf("whole run: %s", time.Since(start).Round(time.Millisecond))
}

func TestSourceAddrs(t *testing.T) {
	got := sourceAddrs(600)
	if len(got) != 600 {
		t.Fatalf("%d addresses", len(got))
	}
	if !got[0].Equal(net.IPv4(127, 0, 0, 2)) || !got[252].Equal(net.IPv4(127, 0, 0, 254)) || !got[253].Equal(net.IPv4(127, 0, 1, 1)) {
		t.Errorf("addresses start %v … %v, %v", got[0], got[252], got[253])
	}
	seen := map[string]bool{}
	for _, ip := range got {
		if ip[3] == 0 || ip[3] == 255 || ip[0] != 127 || seen[ip.String()] {
			t.Fatalf("bad or repeated address %v", ip)
		}
		seen[ip.String()] = true
	}
}

func TestParseNofile(t *testing.T) {
	limits := []byte("Limit                     Soft Limit           Hard Limit           Units     \n" +
		"Max processes             95000                95000                processes \n" +
		"Max open files            20000                65536                files     \n")
	if soft, hard, err := parseNofile(limits); err != nil || soft != 20000 || hard != 65536 {
		t.Errorf("nofile = %d/%d, %v", soft, hard, err)
	}
}

func TestConfigLimits(t *testing.T) {
	cfg := hubdConfig("/tmp/x", 2525, 9464, hubdLimits{conns: 10000, perSource: 10})
	for _, want := range []string{
		"max_inbound_connections                       = 20100",
		"max_inbound_connections_per_source            = 20",
		"max_inbound_connections_percentage_per_source = 100",
		`remote_ip_ranges = ["127.0.0.0/8"]`,
		`prometheus_listen = "127.0.0.1:9464"`,
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if cfg := hubdConfig("/tmp/x", 2525, 9464, hubdLimits{conns: 10000, perSource: 50, defaultLimits: true}); strings.Contains(cfg, "max_inbound") {
		t.Errorf("-default-limits config sets limits:\n%s", cfg)
	}
}
