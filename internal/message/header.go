package message

import "bytes"

// lineKind classifies the start of one line of a header section.
type lineKind int

const (
	lineUndecided    lineKind = iota // too few bytes to tell yet
	lineField                        // "Name:" — the first line of a header field
	lineContinuation                 // starts with WSP after a field: a folded line (RFC 5322 §2.2.3)
	lineBlank                        // CRLF alone: the end of the header section (RFC 5322 §2.1)
	lineNotField                     // anything else: the header section ended before this line
)

// classifyLine looks at the start of a line (b begins at the line's first
// byte and may hold less than the whole line) and says what it is.
// afterField tells whether a field came before, so that a leading WSP
// continues it. A field name is one or more printable US-ASCII characters
// other than colon (RFC 5322 §2.2, ftext), followed by optional WSP (the
// obsolete syntax of RFC 5322 §4.5.8, still seen in the wild) and a colon.
func classifyLine(b []byte, afterField bool) lineKind {
	if len(b) == 0 {
		return lineUndecided
	}
	switch b[0] {
	case '\r':
		if len(b) < 2 {
			return lineUndecided
		}
		if b[1] == '\n' {
			return lineBlank
		}
		return lineNotField
	case '\n':
		return lineNotField
	case ' ', '\t':
		if afterField {
			return lineContinuation
		}
		return lineNotField
	}
	i := 0
	for i < len(b) && isFtext(b[i]) {
		i++
	}
	if i == 0 {
		return lineNotField
	}
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	if i == len(b) {
		return lineUndecided
	}
	if b[i] == ':' {
		return lineField
	}
	return lineNotField
}

// classifyStart is classifyLine on at most the first maxLine+1 bytes of b,
// so that the verdict does not depend on how much of a long line has
// arrived: a field's colon must come within the first maxLine bytes (RFC
// 5322 §2.1.1 bounds a line to 998 characters), and a line start longer than
// that with no colon yet is not a field. Every reader of a header section
// here (Reader, OrgHeaderFilter, ReadHeader, eachField) decides with it, so
// that all of them end the header section at the same line.
func classifyStart(b []byte, afterField bool) lineKind {
	if len(b) > maxLine+1 {
		b = b[:maxLine+1]
	}
	k := classifyLine(b, afterField)
	if k == lineUndecided && len(b) > maxLine {
		return lineNotField
	}
	return k
}

// isFtext reports whether c may appear in a header field name (RFC 5322 §3.6.8).
func isFtext(c byte) bool { return c >= 33 && c <= 126 && c != ':' }

// eachField calls fn for every field of a header section, in order, with the
// field name (as written) and its raw value (everything after the colon, with
// folding CRLFs still in, final CRLF removed). It stops at the first line that
// is neither a field nor a continuation (the blank separator line, or body
// text), or when fn returns false. Lines may end in CRLF or, leniently, LF.
func eachField(header []byte, fn func(name, value []byte) bool) {
	var name []byte
	var start int // offset of the current field's value in header
	inField := false
	flush := func(end int) bool {
		if !inField {
			return true
		}
		inField = false
		v := header[start:end]
		v = bytes.TrimSuffix(v, []byte("\n"))
		v = bytes.TrimSuffix(v, []byte("\r"))
		return fn(name, v)
	}
	for pos := 0; pos < len(header); {
		end := bytes.IndexByte(header[pos:], '\n')
		if end < 0 {
			end = len(header)
		} else {
			end += pos + 1
		}
		line := header[pos:end]
		switch classifyStart(line, inField) {
		case lineContinuation:
			// Part of the current field.
		case lineField:
			if !flush(pos) {
				return
			}
			colon := bytes.IndexByte(line, ':')
			name = bytes.TrimRight(line[:colon], " \t")
			start, inField = pos+colon+1, true
		case lineUndecided:
			// Only possible for a last line with no colon and no line end,
			// or a lone CR: neither is a field.
			flush(pos)
			return
		default:
			flush(pos)
			return
		}
		pos = end
	}
	flush(len(header))
}

// CountReceived counts the Received: fields (RFC 5321 §4.4) in a header
// section: fields whose name is "Received" in any letter case. Folded lines
// belong to the field above them and are not counted; a "Received-SPF:" or
// "X-Received:" field is a different field. Counting stops at the end of the
// header section (the first blank line or the first line that is not a
// header field), so a whole message may be passed.
func CountReceived(header []byte) int {
	n := 0
	eachField(header, func(name, _ []byte) bool {
		if bytes.EqualFold(name, []byte("Received")) {
			n++
		}
		return true
	})
	return n
}

// unfold removes folding (CRLF or LF before WSP, RFC 5322 §2.2.3) from a
// field value and trims surrounding white space.
func unfold(v []byte) string {
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	v = bytes.ReplaceAll(v, []byte("\n"), nil)
	return string(bytes.TrimSpace(v))
}
