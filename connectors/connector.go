package connectors

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/crypto/bcrypt"

	"hubd/internal/dovecotauth"
	"hubd/internal/message"
	"hubd/policy"
	"hubd/policy/passhash"
)

// maxDataLineLength bounds a line of DATA or BDAT content, CRLF included.
// RFC 5321 §4.5.3.1.6 sets 1,000; over-long lines exist in the wild, so,
// like go-smtp's default and close to Postfix's line_length_limit (2048),
// hubd takes twice that (message.Reader refuses more with 550 5.6.0) and
// the SMTP deliverer wraps what it relays to the RFC's limit.
const maxDataLineLength = 2000

// connector is one receive connector of one config generation: its go-smtp
// Server and the listener that feeds it.
type connector struct {
	svc   *Service
	gen   uint64 // its generation's seq, for Service.retained
	cfg   *policy.Config
	rc    *policy.ReceiveConnector
	tls   *tls.Config    // nil when the connector has no TLS
	dummy *passhash.Hash // compared for unknown logins (dummyHash)
	// backend checks PLAIN and LOGIN passwords when the connector names an
	// auth_backend; nil: the local logins.
	backend *dovecotauth.Client
	server  *smtp.Server
	ln      *chanListener
	limits  *limits    // rate limits and brute-force ledger of this generation (limits.go)
	stats   *connStats // the name's counters since start, shared across generations (runtime.go)

	// connRate is connection_rate_limit's buckets, by client source; nil
	// when unlimited. A new generation starts empty: a reload resets it.
	connRate *buckets[netip.Prefix]

	// active counts the connector's sessions; a retired connector (an
	// older generation) stops its go-smtp Server, and the Service forgets
	// it (Service.drop), when the last one ends, not before, since STARTTLS
	// hands a session to the Server again. Both guarded by svc.mu.
	active  int
	retired bool
}

// build makes the connectors of cfg. s.mu is held. Nothing changes until
// commit: a build that fails leaves the running config (and its
// certificates) as they were.
func (s *Service) build(cfg *policy.Config) (*generation, error) {
	proxy, err := proxyBinds(cfg)
	if err != nil {
		return nil, err
	}
	s.genSeq++
	gen := &generation{seq: s.genSeq, cfg: cfg, byName: map[string]*connector{}, proxy: proxy}
	for i := range cfg.ReceiveConnectors {
		rc := &cfg.ReceiveConnectors[i]
		if !rc.Enabled {
			continue
		}
		c := &connector{svc: s, gen: gen.seq, cfg: cfg, rc: rc, stats: s.statsFor(rc.Name)}
		tc, cert, err := s.tlsConfig(cfg, rc)
		if err != nil {
			return nil, fmt.Errorf("connectors: %s: %w", rc.Name, err)
		}
		c.tls = tc
		if cert != nil {
			gen.certs = append(gen.certs, *cert)
		}
		if len(rc.Auth) > 0 {
			c.dummy, err = s.dummyHash(cfg)
			if err != nil {
				return nil, err
			}
		}
		if b := cfg.AuthBackend(rc.AuthBackend); b != nil {
			c.backend = &dovecotauth.Client{Socket: b.Socket, Timeout: b.Timeout, Service: b.Service}
		}
		c.limits = newLimits(rc, s.now, s.log)
		if rc.ConnectionRateLimit > 0 {
			c.connRate = newBuckets[netip.Prefix](rc.ConnectionRateLimit, "connection_rate_limit", s.log.With("connector", rc.Name))
		}
		c.server = c.newServer()
		c.ln = newChanListener(&net.TCPAddr{})
		gen.byName[rc.Name] = c
	}
	return gen, nil
}

// commit publishes what build loaded. s.mu is held.
func (gen *generation) commit() {
	for _, pc := range gen.certs {
		pc.slot.cert.Store(pc.cert)
	}
}

// dummyHash returns a hash of a random password shaped like the costliest
// local password hash of the config (mailboxes and users; Argon2id ranks
// above bcrypt, then the larger parameters), so that checking an unknown
// login costs what checking a known one does — exactly so when all hashes
// share a scheme and parameters, as `hubd hash-password` makes them. With
// no hashes at all it is bcrypt at the default cost. s.mu is held.
func (s *Service) dummyHash(cfg *policy.Config) (*passhash.Hash, error) {
	var like *passhash.Hash
	consider := func(text string) {
		if h, err := passhash.Parse(text); err == nil && (like == nil || h.Costlier(like)) {
			like = h
		}
	}
	for _, mb := range cfg.Mailboxes {
		consider(mb.PasswordHash)
	}
	for _, u := range cfg.Users {
		consider(u.PasswordHash)
	}
	if like == nil {
		like = &passhash.Hash{Scheme: passhash.Bcrypt, Cost: bcrypt.DefaultCost}
	}
	key := fmt.Sprintf("%s/%d/%+v", like.Scheme, like.Cost, like.Argon2)
	if h := s.dummy[key]; h != nil {
		return h, nil
	}
	h, err := like.Dummy()
	if err != nil {
		return nil, fmt.Errorf("connectors: dummy password hash: %w", err)
	}
	s.dummy[key] = h
	return h, nil
}

// newServer configures the go-smtp Server of c.
func (c *connector) newServer() *smtp.Server {
	rc := c.rc
	srv := smtp.NewServer(c)
	srv.Domain = rc.FQDN
	// Command lines are bounded by the filter (hardening.go) and content
	// lines by message.Reader (maxDataLineLength), each with its own reply;
	// go-smtp's limit would close the connection in the middle of a
	// message, so it is off.
	srv.MaxLineLength = 0
	// go-smtp refuses SIZE= and DATA over MaxMessageBytes for everybody; a
	// connector where some principal may bypass the limit advertises plain
	// "SIZE" (RFC 1870 §4: no fixed limit) and the session enforces it.
	if !bypassPossible(rc) {
		srv.MaxMessageBytes = rc.MaxMessageSize
	}
	// MaxRecipients stays 0: the session answers the RFC 5321 §4.5.3.1.10
	// reply itself ("452 4.5.3 Too many recipients").
	srv.ReadTimeout = rc.ConnectionInactivityTimeout
	srv.WriteTimeout = rc.ConnectionInactivityTimeout
	srv.EnableSMTPUTF8 = true
	srv.EnableDSN = true
	srv.EnableREQUIRETLS = true // advertised by sessionConn.ehloLine after TLS; refused without TLS in session.mailFrom
	srv.ErrorLog = slogPrinter{c.svc.log.With("connector", rc.Name)}
	// TLS is terminated by sessionConn (implicit TLS at accept, STARTTLS in
	// the command filter), so go-smtp never sees it: no TLSConfig, and
	// AUTH is always "secure enough" for go-smtp; the filter refuses AUTH
	// before TLS and hides it from EHLO where the connector wants TLS.
	srv.AllowInsecureAuth = true
	return srv
}

// bypassPossible reports whether any principal holds bypass_size_limit on rc.
func bypassPossible(rc *policy.ReceiveConnector) bool {
	p := rc.Permissions
	return (p.Anonymous | p.Authenticated | p.Trusted).Has(policy.RightBypassSizeLimit)
}

// newSessionConn wraps an accepted connection for c's Server: implicit TLS
// handshake, deadlines, accounting, the session span. peer is the client's
// address (the PROXY header's, if any), as raw.RemoteAddr() also says.
func (c *connector) newSessionConn(raw net.Conn, peer netip.Addr) (*sessionConn, error) {
	s, rc := c.svc, c.rc
	sc := &sessionConn{
		Conn:       raw,
		raw:        raw,
		inactivity: rc.ConnectionInactivityTimeout,
		banner:     rc.Banner,
		c:          c,
	}
	start := s.now()
	if rc.ConnectionTimeout > 0 {
		sc.end = time.Now().Add(rc.ConnectionTimeout)
	}
	if rc.TLS.Mode == policy.TLSImplicit {
		tc := tls.Server(raw, c.tls)
		d := time.Now().Add(rc.ConnectionInactivityTimeout)
		if !sc.end.IsZero() && sc.end.Before(d) {
			d = sc.end
		}
		raw.SetDeadline(d)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		raw.SetDeadline(time.Time{})
		sc.Conn, sc.tlsConn = tc, tc
	}
	sc.init()
	id := newID()
	// A new root: nothing the client sends is trusted as trace context.
	ctx, span := s.tracer.Start(context.Background(), "smtp.session",
		trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(sessionAttributes(rc.Name, id, raw)...))
	st := &connState{
		id:        id,
		connector: rc.Name,
		remote:    raw.RemoteAddr().String(),
		peer:      peer,
		ctx:       ctx,
		span:      span,
		log:       s.log.With("session", id, "connector", rc.Name, "remote", raw.RemoteAddr().String()),
		start:     start,
	}
	if sc.tlsConn != nil {
		cs := sc.tlsConn.ConnectionState()
		st.setTLS(&cs)
	}
	sc.state = st
	s.meters.connectionOpened(rc.Name)
	sc.onClose = func() {
		s.meters.connectionClosed(rc.Name, sc.outcome())
		s.release(rc.Name, peer)
		s.sessionEnded(c)
		s.forget(sc)
		st.end(s.now())
	}
	st.log.InfoContext(ctx, "session start", "tls", st.tlsText())
	return sc, nil
}

// NewSession implements smtp.Backend. go-smtp calls it at the first
// HELO/EHLO, and again after STARTTLS (RFC 3207 §4.2: all state is
// discarded).
func (c *connector) NewSession(conn *smtp.Conn) (smtp.Session, error) {
	sc := sessionConnOf(conn.Conn())
	if sc == nil {
		return nil, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Internal error"}
	}
	sess := &session{c: c, conn: conn, sc: sc, st: sc.state, helo: conn.Hostname()}
	if sc.tlsConn != nil {
		cs := sc.tlsConn.ConnectionState()
		sess.tls = &cs
	}
	if sess.tls != nil {
		sc.state.setTLS(sess.tls)
	}
	sc.state.span.SetAttributes(attrHelo.String(sess.helo))
	return sess, nil
}

// sessionConnOf finds our sessionConn under what go-smtp holds (always
// the sessionConn itself: go-smtp never does TLS for us).
func sessionConnOf(c net.Conn) *sessionConn {
	sc, _ := c.(*sessionConn)
	return sc
}

// connState is what lives as long as the connection, across the go-smtp
// sessions STARTTLS creates.
type connState struct {
	id, connector, remote string
	peer                  netip.Addr
	ctx                   context.Context
	span                  trace.Span
	log                   *slog.Logger
	start                 time.Time

	// mailRefusals counts the MAIL commands the session refused itself
	// (session.refuse, limitRefusal), so that the connection can tell the
	// ones go-smtp refused before asking the session (conn.go).
	mailRefusals atomic.Int64

	mu           sync.Mutex
	tls          string
	authUser     string
	messages     int
	protoErrors  int
	authFailures int
}

// setTLS records a completed TLS handshake (implicit TLS or STARTTLS):
// for the logs, and on the session span.
func (st *connState) setTLS(cs *tls.ConnectionState) {
	st.mu.Lock()
	st.tls = message.TLSDetails(cs)
	st.mu.Unlock()
	st.span.SetAttributes(tlsAttributes(cs)...)
}

// authenticated reports whether the client has authenticated in the
// current session (STARTTLS forgets it, RFC 3207 §4.2).
func (st *connState) authenticated() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.authUser != ""
}

func (st *connState) tlsText() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.tls
}

// end logs the session's last line and ends its span.
func (st *connState) end(now time.Time) {
	st.mu.Lock()
	tlsText, user, msgs := st.tls, st.authUser, st.messages
	st.mu.Unlock()
	st.log.InfoContext(st.ctx, "session end", "tls", tlsText, "auth_user", user, "messages", msgs,
		"duration", now.Sub(st.start).Round(time.Millisecond))
	st.span.SetAttributes(attribute.Int("smtp.messages", msgs))
	st.span.End()
}

// newID returns a short random identifier (session IDs, Message-ID local
// parts), 80 bits in lower-case base32.
func newID() string {
	var b [10]byte
	rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.EncodeToString(b[:]))
}

// slogPrinter gives go-smtp's Logger interface a slog.Logger: what it
// reports is per-connection noise (resets, failed handshakes), so Debug.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) { p.log.Debug(fmt.Sprintf(format, v...)) }
func (p slogPrinter) Println(v ...any)               { p.log.Debug(fmt.Sprint(v...)) }
