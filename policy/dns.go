package policy

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
)

// buildDNS fills Hub.DNSServers from hub.dns_servers: the name servers hubd
// asks (internal/resolver), each an IP address with an optional port
// ("192.0.2.53", "127.0.0.1:5353", "[2001:db8::53]:53"; port 53 unless
// given). A host name is refused: resolving it would need the very
// resolver it configures. Absent or empty: the system's resolver.
func (l *loader) buildDNS(s hubSchema) {
	items, _ := l.stringList(s.DNSServers)
	seen := map[string]bool{}
	for _, it := range items {
		addr, err := parseDNSServer(it.val)
		if err != nil {
			l.errorf(it.rng, "Invalid DNS server", "%v. Write an IP address with an optional port, e.g. \"192.0.2.53\", \"127.0.0.1:5353\" or \"[2001:db8::53]:53\".", err)
			continue
		}
		if seen[addr] {
			l.errorf(it.rng, "Duplicate DNS server", "%s is listed twice in dns_servers.", addr)
			continue
		}
		seen[addr] = true
		l.cfg.Hub.DNSServers = append(l.cfg.Hub.DNSServers, addr)
	}
}

// parseDNSServer returns s as "ip:port".
func parseDNSServer(s string) (string, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		if ip.Zone() != "" {
			return "", fmt.Errorf("%q has a zone; not supported", s)
		}
		return netip.AddrPortFrom(ip, 53).String(), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%q is not an IP address or ip:port", s)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return "", fmt.Errorf("%q is not an IP address (a name server is given by address, not by name)", host)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return "", fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return netip.AddrPortFrom(ip, uint16(p)).String(), nil
}
