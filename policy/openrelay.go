package policy

import (
	"math/big"
	"net/netip"
	"slices"
)

// Open relay detection (DESIGN.md invariant 6). A connector that lets
// sessions relay without AUTH must name the hosts it trusts; what counts is
// how much of the public Internet its remote ranges cover together, not
// whether one of them is literally 0.0.0.0/0: ["0.0.0.0/1", "128.0.0.0/1"]
// or "0.0.0.0-255.255.255.254" are the same mistake. Private and other
// special-purpose blocks (RFC 1918, RFC 6598, loopback, link-local,
// documentation, multicast; IPv6 outside 2000::/3 and 2001:db8::/32) are
// not public and do not count.
//
// Limits: more than a /8 of public IPv4 (or a /32 of public IPv6) is an
// open relay and refused; more than a /16 (or a /48) draws a warning.
var (
	openRelayV4, suspectV4 = pow2(24), pow2(16)
	openRelayV6, suspectV6 = pow2(96), pow2(80)
)

// notPublicV4 are IPv4 blocks that are not reachable public unicast space.
var notPublicV4 = prefixes("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
	"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3")

// publicV6 is global unicast; inside it, documentation space is not public.
var (
	publicV6    = netip.MustParsePrefix("2000::/3")
	notPublicV6 = prefixes("2001:db8::/32")
)

// publicCoverage returns how many public IPv4 and IPv6 addresses the ranges
// cover together (overlaps counted once).
func publicCoverage(ranges []IPRange) (v4, v6 *big.Int) {
	var in4, in6 []interval
	for _, r := range ranges {
		iv := interval{toInt(r.First), toInt(r.Last)}
		if r.First.Is4() {
			in4 = append(in4, iv)
		} else {
			in6 = append(in6, iv.clip(prefixInterval(publicV6))...)
		}
	}
	return count(subtract(in4, notPublicV4)), count(subtract(in6, notPublicV6))
}

type interval struct{ lo, hi *big.Int } // inclusive

func (a interval) clip(b interval) []interval {
	lo, hi := maxInt(a.lo, b.lo), minInt(a.hi, b.hi)
	if lo.Cmp(hi) > 0 {
		return nil
	}
	return []interval{{lo, hi}}
}

// subtract removes every block of minus from the intervals.
func subtract(in []interval, minus []netip.Prefix) []interval {
	for _, p := range minus {
		m := prefixInterval(p)
		var out []interval
		for _, iv := range in {
			if iv.hi.Cmp(m.lo) < 0 || iv.lo.Cmp(m.hi) > 0 {
				out = append(out, iv)
				continue
			}
			if iv.lo.Cmp(m.lo) < 0 {
				out = append(out, interval{iv.lo, new(big.Int).Sub(m.lo, big.NewInt(1))})
			}
			if iv.hi.Cmp(m.hi) > 0 {
				out = append(out, interval{new(big.Int).Add(m.hi, big.NewInt(1)), iv.hi})
			}
		}
		in = out
	}
	return in
}

// count merges overlapping intervals and adds up their sizes.
func count(in []interval) *big.Int {
	slices.SortFunc(in, func(a, b interval) int { return a.lo.Cmp(b.lo) })
	total := new(big.Int)
	var cur *interval
	for i := range in {
		iv := in[i]
		switch {
		case cur == nil:
			cur = &interval{new(big.Int).Set(iv.lo), new(big.Int).Set(iv.hi)}
		case iv.lo.Cmp(new(big.Int).Add(cur.hi, big.NewInt(1))) <= 0:
			if iv.hi.Cmp(cur.hi) > 0 {
				cur.hi.Set(iv.hi)
			}
		default:
			total.Add(total, cur.size())
			cur = &interval{new(big.Int).Set(iv.lo), new(big.Int).Set(iv.hi)}
		}
	}
	if cur != nil {
		total.Add(total, cur.size())
	}
	return total
}

func (a interval) size() *big.Int {
	n := new(big.Int).Sub(a.hi, a.lo)
	return n.Add(n, big.NewInt(1))
}

func prefixInterval(p netip.Prefix) interval {
	p = p.Masked()
	lo := toInt(p.Addr())
	bits := p.Addr().BitLen() - p.Bits()
	hi := new(big.Int).Add(lo, new(big.Int).Sub(pow2(uint(bits)), big.NewInt(1)))
	return interval{lo, hi}
}

func toInt(a netip.Addr) *big.Int { return new(big.Int).SetBytes(a.AsSlice()) }

func pow2(n uint) *big.Int { return new(big.Int).Lsh(big.NewInt(1), n) }

func maxInt(a, b *big.Int) *big.Int {
	if a.Cmp(b) >= 0 {
		return a
	}
	return b
}

func minInt(a, b *big.Int) *big.Int {
	if a.Cmp(b) <= 0 {
		return a
	}
	return b
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}
