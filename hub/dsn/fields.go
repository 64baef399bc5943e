package dsn

import (
	"bytes"
	"fmt"
	"mime"
	"mime/multipart"
	"net"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"hubd/hub"
	"hubd/internal/enhancedstatus"
)

// Line lengths: folding aims at foldAt octets (RFC 5322 §2.1.1 SHOULD 78)
// and never lets a line exceed 998; maxValue bounds any one value taken
// from outside (a remote reply, a subject) so a DSN stays readable.
const (
	foldAt     = 78
	maxLine    = 998
	maxValue   = 2000
	maxSubject = 500
)

// writeStatusPart writes the message/delivery-status part (RFC 3464 §2):
// the per-message fields, then one block of per-recipient fields for each
// recipient, blocks separated by blank lines. With global it is
// message/global-delivery-status (RFC 6533 §6.2), whose fields may hold
// UTF-8.
func writeStatusPart(mw *multipart.Writer, r Report, global bool) error {
	var b bytes.Buffer
	env := r.Envelope
	field(&b, "Reporting-MTA", "dns; "+r.ReportingMTA) // RFC 3464 §2.2.2
	if env.DSNEnvID != "" {
		// RFC 3464 §2.2.1: the ENVID as the sender gave it (case kept).
		field(&b, "Original-Envelope-Id", xtextUnsafe(env.DSNEnvID))
	}
	if r.QueueID != "" {
		field(&b, "X-Hubd-Queue-ID", textValue(r.QueueID, false)) // RFC 3464 §2.4 extension field
	}
	if from := receivedFrom(env, global); from != "" {
		field(&b, "Received-From-MTA", from) // RFC 3464 §2.2.4
	}
	if !env.ReceivedAt.IsZero() {
		field(&b, "Arrival-Date", date(env.ReceivedAt)) // RFC 3464 §2.2.5
	}
	for _, rc := range r.Recipients {
		b.WriteString("\r\n")
		writeRecipientFields(&b, rc, global)
	}

	ctype, cte := "message/delivery-status", "7bit"
	if global {
		ctype = "message/global-delivery-status"
	}
	if has8bit(b.Bytes()) {
		cte = "8bit"
	}
	pw, err := mw.CreatePart(textprotoHeader(
		"Content-Type", ctype,
		"Content-Description", "Delivery report",
		"Content-Transfer-Encoding", cte,
	))
	if err != nil {
		return err
	}
	_, err = pw.Write(b.Bytes())
	return err
}

// writeRecipientFields writes one recipient's block (RFC 3464 §2.3).
func writeRecipientFields(b *bytes.Buffer, rc Recipient, global bool) {
	// RFC 3464 §2.3.1 and RFC 3461 §4.2: the ORCPT when the sender gave
	// one; otherwise, after alias expansion, the address the sender used.
	if rc.OriginalRecipient != "" {
		typ, addr, ok := strings.Cut(rc.OriginalRecipient, ";")
		if !ok {
			typ, addr = "rfc822", rc.OriginalRecipient
		}
		field(b, "Original-Recipient", typedAddress(typ, addr, global))
	} else if rc.EnvelopeRecipient != "" && !strings.EqualFold(rc.EnvelopeRecipient, rc.FinalRecipient) {
		field(b, "Original-Recipient", typedAddress("rfc822", rc.EnvelopeRecipient, global))
	}
	field(b, "Final-Recipient", typedAddress("rfc822", rc.FinalRecipient, global)) // §2.3.2
	field(b, "Action", string(rc.Action))                                          // §2.3.3
	field(b, "Status", status(rc))                                                 // §2.3.4
	if rc.RemoteMTA != "" {
		field(b, "Remote-MTA", "dns; "+mtaName(rc.RemoteMTA, global)) // §2.3.5
	}
	if d := diagnostic(rc.DiagnosticCode, global); d != "" {
		field(b, "Diagnostic-Code", d) // §2.3.6
	}
	if !rc.LastAttempt.IsZero() {
		field(b, "Last-Attempt-Date", date(rc.LastAttempt)) // §2.3.7
	}
	if rc.Action == Delayed && !rc.WillRetryUntil.IsZero() {
		field(b, "Will-Retry-Until", date(rc.WillRetryUntil)) // §2.3.9: delayed only
	}
}

// status is rc.Status when it is a well-formed RFC 3463 code, or a generic
// code of the class its action implies.
func status(rc Recipient) string {
	if enhancedstatus.Valid(rc.Status) {
		return rc.Status
	}
	switch rc.Action {
	case Failed:
		return "5.0.0"
	case Delayed:
		return "4.0.0"
	}
	return "2.0.0"
}

// diagnostic renders a Diagnostic-Code value: "smtp; <reply>" when d begins
// with an SMTP reply code (RFC 3464 §2.3.6), "X-Hubd; <text>" for a local
// explanation in our own words.
func diagnostic(d string, global bool) string {
	d = textValue(d, global)
	if d == "" {
		return ""
	}
	if len(d) >= 3 && d[0] >= '2' && d[0] <= '5' && isDigit(d[1]) && isDigit(d[2]) &&
		(len(d) == 3 || d[3] == ' ' || d[3] == '-') {
		return "smtp; " + d
	}
	return "X-Hubd; " + d
}

// receivedFrom is the Received-From-MTA value: the client's EHLO name and
// address, as in a Received: field, or "" for mail the hub made itself.
func receivedFrom(env *hub.Envelope, global bool) string {
	helo := textValue(env.ClientHelo, global)
	ip := textValue(stripPort(env.ClientAddr), false)
	switch {
	case helo != "" && ip != "":
		return "dns; " + helo + " ([" + ip + "])"
	case helo != "":
		return "dns; " + helo
	case ip != "":
		return "dns; [" + ip + "]"
	}
	return ""
}

// mtaName is a Remote-MTA name: a host name as given, or an IP address as
// an RFC 5321 §4.1.3 address literal. A ":port" suffix is dropped.
func mtaName(h string, global bool) string {
	h = stripPort(h)
	h = strings.Trim(h, "[]")
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Is6() && !a.Is4In6() {
			return "[IPv6:" + a.String() + "]"
		}
		return "[" + a.Unmap().String() + "]"
	}
	return textValue(h, global)
}

// stripPort removes a numeric ":port" from "host:port" or "[ip]:port".
func stripPort(hp string) string {
	host, port, err := net.SplitHostPort(hp)
	if err != nil || port == "" || strings.Trim(port, "0123456789") != "" {
		return hp
	}
	return host
}

// typedAddress renders address-type ";" generic-address (RFC 3464 §2.3.1).
// A non-ASCII address is of type "utf-8" (RFC 6533 §3) and is only written
// raw in a global report; otherwise it is escaped. Characters that cannot
// appear in a field (controls) are escaped in every case.
func typedAddress(typ, addr string, global bool) string {
	typ = strings.ToLower(strings.TrimSpace(typ))
	if !isAtom(typ) {
		typ = "unknown" // RFC 3464 §2.3.1: the type could not be determined
	}
	if !isASCII(addr) && typ == "rfc822" {
		typ = "utf-8"
	}
	if typ == "utf-8" {
		return typ + ";" + utf8AddrText(addr, global)
	}
	return typ + ";" + xtextUnsafe(addr)
}

// utf8AddrText encodes addr as RFC 6533 §3 utf-8-addr-unitext (global:
// UTF-8 kept) or utf-8-addr-xtext (ASCII only): controls, space, "\", "+"
// and "=" — and, in the xtext form, every non-ASCII character — become
// "\x{HEX}".
func utf8AddrText(addr string, global bool) string {
	addr = strings.ToValidUTF8(addr, "\uFFFD")
	var b strings.Builder
	for _, c := range addr {
		switch {
		case c <= ' ' || c == 0x7f || c == '\\' || c == '+' || c == '=' || (c >= 0x80 && !global):
			fmt.Fprintf(&b, `\x{%X}`, c)
		default:
			b.WriteRune(c)
		}
	}
	return b.String()
}

// xtextUnsafe xtext-encodes (RFC 3461 §4) the octets that cannot appear in
// an ASCII field: controls, DEL and anything non-ASCII. Printable
// characters are kept as the sender wrote them.
func xtextUnsafe(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c >= 0x7f {
			fmt.Fprintf(&b, "+%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// textValue makes s safe as field text: invalid UTF-8 and control
// characters replaced, runs of white space collapsed, non-ASCII replaced by
// "?" unless global, and cut to maxValue octets.
func textValue(s string, global bool) string {
	s = cleanText(s)
	if !global {
		s = strings.Map(func(c rune) rune {
			if c >= 0x80 {
				return '?'
			}
			return c
		}, s)
	}
	return truncate(strings.Join(strings.Fields(s), " "), maxValue)
}

// cleanText replaces invalid UTF-8 and control characters (which could end
// a field or forge one) with spaces.
func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(c rune) rune {
		if c < ' ' || c == 0x7f || (c >= 0x80 && c < 0xa0) {
			return ' '
		}
		return c
	}, s)
}

// truncate cuts s to at most n octets without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// encodeWords returns s as a header value: unchanged when it is ASCII,
// otherwise as RFC 2047 encoded-words, which are valid with or without
// SMTPUTF8. The caller's text is cleaned and cut to maxSubject first.
func encodeWords(s string) string {
	s = truncate(strings.Join(strings.Fields(cleanText(s)), " "), maxSubject)
	if isASCII(s) {
		return s
	}
	return mime.QEncoding.Encode("utf-8", s)
}

// field writes "Name: value" CRLF, folded at spaces (RFC 5322 §2.2.3) so
// that lines stay near foldAt octets and never pass maxLine; a word too
// long for a line is split, which costs a space in it when unfolded. The
// value must already be free of control characters.
func field(w *bytes.Buffer, name, value string) {
	w.WriteString(name)
	w.WriteString(":")
	n := len(name) + 1
	for _, word := range strings.Fields(value) {
		if n+1+len(word) > foldAt && n > len(name)+1 {
			w.WriteString("\r\n")
			n = 0
		}
		for len(word) > maxLine-n-1 {
			cut := truncate(word, maxLine-n-1)
			if cut == "" {
				cut = word[:1]
			}
			w.WriteString(" ")
			w.WriteString(cut)
			w.WriteString("\r\n")
			word, n = word[len(cut):], 0
		}
		w.WriteString(" ")
		w.WriteString(word)
		n += 1 + len(word)
	}
	w.WriteString("\r\n")
}

// rawField writes "Name: value" CRLF unchanged when it fits on one line
// (an address or msg-id, whose spaces must not change), else folds it.
func rawField(w *bytes.Buffer, name, value string) {
	if len(name)+2+len(value) > maxLine {
		field(w, name, value)
		return
	}
	w.WriteString(name + ": " + value + "\r\n")
}

// date formats t as an RFC 5322 §3.3 date-time.
func date(t time.Time) string { return t.Format(time.RFC1123Z) }

// hasNonASCIIAddress reports whether any address of rc needs UTF-8.
func hasNonASCIIAddress(rc Recipient) bool {
	return !isASCII(rc.FinalRecipient) || !isASCII(rc.EnvelopeRecipient) || !isASCII(rc.OriginalRecipient)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// safeHeaderText reports whether s has no control characters and is valid
// UTF-8: it can be put in a header field as it is.
func safeHeaderText(s string) bool {
	return utf8.ValidString(s) && cleanText(s) == s
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isAtext is RFC 5322 §3.2.3 atext (plus '.' handled by the caller).
func isAtext(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || isDigit(c) || strings.IndexByte("!#$%&'*+-/=?^_`{|}~.", c) >= 0
}

// isAtom reports whether s is a non-empty run of atext.
func isAtom(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAtext(s[i]) || s[i] == '.' {
			return false
		}
	}
	return true
}
