package smtpout

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"hubd/hub/delivery"
	"hubd/policy"
)

// Resolver is the DNS the deliverer needs: MX records and host addresses.
// NetResolver is the production one; tests pass a fake. A name that does not
// exist must be reported as a *net.DNSError with IsNotFound set.
type Resolver interface {
	LookupMX(ctx context.Context, domain string) ([]*net.MX, error)
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// NetResolver adapts a *net.Resolver (nil → net.DefaultResolver).
type NetResolver struct{ R *net.Resolver }

func (n NetResolver) r() *net.Resolver {
	if n.R == nil {
		return net.DefaultResolver
	}
	return n.R
}

// LookupMX returns the MX records of domain.
func (n NetResolver) LookupMX(ctx context.Context, domain string) ([]*net.MX, error) {
	return n.r().LookupMX(ctx, domain)
}

// LookupHost returns the addresses of host.
func (n NetResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	return n.r().LookupHost(ctx, host)
}

// Host is one host to deliver to, in dial order: an MX host, the domain
// itself when it has no MX records, or a smart host.
type Host struct {
	Name     string   // host name without the trailing dot (or an IP literal)
	Pref     int      // MX preference; 0 for an implicit MX
	Implicit bool     // the domain has no MX records: it is its own MX (RFC 5321 §5.1)
	Addrs    []string // IP addresses in resolver order; empty when Name did not resolve
	Err      error    // why Addrs is empty (the address lookup failed), else nil
}

// LookupHosts returns the hosts mail for domain goes to, in the order they
// are tried (RFC 5321 §5.1):
//   - MX hosts by preference, in random order among equal preferences (to
//     spread load), each with its addresses; a host whose addresses cannot
//     be found stays in the list with Err set and no Addrs, so that a
//     routing table can show it;
//   - no MX records (NODATA): the domain itself, Implicit, from its A/AAAA;
//   - a null MX (RFC 7505 §3: a single MX whose target is ".") →
//     556 5.1.10; an MX "." among real ones is ignored;
//   - the domain does not exist (NXDOMAIN) → 550 5.1.2;
//   - any other DNS failure (SERVFAIL, timeout), or MX hosts none of which
//     has an address → 451 4.4.3; in the latter case the hosts are returned
//     too.
//
// The error is always a *policy.Reply: its class says whether the failure is
// permanent (5) or temporary (4).
func LookupHosts(ctx context.Context, r Resolver, domain string) ([]Host, error) {
	domain = strings.TrimSuffix(domain, ".")
	mxs, err := r.LookupMX(ctx, domain)
	if err != nil && !isNotFound(err) {
		return nil, dnsTempError(domain, err)
	}
	if len(mxs) == 0 {
		// No MX (NODATA, or NXDOMAIN which the address lookup confirms).
		addrs, err := lookupAddrs(ctx, r, domain)
		switch {
		case isNotFound(err):
			return nil, &policy.Reply{Code: 550, Enhanced: "5.1.2", Text: "domain " + domain + " does not exist"}
		case err != nil:
			return nil, dnsTempError(domain, err)
		case len(addrs) == 0:
			return nil, dnsTempError(domain, errors.New("no addresses"))
		}
		return []Host{{Name: domain, Implicit: true, Addrs: addrs}}, nil
	}
	// RFC 7505 §3: a domain that accepts no mail publishes a single MX with
	// an empty target (and preference 0, which we do not insist on).
	if len(mxs) == 1 && strings.TrimSuffix(mxs[0].Host, ".") == "" {
		return nil, &policy.Reply{Code: 556, Enhanced: "5.1.10", Text: "domain " + domain + " does not accept mail (null MX)"}
	}
	var hosts []Host
	var lastErr error
	usable := false
	for _, mx := range orderMX(mxs) {
		name := strings.TrimSuffix(mx.Host, ".")
		if name == "" {
			continue // RFC 7505 §3: a null MX mixed with real ones is meaningless
		}
		addrs, err := lookupAddrs(ctx, r, name)
		if err == nil && len(addrs) == 0 {
			err = errors.New("no addresses")
		}
		if err != nil {
			lastErr = err
		} else {
			usable = true
		}
		hosts = append(hosts, Host{Name: name, Pref: int(mx.Pref), Addrs: addrs, Err: err})
	}
	if !usable {
		return hosts, dnsTempError(domain, lastErr)
	}
	return hosts, nil
}

// lookupAddrs resolves a host name; an IP literal is its own address.
func lookupAddrs(ctx context.Context, r Resolver, name string) ([]string, error) {
	if ip, err := netip.ParseAddr(name); err == nil {
		return []string{ip.String()}, nil
	}
	return r.LookupHost(ctx, name)
}

// target is one address to try: the host's name (for Results, logs and TLS
// verification) and the "ip:port" to dial.
type target struct {
	host string
	addr string
}

// targets lists the addresses to try for hop, in order. The error is a
// *policy.Reply for every recipient.
func (d *Deliverer) targets(ctx context.Context, hop delivery.NextHop) ([]target, *policy.Reply) {
	if strings.TrimSpace(hop.SmartHosts) != "" {
		return d.smartHostTargets(ctx, hop.SmartHosts)
	}
	if hop.Domain == "" {
		return nil, &policy.Reply{Code: 554, Enhanced: "5.4.4", Text: "no smart host and no domain to route by"}
	}
	hosts, err := LookupHosts(ctx, d.resolver, hop.Domain)
	if err != nil {
		return nil, asReply(err)
	}
	port := strconv.Itoa(d.port)
	var out []target
	for _, h := range hosts {
		for _, a := range h.Addrs {
			out = append(out, target{host: h.Name, addr: net.JoinHostPort(a, port)})
		}
	}
	return out, nil
}

// smartHostTargets parses "host:port" / "[ip]:port" / "host" (port 25)
// entries, comma-separated, and resolves names. A name that does not resolve
// is skipped so the next smart host gets its turn.
func (d *Deliverer) smartHostTargets(ctx context.Context, list string) ([]target, *policy.Reply) {
	var out []target
	var lastErr error
	for _, entry := range strings.Split(list, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		host, port := splitHostPort(entry, d.port)
		host = strings.TrimSuffix(host, ".")
		addrs, err := lookupAddrs(ctx, d.resolver, host)
		if err != nil {
			lastErr = err
			continue
		}
		for _, a := range addrs {
			out = append(out, target{host: host, addr: net.JoinHostPort(a, port)})
		}
	}
	if len(out) == 0 {
		text := "no usable smart host"
		if lastErr != nil {
			text += ": " + lastErr.Error()
		}
		return nil, &policy.Reply{Code: 451, Enhanced: "4.4.3", Text: text}
	}
	return out, nil
}

// splitHostPort accepts "host:port", "[ip]:port", "[ip]", "host" and a bare
// IPv6 address; the brackets mean "this address, no DNS" (RFC 5321 §4.1.3).
func splitHostPort(s string, defPort int) (string, string) {
	if h, p, err := net.SplitHostPort(s); err == nil {
		return h, p
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return s, strconv.Itoa(defPort)
	}
	return strings.Trim(s, "[]"), strconv.Itoa(defPort)
}

// orderMX sorts by preference and shuffles hosts of equal preference, which
// spreads load as RFC 5321 §5.1 asks.
func orderMX(mxs []*net.MX) []*net.MX {
	out := slices.Clone(mxs)
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	slices.SortStableFunc(out, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	return out
}

func isNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

func dnsTempError(domain string, err error) *policy.Reply {
	text := "DNS lookup for " + domain + " failed"
	if err != nil {
		text += ": " + err.Error()
	}
	return &policy.Reply{Code: 451, Enhanced: "4.4.3", Text: text}
}

// asReply is err as a *policy.Reply (a temporary one when it is not).
func asReply(err error) *policy.Reply {
	var r *policy.Reply
	if errors.As(err, &r) {
		return r
	}
	return &policy.Reply{Code: 451, Enhanced: "4.4.3", Text: err.Error()}
}
