package lmtp

import (
	"bufio"
	"bytes"
	"io"
	"log"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"hubd/hub"
	"hubd/hub/delivery"
)

// received is one message as the test LMTP server stored it.
type received struct {
	lhlo  string
	from  string
	opts  smtp.MailOptions
	rcpts []string
	orcpt []string // ORCPT of each RCPT, "type;addr" or ""
	body  []byte
	conn  int // number of the connection it came on, from 1
}

// serverConfig chooses how the test LMTP server behaves.
type serverConfig struct {
	network  string                  // "tcp" (default) or "unix"
	rcptErr  func(rcpt string) error // reply to RCPT; nil → accept
	dataErr  func(rcpt string) error // per-recipient reply after the dot; nil → 250
	mailErr  error                   // reply to MAIL; nil → accept
	utf8     bool                    // advertise SMTPUTF8
	dsn      bool                    // advertise DSN
	maxBytes int64                   // advertise SIZE <maxBytes>
}

// lmtpServer is a real go-smtp server in LMTP mode on loopback TCP or a unix
// socket in t.TempDir(), recording what it receives.
type lmtpServer struct {
	addr string // as a NextHop holds it
	cfg  serverConfig

	mu     sync.Mutex
	msgs   []received
	datas  int // DATA commands seen
	conns  int // connections accepted
	open   map[int]net.Conn
	closed chan int     // numbers of connections the client closed
	gone   map[int]bool // the ones waitClosed has seen, in whatever order they closed
}

func startLMTP(t *testing.T, cfg serverConfig) *lmtpServer {
	t.Helper()
	ls := &lmtpServer{cfg: cfg, open: map[int]net.Conn{}, closed: make(chan int, 1000), gone: map[int]bool{}}
	var l net.Listener
	var err error
	if cfg.network == "unix" {
		path := filepath.Join(t.TempDir(), "lmtp.sock")
		l, err = net.Listen("unix", path)
		ls.addr = "unix:" + path
	} else {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			ls.addr = l.Addr().String()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		ls.mu.Lock()
		defer ls.mu.Unlock()
		ls.conns++
		ls.open[ls.conns] = c.Conn()
		return &testSession{srv: ls, conn: c, id: ls.conns}, nil
	}))
	s.LMTP = true
	s.Domain = "lmtp.test"
	s.EnableSMTPUTF8 = cfg.utf8
	s.EnableDSN = cfg.dsn
	s.MaxMessageBytes = cfg.maxBytes
	s.ErrorLog = log.New(io.Discard, "", 0)
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return ls
}

func (ls *lmtpServer) messages() []received {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return append([]received(nil), ls.msgs...)
}

// connCount is the number of connections accepted so far.
func (ls *lmtpServer) connCount() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.conns
}

// dropConnections closes every connection on the server's side, as a
// server that times out idle clients does.
func (ls *lmtpServer) dropConnections() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for _, c := range ls.open {
		c.Close()
	}
}

// waitClosed waits until the client has closed connection n (QUIT or not).
func (ls *lmtpServer) waitClosed(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for !ls.gone[n] {
		select {
		case got := <-ls.closed:
			// Connections may close in any order: remember every one.
			ls.gone[got] = true
		case <-deadline:
			t.Fatalf("connection %d still open after %v", n, timeout)
		}
	}
}

func (ls *lmtpServer) dataCount() int {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.datas
}

// testSession implements smtp.LMTPSession: its per-recipient statuses are
// the ones the test chose.
type testSession struct {
	srv  *lmtpServer
	conn *smtp.Conn
	id   int
	cur  received
}

func (s *testSession) Reset() { s.cur = received{} }

// Logout is called when the connection ends, whoever ended it.
func (s *testSession) Logout() error {
	s.srv.mu.Lock()
	delete(s.srv.open, s.id)
	s.srv.mu.Unlock()
	s.srv.closed <- s.id
	return nil
}

func (s *testSession) Mail(from string, opts *smtp.MailOptions) error {
	if s.srv.cfg.mailErr != nil {
		return s.srv.cfg.mailErr
	}
	s.cur = received{lhlo: s.conn.Hostname(), from: from, conn: s.id}
	if opts != nil {
		s.cur.opts = *opts
	}
	return nil
}

func (s *testSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	if f := s.srv.cfg.rcptErr; f != nil {
		if err := f(to); err != nil {
			return err
		}
	}
	s.cur.rcpts = append(s.cur.rcpts, to)
	orcpt := ""
	if opts != nil && opts.OriginalRecipient != "" {
		orcpt = strings.ToLower(string(opts.OriginalRecipientType)) + ";" + opts.OriginalRecipient
	}
	s.cur.orcpt = append(s.cur.orcpt, orcpt)
	return nil
}

func (s *testSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

func (s *testSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	body, err := io.ReadAll(r)
	s.srv.mu.Lock()
	s.srv.datas++
	if err == nil {
		m := s.cur
		m.body = body
		s.srv.msgs = append(s.srv.msgs, m)
	}
	s.srv.mu.Unlock()
	if err != nil {
		return err
	}
	for _, rcpt := range s.cur.rcpts {
		var rerr error
		if f := s.srv.cfg.dataErr; f != nil {
			rerr = f(rcpt)
		}
		status.SetStatus(rcpt, rerr)
	}
	return nil
}

// startScript runs handle on every connection to a raw TCP listener, for
// servers that misbehave in ways go-smtp's server will not.
func startScript(t *testing.T, handle func(c net.Conn, r *bufio.Reader)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	return l.Addr().String()
}

// scriptUntilDot plays a well-behaved LMTP server up to and including the
// end of DATA, accepting every recipient, and returns how many it accepted.
func scriptUntilDot(c net.Conn, r *bufio.Reader) (int, bool) {
	io.WriteString(c, "220 script.test LMTP ready\r\n")
	rcpts := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return rcpts, false
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "LHLO"):
			io.WriteString(c, "250-script.test\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n")
		case strings.HasPrefix(cmd, "MAIL"):
			io.WriteString(c, "250 2.1.0 ok\r\n")
		case strings.HasPrefix(cmd, "RCPT"):
			rcpts++
			io.WriteString(c, "250 2.1.5 ok\r\n")
		case cmd == "DATA":
			io.WriteString(c, "354 go ahead\r\n")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return rcpts, false
				}
				if l == ".\r\n" {
					return rcpts, true
				}
			}
		default:
			io.WriteString(c, "500 5.5.1 what\r\n")
		}
	}
}

// message is a queued message with body and envelope for the tests.
func message(from string, body []byte, mod func(*hub.Envelope)) delivery.Message {
	env := &hub.Envelope{From: from, ReceivedAt: time.Now()}
	if mod != nil {
		mod(env)
	}
	return delivery.Message{
		ID:       "Q1",
		Envelope: env,
		Size:     int64(len(body)),
		Open:     func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
	}
}

func recipients(addrs ...string) []delivery.Recipient {
	out := make([]delivery.Recipient, len(addrs))
	for i, a := range addrs {
		out[i] = delivery.Recipient{Address: a, Key: "Q1." + a}
	}
	return out
}

func hop(addr string) delivery.NextHop {
	return delivery.NextHop{Kind: delivery.KindLMTP, SmartHosts: addr}
}

const simpleBody = "From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
