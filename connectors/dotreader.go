package connectors

// The DATA content (RFC 5321 §4.1.1.4) is read here, by the command filter's
// side of the connection, rather than by go-smtp. go-smtp v0.25.1 removes the
// dot-stuffing of §4.5.2 and finds the end of the content one byte at a time
// (a bufio.Reader.ReadByte per octet, behind a filter that hands it one line
// per Read); at 100 KB messages that was most of the CPU a message cost. A
// dotReader does the same work on the filter's buffer a block at a time:
// between two CRs nothing can change its state, so it copies up to the next
// CR with one bytes.IndexByte and steps through only the few octets around a
// line end one by one.
//
// How DATA runs, then:
//
//  1. go-smtp writes its 354; the reply side (sessionConn.rewrite) creates
//     the dotReader of the transaction.
//  2. go-smtp calls session.Data, which reads the content from the dotReader
//     (sessionConn.dataBody) instead of from go-smtp's reader, and drains it
//     to the end marker when it refuses the message early, so that the
//     session stays in step.
//  3. Once session.Data returns, go-smtp drains its own reader; the filter
//     drains what is left of the content (nothing, normally) and hands
//     go-smtp just the end marker ".\r\n", which ends its reader at once. Its
//     reply, the session's, is then written as before.
//
// The dotReader is a faithful copy of go-smtp's (and net/textproto's) state
// machine, quirks included, so that every message ends where it ended
// before and yields the same octets: the content is unchanged and CRLF line
// ends are kept; a line that starts with a dot loses that dot; the content
// ends only at CRLF "." CRLF, where CR LF is a pair the machine saw as a line
// end (a CR right after another CR, or after a lone dot's CR, does not end a
// line, and neither does a bare LF, which is what keeps "<LF>.<LF>" and its
// kin from ending a message: message.Reader then refuses them, see its
// package doc); "." CR followed by anything but LF loses both the dot and
// the CR. It keeps go-smtp's size limit too (Server.MaxMessageBytes): once
// that many octets have been yielded without the end in sight, Read
// returns smtp.ErrDataTooLarge, whose reply ("552 5.3.4 Maximum message size
// exceeded") the session passes on as it did. A client that ends the
// connection in the middle gets io.ErrUnexpectedEOF, as from go-smtp.
//
// The filter's buffer is small (4 KiB: every connection has one), so
// while it is empty the dotReader reads the network itself, into a block
// taken from a pool for the transaction: 8 KiB first, enough for most
// messages, then, once a read has filled it, 32 KiB: a 100 KB message is
// then a few read(2) calls instead of 25, and a 5 KB one holds no 32 KiB
// block (at 20 sessions the pooled 32 KiB blocks were ~0.35 MB of live
// heap, twice that in the collector's goal). What it read past the end marker (the
// client's next commands, if it pipelined them) is handed back to the
// filter's stream (clientStream.unread) before the filter reads again, and
// the block goes back to the pool.
//
// Deadlines (deadline.go) are kept per line: before it waits for the
// network, the dotReader starts a new request deadline if a line ended (an
// LF was consumed) since it last waited, so a line must still arrive whole
// within the inactivity timeout of the moment the server began to wait for
// it, however its octets trickle.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"

	"github.com/emersion/go-smtp"
)

// dotState is where a dotReader stands in the content.
type dotState int

const (
	dotBeginLine dotState = iota // at the start of a line (the initial state)
	dotDot                       // after a dot at the start of a line
	dotDotCR                     // after "." CR at the start of a line
	dotCR                        // after a CR (possibly a line end)
	dotData                      // inside a line
	dotEOF                       // the end marker has been read
)

// dotReader yields the content of one DATA command, dot-stuffing removed,
// from in and, once in has nothing buffered, from src (the stream in
// reads) in blocks; see above. It is used from the connection's goroutine
// only.
type dotReader struct {
	in    *bufio.Reader
	src   *clientStream
	state dotState

	// block[next:end] is what was read from src and not consumed yet;
	// block is nil until the first read of src. pooled: it goes back to
	// blockPool at the end.
	block     []byte
	next, end int
	pooled    bool
	srcErr    error // src's error that came with octets, returned next

	limited bool  // go-smtp's MaxMessageBytes applies
	left    int64 // octets still to yield before smtp.ErrDataTooLarge

	// lineEnded: a line ended since the last wait for the network (true at
	// the start: the DATA command line ended); newLine is called before the
	// next wait when it did (nil: no deadlines).
	lineEnded bool
	newLine   func()
}

// dataBlock is the size of a dotReader's own reads of the network once one
// read has filled a firstBlock, the block of its first read.
const (
	dataBlock  = 32 << 10
	firstBlock = 8 << 10
)

// blockPool and firstPool hold dataBlock and firstBlock buffers between
// transactions.
var (
	blockPool = sync.Pool{New: func() any { return new([dataBlock]byte) }}
	firstPool = sync.Pool{New: func() any { return new([firstBlock]byte) }}
)

// newDotReader returns the reader of the content that follows a 354 on in,
// which reads src; limit > 0 is go-smtp's MaxMessageBytes.
func newDotReader(in *bufio.Reader, src *clientStream, limit int64, newLine func()) *dotReader {
	return &dotReader{in: in, src: src, limited: limit > 0, left: limit, lineEnded: true, newLine: newLine}
}

// Read yields content until p is full, the end marker has been read
// (io.EOF), or an error; like go-smtp's reader it waits for the network
// until then.
func (d *dotReader) Read(p []byte) (int, error) {
	if d.limited {
		if d.left <= 0 {
			return d.pastLimit()
		}
		if int64(len(p)) > d.left {
			p = p[:d.left]
		}
	}
	n := 0
	var err error
	for n < len(p) && d.state != dotEOF {
		buf, own, e := d.buffered()
		if e != nil {
			err = e
			break
		}
		used, out := d.unstuff(buf, p[n:])
		if !d.lineEnded && bytes.IndexByte(buf[:used], '\n') >= 0 {
			d.lineEnded = true
		}
		if own {
			d.next += used
		} else {
			d.in.Discard(used)
		}
		n += out
	}
	if d.limited {
		d.left -= int64(n)
	}
	if err == nil && d.state == dotEOF {
		d.finish()
		err = io.EOF
	}
	return n, err
}

// buffered returns the octets not consumed yet: the filter's buffer, or
// else the block, reading the network into the block once if both are
// empty. own says the octets are the block's.
func (d *dotReader) buffered() (buf []byte, own bool, err error) {
	if k := d.in.Buffered(); k > 0 {
		buf, err = d.in.Peek(k)
		return buf, false, err
	}
	if d.next < d.end {
		return d.block[d.next:d.end], true, nil
	}
	if d.srcErr != nil {
		return nil, false, d.srcErr
	}
	if d.lineEnded && d.newLine != nil {
		d.newLine()
	}
	d.lineEnded = false
	switch {
	case d.block == nil:
		d.block, d.pooled = firstPool.Get().(*[firstBlock]byte)[:], true
	case d.pooled && len(d.block) == firstBlock && d.end == firstBlock:
		// The last read filled the first block (all of it consumed by
		// now): a large message, read on in dataBlock pieces.
		firstPool.Put((*[firstBlock]byte)(d.block))
		d.block, d.next, d.end = blockPool.Get().(*[dataBlock]byte)[:], 0, 0
	}
	for range 100 { // as bufio.Reader: a reader that keeps returning nothing is broken
		n, err := d.src.Read(d.block)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if n > 0 {
			d.next, d.end, d.srcErr = 0, n, err
			return d.block[:n], true, nil
		}
		if err != nil {
			d.srcErr = err
			return nil, false, err
		}
	}
	d.srcErr = io.ErrNoProgress
	return nil, false, d.srcErr
}

// finish hands what the block holds past the end marker back to the
// filter's stream, ahead of anything else, and returns the block to the
// pool.
func (d *dotReader) finish() {
	if d.block == nil {
		return
	}
	d.src.unread(d.block[d.next:d.end])
	if d.pooled {
		if len(d.block) == firstBlock {
			firstPool.Put((*[firstBlock]byte)(d.block))
		} else {
			blockPool.Put((*[dataBlock]byte)(d.block))
		}
	}
	d.block, d.next, d.end, d.pooled = nil, 0, 0, false
}

// clientStream is what the filter's reader reads: first the octets a
// dotReader read past the end marker of DATA content (held), then r, the
// client stream with our deadlines.
type clientStream struct {
	r    io.Reader
	held []byte
}

func (s *clientStream) Read(p []byte) (int, error) {
	if len(s.held) > 0 {
		n := copy(p, s.held)
		s.held = s.held[n:]
		if len(s.held) == 0 {
			s.held = nil
		}
		return n, nil
	}
	return s.r.Read(p)
}

// unread puts b (copied) in front of the octets still to be read.
func (s *clientStream) unread(b []byte) {
	if len(b) == 0 {
		return
	}
	held := make([]byte, 0, len(b)+len(s.held))
	s.held = append(append(held, b...), s.held...)
}

// unstuff runs the state machine over in, writing the content to out, and
// returns how many octets of in it consumed and of out it wrote. It stops
// when out is full or at the end marker.
func (d *dotReader) unstuff(in, out []byte) (used, n int) {
	for used < len(in) && n < len(out) && d.state != dotEOF {
		if d.state == dotData {
			// Inside a line only a CR can change the state (an LF does
			// not: a bare LF ends no line), so everything up to the next
			// CR, that CR included, goes through as it is.
			seg := in[used:min(len(in), used+len(out)-n)]
			k := bytes.IndexByte(seg, '\r')
			if k < 0 {
				k = len(seg)
			} else {
				k++
				d.state = dotCR
			}
			n += copy(out[n:], seg[:k])
			used += k
			continue
		}
		c := in[used]
		used++
		switch d.state {
		case dotBeginLine:
			switch c {
			case '.':
				d.state = dotDot // §4.5.2: the first dot of a line is dropped
				continue
			case '\r':
				d.state = dotCR
			default:
				d.state = dotData
			}
		case dotDot:
			if c == '\r' {
				d.state = dotDotCR
				continue
			}
			d.state = dotData
		case dotDotCR:
			if c == '\n' {
				d.state = dotEOF // CRLF "." CRLF: the end of the content
				continue
			}
			d.state = dotData // go-smtp drops the CR of "." CR not followed by LF
		case dotCR:
			if c == '\n' {
				d.state = dotBeginLine
			} else {
				d.state = dotData
			}
		}
		out[n] = c
		n++
	}
	return used, n
}

// drain reads the rest of the content, to the end marker, whatever the
// size limit: what the client sent after it is its next command.
func (d *dotReader) drain() error {
	d.limited = false
	_, err := io.Copy(io.Discard, d)
	return err
}

// dataBody returns the content of the DATA command whose 354 was just
// written, for session.Data given r by go-smtp; nil when r is BDAT content
// (go-smtp hands BDAT chunks to Data through an io.Pipe, from a goroutine
// of its own that a late start could otherwise run into a later DATA) or
// when no 354 was written (a timed-out read replaced it).
func (c *sessionConn) dataBody(r io.Reader) *dotReader {
	if _, bdat := r.(*io.PipeReader); bdat {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reply.next != modeData {
		return nil
	}
	return c.body
}

// handEndMarker gives go-smtp, draining its DATA reader once session.Data
// has returned, the end marker alone, after reading the rest of the
// content (nothing, unless the session stopped early): after it the next
// bytes may be commands, and which is the case only go-smtp's next reply
// tells.
func (c *sessionConn) handEndMarker() error {
	c.mu.Lock()
	body := c.body
	c.body = nil
	c.mu.Unlock()
	if body == nil {
		return errDataRead
	}
	if err := body.drain(); err != nil {
		return err
	}
	c.pending = append(c.pending[:0], ".\r\n"...)
	return nil
}

// errDataRead: go-smtp read DATA content past its end marker (it does not).
var errDataRead = errors.New("connectors: DATA content read after its end")

// pastLimit is Read once the limit's worth of content has been yielded.
// RFC 1870 §4: SIZE is the largest message accepted, so content of exactly
// the limit followed by the end marker is io.EOF; one more octet of content
// is smtp.ErrDataTooLarge (that octet is discarded, as is the rest).
func (d *dotReader) pastLimit() (int, error) {
	var one [1]byte
	d.limited = false
	n, err := d.Read(one[:])
	d.limited = true
	if n == 0 && err == io.EOF {
		return 0, io.EOF
	}
	if n == 0 && err != nil {
		return 0, err
	}
	return 0, smtp.ErrDataTooLarge
}
