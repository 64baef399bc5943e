package smtpout

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"unicode/utf8"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/policy"
)

// nextAction says what Deliver does after one transaction attempt.
type nextAction int

const (
	done       nextAction = iota // results are final for this attempt
	nextHost                     // this host was unusable: try the next one
	retryPlain                   // opportunistic TLS handshake failed: reconnect once without TLS
)

// transaction is one SMTP session with one target.
type transaction struct {
	d       *deliverer
	hop     delivery.NextHop
	msg     delivery.Message
	rcpts   []delivery.Recipient
	target  target
	results []delivery.Result
}

// run connects and makes the transaction. When it returns done, tr.results
// holds every recipient's result; otherwise the returned Result is the reason
// the host was passed over.
func (tr *transaction) run(ctx context.Context, plain bool) (delivery.Result, nextAction) {
	d := tr.d
	dialer := net.Dialer{Timeout: d.dialTimeout}
	nc, err := dialer.DialContext(ctx, "tcp", tr.target.addr)
	if err != nil {
		return tr.netResult(ctx, "4.4.1", "connect", err), nextHost
	}
	c := newConn(nc, tr.target.host, tr.target.addr)
	// Closing the TCP connection when ctx ends unblocks any read or write,
	// TLS included, since the TLS conn sits on top of nc.
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	defer stop()
	defer c.close()

	// RFC 5321 §4.5.3.2.1: wait for the 220 greeting.
	r, err := c.readReply(d.cmdTimeout)
	if err != nil {
		return tr.netResult(ctx, "4.4.1", "no greeting", err), nextHost
	}
	if r.Code != 220 {
		c.quit(d.cmdTimeout)
		return tr.refused("greeting", r), nextHost
	}
	if res, ok := tr.hello(ctx, c); !ok {
		return res, nextHost
	}
	if res, next := tr.negotiateTLS(ctx, c, plain); next != done {
		return res, next
	}
	return tr.send(ctx, c)
}

// hello sends EHLO (or HELO) with the hop's name.
func (tr *transaction) hello(ctx context.Context, c *conn) (delivery.Result, bool) {
	name := tr.hop.FQDN
	if name == "" {
		name = tr.d.hostname
	}
	r, err := c.hello(name, tr.d.cmdTimeout)
	if err != nil {
		return tr.netResult(ctx, "4.4.2", "EHLO", err), false
	}
	if r.class() != 2 {
		c.quit(tr.d.cmdTimeout)
		return tr.refused("EHLO/HELO", r), false
	}
	return delivery.Result{}, true
}

// negotiateTLS applies the hop's TLS policy; it returns done when the
// session may go on to MAIL (with or without TLS as the policy allows).
func (tr *transaction) negotiateTLS(ctx context.Context, c *conn, plain bool) (delivery.Result, nextAction) {
	mode := tlsMode(tr.hop)
	if mode != policy.SendTLSNone && !plain && c.has("STARTTLS") {
		r, err := c.startTLS(tr.tlsConfig(mode), tr.d.cmdTimeout)
		var te *tlsError
		switch {
		case errors.As(err, &te) && mode == policy.SendTLSOpportunistic:
			return tr.deferred(451, "4.7.5", te.Error()), retryPlain
		case errors.As(err, &te):
			return tr.deferred(451, "4.7.5", te.Error()), nextHost
		case err != nil:
			return tr.netResult(ctx, "4.4.2", "STARTTLS", err), nextHost
		case r.Code != 220 && mode == policy.SendTLSRequired:
			c.quit(tr.d.cmdTimeout)
			return tr.deferred(451, "4.7.5", "STARTTLS refused: "+r.String()), nextHost
		case r.Code == 220:
			// RFC 3207 §4.2: the server forgot everything; EHLO again.
			if res, ok := tr.hello(ctx, c); !ok {
				return res, nextHost
			}
		}
		// A refused STARTTLS in opportunistic mode: go on in plaintext.
	}
	if mode == policy.SendTLSRequired && !c.tls {
		c.quit(tr.d.cmdTimeout)
		return tr.deferred(451, "4.7.5", "TLS required but not offered by "+tr.target.host), nextHost
	}
	return delivery.Result{}, done
}

// tlsConfig: opportunistic TLS does not authenticate the server (RFC 7435
// §4); required TLS verifies the chain and the name we dialled.
func (tr *transaction) tlsConfig(mode policy.SendTLS) *tls.Config {
	cfg := &tls.Config{ServerName: tr.target.host, MinVersion: tls.VersionTLS12}
	if mode != policy.SendTLSRequired {
		cfg.InsecureSkipVerify = true // RFC 7435 §4: opportunistic, unauthenticated
		return cfg
	}
	cfg.RootCAs = tr.d.roots
	return cfg
}

// send runs MAIL, RCPT..., DATA on an established session.
func (tr *transaction) send(ctx context.Context, c *conn) (delivery.Result, nextAction) {
	d := tr.d
	env := tr.msg.Envelope
	if env == nil {
		env = &hub.Envelope{}
	}
	if !validPath(env.From) {
		return tr.finishAll(c, tr.failed(550, "5.1.7", "invalid sender address"))
	}
	// RFC 6531 §3.2: an SMTPUTF8 message may only go to a server with
	// SMTPUTF8. Many clients (Go's net/smtp among them) ask for SMTPUTF8
	// whenever it is offered, so the message only counts as needing it when
	// its envelope or header actually holds non-ASCII text; an all-ASCII
	// message is sent without the parameter (as Postfix's autodetection does).
	utf8 := env.SMTPUTF8 && c.has("SMTPUTF8")
	if env.SMTPUTF8 && !utf8 && tr.needsSMTPUTF8(env) {
		return tr.finishAll(c, tr.failed(553, "5.6.7", tr.target.host+" does not support SMTPUTF8"))
	}
	// RFC 1870 §6.1: do not send what the server said it will not take.
	if limit := c.maxSize(); limit > 0 && tr.msg.Size > limit {
		return tr.finishAll(c, tr.failed(552, "5.3.4",
			fmt.Sprintf("message size %d exceeds the %d bytes %s accepts", tr.msg.Size, limit, tr.target.host)))
	}
	body, err := tr.msg.Open()
	if err != nil {
		return tr.finishAll(c, tr.deferred(451, "4.3.0", "cannot read queued message: "+err.Error()))
	}
	defer body.Close()

	r, err := c.cmd(d.cmdTimeout, "MAIL FROM:<%s>%s", env.From, tr.mailParams(c, env, utf8))
	switch {
	case err != nil:
		return tr.netResult(ctx, "4.4.2", "MAIL", err), nextHost
	case r.class() == 4:
		c.quit(d.cmdTimeout)
		return tr.replyResult(r), nextHost
	case r.class() != 2:
		return tr.finishAll(c, tr.replyResult(r))
	}

	tr.results = make([]delivery.Result, len(tr.rcpts))
	accepted, res := tr.rcptAll(ctx, c)
	if res != nil {
		return *res, done
	}
	if len(accepted) == 0 {
		// RFC 5321 §3.3: no recipient was accepted, so there is no DATA.
		_, _ = c.cmd(d.cmdTimeout, "RSET")
		c.quit(d.cmdTimeout)
		return delivery.Result{}, done
	}
	return tr.data(ctx, c, body, accepted)
}

// rcptAll sends one RCPT per recipient and records the refusals. A lost
// connection settles every recipient still open as Deferred.
func (tr *transaction) rcptAll(ctx context.Context, c *conn) ([]int, *delivery.Result) {
	var accepted []int
	for i, rc := range tr.rcpts {
		if !validPath(rc.Address) || rc.Address == "" {
			tr.results[i] = tr.failed(550, "5.1.3", "invalid recipient address")
			continue
		}
		r, err := c.cmd(tr.d.cmdTimeout, "RCPT TO:<%s>%s", rc.Address, tr.rcptParams(c, rc))
		if err != nil {
			// Refusals already received stand; everything else is open.
			lost := tr.netResult(ctx, "4.4.2", "RCPT", err)
			for _, j := range accepted {
				tr.results[j] = lost
			}
			for j := i; j < len(tr.rcpts); j++ {
				tr.results[j] = lost
			}
			return nil, &lost
		}
		if r.class() == 2 {
			accepted = append(accepted, i)
			continue
		}
		tr.results[i] = tr.replyResult(r)
	}
	return accepted, nil
}

// data sends DATA and the message, and applies the final reply to every
// accepted recipient (RFC 5321 §4.1.1.4).
func (tr *transaction) data(ctx context.Context, c *conn, body io.Reader, accepted []int) (delivery.Result, nextAction) {
	d := tr.d
	settle := func(res delivery.Result) (delivery.Result, nextAction) {
		for _, i := range accepted {
			tr.results[i] = res
		}
		return res, done
	}
	r, err := c.cmd(d.dataInit, "DATA")
	if err != nil {
		return settle(tr.netResult(ctx, "4.4.2", "DATA", err))
	}
	if r.Code != 354 {
		res := tr.replyResult(r)
		if r.Code < 400 {
			// RFC 5321 §4.3.2: DATA's only positive reply is 354. A 2xx here
			// took no message; counting it as delivered would lose the mail.
			res = tr.deferred(451, "4.5.0", fmt.Sprintf("protocol error: %s answered %d to DATA", tr.target.host, r.Code))
		}
		settle(res)
		c.quit(d.cmdTimeout)
		return res, done
	}
	if err := c.writeData(body, d.dataBlock); err != nil {
		var re *readError
		if errors.As(err, &re) {
			// Our spool failed mid-message: drop the connection without the
			// final dot, so the server discards the partial message.
			return settle(tr.deferred(451, "4.3.0", re.Error()))
		}
		return settle(tr.netResult(ctx, "4.4.2", "sending message", err))
	}
	r, err = c.readReply(d.final)
	if err != nil {
		// RFC 1047: the server may have taken the message; retrying risks a
		// duplicate, which is the lesser harm than losing it.
		return settle(tr.netResult(ctx, "4.4.2", "reply to end of data", err))
	}
	res, _ := settle(tr.replyResult(r))
	c.quit(d.cmdTimeout)
	return res, done
}

// mailParams are the ESMTP parameters of MAIL FROM the server understands.
func (tr *transaction) mailParams(c *conn, env *hub.Envelope, utf8 bool) string {
	var b strings.Builder
	if c.has("SIZE") && tr.msg.Size > 0 {
		fmt.Fprintf(&b, " SIZE=%d", tr.msg.Size) // RFC 1870
	}
	if strings.EqualFold(env.Body, "8BITMIME") && c.has("8BITMIME") {
		b.WriteString(" BODY=8BITMIME") // RFC 6152
	}
	if utf8 {
		b.WriteString(" SMTPUTF8") // RFC 6531 §3.4
	}
	if c.has("DSN") { // RFC 3461 §4: pass the DSN request on
		if env.DSNRet == "FULL" || env.DSNRet == "HDRS" {
			b.WriteString(" RET=" + env.DSNRet)
		}
		if env.DSNEnvID != "" {
			b.WriteString(" ENVID=" + xtext(env.DSNEnvID))
		}
	}
	return b.String()
}

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

// finishAll settles every recipient with res, quits, and ends the attempt.
func (tr *transaction) finishAll(c *conn, res delivery.Result) (delivery.Result, nextAction) {
	tr.results = make([]delivery.Result, len(tr.rcpts))
	fill(tr.results, res)
	c.quit(tr.d.cmdTimeout)
	return res, done
}

// replyResult maps a remote reply: 2xx Delivered, 4xx Deferred, 5xx Failed.
func (tr *transaction) replyResult(r reply) delivery.Result {
	st := delivery.Deferred
	switch r.class() {
	case 2:
		st = delivery.Delivered
	case 5:
		st = delivery.Failed
	}
	return delivery.Result{Status: st, Code: r.Code, Enhanced: r.enhancedOrDefault(), Text: r.text(), RemoteMTA: tr.target.host}
}

// refused is a host that would not talk to us (greeting or EHLO not 2xx).
// Even a 5xx here only rules out this host, never the recipients: another
// host, or this one later, may accept (Postfix's smtp_skip_5xx_greeting).
func (tr *transaction) refused(stage string, r reply) delivery.Result {
	if r.class() == 4 {
		return tr.replyResult(r)
	}
	return tr.deferred(451, "4.4.0", tr.target.host+" refused "+stage+": "+r.String())
}

func (tr *transaction) deferred(code int, enhanced, text string) delivery.Result {
	return delivery.Result{Status: delivery.Deferred, Code: code, Enhanced: enhanced, Text: text, RemoteMTA: tr.target.host}
}

func (tr *transaction) failed(code int, enhanced, text string) delivery.Result {
	return delivery.Result{Status: delivery.Failed, Code: code, Enhanced: enhanced, Text: text, RemoteMTA: tr.target.host}
}

// netResult is the Deferred result of a network error or timeout at stage.
func (tr *transaction) netResult(ctx context.Context, enhanced, stage string, err error) delivery.Result {
	if cerr := ctx.Err(); cerr != nil {
		return tr.deferred(451, "4.4.2", "delivery abandoned: "+cerr.Error())
	}
	what := "error"
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		what = "timeout"
	}
	return tr.deferred(451, enhanced, fmt.Sprintf("%s %s [%s]: %s: %v", stage, tr.target.host, tr.target.addr, what, err))
}

// needsSMTPUTF8 reports whether the sender, a recipient of this attempt, or
// the message's header section holds non-ASCII bytes.
func (tr *transaction) needsSMTPUTF8(env *hub.Envelope) bool {
	if strings.ContainsFunc(env.From, is8bit) {
		return true
	}
	for _, rc := range tr.rcpts {
		if strings.ContainsFunc(rc.Address, is8bit) {
			return true
		}
	}
	body, err := tr.msg.Open()
	if err != nil {
		return true // cannot tell: keep the client's word
	}
	defer body.Close()
	br := bufio.NewReader(body)
	for {
		line, err := br.ReadSlice('\n')
		if len(bytes.TrimRight(line, "\r\n")) == 0 && err == nil {
			return false // end of the header section
		}
		if bytes.ContainsFunc(line, is8bit) {
			return true
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return false
		}
	}
}

func is8bit(r rune) bool { return r >= utf8.RuneSelf }
