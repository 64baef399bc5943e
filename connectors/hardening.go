package connectors

// The command filter: every command line a client sends is checked here
// before go-smtp sees it (see sessionConn for how the filter sits in the
// stream). It keeps the SMTP state machine and answers every command out of
// sequence or with bad syntax itself (protocol.go); what it hands go-smtp
// is a command that is in sequence, and go-smtp's reply to it is put in our
// words (replies.go). The rules, per receive connector:
//
//   - max_command_line_length, CRLF included (RFC 5321 §4.5.3.1.4 sets 512;
//     extensions make lines longer): a longer line is read to its end and
//     discarded, answered "500 5.5.2 Line too long", and the session goes
//     on (go-smtp would close the connection).
//   - A NUL byte anywhere in a command line: "500 5.5.2 Syntax error, NUL
//     in command".
//   - 8-bit bytes: only in MAIL with the SMTPUTF8 parameter and in RCPT of
//     a transaction so opened (RFC 6531 §3.4); elsewhere "500 5.5.2 Syntax
//     error, 8-bit data in command without SMTPUTF8".
//   - An empty line, a mangled one or an unknown verb (LHLO included):
//     "500 5.5.2 Syntax error, command unrecognized" (RFC 5321 §4.2.4),
//     answered here so that go-smtp's own error counter (which closes after
//     3) never runs. SEND, SOML, SAML, TURN: "502 5.5.1 Command not
//     implemented".
//   - Arguments: EHLO/HELO need one ("501 5.5.4 Syntax: EHLO hostname"),
//     and with require_ehlo_domain it must be a domain name or an address
//     literal (RFC 5321 §4.1.1.1, §4.1.3): "501 5.5.4 Invalid domain
//     name". DATA, RSET and QUIT take none; BDAT takes a size and LAST;
//     AUTH takes a mechanism (501 5.5.4). MAIL and RCPT need their
//     FROM:/TO: path (501 5.5.2) and only the parameters hubd offers (555
//     5.5.4, protocol.go).
//   - max_commands_before_mail: the command lines of a connection before its
//     first MAIL (EHLO, STARTTLS, AUTH, NOOP, RSET, VRFY, ...) are counted;
//     the one past the limit gets "421 4.7.0 Too many commands without
//     MAIL" and the connection is closed.
//   - AUTH before TLS on a connector without allow_insecure_auth: "530 5.7.0
//     Must issue a STARTTLS command first" (RFC 3207 §4, RFC 4954 §4).
//   - VRFY and EXPN (RFC 5321 §3.5): "252 2.5.0" unless allow_vrfy /
//     allow_expn; then 250 for a known local address (EXPN lists a
//     distribution list's members or an alias's targets) and "550 5.1.1
//     User unknown" otherwise.
//   - HELP: "214 2.0.0" and a pointer to RFC 5321.
//   - STARTTLS (RFC 3207), see sessionConn.startTLS.
//
// max_protocol_errors counts every 500-504, 555 and 530 reply of the
// connection, whoever writes it (the filter, go-smtp, the session); the
// error past the limit is answered "421 4.7.0 Too many errors" and the
// connection closed. Each refusal here logs one line, and the ones that earn
// it are tarpitted like the session's (tarpit.go).

import (
	"net/netip"
	"strconv"
	"strings"

	"hubd/policy"
)

// filterState is the command filter's memory of the connection.
type filterState struct {
	chunk    int  // BDAT octets still to pass through raw
	commands int  // command lines before the first MAIL
	sawMail  bool // a MAIL command has been seen
}

// afterTLS forgets what STARTTLS discards; the command count before MAIL
// is the connection's and stays.
func (f *filterState) afterTLS() { f.chunk = 0 }

// command checks one command line (CRLF included) and either returns the
// line to hand to go-smtp (pass: true; the line itself, or RCPT
// <Postmaster> with the postmaster's address) or answers it itself.
func (c *sessionConn) command(line []byte, tooLong bool) (out []byte, pass bool) {
	rc := c.c.rc
	f := &c.filter
	if !f.sawMail {
		f.commands++
		if rc.MaxCommandsBeforeMail > 0 && f.commands > rc.MaxCommandsBeforeMail {
			c.refuseCommand("", "421 4.7.0 Too many commands without MAIL", true)
			return nil, false
		}
	}
	if tooLong {
		c.refuseCommand("", "500 5.5.2 Line too long", false)
		return nil, false
	}
	text := strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r")
	if strings.IndexByte(text, 0) >= 0 {
		c.refuseCommand("", "500 5.5.2 Syntax error, NUL in command", false)
		return nil, false
	}
	upper := strings.ToUpper(text)
	if strings.HasPrefix(upper, "STARTTLS") {
		c.startTLSCommand(upper)
		return nil, false
	}
	verb, arg, ok := splitCommand(text)
	if !ok {
		c.refuseCommand("", "500 5.5.2 Syntax error, command unrecognized", false)
		return nil, false
	}
	if verb == "MAIL" {
		f.sawMail = true
	}
	if !ascii(text) && !c.eightBitAllowed(verb, arg) {
		c.refuseCommand(verb, "500 5.5.2 Syntax error, 8-bit data in command without SMTPUTF8", false)
		return nil, false
	}
	c.mu.Lock()
	outOfSequence := c.reply.proto.sequenceError(verb)
	c.mu.Unlock()
	cmd := command{verb: verb}
	refuse := func(r string) ([]byte, bool) {
		c.refuseCommand(verb, r, false)
		return nil, false
	}
	switch verb {
	case "EHLO", "HELO":
		switch {
		case arg == "":
			return refuse("501 5.5.4 Syntax: " + verb + " hostname")
		case rc.RequireEHLODomain && !validHelo(firstWord(arg)):
			return refuse("501 5.5.4 Invalid domain name")
		}
		cmd.path = firstWord(arg)
	case "MAIL", "RCPT":
		if outOfSequence != "" {
			return refuse(outOfSequence)
		}
		var r string
		if line, cmd, r = c.pathCommand(verb, arg, line); r != "" {
			return refuse(r)
		}
	case "DATA":
		switch {
		case outOfSequence != "":
			return refuse(outOfSequence)
		case arg != "":
			return refuse("501 5.5.4 Syntax: DATA takes no parameters")
		}
	case "BDAT":
		n, last, ok := bdatArgs(arg)
		if !ok {
			// Without a size the chunk cannot be told from commands; go-smtp
			// does not read one either.
			return refuse("501 5.5.4 Syntax: BDAT chunk-size [LAST]")
		}
		if outOfSequence != "" {
			// RFC 3030 §2: the chunk follows its command, refused or not.
			c.startRequest(chunkAllowance(n))
			if _, err := c.in.Discard(n); err != nil {
				return nil, false
			}
			return refuse(outOfSequence)
		}
		f.chunk = n
		c.startRequest(chunkAllowance(n))
		cmd.size, cmd.last = n, last
	case "AUTH":
		c.mu.Lock()
		allowed := c.authAllowed()
		c.mu.Unlock()
		switch {
		case !allowed:
			return refuse("530 5.7.0 Must issue a STARTTLS command first")
		case outOfSequence != "":
			return refuse(outOfSequence)
		case arg == "":
			return refuse("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
		}
	case "RSET", "QUIT":
		if arg != "" {
			return refuse("501 5.5.4 Syntax: " + verb + " takes no parameters")
		}
		if verb == "QUIT" {
			c.quit.Store(true)
		}
	case "NOOP":
	case "VRFY":
		c.answerVRFY(arg)
		return nil, false
	case "EXPN":
		c.answerEXPN(arg)
		return nil, false
	case "HELP":
		c.answer("214 2.0.0 See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)")
		return nil, false
	case "SEND", "SOML", "SAML", "TURN":
		// RFC 5321 §4.2.4: 502 for commands recognized but not implemented.
		return refuse("502 5.5.1 Command not implemented")
	default:
		return refuse("500 5.5.2 Syntax error, command unrecognized")
	}
	c.mu.Lock()
	c.reply.proto.pending = cmd
	if verb == "EHLO" {
		c.reply.ehloFirst = false
	}
	c.mu.Unlock()
	return line, true
}

// pathCommand checks the argument of MAIL or RCPT (RFC 5321 §4.1.1.2,
// §4.1.1.3): the prefix, the path, the parameters' keywords. It returns
// the line to hand go-smtp, the command for its reply, or a refusal.
func (c *sessionConn) pathCommand(verb, arg string, line []byte) ([]byte, command, string) {
	cmd := command{verb: verb}
	prefix, known := "FROM:", mailParams
	if verb == "RCPT" {
		prefix, known = "TO:", rcptParams
	}
	rest, ok := cutPrefixFold(arg, prefix)
	if !ok {
		return nil, cmd, "501 5.5.2 Syntax: " + verb + " " + prefix + "<address> [parameters]"
	}
	path, params, ok := splitPath(rest)
	if !ok {
		return nil, cmd, "501 5.5.2 Syntax: " + verb + " " + prefix + "<address> [parameters]"
	}
	if k := unsupportedParam(params, known); k != "" {
		return nil, cmd, "555 5.5.4 Parameter " + k + " not supported"
	}
	cmd.path = path
	if verb == "MAIL" {
		cmd.utf8 = hasParam(arg, "SMTPUTF8")
	}
	if verb == "RCPT" && isBarePostmaster(path) {
		addr := c.c.cfg.ResolveLocal("postmaster")
		if addr == "" {
			// The configuration names no postmaster (hubd check warns).
			return nil, cmd, "550 5.1.1 User unknown"
		}
		if !hasParam(params, "ORCPT") {
			params += " ORCPT=rfc822;" + path[1:len(path)-1]
		}
		line = []byte("RCPT TO:<" + addr + ">" + params + "\r\n")
	}
	return line, cmd, ""
}

// refuseCommand answers a command the filter refuses, logs it, tarpits it
// when it earns that (tarpit.go), and closes the connection after the reply
// when closing.
func (c *sessionConn) refuseCommand(verb, r string, closing bool) {
	if closing {
		c.closeAfterWrite.Store(true)
		c.state.log.Info("refused", "command", verb, "reply", r, "closing", true)
		c.answer(r)
		return
	}
	c.state.log.Info("refused", "command", verb, "reply", r)
	if pr := parseReply(r); pr != nil && replyEarnsTarpit(pr) {
		c.tarpit(verb, c.c.rc.TarpitInterval, pr)
	}
	c.answer(r)
}

// parseReply parses "code x.y.z text" as the filter writes its replies.
func parseReply(r string) *policy.Reply {
	code, rest, _ := strings.Cut(r, " ")
	enhanced, text, _ := strings.Cut(rest, " ")
	n, err := strconv.Atoi(code)
	if err != nil || strings.Count(enhanced, ".") != 2 {
		return nil
	}
	return reply(n, enhanced, text)
}

// startTLSCommand handles STARTTLS (RFC 3207 §4); go-smtp never sees it.
func (c *sessionConn) startTLSCommand(upper string) {
	c.mu.Lock()
	offered, already := c.c.tls != nil && c.c.rc.TLS.Mode == policy.TLSStartTLS, c.tlsConn != nil
	c.mu.Unlock()
	switch {
	case upper != "STARTTLS":
		c.refuseCommand("STARTTLS", "501 5.5.4 Syntax error, no parameters allowed", false)
	case already:
		c.refuseCommand("STARTTLS", "503 5.5.1 Already running TLS", false)
	case !offered:
		c.refuseCommand("STARTTLS", "502 5.5.1 STARTTLS not supported", false)
	default:
		c.answer("220 2.0.0 Ready to start TLS")
		c.startTLS()
	}
}

// eightBitAllowed: RFC 6531 §3.4, UTF-8 in MAIL with SMTPUTF8 and in the
// RCPTs of its transaction.
func (c *sessionConn) eightBitAllowed(verb, arg string) bool {
	switch verb {
	case "MAIL":
		return hasParam(arg, "SMTPUTF8")
	case "RCPT":
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.reply.proto.utf8
	}
	return false
}

// answerVRFY implements VRFY (RFC 5321 §3.5.1, §4.1.1.6).
func (c *sessionConn) answerVRFY(arg string) {
	if !c.c.rc.AllowVRFY {
		// §3.5.3: 252, "cannot verify, but will accept" - nothing told.
		c.answer("252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery")
		return
	}
	addr := bareAddress(arg)
	if addr == "" {
		c.refuseCommand("VRFY", "501 5.5.4 Syntax: VRFY <address>", false)
		return
	}
	key := c.c.cfg.ResolveLocal(addr)
	if key == "" {
		c.refuseCommand("VRFY", "550 5.1.1 User unknown", false)
		return
	}
	c.answer("250 2.1.5 <" + key + ">")
}

// answerEXPN implements EXPN (RFC 5321 §3.5.2, §4.1.1.7).
func (c *sessionConn) answerEXPN(arg string) {
	if !c.c.rc.AllowEXPN {
		c.answer("252 2.5.0 Cannot EXPN list, but will accept message and attempt delivery")
		return
	}
	addr := bareAddress(arg)
	if addr == "" {
		c.refuseCommand("EXPN", "501 5.5.4 Syntax: EXPN <address>", false)
		return
	}
	cfg := c.c.cfg
	key := cfg.ResolveLocal(addr)
	if key == "" {
		c.refuseCommand("EXPN", "550 5.1.1 User unknown", false)
		return
	}
	members := []string{key}
	if l := cfg.ListFor(key); l != nil {
		members = l.Members
	} else if a := cfg.AliasFor(key); a != nil {
		members = a.To
	}
	if len(members) == 0 {
		c.answer("250 2.1.5 <" + key + "> has no members")
		return
	}
	var b strings.Builder
	for i, m := range members {
		sep := "-"
		if i == len(members)-1 {
			sep = " "
		}
		b.WriteString("250" + sep + "2.1.5 <" + m + ">\r\n")
	}
	c.Write([]byte(b.String()))
}

// splitCommand splits a command line as go-smtp's parser does: a four
// letter verb, then a space and the argument.
func splitCommand(text string) (verb, arg string, ok bool) {
	switch l := len(text); {
	case l < 4 || l == 5:
		return "", "", false
	case l > 5 && text[4] != ' ':
		return "", "", false
	}
	verb = strings.ToUpper(text[:4])
	for i := range 4 {
		if b := verb[i]; b < 'A' || b > 'Z' {
			return "", "", false
		}
	}
	if len(text) > 5 {
		arg = strings.TrimSpace(text[5:])
	}
	return verb, arg, true
}

// ascii reports whether s has only 7-bit bytes.
func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// hasParam reports whether a MAIL/RCPT argument carries the ESMTP
// parameter name (after the path, RFC 5321 §4.1.2).
func hasParam(arg, name string) bool {
	rest := arg
	if i := strings.LastIndexByte(arg, '>'); i >= 0 {
		rest = arg[i+1:]
	}
	for _, p := range strings.Fields(rest) {
		k, _, _ := strings.Cut(p, "=")
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// bdatArgs parses "BDAT chunk-size [LAST]" (RFC 3030 §2) as go-smtp does.
func bdatArgs(arg string) (size int, last, ok bool) {
	f := strings.Fields(arg)
	if len(f) == 0 || len(f) > 2 || (len(f) == 2 && !strings.EqualFold(f[1], "LAST")) {
		return 0, false, false
	}
	n, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil {
		return 0, false, false
	}
	return int(n), len(f) == 2, true
}

// cutPrefixFold is strings.CutPrefix, ignoring case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return "", false
	}
	return s[len(prefix):], true
}

func firstWord(s string) string {
	if i := strings.IndexByte(s, ' '); i >= 0 {
		return s[:i]
	}
	return s
}

// bareAddress returns the address of a VRFY/EXPN argument: "<a@b>" or
// "a@b", parameters dropped.
func bareAddress(arg string) string {
	arg = strings.TrimSpace(arg)
	if strings.HasPrefix(arg, "<") {
		if i := strings.IndexByte(arg, '>'); i > 0 {
			return arg[1:i]
		}
		return ""
	}
	return firstWord(arg)
}

// validHelo reports whether s is a domain name or an address literal, as
// EHLO/HELO take (RFC 5321 §4.1.1.1, §4.1.2 Domain and address-literal).
func validHelo(s string) bool {
	if strings.HasPrefix(s, "[") {
		return validAddressLiteral(s)
	}
	return validDomain(s)
}

// validDomain: dot-separated LDH labels of 1-63 octets, not starting or
// ending with a hyphen, 253 octets at most (RFC 1035 §2.3.1, RFC 5321
// §4.1.2); a final dot is tolerated.
func validDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-') {
				return false
			}
		}
	}
	return true
}

// validAddressLiteral: "[IPv4]", "[IPv6:addr]" or a general literal
// "[tag:content]" (RFC 5321 §4.1.3).
func validAddressLiteral(s string) bool {
	if len(s) < 3 || s[0] != '[' || s[len(s)-1] != ']' {
		return false
	}
	in := s[1 : len(s)-1]
	tag, content, hasTag := strings.Cut(in, ":")
	if !hasTag {
		a, err := netip.ParseAddr(in)
		return err == nil && a.Is4()
	}
	if strings.EqualFold(tag, "IPv6") {
		a, err := netip.ParseAddr(content)
		return err == nil && a.Is6() && a.Zone() == ""
	}
	if !validDomain(tag) || strings.Contains(tag, ".") || content == "" {
		return false
	}
	for i := 0; i < len(content); i++ {
		// dcontent: %d33-90 / %d94-126
		if b := content[i]; b < 33 || b > 126 || (b >= 91 && b <= 93) {
			return false
		}
	}
	return true
}
