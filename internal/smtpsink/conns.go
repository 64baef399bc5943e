package smtpsink

import (
	"bytes"
	"crypto/tls"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// listener numbers and tracks every connection it accepts.
type listener struct {
	net.Listener
	sink *Sink
}

func (l *listener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	s := l.sink
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accepted++
	c := &sinkConn{Conn: nc, sink: s, id: s.accepted}
	if s.closed {
		nc.Close()
		return c, nil // Serve sees it fail at once and then the closed listener
	}
	s.conns[c] = struct{}{}
	s.peakConns = max(s.peakConns, len(s.conns))
	s.notifyLocked()
	return c, nil
}

// sinkConn is one accepted connection: it knows its number, leaves itself
// out of the open set when closed, and hides EHLO keywords (NoPipelining,
// No8BITMIME) on the way out.
type sinkConn struct {
	net.Conn
	sink *Sink
	id   int
	once sync.Once
}

// hidden are EHLO reply lines the options remove. go-smtp writes each reply
// line with its own Write (textproto's PrintfLine flushes per line), and
// neither keyword is ever the last line, so an exact match suffices.
func (c *sinkConn) hidden(p []byte) bool {
	o := c.sink.opts
	return (o.NoPipelining && bytes.Equal(p, []byte("250-PIPELINING\r\n"))) ||
		(o.No8BITMIME && bytes.Equal(p, []byte("250-8BITMIME\r\n")))
}

func (c *sinkConn) Write(p []byte) (int, error) {
	if c.hidden(p) {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// Close leaves the open set before the socket closes: the client sees the
// close only after the connection stopped counting, so that
// PeakOpenConnections never counts a connection its client already saw
// closed (a client that reconnects at once).
func (c *sinkConn) Close() error {
	c.once.Do(func() {
		s := c.sink
		s.mu.Lock()
		delete(s.conns, c)
		s.notifyLocked()
		s.mu.Unlock()
	})
	return c.Conn.Close()
}

// connID is the number of the connection under a go-smtp connection, which
// is a *tls.Conn after STARTTLS.
func connID(nc net.Conn) int {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	if sc, ok := nc.(*sinkConn); ok {
		return sc.id
	}
	return 0
}

// closeConn closes the connection under nc (TLS or not) without a word.
func closeConn(nc net.Conn) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	_ = nc.Close()
}

// notifyLocked wakes every waiter; s.mu is held.
func (s *Sink) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Connections is the number of TCP connections accepted so far.
func (s *Sink) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// OpenConnections is the number of accepted connections not yet closed by
// either side.
func (s *Sink) OpenConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// PeakOpenConnections is the most connections that were open at once.
func (s *Sink) PeakOpenConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peakConns
}

// MessagesPerConnection counts the recorded messages of each connection, in
// the order connections were accepted; a connection that delivered nothing
// counts 0. Three messages over one connection are [3]; 25 messages with a
// client that reconnects after 20 are [20 5].
func (s *Sink) MessagesPerConnection() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, s.accepted)
	for _, m := range s.msgs {
		if m.Conn > 0 {
			out[m.Conn-1]++
		}
	}
	return out
}

// DropConnections closes every open connection from the server side without
// a word, as a server that restarted or timed out idle clients would. The
// sink goes on accepting new connections.
func (s *Sink) DropConnections() {
	s.mu.Lock()
	conns := make([]*sinkConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// WaitOpen waits until exactly n connections are open and fails the test
// when timeout passes first; WaitOpen(t, 0, ...) waits for a client to hang
// up.
func (s *Sink) WaitOpen(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	s.waitUntil(t, timeout, func() bool { return len(s.conns) == n },
		func() string { return strconv.Itoa(n) + " open connections" })
}

// waitUntil waits for cond (called with s.mu held) without polling: every
// change to the sink's state wakes it.
func (s *Sink) waitUntil(t testing.TB, timeout time.Duration, cond func() bool, what func() string) bool {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		if cond() {
			s.mu.Unlock()
			return true
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			s.mu.Lock()
			open, msgs := len(s.conns), len(s.msgs)
			s.mu.Unlock()
			t.Fatalf("smtpsink: after %v: %d open connections, %d messages; waited for %s", timeout, open, msgs, what())
			return false
		}
	}
}
