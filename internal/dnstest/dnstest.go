// Package dnstest is a real authoritative DNS server for hubd's tests: it
// listens on loopback, UDP and TCP on one ephemeral port, and answers from
// records the test sets (github.com/miekg/dns does the wire format). Code
// under test reaches it through an ordinary *net.Resolver (Resolver), the
// same way hubd reaches the servers of `hub { dns_servers }`, so lookups go
// through Go's own stub resolver: truncation and the fall back to TCP, the
// mapping of RCODEs to *net.DNSError, search-list handling of absolute
// names.
//
// What it answers, for a question about name and type:
//   - A name set with SetFail answers SERVFAIL (a temporary error:
//     net.DNSError.IsTemporary); one set with SetDrop gets no answer at all
//     (a timeout). Both win over records.
//   - A name with records of the type asked answers them, authoritatively
//     (AA set), TTL 60. A, AAAA: SetHosts (each address goes to the type it
//     is); MX: SetMX; TXT: SetTXT, each string split into 255-byte
//     character-strings as RFC 7208 §3.3 and RFC 6376 §3.6.2.2 expect of a
//     long record.
//   - A name with records of other types only answers NOERROR with no
//     records (NODATA); a name without any answers NXDOMAIN.
//   - Names match case-insensitively (RFC 4343); the trailing dot is
//     optional when setting.
//   - A UDP answer over 512 bytes (no EDNS0 in the question) or over the
//     EDNS0 size the client offers is sent truncated (TC set, no records),
//     so that the client asks again over TCP, as a real server does
//     (RFC 1035 §4.2.1, RFC 6891 §6.2.5).
//
// Queries counts the questions answered, per transport, so that a test can
// tell whether DNS was asked and whether TCP was used. It is safe for
// concurrent use; records may change while the server runs.
package dnstest

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server is a DNS server on 127.0.0.1, UDP and TCP on the same port.
type Server struct {
	Addr string // "127.0.0.1:port", for `hub { dns_servers }`

	udp, tcp *dns.Server

	mu      sync.Mutex
	names   map[string]*records // canonical name → its records
	fail    map[string]bool
	drop    map[string]bool
	queries map[string]int // "udp", "tcp" → questions answered
}

type records struct {
	a, aaaa []net.IP
	mx      []*net.MX
	txt     []string
}

// Start starts a server on an ephemeral loopback port and stops it when
// the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{names: map[string]*records{}, fail: map[string]bool{}, drop: map[string]bool{}, queries: map[string]int{}}
	var pc net.PacketConn
	var ln net.Listener
	var err error
	// The UDP port is picked first; the TCP listener takes the same number
	// (retried if another process holds it).
	for range 20 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			tb.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		tb.Fatalf("dnstest: no port free for both UDP and TCP: %v", err)
	}
	s.Addr = pc.LocalAddr().String()
	handler := dns.HandlerFunc(s.serve)
	udpUp, tcpUp := make(chan struct{}), make(chan struct{})
	s.udp = &dns.Server{PacketConn: pc, Handler: handler, NotifyStartedFunc: func() { close(udpUp) }}
	s.tcp = &dns.Server{Listener: ln, Handler: handler, NotifyStartedFunc: func() { close(tcpUp) }}
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	<-udpUp
	<-tcpUp
	tb.Cleanup(func() {
		s.udp.Shutdown()
		s.tcp.Shutdown()
	})
	return s
}

// Resolver is a *net.Resolver that asks only this server (Go's resolver,
// with every query dialled to Addr whatever /etc/resolv.conf names).
func (s *Server) Resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, s.Addr)
		},
	}
}

// SetHosts replaces the A and AAAA records of host (none removes them).
func (s *Server) SetHosts(host string, addrs ...string) {
	s.edit(host, func(r *records) {
		r.a, r.aaaa = nil, nil
		for _, a := range addrs {
			ip := net.ParseIP(a)
			switch {
			case ip == nil:
				panic("dnstest: not an IP address: " + a)
			case ip.To4() != nil:
				r.a = append(r.a, ip.To4())
			default:
				r.aaaa = append(r.aaaa, ip)
			}
		}
	})
}

// SetMX replaces the MX records of domain (none removes them).
func (s *Server) SetMX(domain string, mx ...*net.MX) {
	s.edit(domain, func(r *records) { r.mx = mx })
}

// SetTXT replaces the TXT records of name, one record per string (none
// removes them).
func (s *Server) SetTXT(name string, txt ...string) {
	s.edit(name, func(r *records) { r.txt = txt })
}

// SetFail makes questions about name answer SERVFAIL (or not).
func (s *Server) SetFail(name string, fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[canonical(name)] = fail
}

// SetDrop makes questions about name go unanswered (or not): the client
// times out.
func (s *Server) SetDrop(name string, drop bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drop[canonical(name)] = drop
}

// Queries is the number of questions answered so far over network ("udp"
// or "tcp"; "" for both).
func (s *Server) Queries(network string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if network == "" {
		return s.queries["udp"] + s.queries["tcp"]
	}
	return s.queries[network]
}

func (s *Server) edit(name string, f func(*records)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := canonical(name)
	r := s.names[k]
	if r == nil {
		r = &records{}
	}
	f(r)
	if len(r.a)+len(r.aaaa)+len(r.mx)+len(r.txt) == 0 {
		delete(s.names, k)
		return
	}
	s.names[k] = r
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	network := "udp"
	if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	if len(req.Question) != 1 {
		resp.Rcode = dns.RcodeFormatError
		w.WriteMsg(resp)
		return
	}
	q := req.Question[0]
	name := canonical(q.Name)

	s.mu.Lock()
	s.queries[network]++
	drop, fail := s.drop[name], s.fail[name]
	r, exists := s.names[name]
	var answer []dns.RR
	if exists {
		answer = r.answer(q)
	}
	s.mu.Unlock()

	switch {
	case drop:
		return
	case fail:
		resp.Rcode = dns.RcodeServerFailure
	case !exists:
		resp.Rcode = dns.RcodeNameError
	default:
		resp.Answer = answer
	}
	if network == "udp" {
		size := dns.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), dns.MinMsgSize)
		}
		if resp.Len() > size {
			resp.Answer = nil
			resp.Truncated = true
		}
	}
	w.WriteMsg(resp)
}

// answer is r's records of the type q asks for. s.mu is held.
func (r *records) answer(q dns.Question) []dns.RR {
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: 60}
	}
	var out []dns.RR
	switch q.Qtype {
	case dns.TypeA:
		for _, ip := range r.a {
			out = append(out, &dns.A{Hdr: hdr(dns.TypeA), A: ip})
		}
	case dns.TypeAAAA:
		for _, ip := range r.aaaa {
			out = append(out, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: ip})
		}
	case dns.TypeMX:
		for _, mx := range r.mx {
			out = append(out, &dns.MX{Hdr: hdr(dns.TypeMX), Preference: mx.Pref, Mx: dns.Fqdn(mx.Host)})
		}
	case dns.TypeTXT:
		for _, t := range r.txt {
			out = append(out, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: split255(t)})
		}
	}
	return out
}

// split255 cuts a TXT record's text into character-strings of at most 255
// bytes (RFC 1035 §3.3.14); a reader joins them again.
func split255(s string) []string {
	var parts []string
	for len(s) > 255 {
		parts = append(parts, s[:255])
		s = s[255:]
	}
	return append(parts, s)
}

func canonical(name string) string { return strings.ToLower(dns.Fqdn(name)) }
