package connectors

// The SMTP state machine of a connection, and every reply that follows
// from it. go-smtp has a state machine of its own, but its answers to
// commands out of sequence are 502 "not implemented" and its texts are not
// ours, so the command filter (hardening.go) keeps the state here and
// answers such commands itself, before go-smtp sees them. go-smtp is then
// only ever handed commands that are in sequence, and the replies it writes
// for them pass through replyFor (replies.go), which puts ours in their
// place.
//
// The states (RFC 5321 §3.3, §4.1.4; RFC 3030 §2; RFC 3207 §4.2):
//
//	greeted   no / HELO / EHLO. MAIL, RCPT, DATA, BDAT and AUTH before it:
//	          "503 5.5.1 Send EHLO or HELO first" (AUTH: EHLO, RFC 4954 §4).
//	          STARTTLS forgets it: MAIL right after STARTTLS is out of
//	          sequence until the client says EHLO again.
//	mail      a MAIL was accepted. MAIL again: "503 5.5.1 Nested MAIL
//	          command"; RCPT without it: "503 5.5.1 Need MAIL command";
//	          AUTH inside it: 503 5.5.1 (RFC 4954 §4). STARTTLS inside it
//	          is allowed and discards it (RFC 3207 §4.2).
//	rcpts     RCPTs tried and accepted. DATA or BDAT with none accepted:
//	          "503 5.5.1 Need RCPT command" when none was tried, "554 5.5.1
//	          No valid recipients" when all were refused (§3.3 allows both).
//	bdat      BDAT chunks accepted, LAST not yet seen. DATA, MAIL and RCPT
//	          meanwhile: 503 5.5.1 (RFC 3030 §2: BDAT and DATA do not mix).
//	          A BDAT refused here has its chunk read and discarded first, so
//	          the chunk's bytes are never read as commands.
//	authed    AUTH succeeded; AUTH again: "503 5.5.1 Already authenticated".
//
// The state advances only on go-smtp's final reply to a command the filter
// passed on: 250 to EHLO/HELO greets (and, like RSET, ends a transaction),
// 250 to MAIL opens a transaction, 2xx to RCPT counts a recipient, the
// reply after a message (DATA content or BDAT LAST, whatever its code) ends
// the transaction, as does any refusal of a BDAT chunk (go-smtp resets
// then). This is sound because go-smtp answers each command before it reads
// the next: when the filter reads a command, the reply to the one before has
// been written.
//
// Parameters (RFC 5321 §4.1.1.11, §4.1.2): MAIL takes SIZE, BODY, SMTPUTF8,
// REQUIRETLS, RET, ENVID and AUTH; RCPT takes NOTIFY and ORCPT. Any other
// keyword, including those of extensions go-smtp knows but hubd does not
// offer (RRVS, BY, MT-PRIORITY): "555 5.5.4 Parameter X not supported".
//
// "RCPT TO:<Postmaster>" without a domain (case-insensitive) must be
// accepted (§4.5.1). go-smtp's path parser wants a domain, so the filter
// hands it the postmaster's address (policy.Config.ResolveLocal), with
// ORCPT=rfc822;Postmaster when the client gave none, so that a DSN names
// what the client wrote.

import (
	"strings"
)

// greeting is how the client introduced itself.
type greeting int

const (
	notGreeted greeting = iota
	greetedHELO
	greetedEHLO
)

// protocol is where one connection stands in the SMTP dialogue.
// sessionConn.mu guards it.
type protocol struct {
	greeting  greeting
	mail      bool // a MAIL was accepted: a transaction is open
	utf8      bool // and its MAIL carried SMTPUTF8 (RFC 6531 §3.4)
	rcptTried int  // RCPT commands of the transaction
	rcpts     int  // RCPT commands of the transaction that were accepted
	bdat      bool // BDAT chunks accepted, LAST not yet
	authed    bool // AUTH succeeded (RFC 4954 §4: no second AUTH)

	pending command // the command handed to go-smtp whose final reply is awaited
}

// command is one command handed to go-smtp, as far as its reply needs it.
type command struct {
	verb string
	path string // MAIL, RCPT: the path as given; EHLO, HELO: the client's name (for the reply text)
	utf8 bool   // MAIL: carries SMTPUTF8
	last bool   // BDAT: LAST
	size int    // BDAT: chunk size
	data bool   // DATA: 354 was sent, the message follows
}

// endTransaction forgets the mail transaction (RSET, a new EHLO, the end of
// a message).
func (p *protocol) endTransaction() {
	p.mail, p.utf8, p.rcptTried, p.rcpts, p.bdat = false, false, 0, 0, false
}

// sequenceError returns the reply to verb when it is out of sequence now,
// or "". Syntax is checked by the caller.
func (p *protocol) sequenceError(verb string) string {
	switch verb {
	case "MAIL":
		switch {
		case p.greeting == notGreeted:
			return "503 5.5.1 Send EHLO or HELO first"
		case p.bdat:
			return "503 5.5.1 BDAT transfer in progress, send BDAT LAST or RSET"
		case p.mail:
			// The client must RSET or finish the transaction first.
			return "503 5.5.1 Nested MAIL command"
		}
	case "RCPT":
		switch {
		case p.bdat:
			return "503 5.5.1 BDAT transfer in progress, send BDAT LAST or RSET"
		case !p.mail:
			return "503 5.5.1 Need MAIL command"
		}
	case "DATA", "BDAT":
		switch {
		case verb == "DATA" && p.bdat:
			return "503 5.5.1 DATA not allowed during a BDAT transfer"
		case p.bdat:
			return "" // the next chunk
		case !p.mail:
			return "503 5.5.1 Need MAIL command"
		case p.rcpts == 0 && p.rcptTried > 0:
			return "554 5.5.1 No valid recipients"
		case p.rcpts == 0:
			return "503 5.5.1 Need RCPT command"
		}
	case "AUTH":
		switch {
		case p.greeting != greetedEHLO:
			return "503 5.5.1 Send EHLO first"
		case p.mail || p.bdat:
			return "503 5.5.1 AUTH not permitted during a mail transaction"
		case p.authed:
			return "503 5.5.1 Already authenticated"
		}
	}
	return ""
}

// replied advances the state on a reply (code) to the pending command.
// An intermediate reply (354 to DATA, 334 to AUTH) leaves it pending: the
// final reply is still to come.
func (p *protocol) replied(code int) {
	cmd := p.pending
	if code/100 == 3 {
		p.pending.data = cmd.verb == "DATA"
		return
	}
	p.pending = command{}
	switch cmd.verb {
	case "EHLO", "HELO":
		if code == 250 {
			p.greeting = greetedHELO
			if cmd.verb == "EHLO" {
				p.greeting = greetedEHLO
			}
			p.endTransaction() // RFC 5321 §4.1.4: as if RSET
		}
	case "RSET":
		p.endTransaction()
	case "AUTH":
		p.authed = p.authed || code == 235
	case "MAIL":
		if code == 250 {
			p.endTransaction()
			p.mail, p.utf8 = true, cmd.utf8
		}
	case "RCPT":
		p.rcptTried++
		if code/100 == 2 {
			p.rcpts++
		}
	case "DATA":
		if cmd.data {
			p.endTransaction()
		}
	case "BDAT":
		if code/100 == 2 && !cmd.last {
			p.bdat = true
		} else {
			p.endTransaction()
		}
	}
}

// Parameters hubd takes (RFC 5321 §4.1.1.11: others get 555).
var (
	mailParams = map[string]bool{"SIZE": true, "BODY": true, "SMTPUTF8": true, "REQUIRETLS": true,
		"RET": true, "ENVID": true, "AUTH": true}
	rcptParams = map[string]bool{"NOTIFY": true, "ORCPT": true}
)

// splitPath splits a MAIL or RCPT argument after "FROM:" / "TO:" into the
// path and the parameters (RFC 5321 §4.1.2). A bracketed path ends at the
// first ">" outside a quoted string; ok is false when it does not end.
func splitPath(arg string) (path, params string, ok bool) {
	arg = strings.TrimLeft(arg, " ")
	if !strings.HasPrefix(arg, "<") {
		// Not RFC 5321, but go-smtp takes a bare address; so do we.
		p, rest, _ := strings.Cut(arg, " ")
		return p, rest, p != ""
	}
	quoted := false
	for i := 1; i < len(arg); i++ {
		switch arg[i] {
		case '\\':
			i++
		case '"':
			quoted = !quoted
		case '>':
			if !quoted {
				return arg[:i+1], arg[i+1:], true
			}
		}
	}
	return "", "", false
}

// unsupportedParam returns the first parameter keyword of params not in
// known, or "".
func unsupportedParam(params string, known map[string]bool) string {
	for _, p := range strings.Fields(params) {
		k, _, _ := strings.Cut(p, "=")
		if !known[strings.ToUpper(k)] {
			return k
		}
	}
	return ""
}

// isBarePostmaster reports whether a RCPT path is "<Postmaster>" with no
// domain, which every SMTP server must accept (RFC 5321 §4.5.1).
func isBarePostmaster(path string) bool {
	return strings.EqualFold(path, "<postmaster>")
}
