// Package resolver is hubd's DNS client: the *net.Resolver that MX routing
// and the mail authentication checks ask, pointed at the servers of
// `hub { dns_servers }`, or at the system's when that list is empty.
//
// It is Go's own stub resolver (PreferGo) with its Dial replaced, so that
// what the standard library promises holds here too: answers over UDP,
// truncated ones asked again over TCP, /etc/hosts consulted first for
// host names, NXDOMAIN and NODATA reported as a *net.DNSError with
// IsNotFound, SERVFAIL and timeouts with IsTemporary (a temporary error is
// never read as "no such record": RFC 7208 §5 temperror, RFC 6376 §6.1.2).
//
//   - With servers configured, every query is dialled to one of them, not
//     to /etc/resolv.conf's, in turn (round robin over all dials): a
//     query's retry after a timeout goes to another server than the
//     attempt before it. The attempts and the per-attempt timeout remain
//     resolv.conf's (2 and 5 s unless it says otherwise).
//   - With none, Dial dials the address the resolver asked for: the
//     system's name servers.
//   - Set replaces the list while lookups run (a reload), without a new
//     *net.Resolver: callers keep the one they hold.
package resolver

import (
	"context"
	"net"
	"sync/atomic"
)

// Servers is the list of name servers hubd asks, as "ip:port".
type Servers struct {
	list atomic.Pointer[[]string]
	next atomic.Uint64
	r    *net.Resolver
}

// New returns the resolver for servers (nil or empty: the system's).
func New(servers []string) *Servers {
	s := &Servers{}
	s.Set(servers)
	s.r = &net.Resolver{PreferGo: true, Dial: s.dial}
	return s
}

// Set replaces the list of servers.
func (s *Servers) Set(servers []string) {
	l := append([]string(nil), servers...)
	s.list.Store(&l)
}

// Resolver is the *net.Resolver that asks the servers.
func (s *Servers) Resolver() *net.Resolver { return s.r }

func (s *Servers) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if l := *s.list.Load(); len(l) > 0 {
		address = l[(s.next.Add(1)-1)%uint64(len(l))]
	}
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}
