// Package connectors is hubd's way in: the TCP listeners, the receive
// connectors behind them, and the SMTP sessions they serve, up to the
// hand-off to hub.Submitter.
//
// One TCP listener runs per distinct bind address of the enabled receive
// connectors. On a bind with proxy_protocol, the PROXY header (v1 or v2) is
// read first, from trusted proxies only, and its address is the client's
// from then on (proxy.go). Each accepted connection goes to the connector
// bound there whose remote_ip_ranges contain the client most specifically
// (policy.Config.ConnectorFor); a client no connector serves is told
// "554 5.7.1 <fqdn> Access denied" and disconnected. Connection limits
// (connection_rate_limit, max_inbound_connections, ..._per_source and
// ..._percentage_per_source; connlimit.go) are applied at that moment,
// before any SMTP is spoken ("421 4.4.2" / "421 4.3.2"). Each connector
// then has its own go-smtp Server (its own EHLO keywords, size and
// recipient limits, AUTH mechanisms), fed through a channel-backed
// net.Listener, with our sessionConn between it and the client: it
// terminates TLS (tls.go), filters every command line (hardening.go), keeps
// the SMTP state machine and puts every reply in our words (protocol.go,
// replies.go), and counts protocol errors (conn.go).
//
// What a session promises:
//
//   - Policy at each command: MAIL is refused before STARTTLS under
//     require_tls (530 5.7.0), without the submit right (530 5.7.0 when AUTH
//     could grant it, RFC 4954 §6; otherwise 550 5.7.1), for a sender the
//     session may not use, and for a declared SIZE over the limit (552 5.3.4,
//     RFC 1870). RCPT is decided by policy.CheckRecipient; more than
//     max_recipients gets 452 4.5.3 (RFC 5321 §4.5.3.1.10); a repeated
//     recipient is accepted but queued once.
//   - AUTH PLAIN (RFC 4616) and LOGIN, only over TLS unless
//     allow_insecure_auth; passwords are checked against the local logins
//     (mailbox and user hashes, bcrypt or Argon2id: policy/passhash), and
//     a dummy hash is compared for unknown users so that timing does not
//     tell which users exist — or, with auth_backend, by Dovecot's auth
//     service (internal/dovecotauth), whose being unreachable is 454 4.7.0. max_logon_failures failures end the session with 421.
//   - DATA and BDAT content goes through message.Reader (strict CRLF, size,
//     header size, hop count) with our Received: field in front, and a
//     Message-ID and Date added for authenticated (submission) sessions,
//     RFC 6409 §8. "250 2.0.0 Ok: queued as <id>" is written only after
//     Submit returned, that is after the message is durable.
//   - Timeouts: connection_inactivity_timeout for each request (a command
//     line, a DATA line, a BDAT chunk: deadline.go), connection_timeout for
//     the whole session.
//   - max_protocol_errors: every 500-504, 555 and 530 reply counts, whoever
//     writes it; the one past the limit becomes "421 4.7.0 Too many
//     errors" and the connection ends (go-smtp's fixed limit of 3 never
//     applies: the filter answers the commands it would count).
//
// A Service never holds a config it did not get from its Options or Reload;
// config snapshots are immutable and swapped atomically, so a session keeps
// the snapshot it started with.
package connectors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"hubd/connectors/authcheck"
	"hubd/hub"
	"hubd/policy"
	"hubd/policy/passhash"
)

// Options configure a Service.
type Options struct {
	Config         *policy.Config
	Submitter      hub.Submitter
	Logger         *slog.Logger         // nil: discard
	TracerProvider trace.TracerProvider // nil: no tracing
	MeterProvider  metric.MeterProvider // nil: no metrics
	Clock          func() time.Time     // nil: time.Now
	// Pressure is the hub's back pressure (hub/backpressure.Monitor): at
	// MAIL FROM it may refuse with 452 4.3.1 — anonymous sessions at
	// Medium, everyone at High. nil: never.
	Pressure Pressure
	// Resolver answers the sender authentication checks' DNS questions
	// (checks.go; the daemon passes hub.dns_servers' resolver). nil: no
	// check runs, whatever the connectors' checks blocks say.
	Resolver authcheck.Resolver
}

// Pressure says whether the hub can take a new message now: Admit returns
// nil or the refusal (452 4.3.1); Fits says whether a message of the
// declared size (MAIL SIZE=) still fits above the storage threshold,
// without reserving anything (a declaration is not a message).
type Pressure interface {
	Admit(anonymous bool) error
	Fits(size int64) bool
}

// Service runs every enabled receive connector of a config.
type Service struct {
	sub      hub.Submitter
	press    Pressure
	resolver authcheck.Resolver // nil: no receipt checks
	log      *slog.Logger
	tracer   trace.Tracer
	meters   *connMetrics // nil: no metrics (metrics.go)
	now      func() time.Time

	gen atomic.Pointer[generation]

	mu        sync.Mutex
	cfg       *policy.Config // the config Start and Reload build from
	started   bool
	closed    bool
	listeners map[string]net.Listener // bind string → TCP listener
	genSeq    uint64                  // numbers generations, for retained
	live      map[*connector]struct{} // Servers that may still serve a session; see drop
	conns     map[*sessionConn]struct{}
	routing   map[net.Conn]struct{}     // accepted, not yet a session: PROXY header or implicit TLS handshake
	counts    map[string]*connCounts    // connector name → open connections
	certs     map[string]*certSlot      // connector name → current certificate
	dummy     map[string]*passhash.Hash // dummy hashes by scheme and parameters (dummyHash)
	stopped   map[string]bool           // connectors a runtime override stops (runtime.go)
	stats     map[string]*connStats     // connector name → counters since start (runtime.go)
	lastAddr  map[string]string         // bind → the address its listener last had
	wg        sync.WaitGroup            // accept loops and routing goroutines
}

// generation is one config snapshot with the connectors built from it.
//
// Each Reload makes a new one; the Service keeps a reference to the current
// one only (s.gen). An older generation's connectors stay in s.live, with
// their go-smtp Servers, limit tables and config snapshot, while sessions
// of theirs are open (a session started before the reload finishes on its
// old config, and STARTTLS hands it back to the same Server), and are
// dropped when the last one ends (drop): however many reloads there are,
// what is retained is the current generation plus the connectors that still
// have sessions.
type generation struct {
	seq    uint64
	cfg    *policy.Config
	byName map[string]*connector
	proxy  map[string]*proxyBind // bind → PROXY protocol setting; absent: none
	certs  []pendingCert         // certificates to publish at commit
}

// New checks opts and returns a Service that Start will run.
func New(opts Options) (*Service, error) {
	if opts.Config == nil {
		return nil, errors.New("connectors: Options.Config is nil")
	}
	if opts.Submitter == nil {
		return nil, errors.New("connectors: Options.Submitter is nil")
	}
	s := &Service{
		sub:       opts.Submitter,
		press:     opts.Pressure,
		resolver:  opts.Resolver,
		log:       opts.Logger,
		now:       opts.Clock,
		cfg:       opts.Config,
		listeners: map[string]net.Listener{},
		live:      map[*connector]struct{}{},
		conns:     map[*sessionConn]struct{}{},
		routing:   map[net.Conn]struct{}{},
		counts:    map[string]*connCounts{},
		certs:     map[string]*certSlot{},
		dummy:     map[string]*passhash.Hash{},
		stopped:   map[string]bool{},
		stats:     map[string]*connStats{},
		lastAddr:  map[string]string{},
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.now == nil {
		s.now = time.Now
	}
	tp := opts.TracerProvider
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	s.tracer = tp.Tracer("hubd/connectors")
	meters, err := newConnMetrics(opts.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("connectors: metrics: %w", err)
	}
	s.meters = meters
	return s, nil
}

// Start listens on every bind address of the config and serves.
func (s *Service) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("connectors: already started")
	}
	gen, err := s.build(s.cfg)
	if err != nil {
		return err
	}
	for _, bind := range s.cfg.Binds() {
		ln, err := net.Listen("tcp", bind)
		if err != nil {
			for _, l := range s.listeners {
				l.Close()
			}
			s.listeners = map[string]net.Listener{}
			return fmt.Errorf("connectors: listen %s: %w", bind, err)
		}
		s.listeners[bind] = ln
	}
	s.started = true
	gen.commit()
	s.gen.Store(gen)
	s.serve(gen)
	for bind, ln := range s.listeners {
		s.lastAddr[bind] = ln.Addr().String()
		s.wg.Add(1)
		go s.acceptLoop(bind, ln)
	}
	return nil
}

// Addrs returns each bind string with the address actually listened on
// (tests bind port 0).
func (s *Service) Addrs() map[string]net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]net.Addr, len(s.listeners))
	for bind, ln := range s.listeners {
		out[bind] = ln.Addr()
	}
	return out
}

// Reload swaps in cfg: sessions accepted from now on see it, sessions in
// progress keep the snapshot they started with. Bind addresses that appear
// are listened on, those that disappear are closed. Certificates and
// client CAs are re-read from their files; a file that does not load,
// connectors of one bind that disagree on proxy_protocol, or a new bind
// address that cannot be listened on fail the whole reload and leave the
// running config (and certificates, and listeners) in force. Runtime
// overrides (a stopped connector, runtime.go) end: the config is the
// truth. Connection-rate buckets start afresh. The generation replaced is
// dropped, connector by connector, when its last session ends (see
// generation).
func (s *Service) Reload(cfg *policy.Config) error {
	if cfg == nil {
		return errors.New("connectors: Reload with a nil config")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("connectors: reload after shutdown")
	}
	gen, err := s.build(cfg)
	if err != nil {
		return err
	}
	if !s.started {
		s.cfg = cfg
		return nil
	}
	want := map[string]bool{}
	for _, bind := range cfg.Binds() {
		want[bind] = true
	}
	opened, err := s.listenMissing(want)
	if err != nil {
		return err
	}
	s.cfg = cfg
	for _, name := range sortedKeys(s.stopped) {
		s.log.Warn("runtime override ended by reload: the receive connector runs as the config says", "connector", name)
	}
	clear(s.stopped)
	gen.commit()
	old := s.gen.Swap(gen)
	s.serve(gen)
	for _, c := range old.byName {
		// Its sessions run on, and STARTTLS may hand one back to its
		// Server: it is dropped after the last one (sessionEnded).
		c.retired = true
		if c.active == 0 {
			s.drop(c)
		}
	}
	for name, cc := range s.counts {
		if cc.total == 0 && gen.byName[name] == nil {
			delete(s.counts, name)
		}
	}
	for bind, ln := range opened {
		s.startListener(bind, ln)
	}
	for bind, ln := range s.listeners {
		if !want[bind] {
			ln.Close()
			delete(s.listeners, bind)
		}
	}
	// The daemon logs what changed, one line each (internal/daemon).
	s.log.Debug("connectors reloaded", "connectors", len(gen.byName), "binds", len(s.listeners))
	return nil
}

// Shutdown stops accepting, ends idle sessions with "421 4.3.2 Service
// shutting down", lets sessions in the middle of a message finish until ctx
// is done, then closes whatever is left.
func (s *Service) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, ln := range s.listeners {
		ln.Close()
	}
	servers := make([]*connector, 0, len(s.live))
	for c := range s.live {
		servers = append(servers, c)
	}
	for sc := range s.conns {
		sc.wake()
	}
	for c := range s.routing {
		// Still reading a PROXY header or in the implicit TLS handshake
		// (bounded only by proxyHeaderTimeout or the inactivity timeout):
		// no SMTP has been spoken, so end it now, or Shutdown's s.wg.Wait
		// would wait for it whatever ctx says.
		c.Close()
	}
	s.mu.Unlock()

	var wg sync.WaitGroup
	errs := make([]error, len(servers))
	for i, c := range servers {
		// Our listener too, not only go-smtp's: a Server whose Serve has
		// not yet registered it would otherwise wait on it for ever.
		c.ln.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.server.Shutdown(ctx); err != nil && ctx.Err() != nil {
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	if errors.Join(errs...) != nil {
		// ctx is done and sessions are left (a message in flight). go-smtp's
		// Server.Close does nothing after Shutdown (both close the same done
		// channel), so close their connections ourselves; each session then
		// ends on its read error and releases its slots as usual.
		s.mu.Lock()
		for sc := range s.conns {
			sc.raw.Close()
		}
		s.mu.Unlock()
	}
	s.wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("connectors: shutdown: %w", ctx.Err())
	}
	return nil
}

// serve starts the go-smtp Servers of gen. s.mu is held.
func (s *Service) serve(gen *generation) {
	for _, c := range gen.byName {
		s.live[c] = struct{}{}
		go c.server.Serve(c.ln)
	}
}

// drop stops a retired connector's go-smtp Server once it has no session
// left (its Serve returns when the listener closes) and forgets it: nothing
// of the Service refers to it, its Server, its limit tables or its config
// snapshot any more, and Shutdown no longer needs to reach it. Idempotent.
// s.mu is held.
func (s *Service) drop(c *connector) {
	c.ln.Close()
	delete(s.live, c)
}

// retained counts the generations and go-smtp Servers the Service still
// holds: the current generation's, and older ones with sessions left.
func (s *Service) retained() (generations, servers int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	gens := map[uint64]bool{}
	for c := range s.live {
		gens[c.gen] = true
	}
	return len(gens), len(s.live)
}

// acceptLoop accepts TCP connections on one bind address.
func (s *Service) acceptLoop(bind string, ln net.Listener) {
	defer s.wg.Done()
	backoff := time.Duration(0)
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as
			// net/http does, rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "bind", bind, "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			<-t.C
			continue
		}
		backoff = 0
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.route(bind, c)
		}()
	}
}

// route picks the connector for c and hands c to its go-smtp Server.
func (s *Service) route(bind string, c net.Conn) {
	// Until c is a session, Shutdown can only reach it through s.routing.
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.routing[c] = struct{}{}
	}
	s.mu.Unlock()
	if closed {
		c.Close()
		return
	}
	orig := c
	defer func() {
		s.mu.Lock()
		delete(s.routing, orig)
		s.mu.Unlock()
	}()
	peer := peerAddr(c.RemoteAddr())
	gen := s.gen.Load()
	if pb := gen.proxy[bind]; pb != nil {
		if !pb.trusts(peer) {
			s.meters.session("", sessionRefused)
			c.Close()
			s.log.Warn("connection refused", "bind", bind, "remote", c.RemoteAddr().String(),
				"reason", "PROXY protocol bind and the peer is not a trusted proxy")
			return
		}
		pc, client, err := readProxyHeader(c, peer)
		if err != nil {
			s.meters.session("", sessionRefused)
			c.Close()
			s.log.Warn("connection refused", "bind", bind, "remote", c.RemoteAddr().String(), "reason", err.Error())
			return
		}
		s.log.Debug("PROXY protocol", "bind", bind, "proxy", c.RemoteAddr().String(), "client", client.String())
		c, peer = pc, client.Addr()
	}
	// A reload may replace the connector between its choice and the
	// hand-over: reserving a session on it (pick) keeps a connector that
	// is still current from being dropped, and one already replaced sends
	// the connection round again, to the new generation's. A client is
	// never refused for connecting during a reload.
	var rc *policy.ReceiveConnector
	var conn *connector
	for round := 0; conn == nil; round++ {
		gen := s.gen.Load()
		rc = gen.cfg.ConnectorFor(bind, peer)
		if rc == nil {
			s.refuse(c, bind, "", "554 5.7.1 "+gen.cfg.Hub.Hostname+" Access denied", "no connector for the address")
			return
		}
		conn = gen.byName[rc.Name]
		if conn == nil {
			s.refuse(c, bind, rc.Name, "554 5.7.1 "+gen.cfg.Hub.Hostname+" Access denied", "connector not running")
			return
		}
		if !s.pick(conn) {
			conn = nil
			if round == maxRouteRounds {
				s.refuse(c, bind, rc.Name, "421 4.3.2 Service not available, try again later", "reloaded while routing")
				return
			}
		}
	}
	s.mu.Lock()
	stopped := s.stopped[rc.Name]
	s.mu.Unlock()
	if stopped {
		// Never handed to a less specific connector: see runtime.go.
		s.sessionEnded(conn)
		s.refuse(c, bind, rc.Name, "421 4.3.2 "+rc.FQDN+" Service not available, closing transmission channel",
			"receive connector stopped (runtime override)")
		return
	}
	if r, why := s.acquire(conn, peer); r != "" {
		s.sessionEnded(conn)
		s.meters.limitRefusal(rc.Name, why)
		s.refuse(c, bind, rc.Name, r, why)
		return
	}
	sc, err := conn.newSessionConn(c, peer)
	if err != nil {
		s.sessionEnded(conn)
		s.release(rc.Name, peer)
		s.meters.session(rc.Name, sessionTLSFail)
		c.Close()
		s.log.Info("session refused", "connector", rc.Name, "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	s.mu.Lock()
	closed = s.closed
	// From here Shutdown reaches it as a session (s.conns), never through
	// s.routing: closing it there would cut a session in the middle of DATA.
	delete(s.routing, orig)
	if !closed {
		s.conns[sc] = struct{}{}
	}
	s.mu.Unlock()
	if closed || !conn.ln.deliver(sc) {
		// Shutting down (a reserved connector's listener closes only then).
		sc.Conn.Write([]byte("421 4.3.2 Service not available, try again later\r\n"))
		sc.Close()
	}
}

// refuse writes one reply line to a connection no session will serve,
// closes it, and logs why.
func (s *Service) refuse(c net.Conn, bind, connector, reply, why string) {
	// Counted before the reply goes out: whoever has read the reply (an
	// operator's probe, a test) finds it in the connector's counters.
	s.countRefused(connector)
	s.meters.session(connector, sessionRefused)
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, reply+"\r\n")
	c.Close()
	s.log.Info("connection refused", "bind", bind, "connector", connector,
		"remote", c.RemoteAddr().String(), "reply", reply, "reason", why)
}

// maxRouteRounds bounds how often route tries again when reloads keep
// replacing the connector it picked.
const maxRouteRounds = 8

// pick reserves a session on c, unless a reload has replaced it (it is
// retired) or the Service is shutting down: the session counts in
// c.active from here (sessionEnded ends it), so c's listener stays open
// for the hand-over.
func (s *Service) pick(c *connector) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.retired && !s.closed {
		return false
	}
	c.active++
	return true
}

// sessionEnded notes the end of one of c's sessions, and drops a retired
// connector after its last one.
func (s *Service) sessionEnded(c *connector) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.active--
	if c.retired && c.active == 0 {
		s.drop(c)
	}
}

// forget removes a closed session connection from the shutdown set.
func (s *Service) forget(sc *sessionConn) {
	s.mu.Lock()
	delete(s.conns, sc)
	s.mu.Unlock()
}

// peerAddr returns the IP of a remote address, 4in6 unmapped.
func peerAddr(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
