package authcheck

import (
	"errors"
	"io"
	"strings"

	"hubd/internal/message"
)

// StripOwnResults returns a reader of r's message without the
// Authentication-Results fields that claim authservID (RFC 8601 §5: a
// border MTA removes them, since only it may have written them) and
// without those whose authserv-id cannot be read at all, which no one can
// rely on and a lenient reader might take for ours. Others' fields stay.
func StripOwnResults(r io.Reader, authservID string) *message.FieldFilter {
	return message.FilterFields(r, "Authentication-Results", func(v []byte) bool {
		id, err := AuthServID(string(v))
		return err != nil || strings.EqualFold(id, authservID)
	})
}

var errNoAuthServID = errors.New("authcheck: no authserv-id")

// AuthServID returns the authserv-id of an Authentication-Results field
// value (RFC 8601 §2.2):
//
//	authres-payload = [CFWS] authserv-id [ CFWS authres-version ] ...
//	authserv-id     = value                  ; RFC 2045: token / quoted-string
//
// Comments (nested, with quoted pairs) and folding white space before it
// are skipped; a quoted-string is unquoted.
func AuthServID(v string) (string, error) {
	i, err := skipCFWS(v, 0)
	if err != nil {
		return "", err
	}
	if i < len(v) && v[i] == '"' {
		var b strings.Builder
		for i++; i < len(v); i++ {
			switch c := v[i]; c {
			case '"':
				if b.Len() == 0 {
					return "", errNoAuthServID
				}
				return b.String(), nil
			case '\\':
				if i+1 == len(v) {
					return "", errNoAuthServID
				}
				i++
				b.WriteByte(v[i])
			case '\r', '\n':
				// Folding inside a quoted-string: the CRLF is not content.
			default:
				b.WriteByte(c)
			}
		}
		return "", errNoAuthServID
	}
	j := i
	for j < len(v) && isTokenChar(v[j]) {
		j++
	}
	if j == i {
		return "", errNoAuthServID
	}
	return v[i:j], nil
}

// skipCFWS returns the index of the first byte at or after i that is not
// white space, a line break or inside a comment (RFC 5322 §3.2.2).
func skipCFWS(v string, i int) (int, error) {
	depth := 0
	for ; i < len(v); i++ {
		switch c := v[i]; {
		case c == '(':
			depth++
		case c == ')':
			if depth == 0 {
				return i, errNoAuthServID
			}
			depth--
		case c == '\\' && depth > 0:
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		case depth == 0:
			return i, nil
		}
	}
	if depth > 0 {
		return i, errNoAuthServID
	}
	return i, nil
}

// isTokenChar: RFC 2045 §5.1 token characters (US-ASCII, no SPACE, CTLs
// or tspecials).
func isTokenChar(c byte) bool {
	return c > ' ' && c < 0x7f && !strings.ContainsRune(`()<>@,;:\"/[]?=`, rune(c))
}

// sigTags are the tags of a DKIM-Signature field the results name (RFC
// 6376 §3.5): d, i, s, and the start of b. The verification itself is
// go-msgauth's; these only label its results.
type sigTags struct {
	d, i, s, b string
}

// parseSigTags reads a DKIM-Signature value as a tag-list (RFC 6376
// §3.2): "tag=value" separated by ";", white space (folding included)
// around tags and values ignored, and inside b= (base64) removed. A
// malformed list yields what could be read.
func parseSigTags(v string) sigTags {
	var t sigTags
	for spec := range strings.SplitSeq(v, ";") {
		name, val, ok := strings.Cut(spec, "=")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch strings.TrimSpace(name) {
		case "d":
			t.d = strings.ToLower(val)
		case "i":
			t.i = val
		case "s":
			t.s = val
		case "b":
			t.b = strings.Map(func(r rune) rune {
				if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
					return -1
				}
				return r
			}, val)
		}
	}
	return t
}
