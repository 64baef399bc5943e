package connectors

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// sessionConn is the net.Conn every go-smtp Server of ours is handed, one
// per client connection. It sits between go-smtp and the TCP connection
// (or the tls.Conn above it) and always sees the session in plaintext,
// because it terminates TLS itself: implicit TLS at accept time, and
// STARTTLS in the command filter (go-smtp's Server has no TLSConfig and
// never learns about TLS). That lets it do what go-smtp v0.25.1 has no hook
// for:
//
//   - The command filter (hardening.go). Every command line is read here
//     first and either handed to go-smtp or answered here: line length,
//     NUL and 8-bit bytes, unknown verbs, EHLO argument, commands before
//     MAIL, AUTH before TLS, VRFY, EXPN, HELP and STARTTLS. BDAT chunks
//     and SASL responses pass through untouched; DATA content is read by
//     the session straight from the filter's buffer, a block at a time
//     (dotreader.go), and go-smtp is handed only its end marker. Which of
//     these comes next is known from go-smtp's last reply (354, 334) and
//     the BDAT size. The filter hands go-smtp at most one line per Read, so
//     go-smtp never buffers a line the filter has not seen.
//   - STARTTLS (RFC 3207). The filter answers 220, discards anything the
//     client pipelined after the command (§5: such bytes would otherwise
//     be read as if sent over TLS), does the handshake, and then restarts
//     the go-smtp connection over the same sessionConn: the old one gets
//     EOF and ends its Session, the new one is handed to the connector's
//     Server like a new connection (its greeting is swallowed), and its
//     first EHLO makes a new Session that sees the TLS state (§4.2: all
//     state is discarded).
//   - Replies. It replaces go-smtp's fixed greeting and a few fixed texts
//     with ours, adds STARTTLS to the EHLO keywords and hides AUTH before
//     TLS when the connector wants TLS for it, and counts protocol errors
//     (max_protocol_errors) over every reply: go-smtp's, the session's and
//     the filter's.
//   - Deadlines (deadline.go). It ignores go-smtp's SetReadDeadline: every
//     request (a command line, a DATA line, a BDAT chunk) must arrive whole
//     within the inactivity timeout however its bytes trickle, and
//     connection_timeout bounds the whole session. A timeout is final.
//   - Close after a reply. A 421 decided by the session or the filter must be
//     followed by closing the connection; closeAfterWrite makes the next
//     write close it.
//   - Reply batching (RFC 2920 §3.1, as Postfix does). Replies are
//     buffered and written to the socket together, so that a pipelining
//     client's group of commands costs one write, not one per reply line.
//     The buffer is flushed before the server could wait without having
//     written what it owes: when a reply is complete and no client bytes
//     are left to process, before any read from the network (the filter's
//     deadlineReader), before the STARTTLS handshake, before a tarpit or
//     AUTH delay (sleep), before DATA's Submit, when it exceeds
//     maxReplyBuffer, and before the connection closes.
//   - Accounting. The last Close runs onClose exactly once, which releases
//     the connection-limit slots and ends the session span and log line.
type sessionConn struct {
	net.Conn          // the client stream: TCP, or tls.Conn once TLS is up
	raw      net.Conn // the TCP connection (PROXY-buffered), for deadlines
	tlsConn  *tls.Conn

	c          *connector
	inactivity time.Duration
	end        time.Time // connection_timeout; zero = none
	banner     string    // "220 ..." line that replaces go-smtp's greeting

	state *connState

	in       *bufio.Reader // the client's bytes, read by the filter
	src      clientStream  // what in reads (dotreader.go)
	pending  []byte        // what the filter passed and go-smtp has not read yet
	chunkBuf []byte        // BDAT chunk bytes on their way
	filter   filterState   // used only from go-smtp's connection goroutine

	mu       sync.Mutex
	reply    replyState
	reason   string // the reply that replaces go-smtp's after a read we timed out (or Shutdown woke)
	closed   bool
	restart  bool  // the go-smtp connection is being replaced after STARTTLS
	errsSeen int   // connState.protoErrors after the last reply we counted
	mailSeen int64 // connState.mailRefusals after the last MAIL reply

	wmu    sync.Mutex   // one writer at a time; guards wbuf
	wbuf   []byte       // replies not yet written to the socket (reply batching)
	writes atomic.Int64 // socket writes of replies, for the tests

	request  request    // the deadline of what is being read now (deadline.go)
	body     *dotReader // DATA content after a 354, until go-smtp has the end marker (c.mu)
	timedOut atomic.Bool

	closeAfterWrite atomic.Bool
	shuttingDown    atomic.Bool
	quit            atomic.Bool // the client sent QUIT (for the session outcome metric)
	inData          atomic.Bool
	onClose         func()
}

// replyState is what the reply side tells the filter and remembers about
// the replies in flight. sessionConn.mu guards it.
type replyState struct {
	greeted         bool
	swallowGreeting bool     // a restarted go-smtp connection greets; the client must not see it
	next            mode     // what the client sends after the last reply
	ehloFirst       bool     // the first line of the EHLO reply being written has gone
	proto           protocol // the SMTP state machine (protocol.go)
}

// mode is what the client's next bytes are.
type mode int

const (
	modeCommand mode = iota
	modeData         // DATA content, after 354
	modeSASL         // one SASL response line, after 334
)

// maxReplyBuffer is how many reply octets are held back at most before
// they are written.
const maxReplyBuffer = 4096

// errConnClosed ends the go-smtp connection after the filter closed it
// (its own 421, a failed STARTTLS).
var errConnClosed = net.ErrClosed

// init prepares the filter's reader once c.Conn is set.
func (c *sessionConn) init() {
	c.src = clientStream{r: deadlineReader{c}}
	c.in = bufio.NewReaderSize(&c.src, 4096)
}

// Read gives go-smtp the next bytes the filter lets through.
func (c *sessionConn) Read(b []byte) (int, error) {
	if len(c.pending) == 0 {
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(b, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// fill reads the client until there is something to hand go-smtp.
func (c *sessionConn) fill() error {
	for {
		if c.filter.chunk > 0 {
			// A BDAT chunk (RFC 3030 §2): exactly that many octets, raw.
			if c.chunkBuf == nil {
				c.chunkBuf = make([]byte, 4096)
			}
			n, err := c.in.Read(c.chunkBuf[:min(c.filter.chunk, len(c.chunkBuf))])
			if n == 0 {
				if err == nil {
					err = io.ErrNoProgress
				}
				return err
			}
			c.pending = c.chunkBuf[:n]
			c.filter.chunk -= n
			return nil
		}
		c.mu.Lock()
		m, restart := c.reply.next, c.restart
		c.mu.Unlock()
		if restart {
			return io.EOF
		}
		switch m {
		case modeData:
			return c.handEndMarker() // dotreader.go
		case modeSASL:
			c.startRequest(0)
			line, tooLong, err := c.readLine()
			if err != nil {
				return err
			}
			if tooLong {
				// go-smtp waits for a response: cancel the exchange
				// (RFC 4954 §4) rather than hand it an endless line.
				line = []byte("*\r\n")
			}
			c.mu.Lock()
			c.reply.next = modeCommand
			c.mu.Unlock()
			c.pending = append(c.pending[:0], line...)
			return nil
		}
		c.startRequest(0)
		line, tooLong, err := c.readLine()
		if err != nil {
			return err
		}
		if out, pass := c.command(line, tooLong); pass {
			c.pending = append(c.pending[:0], out...)
			return nil
		}
		c.mu.Lock()
		closed, restart := c.closed, c.restart
		c.mu.Unlock()
		if restart {
			return io.EOF
		}
		if closed {
			return errConnClosed
		}
	}
}

// readLine reads one line of at most max_command_line_length octets
// (with its CRLF). A longer line is read to its end and discarded, and
// reported as tooLong.
func (c *sessionConn) readLine() (line []byte, tooLong bool, err error) {
	limit := c.c.rc.MaxCommandLineLength
	var buf []byte
	for {
		part, err := c.in.ReadSlice('\n')
		if !tooLong {
			buf = append(buf, part...)
			if limit > 0 && len(buf) > limit {
				tooLong, buf = true, nil
			}
		}
		switch {
		case err == nil:
			return buf, tooLong, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return nil, false, err
		}
	}
}

// SetReadDeadline is ignored: reads manage their deadlines themselves.
func (c *sessionConn) SetReadDeadline(time.Time) error { return nil }

// SetDeadline only forwards the write half; see SetReadDeadline.
func (c *sessionConn) SetDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

// SetWriteDeadline forwards to the TCP connection.
func (c *sessionConn) SetWriteDeadline(t time.Time) error { return c.raw.SetWriteDeadline(t) }

// RemoteAddr is the client's address: the PROXY header's, when there is one.
func (c *sessionConn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// Write writes one reply line of go-smtp's, in our words (replies.go),
// then closes the connection if the session asked for it.
func (c *sessionConn) Write(b []byte) (int, error) {
	return c.write(b, false)
}

// write puts one reply line (own: the filter's, as it is) in the reply
// buffer (see Reply batching above). The buffer goes to the socket now
// when the line ends a reply and the client has sent nothing more that is
// still to be processed, or when it is full; otherwise at the next flush,
// at the latest before the next read from the network.
func (c *sessionConn) write(b []byte, own bool) (int, error) {
	out := c.rewrite(b, own) // replies.go
	// own answers are whole replies; of go-smtp's, the last line ends one
	// (even if rewrite dropped it, as a hidden AUTH keyword).
	_, final := replyCode(b)
	now := (own || final) && c.inputDrained()
	c.wmu.Lock()
	c.wbuf = append(c.wbuf, out...)
	var err error
	if now || len(c.wbuf) >= maxReplyBuffer {
		err = c.flushLocked()
	}
	c.wmu.Unlock()
	if c.closeAfterWrite.Load() {
		c.Close()
	}
	if err != nil {
		return 0, err
	}
	return len(b), nil
}

// inputDrained says whether the client has sent nothing that the filter
// or go-smtp has yet to process, so that the next client bytes come from
// the network. Only go-smtp's connection goroutine reads, and it is the
// one that writes replies.
func (c *sessionConn) inputDrained() bool {
	return len(c.pending) == 0 && (c.in == nil || c.in.Buffered() == 0) && len(c.src.held) == 0
}

// flush writes the buffered replies to the socket.
func (c *sessionConn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

// flushLocked writes the buffered replies, under the write deadline the
// connection has (go-smtp sets one before each reply). The buffer is
// emptied even if the write fails: a partial write cannot be resumed.
// c.wmu is held.
func (c *sessionConn) flushLocked() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	c.writes.Add(1)
	_, err := c.stream().Write(c.wbuf)
	if cap(c.wbuf) > 2*maxReplyBuffer {
		c.wbuf = nil // an oversized reply's buffer is not kept
	} else {
		c.wbuf = c.wbuf[:0]
	}
	return err
}

// answer writes a reply decided by the filter (one line, or several
// joined by CRLF), as it is.
func (c *sessionConn) answer(r string) {
	c.write([]byte(r+"\r\n"), true)
}

func (c *sessionConn) setReason(r string) {
	c.mu.Lock()
	c.reason = r
	c.mu.Unlock()
}

// greeting is how the client introduced itself in the current session.
func (c *sessionConn) greeting() greeting {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reply.proto.greeting
}

// stream is the current client stream (it changes at STARTTLS).
func (c *sessionConn) stream() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn
}

// startTLS upgrades the connection after the filter answered 220 (RFC
// 3207 §4), and has the go-smtp connection restarted. false: the
// handshake failed and the connection is closed.
func (c *sessionConn) startTLS() bool {
	// The 220 (and any reply before it) must be on the wire before the
	// handshake waits for the client's hello.
	c.flush()
	// §5: bytes pipelined after STARTTLS were sent in clear text; they
	// must not be read as if they had come over TLS.
	c.src.held = nil
	c.in.Reset(&c.src)
	tc := tls.Server(c.Conn, c.c.tls)
	dl := time.Now().Add(c.inactivity)
	if c.inactivity <= 0 {
		dl = time.Now().Add(time.Minute)
	}
	if !c.end.IsZero() && c.end.Before(dl) {
		dl = c.end
	}
	c.raw.SetDeadline(dl)
	err := tc.Handshake()
	c.raw.SetDeadline(time.Time{})
	if err != nil {
		// §4.1: after a failed negotiation the stream's state is unknown;
		// end the connection.
		c.state.log.Info("TLS handshake failed", "err", err)
		c.closeAfterWrite.Store(true)
		c.answer("454 4.7.0 TLS handshake failed")
		return false
	}
	c.mu.Lock()
	c.Conn, c.tlsConn = tc, tc
	c.restart = true
	c.reply = replyState{}
	c.mu.Unlock()
	c.filter.afterTLS()
	c.state.mu.Lock()
	c.state.authUser = "" // RFC 3207 §4.2: the new session starts unauthenticated
	c.state.mu.Unlock()
	cs := tc.ConnectionState()
	c.state.setTLS(&cs)
	c.state.log.InfoContext(c.state.ctx, "STARTTLS", "tls", c.state.tlsText())
	return true
}

// Close ends the go-smtp connection; unless it is being restarted after
// STARTTLS, that closes the client connection too and runs onClose once.
func (c *sessionConn) Close() error {
	c.mu.Lock()
	if c.restart && !c.closeAfterWrite.Load() {
		// The old go-smtp connection is done with us: hand the same
		// stream to the connector's Server as a new connection.
		c.restart = false
		c.reply = replyState{swallowGreeting: true}
		c.mu.Unlock()
		if c.c.ln.deliver(c) {
			return nil
		}
		// Shutdown closed the connector meanwhile (a reload cannot: this
		// session keeps it, see Service.pick).
		c.mu.Lock()
		c.reply = replyState{greeted: true}
		c.mu.Unlock()
		c.answer("421 4.3.2 Service not available, try again later")
		c.mu.Lock()
	}
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	conn := c.Conn
	c.mu.Unlock()
	// The last replies (a 221, a 421) go out before the connection ends.
	c.flush()
	err := conn.Close()
	if conn != c.raw {
		c.raw.Close()
	}
	if c.onClose != nil {
		c.onClose()
	}
	return err
}

// outcome is how the connection ended, for hubd.smtp.sessions (metrics.go).
func (c *sessionConn) outcome() string {
	switch {
	case c.timedOut.Load():
		return sessionTimeout
	case c.shuttingDown.Load():
		return sessionShutdown
	case c.quit.Load():
		return sessionQuit
	case c.closeAfterWrite.Load():
		return sessionClosed
	}
	return sessionDropped
}

// wake makes a read blocked in an idle session return now (Shutdown).
func (c *sessionConn) wake() {
	c.shuttingDown.Store(true)
	if !c.inData.Load() {
		c.raw.SetReadDeadline(time.Now())
	}
}
