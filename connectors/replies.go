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
	"strconv"
	"strings"
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
