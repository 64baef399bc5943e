package connectors

// What one client "source" is, for every per-source limit: connection_rate_limit,
// max_inbound_connections_per_source and its percentage share (connlimit.go),
// message_rate_limit by "ip", max_auth_failures_per_source and, through it,
// the growing delay of a failed AUTH (limits.go, tarpit.go).
//
//   - IPv4: the address. An IPv4-mapped IPv6 address (::ffff:192.0.2.1, as a
//     dual-stack socket or a PROXY header may give it) is that IPv4 address.
//   - IPv6: the /64 the address is in. A /64 is one link (RFC 4291 §2.5.1:
//     64-bit interface identifiers), and the smallest block an end site gets;
//     a host picks new addresses inside it at will (SLAAC privacy addresses,
//     RFC 8981) and a server with a /64 routed to it has 2^64 of them. Counting
//     per address would hand every such client an unlimited supply of fresh
//     sources; counting per /64 gives it one.
//
// max_auth_failures_per_network pools a wider block (networkKey): /24 for
// IPv4, and /48 for IPv6. /64 would be the source itself again, so the
// network limit would add nothing. /48 is a common assignment to a whole end
// site (RFC 3177's old default; RFC 6177 leaves the size to operators, and
// many providers and free tunnel brokers hand out a /48, others a /56), so an
// attacker with one assignment gets one network budget rather than 256 or
// 65,536 of them. The cost is that of the IPv4 /24: customers of a provider
// that assigns /56s can share a pool, which is why the network maximum is
// higher than the per-source one.

import "net/netip"

const (
	sourceBits6  = 64 // an IPv6 source is its /64
	networkBits4 = 24 // max_auth_failures_per_network pools an IPv4 /24...
	networkBits6 = 48 // ...and an IPv6 /48
)

// sourceKey is the source a client address is counted as: the address
// itself (a /32) for IPv4 and IPv4-mapped IPv6, its /64 for IPv6. The zero
// Prefix for an invalid address.
func sourceKey(a netip.Addr) netip.Prefix {
	return prefixOf(a, 32, sourceBits6)
}

// networkKey is the network max_auth_failures_per_network pools a client
// address in: its /24 for IPv4, its /48 for IPv6.
func networkKey(a netip.Addr) netip.Prefix {
	return prefixOf(a, networkBits4, networkBits6)
}

func prefixOf(a netip.Addr, bits4, bits6 int) netip.Prefix {
	a = a.Unmap()
	bits := bits6
	if a.Is4() {
		bits = bits4
	}
	p, _ := a.Prefix(bits) // drops an IPv6 zone; zero Prefix for an invalid a
	return p
}

// sourceName writes a source for logs: "192.0.2.7", "2001:db8:1:2::/64".
func sourceName(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}
