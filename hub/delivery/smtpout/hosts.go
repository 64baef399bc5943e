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

// target is one address to try: the host's name (for Results, logs and TLS
// verification) and the "ip:port" to dial.
type target struct {
	host string
	addr string
}

// hostError is a routing failure decided before any connection: it carries
// the reply every recipient gets.
type hostError struct {
	permanent bool
	code      int
	enhanced  string
	text      string
}

func (e *hostError) Error() string { return e.text }

// targets lists the addresses to try for hop, in order.
func (d *deliverer) targets(ctx context.Context, smartHosts, domain string) ([]target, *hostError) {
	if strings.TrimSpace(smartHosts) != "" {
		return d.smartHostTargets(ctx, smartHosts)
	}
	if domain == "" {
		return nil, &hostError{permanent: true, code: 554, enhanced: "5.4.4", text: "no smart host and no domain to route by"}
	}
	return d.mxTargets(ctx, domain)
}

// smartHostTargets parses "host:port" / "[ip]:port" / "host" (port 25)
// entries, comma-separated, and resolves names. A name that does not resolve
// is skipped so the next smart host gets its turn.
func (d *deliverer) smartHostTargets(ctx context.Context, list string) ([]target, *hostError) {
	var out []target
	var lastErr error
	for _, entry := range strings.Split(list, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		host, port := splitHostPort(entry, d.port)
		ts, err := d.resolveHost(ctx, host, port)
		if err != nil {
			lastErr = err
			continue
		}
		out = append(out, ts...)
	}
	if len(out) == 0 {
		text := "no usable smart host"
		if lastErr != nil {
			text += ": " + lastErr.Error()
		}
		return nil, &hostError{code: 451, enhanced: "4.4.3", text: text}
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

// resolveHost turns a host name or IP literal into dial targets.
func (d *deliverer) resolveHost(ctx context.Context, host, port string) ([]target, error) {
	host = strings.TrimSuffix(host, ".")
	if ip, err := netip.ParseAddr(host); err == nil {
		return []target{{host: host, addr: net.JoinHostPort(ip.String(), port)}}, nil
	}
	addrs, err := d.resolver.LookupHost(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]target, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, target{host: host, addr: net.JoinHostPort(a, port)})
	}
	return out, nil
}

// mxTargets implements RFC 5321 §5.1: MX hosts by preference (random among
// equal preference), each host's addresses in resolver order; no MX records
// means the domain itself is the implicit MX; a null MX (RFC 7505) means the
// domain accepts no mail.
func (d *deliverer) mxTargets(ctx context.Context, domain string) ([]target, *hostError) {
	port := strconv.Itoa(d.port)
	mxs, err := d.resolver.LookupMX(ctx, domain)
	if err != nil && !isNotFound(err) {
		return nil, dnsTempError(domain, err)
	}
	if len(mxs) == 0 {
		// No MX (NODATA, or NXDOMAIN which LookupHost will confirm): implicit MX.
		ts, err := d.resolveHost(ctx, domain, port)
		switch {
		case isNotFound(err):
			return nil, &hostError{permanent: true, code: 550, enhanced: "5.1.2",
				text: "domain " + domain + " does not exist"}
		case err != nil:
			return nil, dnsTempError(domain, err)
		}
		return ts, nil
	}
	// RFC 7505 §3: a single MX with preference 0 and root target.
	if len(mxs) == 1 && strings.TrimSuffix(mxs[0].Host, ".") == "" {
		return nil, &hostError{permanent: true, code: 556, enhanced: "5.1.10",
			text: "domain " + domain + " does not accept mail (null MX)"}
	}
	mxs = orderMX(mxs)
	var out []target
	var lastErr error
	for _, mx := range mxs {
		host := strings.TrimSuffix(mx.Host, ".")
		if host == "" {
			continue // a null MX mixed with real ones is ignored
		}
		ts, err := d.resolveHost(ctx, host, port)
		if err != nil {
			lastErr = err
			continue
		}
		out = append(out, ts...)
	}
	if len(out) == 0 {
		return nil, dnsTempError(domain, lastErr)
	}
	return out, nil
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

func dnsTempError(domain string, err error) *hostError {
	text := "DNS lookup for " + domain + " failed"
	if err != nil {
		text += ": " + err.Error()
	}
	return &hostError{code: 451, enhanced: "4.4.3", text: text}
}
