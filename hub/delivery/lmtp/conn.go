package lmtp

import (
	"context"
	"log/slog"
	"net"
	"strings"

	"github.com/emersion/go-smtp"

	"hubd/hub/delivery"
)

// client is one LMTP connection: go-smtp's client in LMTP mode on conn, and
// what reuse needs to know of it. One Deliver call uses it at a time: the
// one that dialled it or took it from the idle pool.
type client struct {
	*smtp.Client
	conn   net.Conn
	msgs   int         // transactions begun on this connection (MAIL sent)
	unbind func() bool // stops the ctx watcher of the Deliver using it; false if it fired
}

// bind closes the connection when ctx ends: closing is the one way to
// interrupt a read or write blocked on a silent server.
func (c *client) bind(ctx context.Context) {
	c.unbind = context.AfterFunc(ctx, func() { _ = c.conn.Close() })
}

// release detaches the connection from its Deliver call; false means ctx
// ended and the connection was (or is being) closed.
func (c *client) release() bool {
	if c.unbind == nil {
		return true
	}
	ok := c.unbind()
	c.unbind = nil
	return ok
}

// fate is what becomes of a connection after a transaction.
type fate int

const (
	fateDrop fate = iota // broken, or in a state we cannot vouch for: close without a word
	fateQuit             // healthy but not to be reused: QUIT
	fateKeep             // between transactions: may carry the next message
)

// open dials the server and brings the session to the point where MAIL may
// be sent: greeting and LHLO (RFC 2033 §4.1: LHLO, never HELO or EHLO). The
// connection is bound to ctx. On failure the Result, which has Connection
// set, is every recipient's.
func (s *session) open(ctx context.Context) (*client, *delivery.Result) {
	conn, err := s.d.dial(ctx, s.server)
	if err != nil {
		r := s.connFailure(ctx, "connect", err)
		return nil, &r
	}
	c := &client{Client: smtp.NewClientLMTP(conn), conn: conn}
	c.CommandTimeout = s.d.cmdTimeout
	c.SubmissionTimeout = s.d.dataTimeout
	c.bind(ctx)
	// Hello reads the greeting first.
	if err := c.Hello(s.d.lhloName(s.hop)); err != nil {
		c.release()
		_ = c.Close()
		r := s.connFailure(ctx, "LHLO", err)
		return nil, &r
	}
	return c, nil
}

// reuse takes an idle connection to the hop's server from the pool and
// proves it alive with RSET (RFC 5321 §4.1.1.5), as smtpout does. go-smtp's
// client forgets the server's extensions on RSET, so LHLO follows (RFC
// 2033 §4.1 allows it at any time; one more round trip on a local socket).
// A connection that fails either is closed and the next idle one tried;
// nil means none is left and the caller dials.
func (s *session) reuse(ctx context.Context) *client {
	for {
		c, ok := s.d.pool.Take(s.hop, nil)
		if !ok {
			return nil
		}
		c.bind(ctx)
		err := c.Reset()
		if err == nil {
			err = c.Hello(s.d.lhloName(s.hop))
		}
		if err == nil {
			return c
		}
		c.release()
		_ = c.Close()
		if ctx.Err() != nil {
			return nil
		}
		// Servers time idle clients out: the connection was dead before
		// this message began, so nothing about the message is decided.
		s.d.log.InfoContext(ctx, "lmtp: idle connection unusable, reconnecting",
			slog.String("server", s.server), slog.String("reason", oneLine(err.Error())))
	}
}

// finish disposes of a connection after a transaction: back to the idle
// pool, QUIT, or closed, as its fate and the per-connection limit say.
func (d *Deliverer) finish(hop delivery.NextHop, c *client, f fate) {
	if !c.release() {
		f = fateDrop // ctx ended: the watcher closed the connection
	}
	switch {
	case f == fateKeep && c.msgs < d.maxMsgs:
		d.pool.Put(hop, c)
	case f == fateKeep || f == fateQuit:
		d.quit(c)
	default:
		_ = c.Close()
	}
}

// quit ends a session politely; every recipient is settled by then, so a
// server slow to say goodbye costs nothing but d.quitTimeout.
func (d *Deliverer) quit(c *client) {
	c.CommandTimeout = d.quitTimeout
	if err := c.Quit(); err != nil {
		_ = c.Close()
	}
}

// dial connects to addr: "unix:/path" is a unix socket, anything else
// "host:port" over TCP.
func (d *Deliverer) dial(ctx context.Context, addr string) (net.Conn, error) {
	dialer := net.Dialer{Timeout: d.dialTimeout}
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		return dialer.DialContext(ctx, "unix", path)
	}
	return dialer.DialContext(ctx, "tcp", addr)
}
