package connectors

// Read deadlines. RFC 5321 §4.5.3.2 gives the server a timeout while it
// waits for the next command and while it receives data; a deadline that
// only slides with each read lets a client hold a connection for ever by
// trickling one byte at a time. So, as Postfix does with
// smtpd_per_request_deadline, hubd gives each request a deadline of its own:
//
//   - A command line (or a SASL response) must arrive whole within
//     connection_inactivity_timeout of the moment the filter starts to wait
//     for it.
//   - Each line of DATA content must arrive whole within the same time from
//     the end of the line before it.
//   - A BDAT chunk gets the timeout plus one second per minDataRate octets of
//     its declared size (RFC 3030 chunks may be large), and no read may wait
//     longer than the timeout: a chunk that stalls ends too.
//   - connection_timeout bounds the whole session.
//
// A read that times out ends the connection after the reply to it
// ("421 4.4.2 Timeout waiting for client input", or "421 4.4.2 Connection
// timed out" at connection_timeout), and every later read fails at once:
// the stream is out of step, so nothing more is read from it, whoever asks
// (go-smtp draining the rest of a message included).

import (
	"errors"
	"os"
	"time"
)

// minDataRate is the slowest transfer a BDAT chunk's deadline allows for,
// in octets per second (Postfix's smtpd_min_data_rate default).
const minDataRate = 500

// request is the deadline of the request being read.
type request struct {
	start time.Time     // when the filter began to wait for it
	extra time.Duration // beyond the inactivity timeout (BDAT chunks)
}

// startRequest starts the deadline of the next request: extra is granted
// beyond the inactivity timeout. Only the connection's goroutine reads.
func (c *sessionConn) startRequest(extra time.Duration) {
	c.request = request{start: time.Now(), extra: extra}
}

// chunkAllowance is the extra time a BDAT chunk of n octets gets.
func chunkAllowance(n int) time.Duration {
	return time.Duration(n) * time.Second / minDataRate
}

// readDeadline is the deadline of the next read at now: the request's,
// the inactivity bound of one read, and the session's end, whichever comes
// first (zero: none).
func (c *sessionConn) readDeadline(now time.Time) time.Time {
	var dl time.Time
	earlier := func(t time.Time) {
		if !t.IsZero() && (dl.IsZero() || t.Before(dl)) {
			dl = t
		}
	}
	if c.inactivity > 0 {
		earlier(now.Add(c.inactivity))
		if !c.request.start.IsZero() {
			earlier(c.request.start.Add(c.inactivity + c.request.extra))
		}
	}
	earlier(c.end)
	return dl
}

// deadlineReader reads the client stream with our deadlines.
type deadlineReader struct{ c *sessionConn }

func (d deadlineReader) Read(b []byte) (int, error) {
	c := d.c
	// About to wait for the client: whatever replies are buffered must be
	// on the wire first (RFC 2920 §3.1), or both sides would wait.
	c.flush()
	for {
		if c.timedOut.Load() {
			return 0, os.ErrDeadlineExceeded
		}
		if c.shuttingDown.Load() && !c.inData.Load() {
			c.setReason("421 4.3.2 Service shutting down")
			return 0, os.ErrDeadlineExceeded
		}
		dl := c.readDeadline(time.Now())
		if err := c.raw.SetReadDeadline(dl); err != nil {
			return 0, err
		}
		n, err := c.Conn.Read(b)
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		if c.shuttingDown.Load() && (dl.IsZero() || time.Now().Before(dl)) {
			if c.inData.Load() && n == 0 {
				// Woken by Shutdown while a message is in flight: keep
				// reading, the message may finish (Shutdown's ctx bounds it).
				continue
			}
			c.setReason("421 4.3.2 Service shutting down")
		} else if !c.end.IsZero() && !time.Now().Before(c.end) {
			c.setReason("421 4.4.2 Connection timed out")
		} else {
			c.setReason("421 4.4.2 Timeout waiting for client input")
		}
		// Whatever go-smtp answers a timed-out read (its idle-timeout 421,
		// or a DATA/BDAT failure it would otherwise follow with more
		// commands read from the middle of a message), the connection ends
		// after that reply, and nothing more is read.
		c.timedOut.Store(true)
		c.closeAfterWrite.Store(true)
		return n, err
	}
}
