package message

import (
	"crypto/tls"
	"strings"
	"time"
	"unicode/utf8"
)

// Trace is what a receive connector knows about one message's arrival, for
// its Received: field (RFC 5321 §4.4).
type Trace struct {
	FromHelo string // the EHLO/HELO argument, as the client gave it
	FromIP   string // the client's address: "192.0.2.1" or "2001:db8::1" (brackets and "IPv6:" added here)
	FromRDNS string // the client's verified reverse DNS name, or ""
	By       string // this host's name (the connector's FQDN)
	With     string // RFC 3848 protocol keyword: ESMTP, ESMTPS, ESMTPA, ESMTPSA, LMTP, SMTP...
	ID       string // the queue ID, or ""
	For      string // the one recipient, without brackets, or "" (never list several: privacy)
	UTF8     bool   // the message came with SMTPUTF8: For keeps its UTF-8 (RFC 6531 §3.7.3, RFC 6532)
	TLS      string // TLS details as TLSDetails gives them ("TLS1.3 with cipher X"), or ""
	Time     time.Time
}

// maxTraceValue bounds each value taken into the field (a domain is at most
// 255 octets, RFC 5321 §4.5.3.1.2) so that no line outgrows 998 octets
// (RFC 5322 §2.1.1) even if a client sends a long HELO argument.
const maxTraceValue = 255

// foldWidth is where ReceivedHeader folds (RFC 5322 §2.1.1 "SHOULD be no more
// than 78 characters").
const foldWidth = 78

// ReceivedHeader builds the Received: field for t, folded at 78 columns and
// CRLF-terminated:
//
//	Received: from helo (rdns [ip]) (using TLS1.3 with cipher X)
//		by by with With id ID for <for>; date
//
// The clauses follow RFC 5321 §4.4 (Stamp = From-domain By-domain Opt-info
// [CFWS] ";" FWS date-time); the TLS comment sits after the From clause, as
// Postfix places it. Empty clauses are left out. Values are not trusted: any
// character that could end a comment, a clause or the field (space, control
// characters, "()<>;\\\"", non-ASCII) becomes "?". A missing HELO is replaced
// by the address literal. A zero Time means now.
func ReceivedHeader(t Trace) string {
	var tokens []string
	ip := addressLiteral(clean(t.FromIP))
	helo := clean(t.FromHelo)
	if helo == "" {
		helo = ip
	}
	if helo != "" {
		tokens = append(tokens, "from "+helo)
		if info := strings.TrimSpace(clean(t.FromRDNS) + " " + ip); info != "" {
			tokens = append(tokens, "("+info+")")
		}
	}
	if t.TLS != "" {
		tokens = append(tokens, "(using "+cleanText(t.TLS)+")")
	}
	if by := clean(t.By); by != "" {
		tokens = append(tokens, "by "+by)
	}
	if with := clean(t.With); with != "" {
		tokens = append(tokens, "with "+with)
	}
	if id := clean(t.ID); id != "" {
		tokens = append(tokens, "id "+id)
	}
	if rcpt := cleanAddress(t.For, t.UTF8); rcpt != "" {
		tokens = append(tokens, "for <"+rcpt+">")
	}
	when := t.Time
	if when.IsZero() {
		when = time.Now()
	}
	if len(tokens) > 0 {
		tokens[len(tokens)-1] += ";"
	} else {
		tokens = append(tokens, ";")
	}
	tokens = append(tokens, when.Format(time.RFC1123Z))
	return fold("Received:", tokens)
}

// fold joins tokens after name with single spaces, starting a new line
// (CRLF TAB, RFC 5322 §2.2.3) before a token that would pass foldWidth. A tab
// is counted as eight columns. A token too long for a line on its own is
// split at its spaces.
func fold(name string, tokens []string) string {
	const indent = 8
	var b strings.Builder
	b.WriteString(name)
	col := len(name)
	put := func(word string) {
		if col > indent && col+1+len(word) > foldWidth {
			b.WriteString("\r\n\t")
			col = indent
		} else {
			b.WriteByte(' ')
			col++
		}
		b.WriteString(word)
		col += len(word)
	}
	for _, tok := range tokens {
		if indent+len(tok) <= foldWidth || !strings.Contains(tok, " ") {
			put(tok)
			continue
		}
		for w := range strings.SplitSeq(tok, " ") {
			put(w)
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// clean makes one value safe as a single token of the field: printable
// US-ASCII only, and none of the characters that end a comment, an angle
// address or a clause.
func clean(s string) string {
	if len(s) > maxTraceValue {
		s = s[:maxTraceValue]
	}
	i := 0
	for i < len(s) && !unsafeInTrace(s[i]) {
		i++
	}
	if i == len(s) {
		return s // the usual case: nothing to replace
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if unsafeInTrace(b[i]) {
			b[i] = '?'
		}
	}
	return string(b)
}

// unsafeInTrace reports whether c may not stand in a token of a trace
// field (clean).
func unsafeInTrace(c byte) bool {
	return c <= ' ' || c >= 127 || strings.IndexByte("()<>;\\\"", c) >= 0
}

// cleanAddress is clean for the For clause: in a message sent with
// SMTPUTF8 the header may carry UTF-8 (RFC 6532 §3.2), so a valid UTF-8
// address keeps its non-ASCII characters (C1 controls and invalid bytes
// still become "?"); otherwise it is clean.
func cleanAddress(s string, utf8OK bool) string {
	if !utf8OK || !utf8.ValidString(s) {
		return clean(s)
	}
	var b strings.Builder
	for i, r := range s {
		if i+utf8.RuneLen(r) > maxTraceValue {
			break
		}
		switch {
		case r < utf8.RuneSelf && unsafeInTrace(byte(r)):
			b.WriteByte('?')
		case r < utf8.RuneSelf:
			b.WriteByte(byte(r))
		case r < 0xA0:
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// cleanText is clean for text that may hold single spaces (the TLS comment).
func cleanText(s string) string {
	words := strings.Fields(s)
	for i, w := range words {
		words[i] = clean(w)
	}
	return strings.Join(words, " ")
}

// addressLiteral writes an IP address as RFC 5321 §4.1.3 does: [192.0.2.1],
// [IPv6:2001:db8::1]. An empty address stays empty.
func addressLiteral(ip string) string {
	ip = strings.TrimSuffix(strings.TrimPrefix(ip, "["), "]")
	switch {
	case ip == "":
		return ""
	case strings.Contains(ip, ":") && !strings.HasPrefix(strings.ToLower(ip), "ipv6:"):
		return "[IPv6:" + ip + "]"
	}
	return "[" + ip + "]"
}

// TLSDetails describes a TLS connection for Trace.TLS:
// "TLS1.3 with cipher TLS_AES_128_GCM_SHA256". It returns "" for nil or an
// unfinished handshake.
func TLSDetails(cs *tls.ConnectionState) string {
	if cs == nil || !cs.HandshakeComplete {
		return ""
	}
	version := strings.ReplaceAll(tls.VersionName(cs.Version), " ", "")
	return version + " with cipher " + tls.CipherSuiteName(cs.CipherSuite)
}
