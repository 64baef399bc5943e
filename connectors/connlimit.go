package connectors

// Connection limits, decided when a connection is accepted and its
// connector chosen, before any SMTP is spoken. In order:
//
//  1. connection_rate_limit: connection attempts per minute per client
//     source (an IPv4 address or an IPv6 /64, source.go), a token bucket
//     (golang.org/x/time/rate, via buckets in limits.go) of that many
//     tokens refilled at that rate a minute. Every
//     attempt takes a token, even one a later check refuses: the limit is
//     on knocking, not on being let in. Over it: "421 4.4.2 Connection rate
//     limit exceeded". The buckets belong to the connector's generation:
//     a reload starts them afresh, full (idle) ones are dropped, and a
//     full table evicts the least recently used source (limits.go).
//  2. max_inbound_connections: open connections of the connector. Over it:
//     "421 4.3.2 Too many connections".
//  3. max_inbound_connections_per_source: open connections per client
//     source. Over it: the same 421 4.3.2.
//  4. max_inbound_connections_percentage_per_source (Exchange's
//     MaxInboundConnectionPercentagePerSource): one source may hold at most
//     that percentage of the connector's *remaining* slots, computed at each
//     new connection as
//
//     allowed = max(1, floor(pct × (max_inbound_connections − open) / 100))
//
//     where open counts every open connection of the connector. The source
//     is refused (421 4.3.2) when it already holds `allowed` connections.
//     The floor of 1 means a source with no connection is never refused by
//     this rule while the connector has a free slot at all, and a single
//     client of an idle connector always gets in. As the connector fills
//     up, each source's share shrinks, which is the point: one source
//     cannot take the last free slots. Not applied when
//     max_inbound_connections is unlimited (0).
//
// Open-connection counts live in the Service by connector name, so they
// survive reloads (the connections do), and are released when a
// connection closes; a connector's counts go when it leaves the config and
// its last connection has closed. Each refusal is logged once by
// Service.refuse.

import (
	"net/netip"
)

// connCounts are one connector's open connections, for the inbound limits.
type connCounts struct {
	total int
	// perSource is keyed by sourceKey(peer).Addr(): the address itself
	// for IPv4, the first address of the /64 for IPv6.
	perSource map[netip.Addr]int
}

// acquire counts a new connection of peer on c, or returns the reply that
// refuses it and why.
func (s *Service) acquire(c *connector, peer netip.Addr) (reply, why string) {
	rc := c.rc
	src := sourceKey(peer)
	if c.connRate != nil && !c.connRate.allow(src, s.now()) {
		return "421 4.4.2 Connection rate limit exceeded", "connection_rate_limit"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cc := s.counts[rc.Name]
	if cc == nil {
		cc = &connCounts{perSource: map[netip.Addr]int{}}
		s.counts[rc.Name] = cc
	}
	held := cc.perSource[src.Addr()]
	const tooMany = "421 4.3.2 Too many connections"
	if max := rc.MaxInboundConnections; max > 0 {
		if cc.total >= max {
			return tooMany, "max_inbound_connections"
		}
		if pct := rc.MaxInboundConnectionsPercentagePerSource; pct > 0 && held >= sourceShare(max, cc.total, pct) {
			return tooMany, "max_inbound_connections_percentage_per_source"
		}
	}
	if max := rc.MaxInboundConnectionsPerSource; max > 0 && held >= max {
		return tooMany, "max_inbound_connections_per_source"
	}
	cc.total++
	cc.perSource[src.Addr()]++
	return "", ""
}

// sourceShare is how many connections one source may hold when open of
// limit are in use: pct percent of the remaining slots, at least 1.
func sourceShare(limit, open, pct int) int {
	return max(1, pct*(limit-open)/100)
}

// release undoes acquire.
func (s *Service) release(connector string, peer netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cc := s.counts[connector]
	if cc == nil {
		return
	}
	cc.total--
	src := sourceKey(peer).Addr()
	if cc.perSource[src]--; cc.perSource[src] <= 0 {
		delete(cc.perSource, src)
	}
	if g := s.gen.Load(); cc.total == 0 && (g == nil || g.byName[connector] == nil) {
		// The connector left the config and its last connection is gone.
		delete(s.counts, connector)
	}
}
