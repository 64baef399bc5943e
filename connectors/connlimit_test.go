package connectors

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSourceShare(t *testing.T) {
	for _, tc := range []struct{ max, open, pct, want int }{
		{5000, 0, 2, 100},
		{5000, 4000, 2, 20},
		{5000, 4990, 2, 1}, // floor of 1
		{100, 0, 2, 2},
		{10, 0, 2, 1},
		{10, 9, 50, 1},
	} {
		if got := sourceShare(tc.max, tc.open, tc.pct); got != tc.want {
			t.Errorf("sourceShare(%d, %d, %d) = %d, want %d", tc.max, tc.open, tc.pct, got, tc.want)
		}
	}
}

// TestPercentagePerSource: with 150 slots and 2%, the share is 3 on an idle
// connector, 2 once one slot is taken (2% of 149 remaining, rounded down):
// one source gets 2 connections.
func TestPercentagePerSource(t *testing.T) {
	t.Parallel()
	h, lb := startLogged(t, `
receive_connector "mx" {
  bind = ["127.0.0.1:0"]
  max_inbound_connections = 150
  max_inbound_connections_percentage_per_source = 2
}
`, false)
	for range 2 {
		if _, g := h.dial("127.0.0.1:0", "127.0.0.2"); !strings.HasPrefix(g, "220 ") {
			t.Fatalf("greeting %q", g)
		}
	}
	if _, g := h.dial("127.0.0.1:0", "127.0.0.2"); g != "421 4.3.2 Too many connections" {
		t.Errorf("third connection: %q", g)
	}
	lb.waitLog("connection refused", "remote=127.0.0.2:", "reason=max_inbound_connections_percentage_per_source")
	if _, g := h.dial("127.0.0.1:0", "127.0.0.3"); !strings.HasPrefix(g, "220 ") {
		t.Errorf("other source: %q", g)
	}
}

func TestConnectionRateLimit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hcl := `
receive_connector "mx" {
  bind = ["127.0.0.1:0"]
  connection_rate_limit = 3
}
`
	h, lb := startIn(t, dir, loadConfig(t, dir, hcl), false)
	for range 3 {
		c, g := h.dial("127.0.0.1:0", "127.0.0.2")
		if !strings.HasPrefix(g, "220 ") {
			t.Fatalf("greeting %q", g)
		}
		c.expect("QUIT", "221")
	}
	if _, g := h.dial("127.0.0.1:0", "127.0.0.2"); g != "421 4.4.2 Connection rate limit exceeded" {
		t.Errorf("fourth connection in a minute: %q", g)
	}
	lb.waitLog("connection refused", "remote=127.0.0.2:", "reason=connection_rate_limit")
	if _, g := h.dial("127.0.0.1:0", "127.0.0.3"); !strings.HasPrefix(g, "220 ") {
		t.Errorf("other source: %q", g)
	}
	// A reload starts the buckets afresh.
	if err := h.svc.Reload(loadConfig(t, dir, hcl)); err != nil {
		t.Fatal(err)
	}
	if _, g := h.dial("127.0.0.1:0", "127.0.0.2"); !strings.HasPrefix(g, "220 ") {
		t.Errorf("after reload: %q", g)
	}
}

// TestFlood: 3000 connections from 127.0.0.2-9 against small limits; each
// source's concurrent connections stay within its limit, the surplus gets
// 421 4.3.2 or 421 4.4.2 (one log line each), and a client from 127.0.0.1
// completes a transaction in the middle of it.
func TestFlood(t *testing.T) {
	t.Parallel()
	const (
		sources   = 8
		perSource = 375 // 3000 in all
		workers   = 12  // concurrent dialers per source
		perSrcMax = 4
		ratePerMn = 150
	)
	h, lb := startLogged(t, fmt.Sprintf(`
receive_connector "mx" {
  bind = ["127.0.0.1:0"]
  max_inbound_connections            = 200
  max_inbound_connections_per_source = %d
  connection_rate_limit              = %d
}
`, perSrcMax, ratePerMn), true)
	addr := h.addr("127.0.0.1:0")

	type tally struct {
		ok, full, rate, other atomic.Int64
		open, maxOpen         atomic.Int64
	}
	tallies := make([]tally, sources)
	start := time.Now()
	var wg sync.WaitGroup
	for s := range sources {
		src := fmt.Sprintf("127.0.0.%d", s+2)
		ta := &tallies[s]
		var left atomic.Int64
		left.Store(perSource)
		for range workers {
			wg.Go(func() {
				d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
				var held net.Conn // a 220 connection kept open until the next attempt is answered
				defer func() {
					if held != nil {
						held.Close()
						ta.open.Add(-1)
					}
				}()
				for left.Add(-1) >= 0 {
					conn, err := d.Dial("tcp", addr)
					if err != nil {
						ta.other.Add(1)
						continue
					}
					conn.SetDeadline(time.Now().Add(10 * time.Second))
					line, err := bufio.NewReader(conn).ReadString('\n')
					switch {
					case err != nil:
						ta.other.Add(1)
					case strings.HasPrefix(line, "220 "):
						ta.ok.Add(1)
						if n := ta.open.Add(1); n > ta.maxOpen.Load() {
							ta.maxOpen.Store(n)
						}
					case line == "421 4.3.2 Too many connections\r\n":
						ta.full.Add(1)
					case line == "421 4.4.2 Connection rate limit exceeded\r\n":
						ta.rate.Add(1)
					default:
						ta.other.Add(1)
					}
					if held != nil {
						held.Close()
						ta.open.Add(-1)
						held = nil
					}
					if strings.HasPrefix(line, "220 ") {
						held = conn
					} else {
						conn.Close()
					}
				}
			})
		}
	}

	// The well-behaved client, while the flood goes on.
	eventually(t, "the flood to start", func() bool { return tallies[0].full.Load()+tallies[0].rate.Load() > 0 })
	c, greet := h.dial("127.0.0.1:0", "127.0.0.1")
	if !strings.HasPrefix(greet, "220 ") {
		t.Fatalf("good client greeted %q", greet)
	}
	c.expect("EHLO good.test", "250")
	if r := c.send("good@remote.test", []string{"alice@example.com"}, "Subject: hi\r\n\r\nhello\r\n"); !strings.HasPrefix(r, "250 ") {
		t.Errorf("good client's DATA: %q", r)
	}
	c.expect("QUIT", "221")
	wg.Wait()
	elapsed := time.Since(start)

	var refused int64
	for s := range sources {
		ta := &tallies[s]
		t.Logf("127.0.0.%d: 220=%d 4.3.2=%d 4.4.2=%d other=%d max_open=%d", s+2,
			ta.ok.Load(), ta.full.Load(), ta.rate.Load(), ta.other.Load(), ta.maxOpen.Load())
		if ta.other.Load() != 0 {
			t.Errorf("127.0.0.%d: %d unexpected outcomes", s+2, ta.other.Load())
		}
		if ta.maxOpen.Load() > perSrcMax {
			t.Errorf("127.0.0.%d held %d connections at once, limit %d", s+2, ta.maxOpen.Load(), perSrcMax)
		}
		// Every attempt takes a token: at most the burst plus what refilled.
		if maxOK := ratePerMn + int64(elapsed.Minutes()*ratePerMn) + 1; ta.ok.Load() > maxOK {
			t.Errorf("127.0.0.%d: %d accepted, rate allows %d", s+2, ta.ok.Load(), maxOK)
		}
		if ta.full.Load() == 0 || ta.rate.Load() == 0 {
			t.Errorf("127.0.0.%d: neither limit tripped", s+2)
		}
		refused += ta.full.Load() + ta.rate.Load()
	}
	eventually(t, "one log line per refusal", func() bool {
		return int64(lb.count("connection refused")) == refused
	})
	t.Logf("%d connections in %v", sources*perSource, elapsed.Round(time.Millisecond))
}
