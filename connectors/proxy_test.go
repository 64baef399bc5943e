package connectors

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// proxyHCL: two connectors behind a PROXY-speaking load balancer at
// 127.0.0.1; the header's address picks between them.
const proxyHCL = `
receive_connector "partners" {
  bind             = ["127.0.0.1:0"]
  remote_ip_ranges = ["192.0.2.0/24"]
  banner           = "partners"
  proxy_protocol   = true
  trusted_proxies  = ["127.0.0.1"]
  max_inbound_connections_per_source = 1
}
receive_connector "internet" {
  bind             = ["127.0.0.1:0"]
  banner           = "internet"
  proxy_protocol   = true
  trusted_proxies  = ["127.0.0.1"]
}
`

// dialProxied connects from 127.0.0.1 and writes header first.
func (h *harness) dialProxied(header []byte) *client {
	h.t.Helper()
	conn, err := net.DialTimeout("tcp", h.addr("127.0.0.1:0"), 5*time.Second)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := conn.Write(header); err != nil {
		h.t.Fatal(err)
	}
	return newClient(h.t, conn)
}

func TestProxyV1(t *testing.T) {
	t.Parallel()
	h, lb := startLogged(t, proxyHCL, false)
	c := h.dialProxied([]byte("PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\nEHLO early.test\r\n"))
	if g := c.reply(); g != "220 partners" {
		t.Fatalf("greeting %q", g)
	}
	if r := c.reply(); !strings.HasPrefix(r, "250") { // the EHLO sent with the header
		t.Fatalf("EHLO: %q", r)
	}
	if r := c.send("x@remote.test", []string{"alice@example.com"}, "Subject: x\r\n\r\nhi\r\n"); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("DATA: %q", r)
	}
	env, body := h.sub.last(t)
	if env.ClientAddr != "192.0.2.7:40000" || env.Connector != "partners" {
		t.Errorf("envelope ClientAddr %q connector %q", env.ClientAddr, env.Connector)
	}
	if !strings.Contains(body, "192.0.2.7") {
		t.Errorf("Received: lacks the client address:\n%s", body)
	}
	lb.waitLog("session start", "remote=192.0.2.7:40000")
	// Limits count the client, not the proxy: a second connection of
	// 192.0.2.7 is over its per-source limit of 1, another client is not.
	d := h.dialProxied([]byte("PROXY TCP4 192.0.2.7 127.0.0.1 40001 25\r\n"))
	if g := d.reply(); g != "421 4.3.2 Too many connections" {
		t.Errorf("second connection of the same client: %q", g)
	}
	e := h.dialProxied([]byte("PROXY TCP4 192.0.2.8 127.0.0.1 40002 25\r\n"))
	if g := e.reply(); g != "220 partners" {
		t.Errorf("other client: %q", g)
	}
}

func TestProxyV2(t *testing.T) {
	t.Parallel()
	h, _ := startLogged(t, proxyHCL, false)
	hdr := proxyproto.HeaderProxyFromAddrs(2,
		&net.TCPAddr{IP: net.ParseIP("2001:db8::9"), Port: 1234},
		&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 25})
	raw, err := hdr.Format()
	if err != nil {
		t.Fatal(err)
	}
	c := h.dialProxied(raw)
	if g := c.reply(); g != "220 internet" {
		t.Fatalf("greeting %q", g)
	}
	c.expect("EHLO client.test", "250")
	c.send("x@remote.test", []string{"alice@example.com"}, "Subject: x\r\n\r\nhi\r\n")
	env, body := h.sub.last(t)
	if env.ClientAddr != "[2001:db8::9]:1234" || !strings.Contains(body, "2001:db8::9") {
		t.Errorf("ClientAddr %q, body:\n%s", env.ClientAddr, body)
	}
	// LOCAL (a health check): the proxy's own address is the client.
	local := &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}
	raw, err = local.Format()
	if err != nil {
		t.Fatal(err)
	}
	if g := h.dialProxied(raw).reply(); g != "220 internet" {
		t.Errorf("LOCAL: %q", g)
	}
}

func TestProxyRefused(t *testing.T) {
	t.Parallel()
	h, lb := startLogged(t, proxyHCL, false)
	// Not a trusted proxy: closed without a word.
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	conn, err := d.Dial("tcp", h.addr("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, conn)
	conn.Write([]byte("PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n"))
	if !c.closed() {
		t.Error("untrusted peer served")
	}
	lb.waitLog("connection refused", "remote=127.0.0.2:", "not a trusted proxy")
	// A trusted proxy that sends no header.
	c = h.dialProxied([]byte("EHLO client.test\r\n"))
	if !c.closed() {
		t.Error("connection without a PROXY header served")
	}
	lb.waitLog("connection refused", "no PROXY protocol header")
	// Meanwhile a proper one works.
	if g := h.dialProxied([]byte("PROXY TCP4 192.0.2.9 127.0.0.1 1 25\r\n")).reply(); g != "220 partners" {
		t.Errorf("proxied: %q", g)
	}
}

// TestProxyBindDisagreement: proxy_protocol is a property of the bind.
func TestProxyBindDisagreement(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := loadConfig(t, dir, `
receive_connector "a" {
  bind            = ["127.0.0.1:0"]
  remote_ip_ranges = ["10.0.0.0/8"]
  proxy_protocol  = true
  trusted_proxies = ["127.0.0.1"]
}
receive_connector "b" {
  bind = ["127.0.0.1:0"]
}
`)
	svc, err := New(Options{Config: cfg, Submitter: &capture{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(); err == nil || !strings.Contains(err.Error(), "proxy_protocol") {
		svc.Shutdown(t.Context())
		t.Fatalf("Start: %v", err)
	}
}
