// Package smtpsink is the "remote MTA" of hubd's tests: a real SMTP server on
// a loopback port (127.0.0.1:0), built on go-smtp, that records every message
// it accepts so a test can assert on the envelope and the bytes that arrived.
//
// What it promises:
//
//   - Start returns a listening sink; it is closed by t.Cleanup, so a test
//     never has to stop it and never leaks its port.
//
//   - A message is recorded only after the DATA transaction succeeded (the
//     Data hook, if any, returned nil), and it is recorded before the 250 reply
//     is written, so a client that has seen 250 will find it in Messages.
//
//   - Message.Data is the message exactly as the DATA reader delivered it:
//     dot-unstuffed (RFC 5321 §4.5.2), with the client's CRLF line endings.
//
//   - WaitFor blocks on a notification, not a sleep loop, and fails the test
//     when its deadline passes.
//
//   - Every accepted TCP connection is counted and numbered (1, 2, ...), and
//     each Message names the connection it came on, so a test can assert
//     connection reuse (Connections, MessagesPerConnection) and watch a client
//     hang up (OpenConnections, WaitOpen).
//
// Behaviour can be injected with hooks (Mail, Rcpt, Data: return a
// *smtp.SMTPError to give a 4xx/5xx reply), with failures of the first
// transactions (DropInData, TempFailFirst), by hiding extensions
// (NoPipelining, No8BITMIME), and with two modes that replace the SMTP server
// by a bare TCP acceptor: Hang (accept, never greet: for greeting timeouts)
// and RejectGreeting (greet with 421 and close: for "try the next host"
// logic).
//
// MX routing dials every MX host on one port, so tests that need several
// remote MTAs run them on different loopback addresses (127.0.0.2,
// 127.0.0.3, ...) and one port: StartSamePort does that.
package smtpsink

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Options configure a sink. The zero value is a plain ESMTP server without
// TLS that accepts everything.
type Options struct {
	// Addr is the address to listen on; default "127.0.0.1:0" (a free port).
	// A fixed port is for tests of a configuration that names one, such as
	// examples/dev.hcl's smart host 127.0.0.1:2526. Any 127.0.0.0/8 address
	// works on Linux, e.g. "127.0.0.3:2525" for a second MX host on the
	// port of the first (see StartSamePort).
	Addr string
	// Domain is the name in the 220 greeting; default "sink.test".
	Domain string
	// TLSConfig, when set, makes the sink offer STARTTLS with it.
	TLSConfig *tls.Config
	// MaxMessageBytes is advertised as SIZE and enforced (552 5.3.4); 0 means
	// "SIZE" without a limit.
	MaxMessageBytes int64
	// SMTPUTF8 advertises the SMTPUTF8 extension (RFC 6531).
	SMTPUTF8 bool

	// Mail, when set, decides MAIL FROM (from is "" for the null sender).
	Mail func(from string) error
	// Rcpt, when set, decides each RCPT TO; a refused recipient is not part
	// of the recorded message. Return a 5xx *smtp.SMTPError for "this
	// recipient does not exist" and a 4xx one for "try this one later".
	Rcpt func(addr string) error
	// Data, when set, decides the message after it was read in full; a
	// non-nil error is the reply and the message is not recorded.
	Data func(from string, to []string, data []byte) error

	// DropInData makes the first DropInData DATA transactions (counted over
	// all connections) end by closing the connection in the middle of the
	// message, before the final dot was read and without a reply, as a
	// crashing or cut-off server would. The message is not recorded.
	DropInData int
	// TempFailFirst answers "451 4.3.0" to the final dot of the first
	// TempFailFirst DATA transactions after those DropInData took, then
	// accepts. The refused messages are not recorded.
	TempFailFirst int
	// NoPipelining and No8BITMIME leave PIPELINING (RFC 2920) and 8BITMIME
	// (RFC 6152) out of the EHLO reply; the server still handles pipelined
	// commands and 8-bit data, as lenient servers do. They remove the
	// keyword from the bytes on the wire, so they cannot be combined with
	// TLSConfig (Start fails the test).
	NoPipelining bool
	No8BITMIME   bool

	// Auth, when set, offers AUTH (RFC 4954) and checks logins against it
	// (user → password); see auth.go. ImplicitTLS serves TLS from the
	// first byte (RFC 8314, port 465) with TLSConfig instead of STARTTLS.
	Auth         *AuthOptions
	ImplicitTLS  bool
	RequireAuth  bool // MAIL before a successful AUTH gets 530 5.7.0 (RFC 4954 §6)
	InsecureAuth bool // offer and take AUTH without TLS (go-smtp's AllowInsecureAuth)

	// Hang accepts TCP connections and never sends a greeting (RFC 5321
	// §4.5.3.2.1 is the client's 5-minute wait this exercises).
	Hang bool
	// RejectGreeting answers every connection with "421 4.3.2" and closes it.
	RejectGreeting bool
}

// Message is one accepted message.
type Message struct {
	From string   // reverse-path, "" for <>
	To   []string // accepted forward-paths, in RCPT order
	Data []byte   // dot-unstuffed, CRLF line endings as sent
	TLS  bool     // the transaction ran inside STARTTLS
	Helo string   // the EHLO/HELO argument

	Conn int // number of the connection it came on, 1 for the first accepted

	AuthUser string // the user the session authenticated as (Options.Auth), "" without AUTH
	AuthMech string // the SASL mechanism it used
	PeerCN   string // common name of the client certificate, "" without one

	// MAIL FROM parameters as the client gave them.
	Size int64  // SIZE=, 0 when absent
	Body string // BODY= ("7BIT", "8BITMIME") or ""
	UTF8 bool   // SMTPUTF8 was given
}

// Sink is a running in-test SMTP server.
type Sink struct {
	ln   net.Listener
	opts Options
	srv  *smtp.Server // nil in Hang/RejectGreeting mode

	mu        sync.Mutex
	msgs      []Message
	changed   chan struct{}          // closed and replaced whenever msgs or conns change
	conns     map[*sinkConn]struct{} // open connections
	accepted  int                    // connections accepted so far
	peakConns int                    // the most conns open at once
	dataSeen  int                    // DATA transactions so far (DropInData, TempFailFirst)
	auths     []AuthAttempt          // every AUTH command, in order (auth.go)
	closed    bool
	serveErr  chan error
}

// Start listens on Options.Addr (default 127.0.0.1:0) and serves until the test ends.
func Start(t testing.TB, opts Options) *Sink {
	t.Helper()
	s, err := start(t, opts)
	if err != nil {
		t.Fatalf("smtpsink: %v", err)
	}
	return s
}

// StartSamePort starts one sink per Options, all on the same free port; each
// Options.Addr is a bare IP address ("127.0.0.2"), different for each sink.
// It is for MX routing tests, where the deliverer dials every MX host on one
// port. A port that is free on the first address but taken on another is
// given up and a new one tried.
func StartSamePort(t testing.TB, opts ...Options) []*Sink {
	t.Helper()
	var lastErr error
	for range 20 {
		sinks, err := startSamePort(t, opts)
		if err == nil {
			return sinks
		}
		lastErr = err
	}
	t.Fatalf("smtpsink: no port free on every address: %v", lastErr)
	return nil
}

func startSamePort(t testing.TB, opts []Options) ([]*Sink, error) {
	var sinks []*Sink
	port := "0"
	for _, o := range opts {
		if o.Addr == "" {
			o.Addr = "127.0.0.1"
		}
		o.Addr = net.JoinHostPort(o.Addr, port)
		s, err := start(t, o)
		if err != nil {
			for _, s := range sinks {
				s.close()
			}
			return nil, err
		}
		sinks = append(sinks, s)
		port = strconv.Itoa(s.Port())
	}
	return sinks, nil
}

func start(t testing.TB, opts Options) (*Sink, error) {
	if opts.TLSConfig != nil && (opts.NoPipelining || opts.No8BITMIME) {
		return nil, errors.New("NoPipelining and No8BITMIME cannot be combined with TLSConfig")
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	s := &Sink{
		opts:     opts,
		changed:  make(chan struct{}),
		conns:    make(map[*sinkConn]struct{}),
		serveErr: make(chan error, 1),
	}
	s.ln = &listener{Listener: ln, sink: s}
	if opts.ImplicitTLS {
		if opts.TLSConfig == nil {
			ln.Close()
			return nil, errors.New("ImplicitTLS needs TLSConfig")
		}
		s.ln = tls.NewListener(s.ln, opts.TLSConfig)
	}
	if opts.Hang || opts.RejectGreeting {
		go func() { s.serveErr <- s.serveRaw() }()
	} else {
		s.srv = s.newServer()
		go func() { s.serveErr <- s.srv.Serve(s.ln) }()
	}
	t.Cleanup(s.close)
	return s, nil
}

func (s *Sink) newServer() *smtp.Server {
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		st, isTLS := c.TLSConnectionState()
		ss := &session{sink: s, conn: c, helo: c.Hostname(), tls: isTLS}
		if len(st.PeerCertificates) > 0 {
			ss.peerCN = st.PeerCertificates[0].Subject.CommonName
		}
		return ss, nil
	}))
	srv.Domain = s.opts.Domain
	if srv.Domain == "" {
		srv.Domain = "sink.test"
	}
	if !s.opts.ImplicitTLS {
		srv.TLSConfig = s.opts.TLSConfig
	}
	srv.AllowInsecureAuth = s.opts.InsecureAuth
	srv.MaxMessageBytes = s.opts.MaxMessageBytes
	srv.EnableSMTPUTF8 = s.opts.SMTPUTF8
	// Generous timeouts only so that a stuck client cannot hold a test open.
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.ErrorLog = log.New(io.Discard, "", 0)
	return srv
}

// serveRaw is the accept loop for Hang and RejectGreeting: no SMTP at all.
func (s *Sink) serveRaw() error {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return err
		}
		if s.opts.RejectGreeting {
			// RFC 5321 §3.1: a server may refuse service with a 421 greeting.
			_, _ = io.WriteString(c, "421 4.3.2 sink.test not accepting mail\r\n")
			c.Close()
		}
		// Hang: the connection stays open, silent, until close.
	}
}

func (s *Sink) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	if s.srv != nil {
		_ = s.srv.Close()
	}
	// Also close the listener ourselves: srv.Close only knows listeners that
	// Serve has already registered.
	_ = s.ln.Close()
	<-s.serveErr
	s.DropConnections()
}

// Addr is the sink's "127.0.0.1:port".
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Port is the sink's TCP port (for MX routing tests that set a port).
func (s *Sink) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// Messages returns a copy of the messages accepted so far, in order.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// WaitFor waits until at least n messages were accepted and returns them; it
// fails the test (t.Fatalf) when timeout passes first.
func (s *Sink) WaitFor(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	var out []Message
	ok := s.waitUntil(t, timeout, func() bool {
		out = append([]Message(nil), s.msgs...)
		return len(s.msgs) >= n
	}, func() string { return strconv.Itoa(n) + " messages" })
	if !ok {
		return nil
	}
	return out
}

func (s *Sink) record(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	s.notifyLocked()
}

// dataVerdict numbers a DATA transaction and says what DropInData and
// TempFailFirst make of it.
func (s *Sink) dataVerdict() (drop, tempFail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dataSeen++
	n := s.dataSeen
	return n <= s.opts.DropInData, n > s.opts.DropInData && n <= s.opts.DropInData+s.opts.TempFailFirst
}

// session is one SMTP session (go-smtp starts a new one after STARTTLS).
type session struct {
	sink *Sink
	conn *smtp.Conn
	helo string
	tls  bool
	msg  *Message

	peerCN             string // client certificate's common name
	authUser, authMech string // after a successful AUTH
}

func (ss *session) Reset()        { ss.msg = nil }
func (ss *session) Logout() error { return nil }

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if h := ss.sink.opts.Mail; h != nil {
		if err := h(from); err != nil {
			return err
		}
	}
	if ss.sink.opts.RequireAuth && ss.authUser == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	m := &Message{From: from, TLS: ss.tls, Helo: ss.helo, Conn: connID(ss.conn.Conn()),
		AuthUser: ss.authUser, AuthMech: ss.authMech, PeerCN: ss.peerCN}
	if opts != nil {
		m.Size, m.Body, m.UTF8 = opts.Size, string(opts.Body), opts.UTF8
	}
	ss.msg = m
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if ss.msg == nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL first"}
	}
	if h := ss.sink.opts.Rcpt; h != nil {
		if err := h(to); err != nil {
			return err
		}
	}
	ss.msg.To = append(ss.msg.To, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	drop, tempFail := ss.sink.dataVerdict()
	if drop {
		// Take part of the message, then vanish: the final dot is never read.
		_, _ = r.Read(make([]byte, 1))
		closeConn(ss.conn.Conn())
		return errors.New("smtpsink: dropped in DATA")
	}
	data, err := io.ReadAll(r)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se // e.g. 552 5.3.4 over MaxMessageBytes
		}
		return err
	}
	if tempFail {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "sink: temporary failure, try again"}
	}
	m := *ss.msg
	m.To = append([]string(nil), m.To...)
	m.Data = data
	if h := ss.sink.opts.Data; h != nil {
		if err := h(m.From, m.To, data); err != nil {
			return err
		}
	}
	ss.sink.record(m)
	return nil
}

// String renders a message's envelope for test failure output.
func (m Message) String() string {
	return "from=<" + m.From + "> to=" + strconv.Quote(joinAddrs(m.To)) +
		" size=" + strconv.Itoa(len(m.Data)) + " tls=" + strconv.FormatBool(m.TLS)
}

func joinAddrs(a []string) string {
	out := ""
	for i, s := range a {
		if i > 0 {
			out += ","
		}
		out += "<" + s + ">"
	}
	return out
}
