package mime7bit

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"mime"
	"strings"
	"sync"
)

// piece is a line, or a part of a line too long for the read buffer.
type piece struct {
	b     []byte // content, without the line's terminator
	term  []byte // "\r\n" or "\n" when the piece ends its line; nil when the line goes on, or at EOF
	start bool   // the piece starts its line
}

// whole reports whether the piece is a complete line.
func (p piece) whole() bool { return p.start && p.term != nil }

var (
	crlf   = []byte("\r\n")
	lf     = []byte("\n")
	loneCR = []byte("\r")
)

// lineReader cuts the input into pieces. A CR at the end of a full buffer
// is held back, so that a CRLF split by the buffer is still one terminator.
type lineReader struct {
	br      *bufio.Reader
	atStart bool
	cr      bool
}

func (r *lineReader) read() (piece, error) {
	start := r.atStart
	if r.cr {
		r.cr = false
		if b, err := r.br.Peek(1); err == nil && b[0] == '\n' {
			r.br.Discard(1)
			r.atStart = true
			return piece{term: crlf, start: start}, nil
		}
		r.atStart = false
		return piece{b: loneCR, start: start}, nil
	}
	line, err := r.br.ReadSlice('\n')
	switch {
	case err == nil:
		r.atStart = true
		if n := len(line); n >= 2 && line[n-2] == '\r' {
			return piece{b: line[:n-2], term: crlf, start: start}, nil
		}
		return piece{b: line[:len(line)-1], term: lf, start: start}, nil
	case err == bufio.ErrBufferFull:
		r.atStart = false
		if line[len(line)-1] == '\r' {
			r.cr = true
			line = line[:len(line)-1]
		}
		return piece{b: line, start: start}, nil
	case err == io.EOF && len(line) > 0:
		r.atStart = false
		return piece{b: line, start: start}, nil
	}
	return piece{}, err
}

// walker walks a message as a MIME tree, once to analyse it (out == nil:
// it records entities and statistics in the plan) and once to write it
// (out != nil: it follows the plan). Both walks take the same path, since
// the path depends only on the input.
type walker struct {
	lr    lineReader
	p     *Plan
	out   *tracker
	n     int      // entities met so far
	stack [][]byte // "--boundary" of the enclosing multiparts, outermost first
	hf    headerFolder
	fixes int // delimiter lines shortened or folded

	saved   piece // one piece of look-ahead (a delimiter seen by a region)
	pending bool

	afterTop bool // the top-level header has ended: pieces count for the flat body
	flatCol  int
	scratch  entity
}

// readers keeps the walkers' 64 KB read buffers between messages: most
// messages are small, and every outgoing one is analysed.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBuffer) }}

func newWalker(src io.Reader, p *Plan, out *bufio.Writer) *walker {
	br := readers.Get().(*bufio.Reader)
	br.Reset(src)
	w := &walker{lr: lineReader{br: br, atStart: true}, p: p}
	if out != nil {
		w.out = &tracker{w: out}
		w.hf.out = w.out
	}
	return w
}

func (w *walker) analysing() bool { return w.out == nil }

// run walks the whole message.
func (w *walker) run() error {
	defer func() {
		w.lr.br.Reset(nil)
		readers.Put(w.lr.br)
	}()
	var err error
	if w.p.flat && !w.analysing() {
		// Too many entities: the header, then one body region.
		var h headerInfo
		if h, err = w.header(&entity{}, 0); err == nil && h.ended {
			_, err = w.region(w.p.body.bodyAct, &w.p.body)
		}
	} else {
		err = w.entity(0, false, unsigned, true, 0)
	}
	if err != nil {
		return err
	}
	if w.analysing() {
		w.p.Folded += w.fixes + w.hf.folds
		return nil
	}
	// A re-encoded last part may end without a line break; the message
	// should not (RFC 5321 §4.1.1.4).
	if w.out.n > 0 && w.out.last != '\n' && w.p.Changes() {
		w.out.Write(crlf)
	}
	return w.out.err
}

func (w *walker) next() (piece, error) {
	if w.pending {
		w.pending = false
		return w.saved, nil
	}
	p, err := w.lr.read()
	if err == nil && w.afterTop && w.analysing() {
		w.p.body.body.note(p, &w.flatCol)
	}
	return p, err
}

func (w *walker) unread(p piece) { w.saved, w.pending = p, true }

// ent is the entity with index i: recorded while analysing (the first
// maxEntities of them; beyond, the plan goes flat), read while writing.
func (w *walker) ent(i int) *entity {
	if w.analysing() {
		if i < maxEntities {
			if i == len(w.p.ents) {
				w.p.ents = append(w.p.ents, &entity{})
			}
			return w.p.ents[i]
		}
		w.p.flat = true
	} else if i < len(w.p.ents) {
		return w.p.ents[i]
	}
	return &w.scratch
}

// delimiter reports whether p is a boundary delimiter line of an enclosing
// multipart (RFC 2046 §5.1.1: "--" boundary, "--" for the last, then
// optional white space), and of which one (index into the stack).
func (w *walker) delimiter(p piece) (level int, closing, ok bool) {
	if !p.whole() || len(p.b) < 2 || p.b[0] != '-' || p.b[1] != '-' || len(w.stack) == 0 {
		return 0, false, false
	}
	line := bytes.TrimRight(p.b, " \t")
	for i := len(w.stack) - 1; i >= 0; i-- {
		rest, found := bytes.CutPrefix(line, w.stack[i])
		switch {
		case !found:
		case len(rest) == 0:
			return i, false, true
		case len(rest) == 2 && rest[0] == '-' && rest[1] == '-':
			return i, true, true
		}
	}
	return 0, false, false
}

// entity walks one entity: its header, then its body. depth is its
// nesting; digest says its parent is multipart/digest (default type
// message/rfc822, RFC 2046 §5.1.5); message that its header is a message
// header (the top level, or the body of a message/rfc822 part), and msg is
// the index of the message header its parts answer to.
func (w *walker) entity(depth int, digest bool, signed signature, message bool, msg int32) error {
	idx := w.n
	w.n++
	if message {
		msg = int32(idx)
	}
	e := w.ent(idx)
	if w.analysing() {
		*e = entity{message: message, msg: msg, signed: signed}
	}
	h, err := w.header(e, idx)
	if err != nil || !h.ended {
		return err // a header without a body: nothing more to walk
	}
	mt, params := "text/plain", map[string]string(nil)
	if digest {
		mt = "message/rfc822"
	}
	if h.hasCT {
		if m, ps, _ := mime.ParseMediaType(h.ct); m != "" {
			mt, params = m, ps
		}
	}
	nonMIME := message && !h.mimeVer && !h.hasCT
	if message && h.dkim && signed == unsigned {
		signed = sigHeader
	}
	enc := encodingOf(h.cte)
	leaf := func(text, opaque bool) error {
		if w.analysing() {
			e.kind, e.enc, e.text, e.opaque, e.nonMIME, e.mimeVer, e.signed = kindLeaf, enc, text, opaque, nonMIME, h.mimeVer, signed
		}
		st, err := w.region(e.bodyAct, e)
		if w.analysing() {
			e.body = st
		}
		return err
	}
	if w.analysing() {
		e.enc, e.mimeVer, e.signed = enc, h.mimeVer, signed
	}
	walkable := enc == encIdentity && depth < maxDepth
	switch {
	case nonMIME:
		return leaf(true, false)
	case strings.HasPrefix(mt, "multipart/"):
		if !walkable || params["boundary"] == "" {
			return leaf(false, true)
		}
		inner := signed
		if mt == "multipart/signed" && inner == unsigned {
			inner = sigMIME
		}
		if w.analysing() {
			e.kind = kindMultipart
		}
		return w.multipart(idx, params["boundary"], mt == "multipart/digest", inner, depth, msg)
	case mt == "message/rfc822":
		if !walkable {
			return leaf(false, true)
		}
		if w.analysing() {
			e.kind = kindMessage
		}
		return w.entity(depth+1, false, signed, true, msg)
	case strings.HasPrefix(mt, "message/global"):
		return leaf(false, false) // RFC 6532 §3.5, RFC 6533: may be base64
	case strings.HasPrefix(mt, "message/"):
		return leaf(false, true)
	}
	return leaf(strings.HasPrefix(mt, "text/"), false)
}

func encodingOf(cte string) encoding {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "", "7bit", "8bit", "binary":
		return encIdentity
	case "quoted-printable":
		return encQP
	case "base64":
		return encBase64
	}
	return encOther
}

// multipart walks a multipart body: preamble, parts, epilogue (RFC 2046
// §5.1.1). A delimiter of an enclosing multipart ends it early.
func (w *walker) multipart(idx int, boundary string, digest bool, signed signature, depth int, msg int32) error {
	w.stack = append(w.stack, []byte("--"+boundary))
	pop := func() { w.stack = w.stack[:len(w.stack)-1] }
	e := w.ent(idx)
	st, err := w.region(e.preAct, e)
	if err != nil {
		return err
	}
	if w.analysing() {
		w.ent(idx).pre = st
	}
	for {
		p, err := w.next()
		if err == io.EOF {
			pop()
			return nil
		}
		if err != nil {
			return err
		}
		level, closing, _ := w.delimiter(p)
		if level != len(w.stack)-1 {
			w.unread(p) // an enclosing multipart's: this one was never closed
			pop()
			return nil
		}
		w.delimiterLine(p)
		if closing {
			pop()
			e := w.ent(idx)
			st, err := w.region(e.epiAct, e)
			if w.analysing() {
				w.ent(idx).epi = st
			}
			return err
		}
		if err := w.entity(depth+1, digest, signed, false, msg); err != nil {
			return err
		}
	}
}

// delimiterLine writes a delimiter line. Transport padding (RFC 2046
// §5.1.1) that would make it longer than MaxLine is dropped.
func (w *walker) delimiterLine(p piece) {
	b := p.b
	if len(b) > MaxLine {
		b = bytes.TrimRight(b, " \t")
		w.fixes++
	}
	if w.analysing() {
		return
	}
	if len(b) > MaxLine {
		f := &foldSink{out: w.out, mode: actFoldSP}
		f.Write(b)
	} else {
		w.out.Write(b)
	}
	w.out.Write(p.term)
}

// region copies one body region (a leaf's content, a preamble or an
// epilogue) through the sink for action a, up to a delimiter of an
// enclosing multipart (left unread) or EOF, and returns what it saw. The
// line break before a delimiter belongs to the delimiter (RFC 2046
// §5.1.1), so each line's terminator is held back until the next line
// shows it is content.
func (w *walker) region(a action, e *entity) (stats, error) {
	var st stats
	var s sink
	if !w.analysing() {
		s = w.sink(a, e)
	}
	var held []byte
	col := 0
	for {
		p, err := w.next()
		if err == io.EOF {
			if s != nil {
				if held != nil {
					s.Write(held)
				}
				s.Close()
			}
			return st, nil
		}
		if err != nil {
			return st, err
		}
		if p.start {
			if _, _, ok := w.delimiter(p); ok {
				w.unread(p)
				if s != nil {
					s.Close()
					w.out.Write(held)
				}
				return st, nil
			}
			if held != nil && s != nil {
				s.Write(held)
			}
			held = nil
		}
		st.note(p, &col)
		if s != nil {
			s.Write(p.b)
		}
		if p.term != nil {
			held = p.term
		}
	}
}

// note adds a piece to the statistics; col is the length of its line so
// far.
func (st *stats) note(p piece, col *int) {
	if p.start {
		*col = 0
	}
	before := *col
	*col += len(p.b)
	if before <= MaxLine && *col > MaxLine {
		st.long++
	}
	if !st.has8 && !isASCII(p.b) {
		st.has8 = true
	}
	if !st.bare && (bytes.IndexByte(p.b, '\r') >= 0 || len(p.term) == 1) {
		st.bare = true
	}
}

// isASCII reports whether no octet of b is above 0x7F, eight at a time
// (PlainReader runs it over every message queued).
func isASCII(b []byte) bool {
	const high = 0x8080808080808080
	for len(b) >= 32 {
		w := binary.LittleEndian.Uint64(b) | binary.LittleEndian.Uint64(b[8:]) |
			binary.LittleEndian.Uint64(b[16:]) | binary.LittleEndian.Uint64(b[24:])
		if w&high != 0 {
			return false
		}
		b = b[32:]
	}
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&high != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// headerInfo is what a header section says about its entity.
type headerInfo struct {
	ended   bool // the blank line was seen (else a delimiter or EOF cut it short)
	ct, cte string
	hasCT   bool
	mimeVer bool
	dkim    bool // DKIM-Signature or ARC-Message-Signature
}

// maxFieldValue bounds what is kept of a Content-Type or
// Content-Transfer-Encoding value.
const maxFieldValue = 4 << 10

// header walks a header section, folding lines over MaxLine and, when
// writing, replacing or adding the fields the plan changes for e.
func (w *walker) header(e *entity, idx int) (headerInfo, error) {
	f := fieldState{w: w, e: e}
	for {
		p, err := w.next()
		if err == io.EOF {
			f.finish()
			w.hf.end(nil) // a last line without a line break
			return f.h, nil
		}
		if err != nil {
			return f.h, err
		}
		if p.start {
			if p.whole() && len(p.b) == 0 { // the blank line
				f.finish()
				w.headerEnd(e, f.replaced)
				w.write(p.term)
				f.h.ended = true
				w.afterTop = w.afterTop || idx == 0
				return f.h, nil
			}
			if _, _, ok := w.delimiter(p); ok {
				f.finish()
				w.unread(p)
				return f.h, nil
			}
			f.line(p)
		} else {
			f.more(p.b)
		}
		if w.analysing() && !isASCII(p.b) {
			if idx == 0 {
				w.p.Header8bit = true
			} else {
				e.hdr8 = true
			}
		}
		if !f.suppress {
			w.hf.content(p.b)
			if p.term != nil {
				w.hf.end(p.term)
			}
		}
	}
}

// fieldState follows the header fields of one header section.
type fieldState struct {
	w        *walker
	e        *entity
	h        headerInfo
	name     string // current field, lower case
	val      []byte // its value, unfolded, bounded
	suppress bool   // the current field is being replaced: not copied
	replaced bool   // the new Content-Transfer-Encoding is written
}

// line takes the first piece of a header line: a new field, or a
// continuation line (RFC 5322 §2.2.3).
func (f *fieldState) line(p piece) {
	if len(p.b) == 0 || p.b[0] == ' ' || p.b[0] == '\t' {
		f.more(p.b)
		return
	}
	f.finish()
	var rest []byte
	if colon := bytes.IndexByte(p.b, ':'); colon > 0 {
		f.name = strings.ToLower(string(bytes.TrimRight(p.b[:colon], " \t")))
		rest = p.b[colon+1:]
	}
	f.suppress = false
	if f.name == "content-transfer-encoding" && f.e.cte != "" {
		if !f.replaced {
			f.w.write([]byte("Content-Transfer-Encoding: " + f.e.cte + "\r\n"))
		}
		f.replaced, f.suppress = true, true
	}
	f.more(rest)
}

// more adds to the current field's value.
func (f *fieldState) more(b []byte) {
	if f.name != "" && len(f.val) < maxFieldValue {
		f.val = append(f.val, b[:min(len(b), maxFieldValue-len(f.val))]...)
	}
}

// finish records the field that has ended.
func (f *fieldState) finish() {
	switch f.name {
	case "content-type":
		if !f.h.hasCT {
			f.h.ct, f.h.hasCT = string(f.val), true
		}
	case "content-transfer-encoding":
		if f.h.cte == "" {
			f.h.cte = string(f.val)
		}
	case "mime-version":
		f.h.mimeVer = true
	case "dkim-signature", "arc-message-signature":
		f.h.dkim = true
	}
	f.name, f.val = "", f.val[:0]
}
