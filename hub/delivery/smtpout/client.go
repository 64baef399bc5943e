package smtpout

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"hubd/internal/enhancedstatus"
)

// reply is one SMTP reply (RFC 5321 §4.2), possibly multi-line.
type reply struct {
	Code     int
	Enhanced string   // RFC 3463 "x.y.z" from the first line, or ""
	Lines    []string // text of each line, without code and enhanced code
}

func (r reply) class() int { return r.Code / 100 }

// text joins the reply lines for a Result; multi-line replies stay readable.
func (r reply) text() string { return strings.Join(r.Lines, " / ") }

// enhancedOrDefault is the enhanced code, or the generic "c.0.0" of the
// reply's class when the server gave none (RFC 3463 §3.1).
func (r reply) enhancedOrDefault() string {
	if r.Enhanced != "" {
		return r.Enhanced
	}
	return strconv.Itoa(r.class()) + ".0.0"
}

func (r reply) String() string {
	return strconv.Itoa(r.Code) + " " + r.enhancedOrDefault() + " " + r.text()
}

// maxReplyLines bounds a multi-line reply so that a hostile server cannot
// keep us reading forever within one deadline.
const maxReplyLines = 200

// conn is one client SMTP connection: a net.Conn (plain or TLS) with a
// textproto reader and writer, and the extensions the last EHLO advertised.
// One goroutine uses it at a time: the Deliver call that dialled it or took
// it from the idle pool.
type conn struct {
	raw net.Conn // the TCP connection, under TLS if any
	nc  net.Conn // raw, or the TLS connection on top of it
	tp  *textproto.Conn
	ext map[string]string // upper-case keyword → parameters
	tls bool
	// verified: the server's certificate was verified (chain and name) in
	// the handshake, as required TLS and REQUIRETLS demand.
	verified bool
	host     string // remote host name as dialled, for Results and TLS
	addr     string // "ip:port" dialled

	msgs   int         // transactions begun on this connection (MAIL sent)
	unbind func() bool // stops the ctx watcher of the Deliver using it; false if it fired
	slot   *hopSlot    // the cluster-wide slot it holds until closed (slots.go); nil on a single hub
}

func newConn(nc net.Conn, host, addr string) *conn {
	return &conn{raw: nc, nc: nc, tp: textproto.NewConn(nc), host: host, addr: addr}
}

// bind closes the connection when ctx ends, which unblocks any read or
// write, TLS included (the TLS conn sits on raw).
func (c *conn) bind(ctx context.Context) {
	c.unbind = context.AfterFunc(ctx, func() { _ = c.raw.Close() })
}

// release detaches the connection from its Deliver call; false means ctx
// ended and the connection was (or is being) closed.
func (c *conn) release() bool {
	if c.unbind == nil {
		return true
	}
	ok := c.unbind()
	c.unbind = nil
	return ok
}

// readReply reads one reply within timeout. A syntactically broken reply is
// an error: the transaction cannot be trusted after it.
func (c *conn) readReply(timeout time.Duration) (reply, error) {
	if err := c.nc.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return reply{}, err
	}
	var r reply
	for i := 0; ; i++ {
		line, err := c.tp.ReadLine()
		if err != nil {
			return reply{}, err
		}
		if i >= maxReplyLines {
			return reply{}, errors.New("reply too long")
		}
		// RFC 5321 §4.2: "Reply-code [ SP / '-' textstring ]".
		if len(line) < 3 {
			return reply{}, fmt.Errorf("malformed reply %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code < 200 || code > 599 {
			return reply{}, fmt.Errorf("malformed reply %q", line)
		}
		if i > 0 && code != r.Code {
			return reply{}, fmt.Errorf("reply code changed within a multi-line reply: %q", line)
		}
		r.Code = code
		more := len(line) > 3 && line[3] == '-'
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		if i == 0 {
			r.Enhanced, text = splitEnhanced(code, text)
		} else if r.Enhanced != "" {
			// RFC 2034 §4: every line of the reply repeats the status code.
			if e, rest := splitEnhanced(code, text); e == r.Enhanced {
				text = rest
			}
		}
		r.Lines = append(r.Lines, text)
		if !more {
			return r, nil
		}
	}
}

// splitEnhanced takes an RFC 3463 status code off the front of a reply
// text when its class matches the reply code's (RFC 2034 §4).
func splitEnhanced(code int, text string) (string, string) {
	word, rest, _ := strings.Cut(text, " ")
	if !enhancedstatus.ForReply(word, code) {
		return "", text
	}
	return word, rest
}

// cmd sends one command line and reads its reply.
func (c *conn) cmd(timeout time.Duration, format string, args ...any) (reply, error) {
	if err := c.nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return reply{}, err
	}
	if err := c.tp.PrintfLine(format, args...); err != nil {
		return reply{}, err
	}
	return c.readReply(timeout)
}

// pipeline sends lines as one group and then reads one reply per line, in
// order (RFC 2920 §3.1). It returns the replies read before an error. The
// group is written before any reply is read: that cannot deadlock as long as
// the replies fit in the socket buffers, and a group of MAIL plus a few
// hundred RCPTs gets a few kilobytes of replies.
func (c *conn) pipeline(timeout time.Duration, lines []string) ([]reply, error) {
	if err := c.nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	for _, l := range lines {
		c.tp.W.WriteString(l)
		c.tp.W.WriteString("\r\n")
	}
	if err := c.tp.W.Flush(); err != nil {
		return nil, err
	}
	replies := make([]reply, 0, len(lines))
	for range lines {
		r, err := c.readReply(timeout)
		if err != nil {
			return replies, err
		}
		replies = append(replies, r)
	}
	return replies, nil
}

// hello sends EHLO, falling back to HELO when the server refuses EHLO with
// 5xx (RFC 5321 §4.1.1.1: an old server that does not know EHLO). It records
// the advertised extensions.
func (c *conn) hello(name string, timeout time.Duration) (reply, error) {
	r, err := c.cmd(timeout, "EHLO %s", name)
	if err != nil {
		return r, err
	}
	c.ext = map[string]string{}
	if r.class() == 5 {
		r, err = c.cmd(timeout, "HELO %s", name)
		return r, err
	}
	if r.class() == 2 {
		// RFC 5321 §4.1.1.1: the first line is the greeting; each further
		// line is "keyword [params]".
		for _, l := range r.Lines[1:] {
			kw, params, _ := strings.Cut(l, " ")
			c.ext[strings.ToUpper(kw)] = params
		}
	}
	return r, nil
}

func (c *conn) has(ext string) bool {
	_, ok := c.ext[ext]
	return ok
}

// maxSize is the SIZE limit the server advertised (RFC 1870 §4), 0 if none.
func (c *conn) maxSize() int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(c.ext["SIZE"]), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// startTLS runs STARTTLS (RFC 3207) and the handshake. The caller re-sends
// EHLO afterwards, since the server forgets all state (RFC 3207 §4.2).
// A non-220 reply is returned as the reply with a nil error.
func (c *conn) startTLS(cfg *tls.Config, timeout time.Duration) (reply, error) {
	r, err := c.cmd(timeout, "STARTTLS")
	if err != nil || r.Code != 220 {
		return r, err
	}
	return r, c.handshake(cfg, timeout)
}

// handshake runs the TLS client handshake on the connection (after a 220
// to STARTTLS, or first thing for implicit TLS) and puts the session on
// top of it. A failed handshake is a *tlsError.
func (c *conn) handshake(cfg *tls.Config, timeout time.Duration) error {
	tc := tls.Client(c.nc, cfg)
	if err := tc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if err := tc.Handshake(); err != nil {
		return &tlsError{err}
	}
	c.nc = tc
	c.tp = textproto.NewConn(tc)
	c.tls = true
	c.verified = !cfg.InsecureSkipVerify
	c.ext = nil
	return nil
}

// tlsError marks a failed TLS handshake, which opportunistic mode answers by
// reconnecting without TLS.
type tlsError struct{ err error }

func (e *tlsError) Error() string { return "TLS handshake: " + e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

func (c *conn) close() error {
	if c.slot != nil {
		c.awaitServerClose()
	}
	err := c.nc.Close()
	c.slot.free()
	return err
}

// serverCloseWait bounds awaitServerClose.
const serverCloseWait = time.Second

// awaitServerClose half-closes the connection and waits (at most
// serverCloseWait) until the server has closed its end too, so that a
// connection slot shared by a cluster (slots.go) is given back only when
// the next hop no longer counts the connection.
func (c *conn) awaitServerClose() {
	if tc, ok := c.nc.(*tls.Conn); ok {
		_ = tc.CloseWrite() // close_notify
	}
	tcp, ok := c.raw.(*net.TCPConn)
	if !ok {
		return
	}
	if tcp.CloseWrite() != nil {
		return
	}
	_ = tcp.SetReadDeadline(time.Now().Add(serverCloseWait))
	_, _ = io.Copy(io.Discard, tcp)
}

// quit ends the session politely; its outcome changes nothing.
func (c *conn) quit(timeout time.Duration) {
	_, _ = c.cmd(timeout, "QUIT")
	_ = c.close()
}

// readError is a failure to read our own queued message, as opposed to a
// network error: the attempt is abandoned without the final dot.
type readError struct{ err error }

func (e *readError) Error() string { return "reading queued message: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }
