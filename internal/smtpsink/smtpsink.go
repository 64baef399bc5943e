// Package smtpsink is the "remote MTA" of hubd's tests: a real SMTP server on
// a loopback port (127.0.0.1:0), built on go-smtp, that records every message
// it accepts so a test can assert on the envelope and the bytes that arrived.
//
// What it promises:
//   - Start returns a listening sink; it is closed by t.Cleanup, so a test
//     never has to stop it and never leaks its port.
//   - A message is recorded only after the DATA transaction succeeded (the
//     Data hook, if any, returned nil), and it is recorded before the 250 reply
//     is written, so a client that has seen 250 will find it in Messages.
//   - Message.Data is the message exactly as the DATA reader delivered it:
//     dot-unstuffed (RFC 5321 §4.5.2), with the client's CRLF line endings.
//   - WaitFor blocks on a notification, not a sleep loop, and fails the test
//     when its deadline passes.
//
// Behaviour can be injected with hooks (Mail, Rcpt, Data: return a
// *smtp.SMTPError to give a 4xx/5xx reply) and with two modes that replace the
// SMTP server by a bare TCP acceptor: Hang (accept, never greet: for greeting
// timeouts) and RejectGreeting (greet with 421 and close: for "try the next
// host" logic).
package smtpsink

import (
	"crypto/tls"
	"errors"
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
	// examples/dev.hcl's smart host 127.0.0.1:2526.
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
	// of the recorded message.
	Rcpt func(addr string) error
	// Data, when set, decides the message after it was read in full; a
	// non-nil error is the reply and the message is not recorded.
	Data func(from string, to []string, data []byte) error

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

	mu       sync.Mutex
	msgs     []Message
	changed  chan struct{} // closed and replaced whenever msgs grows
	conns    map[net.Conn]struct{}
	closed   bool
	serveErr chan error
}

// Start listens on Options.Addr (default 127.0.0.1:0) and serves until the test ends.
func Start(t testing.TB, opts Options) *Sink {
	t.Helper()
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("smtpsink: listen: %v", err)
	}
	s := &Sink{
		ln:       ln,
		opts:     opts,
		changed:  make(chan struct{}),
		conns:    make(map[net.Conn]struct{}),
		serveErr: make(chan error, 1),
	}
	if opts.Hang || opts.RejectGreeting {
		go func() { s.serveErr <- s.serveRaw() }()
	} else {
		s.srv = s.newServer()
		go func() { s.serveErr <- s.srv.Serve(ln) }()
	}
	t.Cleanup(s.close)
	return s
}

func (s *Sink) newServer() *smtp.Server {
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		_, isTLS := c.TLSConnectionState()
		return &session{sink: s, helo: c.Hostname(), tls: isTLS}, nil
	}))
	srv.Domain = s.opts.Domain
	if srv.Domain == "" {
		srv.Domain = "sink.test"
	}
	srv.TLSConfig = s.opts.TLSConfig
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
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		if s.opts.RejectGreeting {
			s.mu.Unlock()
			// RFC 5321 §3.1: a server may refuse service with a 421 greeting.
			_, _ = io.WriteString(c, "421 4.3.2 sink.test not accepting mail\r\n")
			c.Close()
			continue
		}
		s.conns[c] = struct{}{} // held open until close
		s.mu.Unlock()
	}
}

func (s *Sink) close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	if s.srv != nil {
		_ = s.srv.Close()
	}
	// Also close the listener ourselves: srv.Close only knows listeners that
	// Serve has already registered.
	_ = s.ln.Close()
	<-s.serveErr
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
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		if len(s.msgs) >= n {
			out := append([]Message(nil), s.msgs...)
			s.mu.Unlock()
			return out
		}
		changed := s.changed
		got := len(s.msgs)
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("smtpsink: %d message(s) after %v, want %d", got, timeout, n)
			return nil
		}
	}
}

func (s *Sink) record(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.changed)
	s.changed = make(chan struct{})
}

// session is one SMTP session (go-smtp starts a new one after STARTTLS).
type session struct {
	sink *Sink
	helo string
	tls  bool
	msg  *Message
}

func (ss *session) Reset()        { ss.msg = nil }
func (ss *session) Logout() error { return nil }

func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if h := ss.sink.opts.Mail; h != nil {
		if err := h(from); err != nil {
			return err
		}
	}
	m := &Message{From: from, TLS: ss.tls, Helo: ss.helo}
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
	data, err := io.ReadAll(r)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se // e.g. 552 5.3.4 over MaxMessageBytes
		}
		return err
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
