package mime7bit

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"mime/quotedprintable"
)

// tracker is the output: a buffered writer that remembers the last octet
// and the first error.
type tracker struct {
	w    *bufio.Writer
	n    int64
	last byte
	err  error
}

func (t *tracker) Write(b []byte) (int, error) {
	if len(b) == 0 || t.err != nil {
		return len(b), t.err
	}
	n, err := t.w.Write(b)
	t.n += int64(n)
	t.last = b[len(b)-1]
	t.err = err
	return n, err
}

func (t *tracker) WriteByte(c byte) error {
	_, err := t.Write([]byte{c})
	return err
}

// write writes b when the walker is writing.
func (w *walker) write(b []byte) {
	if w.out != nil {
		w.out.Write(b)
	}
}

// headerEnd adds, before the blank line that ends e's header, the fields
// the plan adds: Content-Transfer-Encoding when there was none to
// replace, Content-Type for a message that was not MIME (RFC 1428), and
// MIME-Version (RFC 2045 §4).
func (w *walker) headerEnd(e *entity, replaced bool) {
	if w.analysing() {
		return
	}
	if e.addMIME {
		w.write([]byte("MIME-Version: 1.0\r\n"))
	}
	if e.addCTType {
		charset := "us-ascii"
		if e.body.has8 {
			charset = "unknown-8bit"
		}
		w.write([]byte("Content-Type: text/plain; charset=" + charset + "\r\n"))
	}
	if e.cte != "" && !replaced {
		w.write([]byte("Content-Transfer-Encoding: " + e.cte + "\r\n"))
	}
}

// sink receives one body region's octets, terminators included.
type sink interface {
	io.Writer
	Close() error
}

// sink returns the sink that carries out action a.
func (w *walker) sink(a action, e *entity) sink {
	switch a {
	case actFoldSP, actFoldQP, actFoldB64, actSanitize:
		return &foldSink{out: w.out, mode: a}
	case actToQP:
		// Text mode: each CRLF is a hard line break, trailing white space
		// and "=" are encoded, lines are at most 76 octets (RFC 2045 §6.7).
		g := &dashGuard{out: w.out}
		return &qpSink{qw: quotedprintable.NewWriter(g), guard: g}
	case actToBase64:
		return &base64Sink{enc: base64.NewEncoder(base64.StdEncoding, &lineWrapper{out: w.out})}
	}
	return rawSink{w.out}
}

// dashGuard encodes the first "-" of a quoted-printable line that follows
// a soft line break and starts with "--" as "=2D" (the same octet to a
// decoder, RFC 2045 §6.7 rule 1), so that no line of a re-encoded part can
// read as a boundary delimiter (RFC 2046 §5.1.1): the encoder's soft line
// breaks may put a "--boundary" found inside a long line at the start of a
// line. A line after a hard break starts as it did in the original, where
// it was not a delimiter. The line gets two octets longer than the
// encoder's 76, far below MaxLine.
type dashGuard struct {
	out  *tracker
	soft bool    // the last line ended with a soft break "=" CRLF, and nothing of the next is written
	dash bool    // a "-" that started such a line is held back
	tail [2]byte // the last two octets written
}

func (d *dashGuard) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		switch {
		case d.dash:
			d.dash = false
			if p[0] == '-' {
				d.out.Write([]byte("=2D"))
			} else {
				d.out.Write([]byte("-"))
			}
			continue
		case d.soft && p[0] == '-':
			d.dash, d.soft = true, false
			p = p[1:]
			continue
		}
		d.soft = false
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			d.put(p)
			break
		}
		d.put(p[:i])
		d.soft = d.tail == [2]byte{'=', '\r'}
		d.put(p[i : i+1])
		p = p[i+1:]
	}
	return n, d.out.err
}

func (d *dashGuard) put(b []byte) {
	d.out.Write(b)
	switch len(b) {
	case 0:
	case 1:
		d.tail = [2]byte{d.tail[1], b[0]}
	default:
		d.tail = [2]byte{b[len(b)-2], b[len(b)-1]}
	}
}

func (d *dashGuard) flush() {
	if d.dash {
		d.out.Write([]byte("-"))
		d.dash = false
	}
}

// qpSink re-encodes quoted-printable.
type qpSink struct {
	qw    *quotedprintable.Writer
	guard *dashGuard
}

func (q *qpSink) Write(p []byte) (int, error) { return q.qw.Write(p) }

func (q *qpSink) Close() error {
	err := q.qw.Close()
	q.guard.flush()
	return err
}

type rawSink struct{ out *tracker }

func (r rawSink) Write(b []byte) (int, error) { return r.out.Write(b) }
func (r rawSink) Close() error                { return nil }

type base64Sink struct{ enc io.WriteCloser }

func (b *base64Sink) Write(p []byte) (int, error) { return b.enc.Write(p) }
func (b *base64Sink) Close() error                { return b.enc.Close() }

// lineWrapper breaks base64 output into lines of 76 characters (RFC 2045
// §6.8), without a line break after the last.
type lineWrapper struct {
	out *tracker
	col int
}

func (l *lineWrapper) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if l.col == 76 {
			l.out.Write(crlf)
			l.col = 0
		}
		k := min(76-l.col, len(p))
		l.out.Write(p[:k])
		l.col += k
		p = p[k:]
	}
	return n, l.out.err
}

// foldSink copies a region, breaking lines longer than MaxLine:
// actFoldSP and actSanitize with CRLF SP (actSanitize also turns 8-bit
// octets into '?'), actFoldQP with a soft line break "=" CRLF that never
// splits an "=XX" escape, actFoldB64 with a bare CRLF. A break never
// splits a UTF-8 sequence.
type foldSink struct {
	out  *tracker
	mode action
	col  int  // octets on the current output line
	esc  int  // quoted-printable: hex digits still due after "="
	cr   bool // a CR is held back until the next octet shows whether it ends the line
}

func (f *foldSink) Write(p []byte) (int, error) {
	for _, c := range p {
		if f.cr {
			// The held CR: a line break with this LF, else an octet of
			// the line like any other.
			f.cr = false
			if c == '\n' {
				f.out.Write(crlf)
				f.col, f.esc = 0, 0
				continue
			}
			f.octet('\r')
		}
		switch c {
		case '\r':
			f.cr = true
		case '\n':
			f.out.WriteByte(c)
			f.col, f.esc = 0, 0
		default:
			f.octet(c)
		}
	}
	return len(p), f.out.err
}

// octet writes one octet of a line, breaking the line before it if needed.
func (f *foldSink) octet(c byte) {
	if f.mode == actSanitize && c >= 0x80 {
		c = '?'
	}
	if f.breakBefore(c) {
		switch f.mode {
		case actFoldQP:
			f.out.Write([]byte("=\r\n"))
			f.col = 0
			if c == '-' { // see dashGuard
				f.out.Write([]byte("=2D"))
				f.col = 3
				return
			}
		case actFoldB64:
			f.out.Write(crlf)
			f.col = 0
		default:
			f.out.Write([]byte("\r\n "))
			f.col = 1
		}
	}
	if f.mode == actFoldQP {
		switch {
		case f.esc > 0:
			f.esc--
		case c == '=':
			f.esc = 2
		}
	}
	f.out.WriteByte(c)
	f.col++
}

// breakBefore decides whether the line breaks before c.
func (f *foldSink) breakBefore(c byte) bool {
	if f.mode == actFoldQP {
		// Room for "=" at the end, and for a whole escape before it.
		return f.esc == 0 && f.col >= MaxLine-3
	}
	if f.col >= MaxLine {
		return true
	}
	n := 1 // octets of the UTF-8 sequence c starts
	switch {
	case c >= 0xF0:
		n = 4
	case c >= 0xE0:
		n = 3
	case c >= 0xC0:
		n = 2
	case c >= 0x80:
		return false // a continuation octet stays with its sequence
	}
	return f.col+n > MaxLine
}

func (f *foldSink) Close() error {
	if f.cr {
		f.cr = false
		f.octet('\r')
	}
	return f.out.err
}

// headerFolder copies header lines, folding any longer than MaxLine at the
// last white space that leaves at most MaxLine octets (RFC 5322 §2.2.3:
// unfolding gives the field back), or, without such white space, by
// inserting CRLF SP at MaxLine (at a UTF-8 sequence boundary). With a nil
// out it only counts.
type headerFolder struct {
	out   *tracker
	seg   []byte // the current output line, not yet written
	folds int    // lines folded
	line  bool   // the current input line was folded already
}

func (h *headerFolder) content(b []byte) {
	for len(b) > 0 {
		k := min(MaxLine+1-len(h.seg), len(b))
		h.seg = append(h.seg, b[:k]...)
		b = b[k:]
		if len(h.seg) > MaxLine {
			h.fold()
		}
	}
}

func (h *headerFolder) fold() {
	if !h.line {
		h.folds++
		h.line = true
	}
	at := -1
	for i := MaxLine; i > 0; i-- {
		if (h.seg[i] == ' ' || h.seg[i] == '\t') && hasNonWSP(h.seg[:i]) {
			at = i
			break
		}
	}
	if at > 0 {
		h.emit(h.seg[:at])
		h.emit(crlf)
		h.seg = append(h.seg[:0], h.seg[at:]...) // starts with the white space
		return
	}
	at = MaxLine
	for at > MaxLine-3 && h.seg[at] >= 0x80 && h.seg[at] < 0xC0 {
		at--
	}
	h.emit(h.seg[:at])
	h.emit(crlf)
	rest := append([]byte(nil), h.seg[at:]...)
	h.seg = append(append(h.seg[:0], ' '), rest...)
}

func (h *headerFolder) end(term []byte) {
	h.emit(h.seg)
	h.emit(term)
	h.seg = h.seg[:0]
	h.line = false
}

func (h *headerFolder) emit(b []byte) {
	if h.out != nil {
		h.out.Write(b)
	}
}

func hasNonWSP(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' {
			return true
		}
	}
	return false
}
