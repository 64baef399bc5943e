package connectors

import (
	"fmt"
	"strings"
	"testing"
)

// The per-source limits on the wire. A client's IPv6 address can only come
// from loopback here as ::1, so the tests put a PROXY-speaking load balancer
// (the test, at 127.0.0.1) in front, and the header carries the client
// address: the Service counts that address, as in production behind one.

// sourcesHCL: four connectors on one PROXY bind, told apart by the client's
// /48 (or IPv4 /24), one limit each.
const sourcesHCL = `
receive_connector "conns" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["2001:db8:1::/48", "192.0.2.0/24"]
  proxy_protocol   = true
  trusted_proxies  = ["127.0.0.1"]
  max_inbound_connections_per_source = 1
}
receive_connector "share" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["2001:db8:2::/48"]
  proxy_protocol   = true
  trusted_proxies  = ["127.0.0.1"]
  max_inbound_connections = 100
  max_inbound_connections_percentage_per_source = 2
}
receive_connector "rate" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["2001:db8:3::/48"]
  proxy_protocol   = true
  trusted_proxies  = ["127.0.0.1"]
  connection_rate_limit = 2
  message_rate_limit    = 1
  tarpit_interval       = "0s"
}
receive_connector "auth" {
  bind                = ["127.0.0.1:0"]
  remote_ip_ranges    = ["2001:db8:4::/47"]
  proxy_protocol      = true
  trusted_proxies     = ["127.0.0.1"]
  auth                = ["plain"]
  allow_insecure_auth = true
  tarpit_interval     = "0s"
  max_logon_failures  = 10
  max_auth_failures_per_source  = 2
  max_auth_failures_per_network = 4
  permissions {
    anonymous     = []
    authenticated = ["submit", "relay"]
  }
}
`

// from connects through the PROXY header as client (an IPv4 or IPv6
// address) and returns the connection and its first reply.
func (h *limitHarness) from(client string) (*client, string) {
	h.t.Helper()
	family := "TCP4"
	if strings.Contains(client, ":") {
		family = "TCP6"
	}
	proxy := "127.0.0.1"
	if family == "TCP6" {
		proxy = "::1"
	}
	c := h.dialProxied([]byte(fmt.Sprintf("PROXY %s %s %s 40000 25\r\n", family, client, proxy)))
	return c, c.reply()
}

// TestSourceIsSlash64ForConnections: two addresses of one /64 share a
// connection count (and a share of the remaining slots); another /64 has
// its own; an IPv4-mapped address counts as the IPv4 address.
func TestSourceIsSlash64ForConnections(t *testing.T) {
	t.Parallel()
	h := startLimits(t, sourcesHCL)
	const tooMany = "421 4.3.2 Too many connections"

	first, g := h.from("2001:db8:1:2::1")
	if !strings.HasPrefix(g, "220 ") {
		t.Fatalf("first connection of the /64: %q", g)
	}
	if _, g := h.from("2001:db8:1:2:ffff:ffff:ffff:ffff"); g != tooMany {
		t.Errorf("second address of the /64: %q, want %q", g, tooMany)
	}
	eventually(t, "the refusal's log line", func() bool {
		return hasLine(h.logs, "connection refused", "connector=conns", "reason=max_inbound_connections_per_source")
	})
	if _, g := h.from("2001:db8:1:3::1"); !strings.HasPrefix(g, "220 ") {
		t.Errorf("the next /64: %q", g)
	}
	// The slot is the /64's again once its connection closes.
	first.expect("QUIT", "221")
	eventually(t, "the /64's slot released", func() bool {
		c, g := h.from("2001:db8:1:2::2")
		c.conn.Close()
		return strings.HasPrefix(g, "220 ")
	})

	// IPv4 stays per address; ::ffff:192.0.2.9 is 192.0.2.9.
	if _, g := h.from("192.0.2.9"); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("192.0.2.9: %q", g)
	}
	if _, g := h.from("::ffff:192.0.2.9"); g != tooMany {
		t.Errorf("::ffff:192.0.2.9 while 192.0.2.9 holds its slot: %q, want %q", g, tooMany)
	}
	if _, g := h.from("192.0.2.10"); !strings.HasPrefix(g, "220 ") {
		t.Errorf("192.0.2.10: %q", g)
	}

	// max_inbound_connections_percentage_per_source: 2% of 100 free slots
	// is 2, of the 99 left after the /64's first connection 1 (rounded
	// down), which the /64 already holds.
	if _, g := h.from("2001:db8:2:1::1"); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("share, first: %q", g)
	}
	if _, g := h.from("2001:db8:2:1::2"); g != tooMany {
		t.Errorf("share, second address of the /64: %q, want %q", g, tooMany)
	}
	eventually(t, "the refusal's log line", func() bool {
		return hasLine(h.logs, "connection refused", "connector=share", "reason=max_inbound_connections_percentage_per_source")
	})
	if _, g := h.from("2001:db8:2:2::1"); !strings.HasPrefix(g, "220 ") {
		t.Errorf("share, the next /64: %q", g)
	}
}

// TestSourceIsSlash64ForRates: connection_rate_limit and message_rate_limit
// count a /64 as one source.
func TestSourceIsSlash64ForRates(t *testing.T) {
	t.Parallel()
	h := startLimits(t, sourcesHCL)
	a, g := h.from("2001:db8:3:1::a")
	if !strings.HasPrefix(g, "220 ") {
		t.Fatalf("greeting %q", g)
	}
	a.expect("EHLO a.test", "250")
	a.expect("MAIL FROM:<x@remote.test>", "250 ")
	a.expect("RSET", "250 ")
	b, g := h.from("2001:db8:3:1::b")
	if !strings.HasPrefix(g, "220 ") {
		t.Fatalf("greeting %q", g)
	}
	b.expect("EHLO b.test", "250")
	b.expect("MAIL FROM:<x@remote.test>", "421 4.4.2 Message rate limit exceeded")
	eventually(t, "the refusal's log line", func() bool {
		return hasLine(h.logs, "msg=refused", "connector=rate", "limit=message_rate_limit", "key=ip:2001:db8:3:1::/64")
	})
	// Two connections a minute for the /64, and both are spent.
	if _, g := h.from("2001:db8:3:1::c"); g != "421 4.4.2 Connection rate limit exceeded" {
		t.Errorf("third connection of the /64 in a minute: %q", g)
	}
	other, g := h.from("2001:db8:3:2::a")
	if !strings.HasPrefix(g, "220 ") {
		t.Fatalf("the next /64: %q", g)
	}
	other.expect("EHLO c.test", "250")
	other.expect("MAIL FROM:<x@remote.test>", "250 ")
}

// TestSourceIsSlash64ForAuth: failed AUTH is counted per /64 for
// max_auth_failures_per_source and per /48 for ..._per_network.
func TestSourceIsSlash64ForAuth(t *testing.T) {
	t.Parallel()
	h := startLimits(t, sourcesHCL)
	const (
		failed  = "535 5.7.8 "
		blocked = "454 4.7.0 Temporary authentication failure"
	)
	fail := func(client string, want string) {
		t.Helper()
		c, g := h.from(client)
		if !strings.HasPrefix(g, "220 ") {
			t.Fatalf("%s: greeting %q", client, g)
		}
		c.expect("EHLO guess.test", "250")
		c.expect(authPlain("alice@example.com", "wrong"), want)
	}
	fail("2001:db8:4:1::1", failed)
	fail("2001:db8:4:1::2", failed) // the /64's second failure blocks it
	eventually(t, "the block's log line", func() bool {
		return hasLine(h.logs, "authentication blocked", "limit=max_auth_failures_per_source")
	})
	fail("2001:db8:4:1:1:2:3:4", blocked)
	fail("2001:db8:4:2::1", failed)     // another /64: its own count...
	fail("2001:db8:4:3::1", failed)     // ...but the /48 has now 4 failures
	fail("2001:db8:4:ffff::1", blocked) // so the whole /48 is blocked
	fail("2001:db8:5:1::1", failed)     // the next /48 is not
	if n := h.logs.Count("authentication blocked", "limit=max_auth_failures_per_network"); n != 1 {
		t.Errorf("%d network blocks logged, want 1", n)
	}
}
