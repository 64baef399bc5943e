package policy

// Small parsers shared by the loader and by other packages: sizes, durations,
// IP ranges. Address and domain syntax live in address.go.

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// sizeUnits maps a unit (lower-case) to its multiplier. KB/MB/GB are binary,
// as Exchange's ByteQuantifiedSize is; KiB/MiB/GiB are synonyms.
var sizeUnits = map[string]int64{
	"b":   1,
	"kb":  1 << 10,
	"kib": 1 << 10,
	"mb":  1 << 20,
	"mib": 1 << 20,
	"gb":  1 << 30,
	"gib": 1 << 30,
	"tb":  1 << 40,
	"tib": 1 << 40,
}

// ParseSize parses a byte size such as "36MB", "64KB", "1.5GiB" or "512B".
// Units are case-insensitive and binary (1KB = 1024 bytes). A bare number is
// an error: "25" is too easily meant as megabytes.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("size %q does not start with a number", s)
	}
	if unit == "" {
		return 0, fmt.Errorf("size %q has no unit; write it as \"%sMB\", \"%sKB\" or \"%sB\"", s, num, num, num)
	}
	mult, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("size %q has an unknown unit %q (use B, KB, MB, GB; KiB, MiB, GiB are synonyms)", s, t[i:])
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/mult {
			return 0, fmt.Errorf("size %q is too large", s)
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q is not a number", s)
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(v), nil
}

// ParseDuration parses a duration with Go's units ("90s", "1h30m") plus "d"
// (24h) and "w" (7d), which mail retry horizons need: "2d", "1d12h". Negative
// durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, errors.New("empty duration")
	}
	if t[0] == '-' || t[0] == '+' {
		return 0, fmt.Errorf("duration %q must not be signed", s)
	}
	var total time.Duration
	rest := t
	for rest != "" {
		// One component: a number and a unit.
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9' || rest[i] == '.') {
			i++
		}
		j := i
		for j < len(rest) && !(rest[j] >= '0' && rest[j] <= '9' || rest[j] == '.') {
			j++
		}
		num, unit := rest[:i], rest[i:j]
		if num == "" {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		var d time.Duration
		switch unit {
		case "d", "w":
			f, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("invalid duration %q", s)
			}
			per := 24 * time.Hour
			if unit == "w" {
				per *= 7
			}
			v := f * float64(per)
			if v >= math.MaxInt64 {
				return 0, fmt.Errorf("duration %q is too large", s)
			}
			d = time.Duration(v)
		default:
			var err error
			if d, err = time.ParseDuration(num + unit); err != nil {
				if unit == "" && len(rest) == len(t) && j == len(t) {
					return 0, fmt.Errorf("duration %q has no unit; write it as \"%ss\" or \"%sm\"", s, num, num)
				}
				return 0, fmt.Errorf("invalid duration %q: use Go units (s, m, h) plus d and w, e.g. \"1d12h\"", s)
			}
		}
		if total > math.MaxInt64-d {
			return 0, fmt.Errorf("duration %q is too large", s)
		}
		total += d
		rest = rest[j:]
	}
	return total, nil
}

// ParseIPRange parses "10.0.0.0/8", "192.0.2.7", "2001:db8::/32" or an
// inclusive range "192.0.2.10-192.0.2.20" (both ends of one family, first <=
// last). IPv4-mapped IPv6 addresses are unmapped, as peers are. Host bits set
// in a CIDR are ignored ("10.1.2.3/24" is 10.1.2.0/24).
func ParseIPRange(s string) (IPRange, error) {
	t := strings.TrimSpace(s)
	r := IPRange{Text: t}
	if a, b, ok := strings.Cut(t, "-"); ok {
		first, err1 := parsePlainAddr(a)
		last, err2 := parsePlainAddr(b)
		if err := errors.Join(err1, err2); err != nil {
			return r, fmt.Errorf("range %q: %w", s, err)
		}
		if first.Is4() != last.Is4() {
			return r, fmt.Errorf("range %q mixes IPv4 and IPv6", s)
		}
		if last.Less(first) {
			return r, fmt.Errorf("range %q ends before it starts", s)
		}
		r.First, r.Last = first, last
		return r, nil
	}
	if strings.Contains(t, "/") {
		p, err := netip.ParsePrefix(t)
		if err != nil {
			return r, fmt.Errorf("%q is not a CIDR prefix: %w", s, err)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		r.First, r.Last = p.Addr(), lastOfPrefix(p)
		return r, nil
	}
	a, err := parsePlainAddr(t)
	if err != nil {
		return r, err
	}
	r.First, r.Last = a, a
	return r, nil
}

func parsePlainAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return a, fmt.Errorf("%q is not an IP address", s)
	}
	if a.Zone() != "" {
		return a, fmt.Errorf("%q: zones are not allowed in ranges", s)
	}
	return a.Unmap(), nil
}

func lastOfPrefix(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		keep := p.Bits() - i*8 // bits of this byte that belong to the network
		switch {
		case keep <= 0:
			b[i] = 0xff
		case keep < 8:
			b[i] |= 0xff >> keep
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Contains reports whether a (unmapped first) lies in the range.
func (r IPRange) Contains(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if !r.First.IsValid() || a.Is4() != r.First.Is4() {
		return false
	}
	return r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// containsRange reports whether o lies entirely inside r.
func (r IPRange) containsRange(o IPRange) bool {
	return r.Contains(o.First) && r.Contains(o.Last)
}

// overlaps reports whether r and o share at least one address.
func (r IPRange) overlaps(o IPRange) bool {
	if r.First.Is4() != o.First.Is4() {
		return false
	}
	return r.First.Compare(o.Last) <= 0 && o.First.Compare(r.Last) <= 0
}

// size returns Last-First as a 128-bit number (hi, lo); smaller is more specific.
func (r IPRange) size() (hi, lo uint64) {
	f, l := r.First.As16(), r.Last.As16()
	fh, fl := be64(f[:8]), be64(f[8:])
	lh, ll := be64(l[:8]), be64(l[8:])
	lo, borrow := bits.Sub64(ll, fl, 0)
	hi, _ = bits.Sub64(lh, fh, borrow)
	return hi, lo
}

// smallerThan reports whether r covers fewer addresses than o.
func (r IPRange) smallerThan(o IPRange) bool {
	rh, rl := r.size()
	oh, ol := o.size()
	return rh < oh || rh == oh && rl < ol
}

func be64(b []byte) uint64 {
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}
