package smtpout

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-smtp"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/internal/certgen"
	"hubd/internal/smtpsink"
	"hubd/policy"
)

// rtServer is a go-smtp server that can advertise REQUIRETLS (which the
// shared sink does not) and records, for each message, whether MAIL carried
// REQUIRETLS and whether the session was under TLS.
type rtServer struct {
	ln    net.Listener
	conns atomic.Int32

	mu   sync.Mutex
	msgs []rtMessage
}

type rtMessage struct {
	requireTLS, tls bool
	data            string
}

// startRT serves STARTTLS with cfg (none when nil), and REQUIRETLS after it
// when requireTLS is set.
func startRT(t *testing.T, cfg *tls.Config, requireTLS bool) *rtServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rtServer{ln: ln}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		_, isTLS := c.TLSConnectionState()
		return &rtSession{s: s, tls: isTLS}, nil
	}))
	srv.Domain = "rt.test"
	srv.TLSConfig = cfg
	srv.EnableREQUIRETLS = requireTLS
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go srv.Serve(&countingListener{Listener: ln, n: &s.conns})
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *rtServer) addr() string { return s.ln.Addr().String() }

func (s *rtServer) messages() []rtMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]rtMessage(nil), s.msgs...)
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

type rtSession struct {
	s          *rtServer
	tls        bool
	requireTLS bool
}

func (r *rtSession) Reset()        { r.requireTLS = false }
func (r *rtSession) Logout() error { return nil }
func (r *rtSession) Mail(_ string, opts *smtp.MailOptions) error {
	r.requireTLS = opts != nil && opts.RequireTLS
	return nil
}
func (r *rtSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (r *rtSession) Data(rd io.Reader) error {
	b, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	r.s.mu.Lock()
	r.s.msgs = append(r.s.msgs, rtMessage{requireTLS: r.requireTLS, tls: r.tls, data: string(b)})
	r.s.mu.Unlock()
	return nil
}

// requireTLSMessage is body with REQUIRETLS in its envelope.
func requireTLSMessage(body string) delivery.Message {
	m := message(body)
	m.Envelope = &hub.Envelope{From: "sender@hub.test", RequireTLS: true}
	return m
}

// tlsServer returns a certificate for 127.0.0.1 and a pool that trusts it.
func tlsServer(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	cfg, pool, err := certgen.ServerConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return cfg, pool
}

// TestRequireTLSDelivered: verified TLS to a server that advertises
// REQUIRETLS, the parameter on MAIL, even on a hop whose setting is "none".
func TestRequireTLSDelivered(t *testing.T) {
	cfg, pool := tlsServer(t)
	s := startRT(t, cfg, true)
	opts := testOptions()
	opts.RootCAs = pool
	hop := smartHop(s.addr())
	hop.TLS = policy.SendTLSNone
	res := deliver(t, opts, hop, requireTLSMessage("Subject: r\r\n\r\nsecret\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	m := s.messages()
	if len(m) != 1 || !m[0].tls || !m[0].requireTLS {
		t.Fatalf("messages %+v, want one over TLS with REQUIRETLS on MAIL", m)
	}
}

// TestRequireTLSRefusedHosts: a host without REQUIRETLS, without TLS, or
// with a certificate that does not verify is never used; the message fails
// with 5.7.30, about the message and not the hop.
func TestRequireTLSRefusedHosts(t *testing.T) {
	cfg, pool := tlsServer(t)
	other, _, err := certgen.ServerConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		cfg   *tls.Config
		rt    bool
		roots *x509.CertPool
	}{
		{"no REQUIRETLS", cfg, false, pool},
		{"no TLS", nil, false, pool},
		{"unverifiable certificate", other, true, pool},
		{"no trusted roots", cfg, true, x509.NewCertPool()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startRT(t, tc.cfg, tc.rt)
			opts := testOptions()
			opts.RootCAs = tc.roots
			res := deliver(t, opts, smartHop(s.addr()), requireTLSMessage("Subject: r\r\n\r\nsecret\r\n"), rcpts("a@remote.test", "b@remote.test"))
			for _, r := range res {
				expect(t, r, delivery.Failed, 550, "5.7.30")
				if r.Connection {
					t.Error("Connection set: the hop would be put in retry for one message's demand")
				}
			}
			if m := s.messages(); len(m) != 0 {
				t.Errorf("message sent anyway: %+v", m)
			}
			if n := s.conns.Load(); n != 1 {
				t.Errorf("%d connections: a fallback was tried", n)
			}
		})
	}
}

// TestRequireTLSNextHost: a host that cannot carry the message passes the
// turn to the next one, which can.
func TestRequireTLSNextHost(t *testing.T) {
	cfg, pool := tlsServer(t)
	weak := smtpsink.Start(t, smtpsink.Options{})
	strong := startRT(t, cfg, true)
	opts := testOptions()
	opts.RootCAs = pool
	res := deliver(t, opts, smartHop(weak.Addr(), strong.addr()), requireTLSMessage("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if len(weak.Messages()) != 0 || len(strong.messages()) != 1 {
		t.Errorf("weak got %d, strong %d", len(weak.Messages()), len(strong.messages()))
	}
}

// TestRequireTLSSkipsIdleConnection: an idle connection opened with
// unverified (opportunistic) TLS does not carry a REQUIRETLS message; a
// verified one is opened for it.
func TestRequireTLSSkipsIdleConnection(t *testing.T) {
	cfg, pool := tlsServer(t)
	s := startRT(t, cfg, true)
	opts := testOptions()
	opts.RootCAs = pool
	d := New(opts)
	defer d.Close()
	hop := smartHop(s.addr()) // opportunistic
	ctx := t.Context()
	expect(t, d.Deliver(ctx, hop, message("first\r\n"), rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	expect(t, d.Deliver(ctx, hop, requireTLSMessage("second\r\n"), rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	if n := s.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the unverified one must not be reused)", n)
	}
	m := s.messages()
	if len(m) != 2 || m[0].requireTLS || !m[1].requireTLS {
		t.Errorf("messages %+v", m)
	}
}

// TestTLSRequiredNo: "TLS-Required: No" lets a message go in plaintext
// where the hop requires TLS; the plaintext connection then carries no
// message that needs TLS; REQUIRETLS wins over the header field.
func TestTLSRequiredNo(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := New(testOptions())
	defer d.Close()
	hop := smartHop(sink.Addr())
	hop.TLS = policy.SendTLSRequired
	ctx := t.Context()
	relaxed := "TLS-Required: No\r\nSubject: newsletter\r\n\r\nhello\r\n"
	expect(t, d.Deliver(ctx, hop, message(relaxed), rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	if m := sink.WaitFor(t, 1, waitLong)[0]; m.TLS || string(m.Data) != relaxed {
		t.Errorf("tls=%v data %q", m.TLS, m.Data)
	}
	r := d.Deliver(ctx, hop, message("Subject: private\r\n\r\nx\r\n"), rcpts("a@remote.test"))[0]
	expect(t, r, delivery.Deferred, 451, "4.7.5")
	r = d.Deliver(ctx, hop, requireTLSMessage(relaxed), rcpts("a@remote.test"))[0]
	expect(t, r, delivery.Failed, 550, "5.7.30")
	if n := len(sink.Messages()); n != 1 {
		t.Errorf("%d messages reached the plaintext sink, want 1", n)
	}
}

const orgMessage = "Received: from c by hub.test; Mon, 5 Jan 2026 10:00:00 +0000\r\n" +
	"X-Hubd-Expanded: team@hub.test; by=hub.test\r\n\tfolded\r\n" +
	"Subject: list mail\r\n\r\nX-Hubd-Expanded: body text stays\r\n"

// TestOrgHeadersOnSend: the hub-internal fields leave only through a hop
// with send_org_headers; SIZE is never smaller than what is sent.
func TestOrgHeadersOnSend(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	hop := smartHop(sink.Addr())
	deliver(t, testOptions(), hop, message(orgMessage), rcpts("a@remote.test"))
	m := sink.WaitFor(t, 1, waitLong)[0]
	want := strings.Replace(orgMessage, "X-Hubd-Expanded: team@hub.test; by=hub.test\r\n\tfolded\r\n", "", 1)
	if string(m.Data) != want {
		t.Errorf("sent\n%q\nwant\n%q", m.Data, want)
	}
	if m.Size < int64(len(m.Data)) {
		t.Errorf("SIZE=%d for %d bytes", m.Size, len(m.Data))
	}
	hop.OrgHeaders = true
	deliver(t, testOptions(), hop, message(orgMessage), rcpts("a@remote.test"))
	if m := sink.WaitFor(t, 2, waitLong)[1]; string(m.Data) != orgMessage {
		t.Errorf("with send_org_headers:\n%q", m.Data)
	}
}
