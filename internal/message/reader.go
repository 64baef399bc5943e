// Package message is hubd's DATA pipeline: it turns the content a client
// sent after DATA (or in BDAT chunks) into the message the hub queues, and
// refuses content that breaks the rules below, with the SMTP reply the
// client gets. It also holds the header firewall (orgheader.go), which the
// receive connectors and the SMTP deliverer both apply; that is why it lives
// in internal/, shared by both sides, rather than under connectors/ (the
// hub never imports connectors).
//
// # Input
//
// The input is the content Session.Data reads: the message with the
// dot-stuffing of RFC 5321 §4.5.2 removed and CRLF line endings kept (for DATA
// by the receive connector's dotReader, which follows go-smtp's reader octet
// for octet; for BDAT by go-smtp). DATA ends only at a strict <CRLF>.<CRLF>,
// but any other line ending passes through unchanged, so the checks here are
// the ones that matter.
//
// # Strict CRLF
//
// RFC 5321 §2.3.8 allows a line to end only in CRLF: a CR not followed by LF
// ("bare CR") and an LF not preceded by CR ("bare LF") are refused with
// 550 5.6.0, wherever they appear (header or body). Being lenient here is how
// SMTP smuggling works: one server reads "<LF>.<LF>" or "<CR>.<CR>" as the
// end of a message, another reads on, and a second message, forged by the
// sender, hides inside the first. Refusing every bare CR and LF means hubd
// never relays content that another hop might split differently, whatever
// the variant ("\n.\n", "\n.\r\n", "\r.\r", "\r\n.\n", "\r\n.\r"). Postfix
// (smtpd_forbid_bare_newline) and Exchange (BareLinefeedRejectionEnabled)
// refuse the same. A message need not end in CRLF (BDAT content may end
// anywhere), but a CR as its very last byte is a bare CR.
//
// # Limits
//
//   - MaxMessageSize bounds the original content (what the client sent, not
//     the trace fields added here): exactly MaxMessageSize bytes are accepted,
//     one more is refused with 552 5.3.4 (RFC 5321 §4.5.3.1.10, RFC 1870).
//   - MaxHeaderSize bounds the header section: the field lines with their
//     CRLFs, not the blank line that ends them. Over it: 552 5.3.4. With 0
//     (unlimited) an internal cap of 1 MiB still applies, because the header
//     section is held in memory to be examined.
//   - MaxHopCount bounds the Received: fields already in the header (RFC 5321
//     §6.3: a loop shows as a growing trace). More than MaxHopCount: 554 5.4.6.
//     The Received: field added here is not counted.
//
// When a limit is broken, nothing past the point of the breach is yielded, and
// the error is sticky: every later Read returns it. The reader stops reading
// its source at that moment; the caller drains the source so that the SMTP
// exchange stays in step, and replies with the error.
//
// # Output
//
// The output is, in order: the Received: field of Options.Received, the
// original header section, the Message-ID: and Date: fields this reader adds
// when asked and missing (RFC 5322 §3.6 asks for both; RFC 6409 §8 lets a
// submission server add them), then the body. Only the header section is
// buffered; the body streams through a small buffer.
//
// The header section ends at the first blank line, or at the first line that
// is not a header field ("Name:" at the start of the line) nor its
// continuation. A message whose first line is not a header field has an empty
// header section. When the header section ends without a blank line and
// anything at all is written before the body, a blank line (CRLF) is
// inserted, so that the body text is not read as a broken header field (as
// Postfix's cleanup does). A message that is all header stays all header.
//
// # Header firewall
//
// IsOrgHeader says which header fields are hub-internal (X-Hubd-*), and
// StripOrgHeaders removes them from a message as it streams: the receive
// side runs it on a Reader's output for sessions without accept_org_headers,
// the SMTP deliverer on what it sends through a send connector without
// send_org_headers. See orgheader.go. Reader, StripOrgHeaders and ReadHeader
// all end the header section at the same line (classifyStart).
package message

import (
	"bytes"
	"io"
	"strconv"
	"sync"
	"time"

	"hubd/policy"
)

// Options says what a Reader checks and adds. The zero value checks only
// line endings and adds nothing.
type Options struct {
	MaxMessageSize int64 // bytes of original content; 0 = unlimited (bypass_size_limit)
	MaxHeaderSize  int64 // bytes of header section; 0 = unlimited (internal cap of 1 MiB)
	MaxHopCount    int   // Received: fields allowed in the original header; 0 = unlimited
	MaxLineLength  int   // octets of one line, its CRLF included; 0 = unlimited

	// Received is the complete Received: field to prepend, folded and
	// CRLF-terminated, as ReceivedHeader builds it; "" adds none.
	Received string
	// AddMessageID, when non-empty and the header has no Message-ID field,
	// adds "Message-ID: " + AddMessageID. The caller gives the brackets:
	// "<id@host>".
	AddMessageID string
	// AddDate adds a Date: field (RFC 5322 §3.3, from Clock) when the header
	// has none.
	AddDate bool
	Clock   func() time.Time // nil → time.Now
}

const (
	// headerCap bounds the buffered header section when MaxHeaderSize is 0.
	headerCap = 1 << 20
	// chunkSize is how much is read from the source at a time once a
	// message has proved larger than firstChunk, the buffer every Reader
	// starts with. Most messages fit in firstChunk: their Readers then never
	// hold a chunkSize buffer, which at 20 sessions of 5 KB messages was
	// ~0.35 MB of live heap in pools (the collector's goal being twice the
	// live heap, ~0.7 MB of PSS); a larger one moves to a chunkSize buffer
	// after its first read and is read in as few calls as before.
	chunkSize  = 32 << 10
	firstChunk = 8 << 10
	// maxLine is RFC 5322 §2.1.1's line length limit without CRLF. A line
	// start longer than this with no colon cannot be a header field.
	maxLine = 998
)

// Reader yields the message to queue; see the package documentation.
// A Reader is not safe for concurrent use.
type Reader struct {
	src  io.Reader
	opts Options

	// buf[0:ok] is checked content; while no rule is broken, buf[ok:w] is
	// at most one CR whose partner LF has not arrived yet (held back so that
	// a bare CR is never yielded). buf[rpos:ok] is what the body phase has
	// not yielded yet.
	buf         []byte
	rpos, ok, w int
	heldCR      bool
	size        int64 // bytes read from src
	srcEOF      bool  // src returned io.EOF: never read it again
	pending     error // error to return once buf[rpos:ok] is drained
	err         error // sticky error (io.EOF at the end)
	headerDone  bool
	line        int  // header phase: offset of the line being examined
	afterField  bool // header phase: a field line came before line
	prefix      []byte
	messageID   string
	headerLimit int64 // MaxHeaderSize, or headerCap
	lineLen     int   // octets of the current line read so far (MaxLineLength)
	filled      bool  // the last read of src filled the room it had: more is coming
}

// NewReader returns a Reader over r, the content of one DATA or BDAT
// transaction; see the package documentation for what it checks and yields.
func NewReader(r io.Reader, opts Options) *Reader {
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	capH := opts.MaxHeaderSize
	if capH <= 0 {
		capH = headerCap
	}
	return &Reader{src: r, opts: opts, buf: firstPool.Get().(*[firstChunk]byte)[:0], headerLimit: capH}
}

// chunkPool and firstPool hold the chunkSize and firstChunk buffers of
// Readers that have ended: every message received would otherwise leave
// one to the collector.
var (
	chunkPool = sync.Pool{New: func() any { return new([chunkSize]byte) }}
	firstPool = sync.Pool{New: func() any { return new([firstChunk]byte) }}
)

// end makes err the Reader's sticky error, after which Read never looks at
// buf again, and gives buf back to chunkPool when it is one of its own size
// (a buffer grown for a large header section is left to the collector).
func (r *Reader) end(err error) {
	r.err = err
	switch cap(r.buf) {
	case chunkSize:
		chunkPool.Put((*[chunkSize]byte)(r.buf[:chunkSize]))
	case firstChunk:
		firstPool.Put((*[firstChunk]byte)(r.buf[:firstChunk]))
	}
	r.buf, r.rpos, r.ok, r.w = nil, 0, 0, 0
}

// MessageID returns the Message-ID field value found in the header (unfolded
// and trimmed, possibly "" when the field is empty) or the one added. It is ""
// until the header section has been read, and when there is none.
func (r *Reader) MessageID() string { return r.messageID }

// Size returns the number of bytes of original content read so far.
func (r *Reader) Size() int64 { return r.size }

// Read yields the next bytes of the message to queue. Errors are sticky; a
// *policy.Reply error says the content broke a rule and carries the reply.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !r.headerDone {
		if err := r.readHeader(); err != nil {
			r.end(err)
			return 0, err
		}
	}
	for {
		if len(r.prefix) > 0 {
			n := copy(p, r.prefix)
			r.prefix = r.prefix[n:]
			return n, nil
		}
		if r.rpos < r.ok {
			n := copy(p, r.buf[r.rpos:r.ok])
			r.rpos += n
			return n, nil
		}
		if r.pending != nil {
			r.end(r.pending)
			return 0, r.err
		}
		if r.srcEOF {
			r.end(io.EOF)
			return 0, r.err
		}
		r.compact()
		r.fill()
	}
}

// compact moves the held-back CR, if any, to the front of buf, and drops a
// buffer grown large for the header section once it has been yielded.
func (r *Reader) compact() {
	held := r.buf[r.ok:r.w]
	if cap(r.buf) > 2*chunkSize {
		nb := make([]byte, len(held), chunkSize)
		copy(nb, held)
		r.buf = nb
	} else {
		r.buf = r.buf[:copy(r.buf[:cap(r.buf)], held)]
	}
	r.rpos, r.ok, r.w = 0, 0, len(held)
}

// fill reads once from src, appending to buf, and checks what arrived: the
// size limit first (bytes past it are dropped unexamined), then line endings.
// It records the first rule broken in r.pending.
func (r *Reader) fill() {
	if cap(r.buf) == firstChunk && (r.filled || r.w > firstChunk/2) {
		// More than a small message: on to a chunkSize buffer. Nothing
		// else refers to buf (the prefix is a copy), so the small one goes
		// back to its pool.
		nb := chunkPool.Get().(*[chunkSize]byte)[:r.w]
		copy(nb, r.buf[:r.w])
		firstPool.Put((*[firstChunk]byte)(r.buf[:firstChunk]))
		r.buf = nb
	}
	if cap(r.buf) != firstChunk && cap(r.buf)-r.w < chunkSize/2 {
		// Only the header phase gets here with much in buf: grow
		// geometrically so a large header section is copied O(n) times.
		nb := make([]byte, r.w, max(2*cap(r.buf), r.w+chunkSize))
		copy(nb, r.buf[:r.w])
		r.buf = nb
	}
	room := r.buf[r.w:cap(r.buf)]
	n, err := r.src.Read(room)
	if n < 0 || n > len(room) {
		n, err = 0, io.ErrNoProgress // a broken io.Reader; never trust n blindly
	}
	r.size += int64(n)
	r.filled = n == len(room)
	keep := n
	var sizeErr error
	if m := r.opts.MaxMessageSize; m > 0 && r.size > m {
		keep = n - int(r.size-m)
		sizeErr = errMessageSize()
	}
	r.buf = r.buf[:r.w+keep]
	r.check(r.w, r.w+keep)
	r.checkLines(r.w, r.w+keep)
	r.w += keep
	if r.pending == nil && sizeErr != nil {
		r.pending = sizeErr
	}
	switch {
	case err == io.EOF:
		r.srcEOF = true
		if r.heldCR && r.pending == nil {
			r.pending = errBareNewline() // CR as the very last byte
		}
	case err != nil && r.pending == nil:
		r.pending = err
	}
}

// check examines buf[from:to] for bare CR and bare LF (RFC 5321 §2.3.8) and
// advances r.ok past every byte known to be clean. A CR at the end is held
// back until the next byte shows whether it begins a CRLF.
//
// Clean content is the common case, so it is confirmed by counting (bytes.Count
// is vectorised): a chunk is clean when its CRs, its LFs and its CRLFs are
// equally many. Only a chunk that is not is walked byte by byte to find the
// first offending byte.
func (r *Reader) check(from, to int) {
	if r.pending != nil || from == to {
		return
	}
	b := r.buf[from:to]
	if r.heldCR {
		if b[0] != '\n' {
			r.checkSlow(from, to)
			return
		}
		r.heldCR = false
		b = b[1:]
	}
	trailingCR := len(b) > 0 && b[len(b)-1] == '\r'
	if trailingCR {
		b = b[:len(b)-1]
	}
	pairs := bytes.Count(b, crlf)
	if bytes.Count(b, crlf[:1]) != pairs || bytes.Count(b, crlf[1:]) != pairs {
		r.checkSlow(to-len(b)-boolInt(trailingCR), to)
		return
	}
	r.heldCR = trailingCR
	r.ok = to - boolInt(trailingCR)
}

var crlf = []byte("\r\n")

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// checkLines applies MaxLineLength to buf[from:to]: a line longer than
// that, CRLF included, is refused with 550 5.6.0 as soon as it is seen to
// be (RFC 5321 §4.5.3.1.6 allows 1,000; hubd takes up to MaxLineLength
// and wraps what it relays, see README). As with the size limit, nothing
// from the first octet past the limit on is yielded.
func (r *Reader) checkLines(from, to int) {
	limit := r.opts.MaxLineLength
	if limit <= 0 || r.pending != nil {
		return
	}
	for i := from; i < to; {
		end := to // the end of the line, or of what has arrived of it
		if j := bytes.IndexByte(r.buf[i:to], '\n'); j >= 0 {
			end = i + j + 1
		}
		if r.lineLen+end-i > limit {
			breach := i + limit - r.lineLen
			r.ok = max(min(r.ok, breach), r.rpos)
			r.pending = &policy.Reply{Code: 550, Enhanced: "5.6.0",
				Text: "Message contains a line longer than " + strconv.Itoa(limit) + " octets"}
			return
		}
		if r.buf[end-1] != '\n' {
			r.lineLen += end - i
			return
		}
		r.lineLen = 0
		i = end
	}
}

// checkSlow is check one byte at a time; it records the first rule broken.
func (r *Reader) checkSlow(from, to int) {
	b := r.buf
	for i := from; i < to; i++ {
		c := b[i]
		if r.heldCR {
			if c != '\n' {
				r.ok = i - 1 // drop the CR: it is the bare one
				r.pending = errBareNewline()
				return
			}
			r.heldCR = false
			continue
		}
		switch c {
		case '\r':
			r.heldCR = true
		case '\n':
			r.ok = i
			r.pending = errBareNewline()
			return
		}
	}
	r.ok = to
	if r.heldCR {
		r.ok = to - 1
	}
}

// readHeader reads until the header section is complete, checks it, and
// builds the prefix to yield before the body. It returns the error that ends
// the message early, if any.
func (r *Reader) readHeader() error {
	for {
		done, err := r.scanHeader()
		if err != nil {
			return err
		}
		if done {
			break
		}
		if r.pending != nil {
			return r.pending
		}
		r.fill()
	}
	r.headerDone = true
	return nil
}

// scanHeader examines the complete lines in buf[line:ok] and reports whether
// the header section has ended. While it has not, and no more checked bytes
// can come (a rule was broken), readHeader returns that error instead.
func (r *Reader) scanHeader() (bool, error) {
	atEOF := r.srcEOF && r.pending == nil // the whole message is in buf[:ok]
	for {
		rest := r.buf[r.line:r.ok]
		switch classifyStart(rest, r.afterField) {
		case lineBlank:
			return true, r.endHeader(r.line, r.line+2, sepBlank)
		case lineNotField:
			return true, r.endHeader(r.line, r.line, sepInsert)
		case lineUndecided:
			switch {
			case atEOF && len(rest) == 0:
				return true, r.endHeader(r.line, r.line, sepNone) // all header
			case atEOF:
				// A last line with no colon is body text.
				return true, r.endHeader(r.line, r.line, sepInsert)
			}
			return false, nil // a field name, or body text, still arriving
		}
		// lineField or lineContinuation: wait for the whole line.
		nl := indexLF(rest)
		if nl < 0 {
			if err := r.checkHeaderSize(int64(r.ok)); err != nil || !atEOF {
				return false, err
			}
			// All header, the last line without CRLF.
			return true, r.endHeader(r.ok, r.ok, sepNone)
		}
		r.line += nl + 1
		r.afterField = true
		if err := r.checkHeaderSize(int64(r.line)); err != nil {
			return false, err
		}
	}
}

func indexLF(b []byte) int {
	for i, c := range b {
		if c == '\n' {
			return i
		}
	}
	return -1
}

func (r *Reader) checkHeaderSize(n int64) error {
	if n > r.headerLimit {
		return errHeaderSize()
	}
	return nil
}

// separator says how the header section ended.
type separator int

const (
	sepNone   separator = iota // no body: the message is all header
	sepBlank                   // a blank line, kept
	sepInsert                  // body text with no blank line: insert one if anything precedes
)

// endHeader is called when the header section is buf[0:hdrEnd] and the body
// starts at bodyStart; sep tells how they were separated. It
// checks the hop count, finds or adds Message-ID and Date, and builds the
// prefix: Received, header, added fields, separator.
func (r *Reader) endHeader(hdrEnd, bodyStart int, sep separator) error {
	header := r.buf[:hdrEnd]
	hops, hasDate, hasID := 0, false, false
	eachField(header, func(name, value []byte) bool {
		switch {
		case equalFold(name, "Received"):
			hops++
		case equalFold(name, "Date"):
			hasDate = true
		case equalFold(name, "Message-ID"):
			if !hasID {
				r.messageID = unfold(value)
			}
			hasID = true
		}
		return true
	})
	if m := r.opts.MaxHopCount; m > 0 && hops > m {
		return errHops(hops)
	}

	var added []byte
	if !hasID && r.opts.AddMessageID != "" {
		r.messageID = r.opts.AddMessageID
		added = append(added, "Message-ID: "+r.opts.AddMessageID+"\r\n"...)
	}
	if !hasDate && r.opts.AddDate {
		// RFC 5322 §3.3 date-time; time.RFC1123Z is exactly its preferred form.
		added = append(added, "Date: "+r.opts.Clock().Format(time.RFC1123Z)+"\r\n"...)
	}

	prefix := make([]byte, 0, len(r.opts.Received)+hdrEnd+len(added)+4)
	prefix = append(prefix, r.opts.Received...)
	prefix = append(prefix, header...)
	if len(added) > 0 && hdrEnd > 0 && header[hdrEnd-1] != '\n' {
		prefix = append(prefix, "\r\n"...) // end the unterminated last field first
	}
	prefix = append(prefix, added...)
	if sep == sepBlank || (sep == sepInsert && len(prefix) > 0) {
		prefix = append(prefix, "\r\n"...)
	}
	r.prefix = prefix
	r.rpos = bodyStart
	return nil
}

func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// The replies, built fresh for each use so that no caller can alter another's.

func errBareNewline() error {
	return &policy.Reply{Code: 550, Enhanced: "5.6.0", Text: "Message contains bare CR or LF"}
}

func errMessageSize() error {
	return &policy.Reply{Code: 552, Enhanced: "5.3.4", Text: "Message size exceeds fixed maximum message size"}
}

func errHeaderSize() error {
	return &policy.Reply{Code: 552, Enhanced: "5.3.4", Text: "Header size exceeds fixed maximum size"}
}

func errHops(n int) error {
	return &policy.Reply{Code: 554, Enhanced: "5.4.6",
		Text: "Too many hops (" + strconv.Itoa(n) + " Received: headers), possible mail loop"}
}
