package message

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
)

// The header firewall.
//
// Header fields whose name starts with OrgHeaderPrefix ("X-Hubd-", in any
// letter case) are hub-internal: the hub writes them and acts on them (today
// X-Hubd-Expanded, the list-expansion trace of the categorizer; later the
// authentication-as fields and the like). Whoever can write such a field can
// lie to the hub, and whoever reads one learns how the organisation works
// inside, so, as Exchange's header firewall does for its
// X-MS-Exchange-Organization-* fields:
//
//   - on receive, they are removed from mail arriving on a session whose
//     rights lack accept_org_headers (policy.RightAcceptOrgHeaders);
//   - on send, they are removed from mail leaving through a send connector
//     without send_org_headers (policy.SendConnector.SendOrgHeaders).
//
// Local delivery (Maildir, LMTP) keeps them. This file is the one place that
// says which fields are hub-internal (IsOrgHeader) and how they are removed
// (OrgHeaderFilter): a field's first line and all its folded continuation
// lines (RFC 5322 §2.2.3) go; nothing else changes (but for the blank line
// OrgHeaderFilter may put back), and the body is never looked at. The header section ends where Reader ends it (the first blank
// line, or the first line that is neither a field nor a continuation), so
// the filter and the strict reader cannot disagree about where the body
// starts.

// OrgHeaderPrefix starts the name of every hub-internal header field.
const OrgHeaderPrefix = "X-Hubd-"

// IsOrgHeader reports whether a header field name (without the colon) names
// a hub-internal field: it starts with OrgHeaderPrefix, compared without
// regard to letter case (RFC 5322 §1.2.2: field names are case-insensitive).
func IsOrgHeader(name string) bool {
	return len(name) >= len(OrgHeaderPrefix) && strings.EqualFold(name[:len(OrgHeaderPrefix)], OrgHeaderPrefix)
}

func isOrgName(name []byte) bool {
	return len(name) >= len(OrgHeaderPrefix) && equalFold(name[:len(OrgHeaderPrefix)], OrgHeaderPrefix)
}

// lineBuf is the filters' read buffer. A line longer than this is handled in
// pieces: its start (at least maxLine+1 bytes) is enough to classify it.
const lineBuf = 4096

// OrgHeaderFilter is an io.Reader that yields its source without the
// hub-internal header fields (see IsOrgHeader). It streams: only one buffer
// of lineBuf bytes is held, whatever the size of the header section or the
// body. Errors of the source are passed on unchanged, after the bytes that
// came before them.
//
// When every field of the header section was removed and the section did not
// end with a blank line, a blank line (CRLF) is put where it was, so that the
// body's first line cannot become a header field by losing the fields above
// it.
type OrgHeaderFilter struct {
	br  *bufio.Reader
	out []byte // decided bytes not yet returned: br's buffer, or sep's
	sep bool   // a blank line goes before the line read last (decide)
	err error  // the source's error, returned once out is drained

	inHeader   bool
	midLine    bool // the last chunk ended inside a line (longer than lineBuf)
	dropLine   bool // the rest of the current line is dropped
	afterField bool // a field line came before: a WSP line continues it
	dropping   bool // the current field is hub-internal
	emitted    bool // some of the header section was yielded
	stripped   int
}

// StripOrgHeaders returns a filter that removes the hub-internal header
// fields from the message read from r.
func StripOrgHeaders(r io.Reader) *OrgHeaderFilter {
	br := linePool.Get().(*bufio.Reader)
	br.Reset(r)
	return &OrgHeaderFilter{br: br, inHeader: true}
}

// linePool holds the lineBuf readers of filters that have ended.
var linePool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, lineBuf) }}

// Stripped returns the number of header fields removed so far.
func (f *OrgHeaderFilter) Stripped() int { return f.stripped }

// Read yields the next bytes of the filtered message.
func (f *OrgHeaderFilter) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(f.out) == 0 {
		switch {
		case f.err != nil:
			f.release()
			return 0, f.err
		case !f.inHeader:
			// The body: straight through (bufio reads large requests
			// directly into p once its buffer is empty).
			n, err := f.br.Read(p)
			if err != nil {
				f.err = err
				if n == 0 {
					f.release()
				}
			}
			return n, err
		}
		f.step()
	}
	n := copy(p, f.out)
	f.out = f.out[n:]
	return n, nil
}

// release gives the reader back to linePool once the source has ended
// (f.err is set and nothing is left to yield): br is never read again.
func (f *OrgHeaderFilter) release() {
	if f.br != nil {
		f.br.Reset(nil)
		linePool.Put(f.br)
		f.br = nil
	}
}

// step reads one line (or one buffer of a long line) of the header section
// and decides whether it is yielded.
func (f *OrgHeaderFilter) step() {
	chunk, err := f.br.ReadSlice('\n')
	f.out = nil
	if len(chunk) > 0 {
		if !f.midLine {
			f.decide(chunk)
		}
		switch {
		case f.sep:
			// Once per message at most, on the line that ends the
			// header section (never dropped): a copy, the blank line first.
			f.out = append([]byte("\r\n"), chunk...)
			f.sep = false
		case !f.dropLine:
			// Yielded from br's buffer, which stays as it is until out
			// is drained: Read calls step only when out is empty.
			f.out = chunk
		}
		f.midLine = err == bufio.ErrBufferFull && f.inHeader
	}
	if err != nil && err != bufio.ErrBufferFull {
		f.err = err
	}
}

// decide classifies the line that starts chunk, as Reader does, and sets
// whether it is dropped. It may queue a separator to go before it.
func (f *OrgHeaderFilter) decide(chunk []byte) {
	switch kind := classifyStart(chunk, f.afterField); kind {
	case lineField:
		f.dropping = isOrgName(fieldName(chunk))
		if f.dropping {
			f.stripped++
		}
		f.afterField = true
	case lineContinuation:
		// Folded: it shares the fate of the field above.
	default:
		// A blank line, body text, or a last line that is no field: the
		// header section is over.
		f.inHeader, f.dropping = false, false
		if kind != lineBlank && !f.emitted && f.stripped > 0 {
			f.sep = true
		}
	}
	f.dropLine = f.dropping
	if !f.dropLine {
		f.emitted = true
	}
}

// fieldName is the name of the field whose first line starts b: the bytes
// before the colon, without the obsolete WSP before it (RFC 5322 §4.5.8).
func fieldName(b []byte) []byte {
	colon := bytes.IndexByte(b, ':')
	if colon < 0 {
		return nil
	}
	return bytes.TrimRight(b[:colon], " \t")
}

// ErrHeaderTooLong is returned by ReadHeader for a header section over its
// limit.
var ErrHeaderTooLong = errors.New("message: header section too long")

// ReadHeader reads the header section of the message from r: every field
// line and continuation line, with their line endings, up to but not
// including the blank line or first body line that ends it. It reads a
// little past the end of the section (the source is buffered). A section
// longer than limit bytes returns what was read with ErrHeaderTooLong; an
// error of the source is returned as it is, except io.EOF, which just ends
// the section.
func ReadHeader(r io.Reader, limit int) ([]byte, error) {
	br := bufio.NewReaderSize(r, lineBuf)
	var hdr []byte
	afterField, midLine := false, false
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 && !midLine {
			switch classifyStart(chunk, afterField) {
			case lineField:
				afterField = true
			case lineContinuation:
			default:
				return hdr, nil
			}
		}
		if len(hdr)+len(chunk) > limit {
			return hdr, ErrHeaderTooLong
		}
		hdr = append(hdr, chunk...)
		midLine = err == bufio.ErrBufferFull
		switch {
		case err == io.EOF:
			return hdr, nil
		case err != nil && err != bufio.ErrBufferFull:
			return hdr, err
		}
	}
}

// Field returns the value of the first field named name (in any letter case)
// in a header section, unfolded and trimmed, and whether there is one.
func Field(header []byte, name string) (string, bool) {
	var value string
	found := false
	eachField(header, func(n, v []byte) bool {
		if equalFold(n, name) {
			value, found = unfold(v), true
			return false
		}
		return true
	})
	return value, found
}
