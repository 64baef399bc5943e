package connectors

// Every reply a client reads is hubd's. Three sources write replies: the
// command filter (hardening.go, protocol.go: its own texts), the session
// (session.go, data.go, auth.go: policy decisions, returned to go-smtp as
// *smtp.SMTPError and written verbatim), and go-smtp itself, for the
// commands the filter passed on. replyFor replaces the last kind:
//
//   - Success replies, by the command they answer: MAIL "250 2.1.0",
//     RCPT "250 2.1.5" (RFC 3463 §3.2: X.1.0 other address status, X.1.5
//     destination address valid), DATA "354", BDAT chunks "250 2.0.0",
//     RSET and NOOP "250 2.0.0 OK", QUIT "221 2.0.0 <fqdn> closing
//     connection" (RFC 5321 §4.2), AUTH "235 2.7.0" (RFC 4954 §6), HELO
//     "250 <fqdn> Hello <name>" without an enhanced code (RFC 2034 §3: none
//     on the HELO/EHLO replies), and the EHLO reply's first line "250-<fqdn>
//     Hello <name>" (RFC 5321 §4.1.1.1: the server's own domain first).
//     The reply to the message (DATA, BDAT LAST) is the session's.
//   - Errors go-smtp v0.25.1 still writes for commands the filter let
//     through (bad paths, bad parameter values, a message over the size
//     limit): goSMTPReplies maps each of its fixed texts to ours, with the
//     RFC 5321 code and the RFC 3463 enhanced code. TestGoSMTPTextsMapped
//     reads go-smtp's source from the module cache and fails when one of
//     its reply texts is neither mapped nor known to be unreachable, so a
//     new go-smtp version cannot put its words in our mouth unnoticed.
//
// TestReplyTable (protocol_test.go) drives every row, command × state →
// code and enhanced code, over a real connection.

import (
	"bytes"
	"strconv"
	"strings"

	"hubd/policy"
)

// goSMTPReplies maps go-smtp v0.25.1's fixed error texts, for the commands
// the filter hands it, to hubd's replies.
var goSMTPReplies = map[string]string{
	// MAIL, RCPT: path syntax (RFC 5321 §4.1.2).
	"501 5.5.2 Was expecting MAIL arg syntax of FROM:<address>": "501 5.5.2 Syntax: MAIL FROM:<address> [parameters]",
	"501 5.5.2 Was expecting RCPT arg syntax of TO:<address>":   "501 5.5.2 Syntax: RCPT TO:<address> [parameters]",
	// Parameter syntax and values (RFC 5321 §4.1.1.11; 501 5.5.4 invalid
	// command arguments, 504 5.5.4 a value not implemented).
	"501 5.5.4 Unable to parse MAIL ESMTP parameters": "501 5.5.4 Syntax error in MAIL parameters",
	"501 5.5.4 Unable to parse RCPT ESMTP parameters": "501 5.5.4 Syntax error in RCPT parameters",
	"501 5.5.4 Unable to parse SIZE as an integer":    "501 5.5.4 Syntax error in SIZE parameter",
	"501 5.5.4 Unknown BODY value":                    "501 5.5.4 BODY must be 7BIT or 8BITMIME",
	"504 5.5.4 BINARYMIME is not implemented":         "504 5.5.4 BODY=BINARYMIME not supported",
	"501 5.5.4 Unknown RET value":                     "501 5.5.4 RET must be FULL or HDRS",
	"501 5.5.4 Malformed ENVID parameter value":       "501 5.5.4 Syntax error in ENVID parameter",
	"500 5.5.4 Malformed AUTH parameter value":        "501 5.5.4 Syntax error in AUTH parameter",
	"500 5.5.4 Malformed AUTH parameter mailbox":      "501 5.5.4 Syntax error in AUTH parameter",
	"501 5.5.4 Malformed NOTIFY parameter value":      "501 5.5.4 Syntax error in NOTIFY parameter",
	"501 5.5.4 Malformed ORCPT parameter value":       "501 5.5.4 Syntax error in ORCPT parameter",
	// Parameters the filter lets through are known (protocol.go); these are
	// the fallbacks should go-smtp and the filter ever disagree.
	"500 5.5.4 Unknown MAIL FROM argument": "555 5.5.4 MAIL parameter not supported",
	"500 5.5.4 Unknown RCPT TO argument":   "555 5.5.4 RCPT parameter not supported",
	// Size (RFC 1870 §6.1, RFC 3463 X.3.4).
	"552 5.3.4 Max message size exceeded":     "552 5.3.4 Message size exceeds fixed maximum message size",
	"552 5.3.4 Maximum message size exceeded": "552 5.3.4 Message size exceeds fixed maximum message size",
	// AUTH (RFC 4954 §4, §6).
	"501 5.0.0 Negotiation cancelled": "501 5.7.0 Authentication cancelled",
	"454 4.7.0 Invalid base64 data":   "501 5.5.2 Invalid base64 data",
	// A panic in a callback.
	"421 4.0.0 Internal server error": "421 4.3.0 Internal error, closing connection",
}

// replyFor returns the line to send for go-smtp's final reply line b to
// cmd, or b itself. c.mu is held.
func (c *sessionConn) replyFor(cmd command, code int, b []byte) []byte {
	line := strings.TrimRight(string(b), "\r\n")
	if r, ok := goSMTPReplies[line]; ok {
		return []byte(r + "\r\n")
	}
	fqdn := c.c.rc.FQDN
	switch {
	case cmd.verb == "MAIL" && code == 250:
		return []byte("250 2.1.0 Sender " + cmd.path + " OK\r\n")
	case cmd.verb == "RCPT" && code == 250:
		return []byte("250 2.1.5 Recipient " + cmd.path + " OK\r\n")
	case cmd.verb == "DATA" && code == 354:
		return []byte("354 Start mail input; end with <CRLF>.<CRLF>\r\n")
	case cmd.verb == "BDAT" && code == 250 && !cmd.last:
		return []byte("250 2.0.0 " + strconv.Itoa(cmd.size) + " octets received\r\n")
	case (cmd.verb == "RSET" || cmd.verb == "NOOP") && code == 250:
		return []byte("250 2.0.0 OK\r\n")
	case cmd.verb == "QUIT" && code == 221:
		return []byte("221 2.0.0 " + fqdn + " closing connection\r\n")
	case cmd.verb == "HELO" && code == 250:
		return []byte("250 " + fqdn + " Hello " + cmd.path + "\r\n")
	case cmd.verb == "AUTH" && code == 235:
		return []byte("235 2.7.0 Authentication successful\r\n")
	}
	return b
}

// rewrite returns the bytes to send in place of b, one reply line (own:
// the filter's, sent as they are; else go-smtp's, put in our words), and
// follows the dialogue: the state machine, what the client sends next,
// protocol errors.
func (c *sessionConn) rewrite(b []byte, own bool) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.reply.greeted {
		c.reply.greeted = true
		if c.reply.swallowGreeting {
			return nil
		}
		if bytes.HasPrefix(b, []byte("220 ")) && c.banner != "" {
			return []byte("220 " + c.banner + "\r\n")
		}
	}
	if c.reason != "" {
		// We timed the read out or are shutting down: our reply, not the
		// library's (which may name internal addresses in its error text).
		return []byte(c.reason + "\r\n")
	}
	code, final := replyCode(b)
	p := &c.reply.proto
	if !own && p.pending.verb == "EHLO" && code/100 == 2 {
		return c.ehloLine(b, final)
	}
	if !final {
		return b
	}
	if !own {
		cmd := p.pending
		p.replied(code)
		b = c.replyFor(cmd, code, b)
		code, _ = replyCode(b)
		if cmd.verb == "MAIL" {
			c.countMailRefusal(code)
		}
	}
	switch code {
	case 354:
		c.reply.next = modeData
		c.body = newDotReader(c.in, &c.src, c.c.server.MaxMessageBytes, func() { c.startRequest(0) })
	case 334:
		c.reply.next = modeSASL
	default:
		c.reply.next = modeCommand
	}
	if isProtocolError(reply(code, "", "")) {
		if r := c.countProtocolError(b); r != nil {
			return r
		}
	}
	c.syncErrs()
	return b
}

// ehloLine edits one line of the EHLO reply: the first names us (RFC 5321
// §4.1.1.1), STARTTLS is ours to offer, and AUTH is hidden until TLS when
// the connector wants TLS for it (RFC 4954 §4; go-smtp is told insecure
// AUTH is fine because it never sees our TLS). c.mu is held.
func (c *sessionConn) ehloLine(b []byte, final bool) []byte {
	first := !c.reply.ehloFirst
	c.reply.ehloFirst = true
	name := c.reply.proto.pending.path
	if final {
		c.reply.proto.replied(250)
		c.reply.next = modeCommand
		c.syncErrs()
	}
	if len(b) < 4 {
		return b
	}
	if first {
		b = []byte(string(b[:4]) + c.c.rc.FQDN + " Hello " + name + "\r\n")
	}
	if !c.authAllowed() && (bytes.HasPrefix(b[4:], []byte("AUTH ")) || bytes.HasPrefix(b[4:], []byte("AUTH\r"))) {
		return nil
	}
	if first && !final && c.offerSTARTTLS() {
		return append(b, "250-STARTTLS\r\n"...)
	}
	if first && !final && c.tlsConn != nil {
		// RFC 8689 §4: REQUIRETLS is offered only on a TLS session; go-smtp
		// accepts the parameter but cannot see our TLS to advertise it.
		return append(b, "250-REQUIRETLS\r\n"...)
	}
	return b
}

// countProtocolError counts a 500-504/530 reply that the session has not
// counted itself (session.refuse counts its own) and returns the reply
// that replaces it once max_protocol_errors is exceeded. c.mu is held.
func (c *sessionConn) countProtocolError(b []byte) []byte {
	st := c.state
	st.mu.Lock()
	if st.protoErrors == c.errsSeen {
		st.protoErrors++
	}
	n := st.protoErrors
	c.errsSeen = n
	st.mu.Unlock()
	if max := c.c.rc.MaxProtocolErrors; max > 0 && n > max && !c.closeAfterWrite.Load() {
		st.log.InfoContext(st.ctx, "refused", "reply", string(bytes.TrimRight(b, "\r\n")), "closing", "too many errors")
		c.closeAfterWrite.Store(true)
		return []byte("421 4.7.0 Too many errors\r\n")
	}
	return nil
}

// countMailRefusal counts, as a refused transaction, a MAIL refusal that
// go-smtp made before asking the session (a declared SIZE over the
// connector's limit, RFC 1870 §6.1): the session counts its own. c.mu is
// held.
func (c *sessionConn) countMailRefusal(code int) {
	n := c.state.mailRefusals.Load()
	if code >= 400 && n == c.mailSeen {
		c.c.stats.refused.Add(1)
		c.c.svc.meters.transaction(c.c.rc.Name, code)
	}
	c.mailSeen = n
}

// syncErrs notes the protocol-error count as of this reply. c.mu is held.
func (c *sessionConn) syncErrs() {
	c.state.mu.Lock()
	c.errsSeen = c.state.protoErrors
	c.state.mu.Unlock()
}

// authAllowed: AUTH may be offered and used now. c.mu is held.
func (c *sessionConn) authAllowed() bool {
	return c.tlsConn != nil || c.c.rc.AllowInsecureAuth
}

// offerSTARTTLS: STARTTLS goes in the EHLO keywords. c.mu is held.
func (c *sessionConn) offerSTARTTLS() bool {
	return c.tlsConn == nil && c.c.tls != nil && c.c.rc.TLS.Mode == policy.TLSStartTLS
}

// replyCode parses the code of a reply line and whether it is the last
// line of its reply ("250 " rather than "250-").
func replyCode(b []byte) (int, bool) {
	if len(b) < 4 {
		return 0, true
	}
	n, err := strconv.Atoi(string(b[:3]))
	if err != nil {
		return 0, true
	}
	return n, b[3] != '-'
}
