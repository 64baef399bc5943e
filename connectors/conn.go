package connectors

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// sessionConn is the net.Conn every go-smtp Server of ours is handed. It sits
// between go-smtp and the TCP connection (or, for implicit TLS, the tls.Conn)
// and does four things go-smtp v0.25.1 has no hook for:
//
//   - Deadlines. It ignores go-smtp's SetReadDeadline and instead sets, before
//     every read, min(now+inactivity, session end). The inactivity timeout thus
//     slides during a long DATA transfer too (go-smtp sets it once per command
//     line), and connection_timeout bounds the whole session.
//   - Reply text. While it still sees the plaintext stream (before STARTTLS, or
//     above an implicit-TLS tls.Conn) it replaces the library's fixed greeting
//     and a few fixed replies with ours; see rewriteReply. After STARTTLS,
//     go-smtp writes through a tls.Conn that wraps us, so we only see
//     ciphertext and the library's texts stand.
//   - Close after a reply. A 421 decided by the session (too many errors or
//     logon failures) must be followed by closing the connection; the session
//     sets closeAfterWrite and the next write (that 421, written by go-smtp as
//     one Write, or one TLS record) closes the connection.
//   - Accounting. Close runs onClose exactly once, which releases the
//     connection-limit slots and ends the session span and log line.
type sessionConn struct {
	net.Conn          // what reads and writes go through: TCP, or tls.Conn for implicit TLS
	raw      net.Conn // the TCP connection, for deadlines
	tlsConn  *tls.Conn

	inactivity time.Duration
	end        time.Time // connection_timeout; zero = none
	banner     string    // "220 ..." line that replaces go-smtp's greeting

	state *connState

	mu        sync.Mutex
	plaintext bool // we still see go-smtp's replies in clear text
	greeted   bool
	reason    string // the reply that replaces go-smtp's after a read we timed out (or Shutdown woke)

	closeAfterWrite atomic.Bool
	shuttingDown    atomic.Bool
	inData          atomic.Bool
	closeOnce       sync.Once
	onClose         func()
}

// Read sets the deadline for this read, then reads.
func (c *sessionConn) Read(b []byte) (int, error) {
	for {
		if c.shuttingDown.Load() && !c.inData.Load() {
			c.setReason("421 4.3.2 Service shutting down")
			return 0, os.ErrDeadlineExceeded
		}
		d := time.Time{}
		if c.inactivity > 0 {
			d = time.Now().Add(c.inactivity)
		}
		if !c.end.IsZero() && (d.IsZero() || c.end.Before(d)) {
			d = c.end
		}
		if err := c.raw.SetReadDeadline(d); err != nil {
			return 0, err
		}
		n, err := c.Conn.Read(b)
		if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			if c.shuttingDown.Load() && c.inData.Load() && n == 0 {
				// Woken by Shutdown while a message is in flight: keep
				// reading, the message may finish (Shutdown's ctx bounds it).
				continue
			}
			switch {
			case c.shuttingDown.Load():
				c.setReason("421 4.3.2 Service shutting down")
			case !c.end.IsZero() && !time.Now().Before(c.end):
				c.setReason("421 4.4.2 Connection timed out")
			default:
				c.setReason("421 4.4.2 Timeout waiting for client input")
			}
			// Whatever go-smtp answers a timed-out read (its idle-timeout
			// 421, or a DATA/BDAT failure it would otherwise follow with
			// more commands read from the middle of a message), the
			// connection ends after that reply: the stream is out of step.
			c.closeAfterWrite.Store(true)
		}
		return n, err
	}
}

// SetReadDeadline is ignored: Read manages read deadlines itself.
func (c *sessionConn) SetReadDeadline(time.Time) error { return nil }

// SetDeadline only forwards the write half; see SetReadDeadline.
func (c *sessionConn) SetDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

// SetWriteDeadline forwards to the TCP connection.
func (c *sessionConn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

// Write writes b (rewritten while in plaintext), then closes the connection
// if the session asked for it.
func (c *sessionConn) Write(b []byte) (int, error) {
	out := c.rewrite(b)
	_, err := c.Conn.Write(out)
	if c.closeAfterWrite.Load() {
		c.Close()
	}
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

func (c *sessionConn) setReason(r string) {
	c.mu.Lock()
	c.reason = r
	c.mu.Unlock()
}

// rewrite returns the bytes to send in place of b.
func (c *sessionConn) rewrite(b []byte) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if bytes.HasPrefix(b, []byte("550 5.0.0 Handshake error")) {
		// RFC 3207 §4.1: after a failed TLS negotiation the stream's state is
		// unknown; go-smtp would carry on in clear text. End the connection.
		c.closeAfterWrite.Store(true)
		return []byte("454 4.7.0 TLS handshake failed\r\n")
	}
	if !c.plaintext {
		return b
	}
	if !c.greeted {
		c.greeted = true
		if bytes.HasPrefix(b, []byte("220 ")) && c.banner != "" {
			return []byte("220 " + c.banner + "\r\n")
		}
	}
	if bytes.HasPrefix(b, []byte("220 2.0.0 Ready to start TLS")) {
		// Everything after this goes through a tls.Conn wrapping us.
		c.plaintext = false
		return b
	}
	if c.reason != "" {
		// We timed the read out or are shutting down: our reply, not the
		// library's (which may name internal addresses in its error text).
		return []byte(c.reason + "\r\n")
	}
	return rewriteReply(b)
}

// rewriteReply maps fixed go-smtp v0.25.1 replies to the ones our
// specification asks for, and returns any other reply unchanged.
func rewriteReply(b []byte) []byte {
	switch string(b) {
	case "454 4.7.0 Invalid base64 data\r\n":
		// RFC 4954 §4: a client response that is not valid base64 is 501 5.5.2.
		return []byte("501 5.5.2 Invalid base64 data\r\n")
	case "523 5.7.10 TLS is required\r\n":
		// AUTH before STARTTLS on a connector that does not allow it: the
		// same answer as MAIL gets under require_tls (RFC 3207 §4).
		return []byte("530 5.7.0 Must issue a STARTTLS command first\r\n")
	}
	return b
}

// Close closes the connection once, then runs onClose.
func (c *sessionConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.Conn.Close()
		if c.tlsConn != nil {
			c.raw.Close()
		}
		if c.onClose != nil {
			c.onClose()
		}
	})
	return err
}

// wake makes a read blocked in an idle session return now (Shutdown).
func (c *sessionConn) wake() {
	c.shuttingDown.Store(true)
	if !c.inData.Load() {
		c.raw.SetReadDeadline(time.Now())
	}
}

// chanListener is a net.Listener fed by our own accept loops: one go-smtp
// Server per receive connector Serves on one of these, while the TCP
// listeners (one per bind address, shared by connectors) decide which
// connector gets each connection.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// deliver hands c to the Server; false if the listener is closed.
func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}
