package smtpout

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"hubd/hub"
	"hubd/hub/delivery"
)

// mailParams decides whether this message may go to this server at all and
// with which MAIL FROM parameters. A non-nil Result refuses the message
// before anything is sent, for every recipient.
func (tr *transaction) mailParams(ctx context.Context, c *conn, env *hub.Envelope) (string, *delivery.Result) {
	refuse := func(r delivery.Result) (string, *delivery.Result) { return "", &r }
	if !validPath(env.From) {
		return refuse(tr.failed(550, "5.1.7", "invalid sender address"))
	}
	// RFC 6531 §3.2: an SMTPUTF8 message may only go to a server with
	// SMTPUTF8, and there is no downgrade. The text names what needs it, so
	// that the DSN tells a non-ASCII address from a non-ASCII header.
	why, err := tr.needsSMTPUTF8(env)
	if err != nil {
		return refuse(tr.deferred(451, "4.3.0", "cannot read queued message: "+err.Error()))
	}
	smtputf8 := why != ""
	if smtputf8 && !c.has("SMTPUTF8") {
		return refuse(tr.failed(553, "5.6.7", tr.target.host+" does not support SMTPUTF8, needed for "+why))
	}
	body, res := tr.bodyType(ctx, c, env)
	if res != nil {
		return refuse(*res)
	}
	// RFC 1870 §6.1: do not send what the server said it will not take.
	// The size is what goes out: the converted message's when converted.
	size := tr.size()
	if limit := c.maxSize(); limit > 0 && size > limit {
		return refuse(tr.failed(552, "5.3.4",
			fmt.Sprintf("message size %d exceeds the %d bytes %s accepts", size, limit, tr.target.host)))
	}

	var b strings.Builder
	if c.has("SIZE") && size > 0 {
		fmt.Fprintf(&b, " SIZE=%d", size) // RFC 1870
	}
	if body != "" {
		b.WriteString(" BODY=" + body) // RFC 6152
	}
	// Many clients (Go's net/smtp among them) ask for SMTPUTF8 whenever it
	// is offered; the parameter is passed on when the next hop has it.
	if (smtputf8 || env.SMTPUTF8) && c.has("SMTPUTF8") {
		b.WriteString(" SMTPUTF8") // RFC 6531 §3.4
	}
	if env.RequireTLS {
		// RFC 8689 §4.2.1: only over verified TLS to a server that
		// advertises REQUIRETLS. negotiateTLS and the idle pool already
		// ensure it; this is the last line of defence.
		if !tr.pol.allows(c) || !tr.pol.requireTLS {
			return refuse(tr.requireTLSFailed("connection to " + tr.target.host + " lacks verified TLS or REQUIRETLS"))
		}
		b.WriteString(" REQUIRETLS")
	}
	if c.has("DSN") { // RFC 3461 §4: pass the DSN request on
		if env.DSNRet == "FULL" || env.DSNRet == "HDRS" {
			b.WriteString(" RET=" + env.DSNRet)
		}
		if env.DSNEnvID != "" {
			b.WriteString(" ENVID=" + xtext(env.DSNEnvID))
		}
	}
	return b.String(), nil
}

// needsSMTPUTF8 says why the message cannot travel without SMTPUTF8, or ""
// when it can: the sender or a recipient of this attempt is non-ASCII
// (whatever the envelope says), or the client asked for SMTPUTF8 and the
// header section holds non-ASCII text. An all-ASCII message whose client
// asked for SMTPUTF8 does not need it (as Postfix's autodetection decides).
func (tr *transaction) needsSMTPUTF8(env *hub.Envelope) (string, error) {
	if strings.ContainsFunc(env.From, is8bit) {
		return "the non-ASCII sender address <" + env.From + ">", nil
	}
	for _, rc := range tr.rcpts {
		if strings.ContainsFunc(rc.Address, is8bit) {
			return "the non-ASCII recipient address <" + rc.Address + ">", nil
		}
	}
	if !env.SMTPUTF8 || tr.msg.Plain { // Plain: no octet above 0x7F anywhere in it
		return "", nil
	}
	if eight, err := tr.scan8bit(true); err != nil || !eight {
		return "", err
	}
	return "the message's non-ASCII header fields (its addresses are ASCII)", nil
}

// scan8bit reports whether the message (or only its header section) holds
// a byte outside US-ASCII.
func (tr *transaction) scan8bit(headerOnly bool) (bool, error) {
	body, err := tr.msg.Open()
	if err != nil {
		return false, err
	}
	defer body.Close()
	br := bufio.NewReaderSize(body, 32<<10)
	for {
		line, err := br.ReadSlice('\n')
		if headerOnly && err == nil && len(bytes.TrimRight(line, "\r\n")) == 0 {
			return false, nil // end of the header section
		}
		if bytes.ContainsFunc(line, is8bit) {
			return true, nil
		}
		switch err {
		case nil, bufio.ErrBufferFull:
		case io.EOF:
			return false, nil
		default:
			return false, err
		}
	}
}

// is8bit is true for every rune not in US-ASCII; a byte that is not valid
// UTF-8 decodes as utf8.RuneError, which is too.
func is8bit(r rune) bool { return r >= utf8.RuneSelf }

// rcptParams are the RFC 3461 NOTIFY and ORCPT parameters, when the server
// has DSN.
func (tr *transaction) rcptParams(c *conn, rc delivery.Recipient) string {
	if !c.has("DSN") {
		return ""
	}
	var b strings.Builder
	if len(rc.DSN.Notify) > 0 {
		b.WriteString(" NOTIFY=" + strings.ToUpper(strings.Join(rc.DSN.Notify, ",")))
	}
	if typ, addr, ok := strings.Cut(rc.DSN.ORCPT, ";"); ok && typ != "" && addr != "" {
		b.WriteString(" ORCPT=" + typ + ";" + xtext(addr))
	}
	return b.String()
}

// xtext encodes per RFC 3461 §4: '+', '=', and anything outside "!".."~"
// become "+HH".
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch < '!' || ch > '~' || ch == '+' || ch == '=' {
			fmt.Fprintf(&b, "+%02X", ch)
			continue
		}
		b.WriteByte(ch)
	}
	return b.String()
}

// validPath refuses addresses that would break the command line.
func validPath(s string) bool {
	return !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '<' || r == '>' })
}
