package dsn

import (
	"bytes"
	"io"
	"mime/multipart"
	"strings"
)

// headerBudget is how much of the original Build reads even when it will
// return only the header section: enough for any header section a receive
// connector accepts (their max_header_size is far smaller), bounded so that
// a DSN never holds a large message in memory for nothing.
const headerBudget = 256 << 10

// original is the part of the queued message Build has read.
type original struct {
	data     []byte // the message, or its first readLimit octets
	complete bool   // data is the whole message
	header   []byte // the header section, without the blank line that ends it
}

// returned says what the third part of the DSN holds.
type returned struct {
	full   bool // the whole message; otherwise its header section
	tooBig bool // the whole message was wanted but exceeds the limit
	global bool // message/global(-headers): UTF-8 header section (RFC 6532)
}

// returnLimit is the largest original returned whole, or -1 for never.
func returnLimit(r Report) int64 {
	switch {
	case r.MaxReturnSize < 0:
		return -1
	case r.MaxReturnSize == 0:
		return DefaultMaxReturnSize
	}
	return r.MaxReturnSize
}

// readOriginal reads at most max(limit, headerBudget)+1 octets of src (nil
// is an empty message) and finds its header section.
func readOriginal(src io.Reader, limit int64) (original, error) {
	var o original
	if src == nil {
		o.complete = true
		return o, nil
	}
	budget := max(limit, headerBudget) + 1
	data, err := io.ReadAll(io.LimitReader(src, budget))
	if err != nil {
		return o, err
	}
	o.data = data
	o.complete = int64(len(data)) < budget
	o.header = headerSection(data, o.complete)
	return o, nil
}

// headerSection returns the lines of msg before the first blank line (RFC
// 5322 §2.1), each with its line ending. Lines may end in CRLF or,
// leniently, LF. Without a blank line the whole message is header when
// complete, and otherwise everything up to the last line break read.
func headerSection(msg []byte, complete bool) []byte {
	for pos := 0; pos < len(msg); {
		end := bytes.IndexByte(msg[pos:], '\n')
		if end < 0 {
			break
		}
		line := msg[pos : pos+end+1]
		if len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			return msg[:pos]
		}
		pos += end + 1
	}
	if complete {
		return msg
	}
	if i := bytes.LastIndexByte(msg, '\n'); i >= 0 {
		return msg[:i+1]
	}
	return nil
}

// field returns the unfolded value of the first header field called name
// (case-insensitively), with control characters removed, or "".
func (o original) field(name string) string {
	var cur []byte // the field being gathered, folding removed
	found := false
	for line := range bytes.Lines(o.header) {
		line = bytes.TrimRight(line, "\r\n")
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if found {
				cur = append(cur, line...) // RFC 5322 §2.2.3: unfolding removes only the CRLF
			}
			continue
		}
		if found {
			break
		}
		n, v, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(string(bytes.TrimRight(n, " \t")), name) {
			found = true
			cur = append(cur[:0], v...)
		}
	}
	return strings.TrimSpace(cleanText(string(cur)))
}

// chooseReturn applies the package's return policy (see the package
// comment) to the report.
func chooseReturn(r Report, kind Action, o original) returned {
	ret := returned{global: r.Envelope.SMTPUTF8 || has8bit(o.header)}
	if kind != Failed || strings.EqualFold(r.Envelope.DSNRet, "HDRS") {
		return ret
	}
	limit := returnLimit(r)
	if limit < 0 {
		return ret
	}
	if !o.complete || int64(len(o.data)) > limit {
		ret.tooBig = true
		return ret
	}
	ret.full = true
	return ret
}

// writeOriginalPart writes the third part: the whole original as
// message/rfc822 (RFC 3462 §2) or its header section as
// text/rfc822-headers (RFC 3462 §3), or their RFC 6532/6533 global
// counterparts. The content goes in verbatim; 8bit is declared when needed
// (RFC 2046 §5.2.1 forbids encoding a message/rfc822 body).
func writeOriginalPart(mw *multipart.Writer, o original, ret returned) error {
	content := o.header
	ctype, desc := "text/rfc822-headers", "Header of the original message"
	if ret.global {
		ctype = "message/global-headers"
	}
	if ret.full {
		content = o.data
		ctype, desc = "message/rfc822", "The original message"
		if ret.global {
			ctype = "message/global"
		}
	} else if len(content) > 0 && content[len(content)-1] != '\n' {
		content = append(content[:len(content):len(content)], '\r', '\n')
	}
	cte := "7bit"
	if has8bit(content) {
		cte = "8bit"
	}
	pw, err := mw.CreatePart(textprotoHeader(
		"Content-Type", ctype,
		"Content-Description", desc,
		"Content-Transfer-Encoding", cte,
	))
	if err != nil {
		return err
	}
	_, err = pw.Write(content)
	return err
}

// has8bit reports whether b holds an octet outside US-ASCII.
func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}
