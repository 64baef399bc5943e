// Package dnsfake is the DNS of hubd's tests: an in-memory resolver with the
// method set of smtpout.Resolver (LookupMX, LookupHost), so that MX routing
// can be pointed at SMTP sinks on loopback addresses without a real DNS
// server.
//
// What it promises, matching what the deliverer expects of net.Resolver:
//   - A name with an entry in MX (LookupMX) or Hosts (LookupHost) answers
//     with a copy of that entry, so callers may reorder the result.
//   - A name without an entry answers a *net.DNSError with IsNotFound set:
//     NXDOMAIN, or NODATA for a name that exists under the other kind (Go's
//     net.Resolver reports both as "no such host"). To make a name exist with
//     no MX records, give it Hosts only.
//   - A name in Fail answers a temporary *net.DNSError (IsTemporary, like a
//     SERVFAIL); a name in Timeout answers one with IsTimeout set. Both win
//     over MX and Hosts.
//   - Names match case-insensitively and with or without the trailing dot.
//   - A cancelled ctx answers ctx.Err() wrapped in a *net.DNSError with
//     IsTimeout, as net.Resolver does.
//   - It is safe for concurrent use: fill the maps before the first lookup
//     (or set them with SetMX, SetHosts, SetFail at any time), and Lookups
//     counts the queries so tests can tell whether DNS was asked at all.
//
// It must not import smtpout: smtpout's own tests import it.
package dnsfake

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
)

// Resolver is an in-memory DNS. The zero value answers NXDOMAIN for every
// name. Fill the exported maps before first use; change them afterwards only
// through the Set methods.
type Resolver struct {
	MX      map[string][]*net.MX // domain → MX records, in the order returned
	Hosts   map[string][]string  // host → addresses (A and AAAA together)
	Fail    map[string]bool      // names whose lookups fail temporarily (SERVFAIL)
	Timeout map[string]bool      // names whose lookups time out

	mu      sync.RWMutex
	lookups int
}

// SetMX replaces the MX records of domain (nil removes them).
func (r *Resolver) SetMX(domain string, mx ...*net.MX) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.MX == nil {
		r.MX = map[string][]*net.MX{}
	}
	setOrDelete(r.MX, domain, mx, len(mx) > 0)
}

// SetHosts replaces the addresses of host (none removes them).
func (r *Resolver) SetHosts(host string, addrs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Hosts == nil {
		r.Hosts = map[string][]string{}
	}
	setOrDelete(r.Hosts, host, addrs, len(addrs) > 0)
}

// SetFail makes lookups of name fail temporarily (fail = true) or not.
func (r *Resolver) SetFail(name string, fail bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.Fail == nil {
		r.Fail = map[string]bool{}
	}
	setOrDelete(r.Fail, name, fail, fail)
}

// setOrDelete stores v under name, replacing any spelling of the same name,
// or only removes it when keep is false.
func setOrDelete[V any](m map[string]V, name string, v V, keep bool) {
	for k := range m {
		if canonical(k) == canonical(name) {
			delete(m, k)
		}
	}
	if keep {
		m[name] = v
	}
}

// Lookups is the number of LookupMX and LookupHost calls so far.
func (r *Resolver) Lookups() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.lookups
}

// LookupMX answers the MX records of domain.
func (r *Resolver) LookupMX(ctx context.Context, domain string) ([]*net.MX, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lookups++
	if err := r.failure(ctx, domain); err != nil {
		return nil, err
	}
	mx, ok := find(r.MX, domain)
	if !ok {
		return nil, notFound(domain)
	}
	out := make([]*net.MX, len(mx))
	for i, m := range mx {
		c := *m
		out[i] = &c
	}
	return out, nil
}

// LookupHost answers the addresses of host.
func (r *Resolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lookups++
	if err := r.failure(ctx, host); err != nil {
		return nil, err
	}
	addrs, ok := find(r.Hosts, host)
	if !ok {
		return nil, notFound(host)
	}
	return slices.Clone(addrs), nil
}

// failure is the error a lookup of name gives before any data is consulted.
func (r *Resolver) failure(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return &net.DNSError{Err: err.Error(), Name: name, IsTimeout: true, IsTemporary: true}
	}
	if v, _ := find(r.Timeout, name); v {
		return &net.DNSError{Err: "i/o timeout", Name: name, IsTimeout: true, IsTemporary: true}
	}
	if v, _ := find(r.Fail, name); v {
		return &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	return nil
}

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// find looks name up case-insensitively, with or without a trailing dot.
func find[V any](m map[string]V, name string) (V, bool) {
	if v, ok := m[name]; ok {
		return v, true
	}
	want := canonical(name)
	for k, v := range m {
		if canonical(k) == want {
			return v, true
		}
	}
	var zero V
	return zero, false
}

func canonical(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }
