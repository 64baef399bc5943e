package smtpout

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/delivery/mime7bit"
	mailmsg "hubd/internal/message"
)

// nextAction says what Deliver does after one transaction attempt.
type nextAction int

const (
	done       nextAction = iota // results are final for this attempt
	nextHost                     // this host was unusable: try the next one
	retryPlain                   // opportunistic TLS handshake failed: reconnect once without TLS
	stale                        // a reused connection was dead before the transaction began: nothing decided
)

// fate is what becomes of a connection after a transaction attempt.
type fate int

const (
	fateDrop fate = iota // broken, or in a state we cannot vouch for: close without a word
	fateQuit             // healthy but not to be reused (this host passed its turn): QUIT
	fateKeep             // between transactions: may carry the next message
)

// transaction is one message's attempt on one target.
type transaction struct {
	d       *Deliverer
	hop     delivery.NextHop
	pol     tlsPolicy // the message's TLS policy on this hop (requiretls.go)
	msg     delivery.Message
	rcpts   []delivery.Recipient
	target  target
	results []delivery.Result
	cert    *tls.Certificate // the hop's client certificate (tlsdial.go), loaded when the connection is opened
	roots   *x509.CertPool   // the hop's ca_file (tlsdial.go), loaded with cert; nil → Options.RootCAs
	// unsigned: the content goes without the hub's DKIM signature
	// (convert.go), set by bodyType for each transaction.
	unsigned bool

	// conv, when set, is the conversion the message needs for this
	// server (convert.go); convSize the size of its output.
	conv     *mime7bit.Plan
	convSize int64
}

// send runs [RSET,] MAIL, RCPT..., DATA on an established session; reused
// says the connection comes from the idle pool. When it returns done,
// tr.results holds every recipient's result; otherwise the Result is the
// reason the host (or the reused connection) was passed over.
func (tr *transaction) send(ctx context.Context, c *conn, reused bool) (delivery.Result, nextAction, fate) {
	tr.results = make([]delivery.Result, len(tr.rcpts))
	env := tr.msg.Envelope
	if env == nil {
		env = &hub.Envelope{}
	}
	// Local decisions first: they need nothing from the wire but the EHLO
	// keywords, and leave the connection as it was.
	params, res := tr.mailParams(ctx, c, env)
	if res != nil {
		return tr.settleAll(*res)
	}
	body, err := tr.openContent()
	if err != nil {
		return tr.settleAll(tr.deferred(451, "4.3.0", "cannot read queued message: "+err.Error()))
	}
	defer body.Close()

	lines, sent := tr.commands(c, env.From, params, reused)
	c.msgs++
	replies, err := tr.exchange(c, lines, len(lines)-len(sent))
	if reused {
		if len(replies) == 0 || replies[0].class() != 2 {
			// Servers time idle clients out (often with a 421 first): the
			// connection was dead before this message began.
			reason := "no reply to RSET"
			if len(replies) > 0 {
				reason = "RSET answered " + replies[0].String()
			} else if err != nil {
				reason += ": " + err.Error()
			}
			return tr.deferred(451, "4.4.2", reason), stale, fateDrop
		}
		replies = replies[1:]
	}
	if len(replies) == 0 {
		// The host never answered MAIL: it took no part in a transaction.
		res := tr.netResult(ctx, "4.4.2", "MAIL", err)
		res.Connection = true
		return res, nextHost, fateDrop
	}
	healthy := fateKeep
	if err != nil {
		healthy = fateDrop
	}
	switch mail := replies[0]; mail.class() {
	case 2:
	case 4:
		// A busy or throttling server: let the next host try.
		return tr.replyResult(mail), nextHost, min(healthy, fateQuit)
	default:
		res, next, _ := tr.settleAll(tr.replyResult(mail))
		return res, next, healthy
	}
	accepted, lost := tr.rcptResults(ctx, sent, replies[1:], err)
	if lost {
		return delivery.Result{}, done, fateDrop
	}
	if len(accepted) == 0 {
		// RFC 5321 §3.3: no recipient was accepted, so there is no DATA;
		// RSET ends the transaction and leaves the connection reusable.
		r, err := c.cmd(tr.d.cmdTimeout, "RSET")
		if err != nil || r.class() != 2 {
			return delivery.Result{}, done, fateDrop
		}
		return delivery.Result{}, done, fateKeep
	}
	return tr.data(ctx, c, body, accepted)
}

// commands are the lines that open the transaction: RSET on a reused
// connection, MAIL, and one RCPT per valid recipient; sent maps each RCPT
// line to its index in tr.rcpts. An invalid recipient is Failed here.
func (tr *transaction) commands(c *conn, from, params string, reused bool) (lines []string, sent []int) {
	if reused {
		// RFC 5321 §4.1.1.5: RSET before reusing the connection. The last
		// transaction ended cleanly, so this is belt and braces for the
		// server's state; its real job is to prove the connection alive
		// before anything about this message is decided. With PIPELINING
		// it rides in the same write as MAIL and costs no round trip.
		lines = append(lines, "RSET")
	}
	lines = append(lines, "MAIL FROM:<"+from+">"+params)
	for i, rc := range tr.rcpts {
		if rc.Address == "" || !validPath(rc.Address) {
			tr.results[i] = tr.failed(550, "5.1.3", "invalid recipient address")
			continue
		}
		lines = append(lines, "RCPT TO:<"+rc.Address+">"+tr.rcptParams(c, rc))
		sent = append(sent, i)
	}
	return lines, sent
}

// exchange sends the command lines and reads their replies: as one group
// when the server offers PIPELINING (RFC 2920 §3.1: RSET, MAIL and RCPT may
// all be pipelined; DATA, a synchronisation point, is sent by the caller
// once every RCPT reply is in), else one at a time. In lock-step, a failed
// reply to one of the first nsync lines (RSET, MAIL) ends the exchange: no
// RCPT goes out in a transaction that was not opened. It returns the replies
// read before an error.
func (tr *transaction) exchange(c *conn, lines []string, nsync int) ([]reply, error) {
	if c.has("PIPELINING") {
		return c.pipeline(tr.d.cmdTimeout, lines)
	}
	replies := make([]reply, 0, len(lines))
	for i, l := range lines {
		r, err := c.cmd(tr.d.cmdTimeout, "%s", l)
		if err != nil {
			return replies, err
		}
		replies = append(replies, r)
		if i < nsync && r.class() != 2 {
			break
		}
	}
	return replies, nil
}

// rcptResults records the RCPT replies: a refusal settles that recipient
// (5xx Failed, 4xx Deferred) and a 2xx makes it accepted. When err cut the
// replies short, the connection is lost: refusals already received stand,
// every other recipient (accepted ones too) is Deferred, and lost is true.
func (tr *transaction) rcptResults(ctx context.Context, sent []int, replies []reply, err error) (accepted []int, lost bool) {
	for k, i := range sent {
		if k >= len(replies) {
			res := tr.netResult(ctx, "4.4.2", "RCPT", err)
			for _, j := range accepted {
				tr.results[j] = res
			}
			for _, j := range sent[k:] {
				tr.results[j] = res
			}
			return nil, true
		}
		if r := replies[k]; r.class() == 2 {
			accepted = append(accepted, i)
		} else {
			tr.results[i] = tr.replyResult(r)
		}
	}
	return accepted, false
}

// data sends DATA and the message, and applies the final reply to every
// accepted recipient (RFC 5321 §4.1.1.4).
func (tr *transaction) data(ctx context.Context, c *conn, body io.Reader, accepted []int) (delivery.Result, nextAction, fate) {
	d := tr.d
	settle := func(res delivery.Result, f fate) (delivery.Result, nextAction, fate) {
		for _, i := range accepted {
			tr.results[i] = res
		}
		return res, done, f
	}
	r, err := c.cmd(d.dataInit, "DATA")
	if err != nil {
		return settle(tr.netResult(ctx, "4.4.2", "DATA", err), fateDrop)
	}
	if r.Code != 354 {
		if r.Code < 400 {
			// RFC 5321 §4.3.2: DATA's only positive reply is 354. A 2xx here
			// took no message; counting it as delivered would lose the mail.
			// Such a server is not trusted with another transaction.
			return settle(tr.deferred(451, "4.5.0", fmt.Sprintf("protocol error: %s answered %d to DATA", tr.target.host, r.Code)), fateQuit)
		}
		return settle(tr.replyResult(r), fateKeep)
	}
	var content io.Reader = body
	if !tr.hop.OrgHeaders {
		// The header firewall: hub-internal fields stay inside unless the
		// send connector has send_org_headers. The SIZE declared on MAIL
		// was the queued size, never less than what is sent.
		content = mailmsg.StripOrgHeaders(body)
	}
	if tr.conv != nil {
		// The conversion planned for this server (convert.go): the same
		// bytes on every attempt, and the size SIZE declared.
		conv := tr.conv.Reader(content)
		defer conv.Close()
		content = conv
	}
	if err := c.writeData(content, tr.size(), d.dataBlock); err != nil {
		var re *readError
		if errors.As(err, &re) {
			// Our spool failed mid-message: drop the connection without the
			// final dot, so the server discards the partial message.
			return settle(tr.deferred(451, "4.3.0", re.Error()), fateDrop)
		}
		return settle(tr.netResult(ctx, "4.4.2", "sending message", err), fateDrop)
	}
	r, err = c.readReply(d.final)
	if err != nil {
		// RFC 1047: the server may have taken the message; retrying risks a
		// duplicate, which is the lesser harm than losing it.
		return settle(tr.netResult(ctx, "4.4.2", "reply to end of data", err), fateDrop)
	}
	// Whatever the reply, the transaction is over (RFC 5321 §4.1.1.4) and
	// the connection may carry the next one.
	res := tr.replyResult(r)
	// RFC 3461 §5.2.2: a server with DSN took our NOTIFY/ORCPT parameters
	// and reports success itself; without it, ours is the "relayed" DSN.
	res.RemoteDSN = c.has("DSN")
	return settle(res, fateKeep)
}

// settleAll gives every recipient res; nothing was sent, so the connection
// stays as it was.
func (tr *transaction) settleAll(res delivery.Result) (delivery.Result, nextAction, fate) {
	fill(tr.results, res)
	return res, done, fateKeep
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
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" {
		// A TLS alert from the server (crypto/tls reports it so): with TLS
		// 1.3 a refused client certificate shows up only at the first read
		// after the handshake. RFC 3463 X.7.5: cryptographic failure.
		enhanced = "4.7.5"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		what = "timeout"
	}
	return tr.deferred(451, enhanced, fmt.Sprintf("%s %s [%s]: %s: %v", stage, tr.target.host, tr.target.addr, what, err))
}
