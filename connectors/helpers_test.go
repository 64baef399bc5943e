package connectors

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"hubd/hub"
	"hubd/policy"
)

// capture is a fake hub.Submitter that records what it is given.
type capture struct {
	mu     sync.Mutex
	envs   []hub.Envelope
	bodies []string
	n      int
	err    error // returned instead of queuing, when set
}

func (c *capture) Submit(ctx context.Context, env hub.Envelope, body io.Reader) (hub.QueueID, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		return "", err
	}
	if hs, ok := body.(hub.HeaderSource); ok {
		// As the hub does: the fields decided at the end go on top.
		b = append([]byte(hs.HeadersAtEnd()), b...)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return "", c.err
	}
	c.n++
	c.envs = append(c.envs, env)
	c.bodies = append(c.bodies, string(b))
	if env.ID != "" {
		return env.ID, nil // reserved by the session at MAIL, as the hub keeps it
	}
	return hub.QueueID(fmt.Sprintf("Q%d", c.n)), nil
}

func (c *capture) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.envs)
}

func (c *capture) last(t *testing.T) (hub.Envelope, string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.envs) == 0 {
		t.Fatal("nothing submitted")
	}
	return c.envs[len(c.envs)-1], c.bodies[len(c.bodies)-1]
}

// alicePassword is alice's password; the hash uses bcrypt's minimum cost to
// keep the tests fast.
const alicePassword = "correct horse"

func hashFor(t *testing.T, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// baseHCL is the part of every test config that is not a receive connector.
func baseHCL(t *testing.T, dir string) string {
	return fmt.Sprintf(`
hub {
  hostname  = "mx.test"
  spool_dir = %q
}
accepted_domain "example.com" {}
mailbox "alice@example.com" {
  password_hash = %q
  addresses     = ["a@example.com"]
}
mailbox "bob@example.com" {}
`, filepath.Join(dir, "spool"), hashFor(t, alicePassword))
}

// harness is a running Service with its fake hub.
type harness struct {
	t    *testing.T
	svc  *Service
	sub  *capture
	dir  string
	pool *x509.CertPool
}

// start loads base + connectors HCL and starts a Service on it.
func start(t *testing.T, connectors string) *harness {
	t.Helper()
	return startWith(t, connectors, nil)
}

// startWith is start with adjust applied to the loaded config and the
// Service's Options before it starts (nil: none).
func startWith(t *testing.T, connectors string, adjust func(*policy.Config, *Options)) *harness {
	t.Helper()
	dir := t.TempDir()
	src := baseHCL(t, dir) + connectors
	cfg, err := policy.LoadBytes(filepath.Join(dir, "hubd.hcl"), []byte(src), dir)
	if err != nil {
		if le, ok := err.(*policy.LoadError); ok {
			var b strings.Builder
			le.Write(&b, false)
			t.Fatalf("config: %s", b.String())
		}
		t.Fatalf("config: %v", err)
	}
	h := &harness{t: t, sub: &capture{}, dir: dir}
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts := Options{Config: cfg, Submitter: h.sub, Logger: logger}
	if adjust != nil {
		adjust(cfg, &opts)
	}
	h.svc, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := h.svc.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	h.pool = x509.NewCertPool()
	certs, _ := filepath.Glob(filepath.Join(dir, "spool", "tls", "*.crt"))
	for _, f := range certs {
		pem, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		h.pool.AppendCertsFromPEM(pem)
	}
	return h
}

// addr returns the listening address of a bind string.
func (h *harness) addr(bind string) string {
	h.t.Helper()
	a := h.svc.Addrs()[bind]
	if a == nil {
		h.t.Fatalf("no listener for %s (have %v)", bind, h.svc.Addrs())
	}
	return a.String()
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// client speaks raw SMTP, so tests see exact reply lines.
type client struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

// dial connects from source IP from ("" = any) and reads the greeting.
func (h *harness) dial(bind, from string) (*client, string) {
	h.t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	conn, err := d.Dial("tcp", h.addr(bind))
	if err != nil {
		h.t.Fatal(err)
	}
	c := newClient(h.t, conn)
	return c, c.reply()
}

// dialTLS connects with implicit TLS.
func (h *harness) dialTLS(bind string) (*client, string) {
	h.t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", h.addr(bind),
		&tls.Config{RootCAs: h.pool, ServerName: "mx.test"})
	if err != nil {
		h.t.Fatal(err)
	}
	c := newClient(h.t, conn)
	return c, c.reply()
}

func newClient(t *testing.T, conn net.Conn) *client {
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	c := &client{t: t, conn: conn, tp: textproto.NewConn(conn)}
	t.Cleanup(func() { conn.Close() })
	return c
}

// reply reads one reply; a multi-line reply comes back joined by "\n".
func (c *client) reply() string {
	c.t.Helper()
	var lines []string
	for {
		l, err := c.tp.ReadLine()
		if err != nil {
			c.t.Fatalf("reading reply (after %q): %v", lines, err)
		}
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

// cmd sends a line and returns the reply.
func (c *client) cmd(line string) string {
	c.t.Helper()
	if err := c.tp.PrintfLine("%s", line); err != nil {
		c.t.Fatal(err)
	}
	return c.reply()
}

// expect sends a line and checks that the reply starts with want.
func (c *client) expect(line, want string) string {
	c.t.Helper()
	got := c.cmd(line)
	if !strings.HasPrefix(got, want) {
		c.t.Fatalf("%s: got %q, want %q", line, got, want)
	}
	return got
}

// raw writes bytes as they are.
func (c *client) raw(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatal(err)
	}
}

// startTLS upgrades the connection after EHLO.
func (c *client) startTLS(pool *x509.CertPool) {
	c.t.Helper()
	c.expect("STARTTLS", "220 ")
	tc := tls.Client(c.conn, &tls.Config{RootCAs: pool, ServerName: "mx.test"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn = tc
	c.tp = textproto.NewConn(tc)
}

// closed reports whether the server closed the connection (EOF on read).
func (c *client) closed() bool {
	c.t.Helper()
	_, err := bufio.NewReader(c.conn).ReadByte()
	return err != nil
}

// send runs one transaction with DATA and returns the final reply.
func (c *client) send(from string, rcpts []string, body string) string {
	c.t.Helper()
	c.expect("MAIL FROM:<"+from+">", "250 ")
	for _, r := range rcpts {
		c.expect("RCPT TO:<"+r+">", "250 ")
	}
	c.expect("DATA", "354 ")
	c.raw(body)
	c.raw(".\r\n")
	return c.reply()
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		// A poll interval, not a wait for the event itself.
		<-time.After(2 * time.Millisecond)
	}
}

func peerAddrOf(s string) netip.Addr { return netip.MustParseAddr(s) }
