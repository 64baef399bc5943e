package connectors

// PROXY protocol (HAProxy's, versions 1 and 2) in front of receive
// connectors, read with github.com/pires/go-proxyproto.
//
// PROXY protocol is a property of a bind address, not of a connector:
// the header has to be read before the peer's address is known, and the
// peer's address is what picks the connector among those sharing the bind.
// So every enabled connector on one bind must agree on proxy_protocol; a
// config where they do not is refused by Start and Reload (the old config
// stays). The proxies trusted on a bind are the union of the
// trusted_proxies of its connectors.
//
// On a PROXY bind:
//
//   - A connection from a peer outside the trusted proxies is closed at
//     once, without a reply (it is not speaking to an SMTP port), and one
//     line is logged.
//   - From a trusted proxy the header must arrive within proxyHeaderTimeout
//     and parse; otherwise the connection is closed and logged likewise.
//   - A PROXY (v2) or TCP4/TCP6 (v1) header's source address becomes the
//     client address everywhere: connector choice (remote_ip_ranges),
//     connection limits and rates, the session's logs and span, the
//     envelope's ClientAddr and Received:.
//   - A LOCAL (v2) or UNKNOWN (v1) header carries no client: as the
//     protocol says, the connection's own endpoints are used (the proxy's
//     health checks then count against the proxy's address).
//
// Bytes the client sent after the header stay buffered and are read by the
// session (or the implicit-TLS handshake) as if nothing had been in front.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"

	"hubd/policy"
)

// proxyHeaderTimeout bounds the wait for a PROXY header from a trusted
// proxy; proxies send it at once, with the connection.
const proxyHeaderTimeout = 10 * time.Second

// proxyBind is the PROXY protocol setting of one bind address.
type proxyBind struct {
	trusted []policy.IPRange
}

// trusts reports whether peer may send PROXY headers on this bind.
func (p *proxyBind) trusts(peer netip.Addr) bool {
	for _, r := range p.trusted {
		if r.Contains(peer) {
			return true
		}
	}
	return false
}

// proxyBinds returns, for each bind address that reads PROXY headers, its
// trusted proxies; an error when the connectors on one bind disagree.
func proxyBinds(cfg *policy.Config) (map[string]*proxyBind, error) {
	first := map[string]*policy.ReceiveConnector{}
	out := map[string]*proxyBind{}
	for i := range cfg.ReceiveConnectors {
		rc := &cfg.ReceiveConnectors[i]
		if !rc.Enabled {
			continue
		}
		for _, bind := range rc.Bind {
			if f := first[bind]; f == nil {
				first[bind] = rc
			} else if f.ProxyProtocol != rc.ProxyProtocol {
				return nil, fmt.Errorf("connectors: bind %s: connector %q has proxy_protocol = %v but %q has %v; "+
					"PROXY protocol is a property of the bind address, so all its connectors must agree",
					bind, f.Name, f.ProxyProtocol, rc.Name, rc.ProxyProtocol)
			}
			if !rc.ProxyProtocol {
				continue
			}
			pb := out[bind]
			if pb == nil {
				pb = &proxyBind{}
				out[bind] = pb
			}
			pb.trusted = append(pb.trusted, rc.TrustedProxies...)
		}
	}
	return out, nil
}

// readProxyHeader reads the PROXY header of c, which came from the trusted
// proxy at peer, and returns the connection to serve (with anything read
// past the header still readable) and the client's address. A LOCAL or
// UNKNOWN header yields peer itself.
func readProxyHeader(c net.Conn, peer netip.Addr) (net.Conn, netip.AddrPort, error) {
	br := bufio.NewReader(c)
	h, err := proxyproto.ReadHeaderTimeout(c, br, proxyHeaderTimeout)
	if err != nil {
		if errors.Is(err, proxyproto.ErrNoProxyProtocol) {
			return nil, netip.AddrPort{}, errors.New("no PROXY protocol header (or none in time)")
		}
		return nil, netip.AddrPort{}, fmt.Errorf("PROXY protocol header: %w", err)
	}
	bc := &bufferedConn{Conn: c, r: br}
	if h.Command.IsLocal() {
		return bc, netip.AddrPortFrom(peer, uint16(portOf(c.RemoteAddr()))), nil
	}
	src, _, ok := h.TCPAddrs()
	if !ok {
		return nil, netip.AddrPort{}, fmt.Errorf("PROXY protocol header for %v, not TCP", h.TransportProtocol)
	}
	ip, ok := netip.AddrFromSlice(src.IP)
	if !ok {
		return nil, netip.AddrPort{}, errors.New("PROXY protocol header without a source address")
	}
	client := netip.AddrPortFrom(ip.Unmap(), uint16(src.Port))
	bc.remote = net.TCPAddrFromAddrPort(client)
	return bc, client, nil
}

// bufferedConn is a connection whose first bytes were read into r (the
// PROXY header and whatever followed it), and which reports the client
// address from the header as its remote address.
type bufferedConn struct {
	net.Conn
	r      *bufio.Reader
	remote net.Addr // nil: the connection's own
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *bufferedConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// portOf returns the port of a TCP address, or 0.
func portOf(a net.Addr) int {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.Port
	}
	return 0
}
