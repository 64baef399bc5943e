package lmtp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"hubd/hub"
	"hubd/hub/delivery"
)

// session is one Deliver call: one LMTP transaction for a group of
// recipients, and the Result of each.
type session struct {
	d       *Deliverer
	hop     delivery.NextHop
	server  string // hop.SmartHosts: "unix:/path" or "host:port"
	msg     delivery.Message
	env     *hub.Envelope
	rcpts   []delivery.Recipient
	results []delivery.Result
	settled []bool
	addrs   []string         // distinct recipient addresses, in first-seen order
	byAddr  map[string][]int // indexes into rcpts for each address
}

func newSession(d *Deliverer, hop delivery.NextHop, msg delivery.Message, rcpts []delivery.Recipient) *session {
	s := &session{
		d: d, hop: hop, server: strings.TrimSpace(hop.SmartHosts), msg: msg, env: msg.Envelope, rcpts: rcpts,
		results: make([]delivery.Result, len(rcpts)),
		settled: make([]bool, len(rcpts)),
		byAddr:  make(map[string][]int, len(rcpts)),
	}
	if s.env == nil {
		s.env = &hub.Envelope{}
	}
	for i, r := range rcpts {
		if _, seen := s.byAddr[r.Address]; !seen {
			s.addrs = append(s.addrs, r.Address)
		}
		s.byAddr[r.Address] = append(s.byAddr[r.Address], i)
	}
	return s
}

// run makes the attempt and settles every recipient.
func (s *session) run(ctx context.Context) {
	// Nothing may leave unsettled: a recipient without a decision was never
	// confirmed by the server, so it is tried again.
	defer s.settleRest(s.local(delivery.Deferred, 451, "4.4.2", "no reply from the LMTP server"))
	if len(s.rcpts) == 0 {
		return
	}
	if s.server == "" {
		s.settleRest(delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.3.5",
			Text: "no LMTP server configured for this mailbox", Connection: true})
		return
	}
	if err := ctx.Err(); err != nil {
		s.settleRest(abandoned(err))
		return
	}
	if !validAddress(s.env.From, true) {
		s.settleRest(s.local(delivery.Failed, 550, "5.1.7", "invalid sender address"))
		return
	}
	body, err := s.msg.Open()
	if err != nil {
		s.settleRest(s.local(delivery.Deferred, 451, "4.3.0", "cannot read queued message: "+err.Error()))
		return
	}
	defer body.Close()

	c := s.reuse(ctx)
	if c == nil {
		var res *delivery.Result
		if c, res = s.open(ctx); res != nil {
			s.settleRest(*res)
			return
		}
	}
	s.d.finish(s.hop, c, s.transaction(ctx, c, body))
}

// transaction runs MAIL, RCPT..., DATA and says what becomes of the
// connection.
func (s *session) transaction(ctx context.Context, c *client, body io.Reader) fate {
	opts, refusal := s.mailOptions(c.Client)
	if refusal != nil {
		s.settleRest(*refusal)
		return fateKeep // nothing was sent
	}
	c.msgs++
	if err := c.Mail(s.env.From, opts); err != nil {
		return s.replyToAll(ctx, "MAIL", err)
	}
	accepted, f := s.recipients(ctx, c.Client)
	if len(accepted) == 0 {
		// No DATA; the next message on this connection starts with RSET.
		return f
	}
	w, err := c.Data()
	if err != nil {
		return s.replyToAll(ctx, "DATA", err)
	}
	if err := s.writeBody(ctx, c.conn, w, body); err != nil {
		s.settleRest(*err)
		return fateDrop
	}
	// The final dot is written under the data deadline; the client then
	// waits up to SubmissionTimeout (= DataTimeout) for all the replies.
	c.conn.SetWriteDeadline(time.Now().Add(s.d.dataTimeout))
	replies, err := w.CloseWithLMTPResponse()
	return s.settleData(ctx, accepted, replies, err)
}

// mailOptions decides the MAIL FROM parameters from the LHLO reply, or
// refuses the message (for every recipient) when the server cannot take it.
func (s *session) mailOptions(c *smtp.Client) (*smtp.MailOptions, *delivery.Result) {
	hasUTF8, _ := c.Extension("SMTPUTF8")
	has8bit, _ := c.Extension("8BITMIME")
	// RFC 6531 §3.2: SMTPUTF8 mail goes only to a server with SMTPUTF8.
	// A message whose envelope asked for it but holds only ASCII travels
	// without the parameter, as smtpout does. The text names what needs
	// it, so that the DSN tells an address from a header.
	why := s.nonASCIIAddress()
	wantUTF8 := s.env.SMTPUTF8 || why != ""
	if wantUTF8 && !hasUTF8 {
		if why == "" && s.scan(true) {
			why = "the message's non-ASCII header fields (its addresses are ASCII)"
		}
		if why != "" {
			r := s.local(delivery.Failed, 553, "5.6.7", s.server+" does not support SMTPUTF8, needed for "+why)
			return nil, &r
		}
	}
	// RFC 6152 §3: 8-bit content needs 8BITMIME at the next hop; we do not
	// downgrade it to 7-bit.
	if strings.EqualFold(s.env.Body, "8BITMIME") && !has8bit && s.scan(false) {
		r := s.local(delivery.Failed, 554, "5.6.3", s.server+" does not support 8BITMIME")
		return nil, &r
	}
	// RFC 1870 §6.1: do not send what the server said it will not take.
	if limit, ok := c.MaxMessageSize(); ok && limit > 0 && s.msg.Size > int64(limit) {
		r := s.local(delivery.Failed, 552, "5.3.4",
			fmt.Sprintf("message size %d exceeds the %d bytes %s accepts", s.msg.Size, limit, s.server))
		return nil, &r
	}
	return &smtp.MailOptions{Size: s.msg.Size, UTF8: wantUTF8 && hasUTF8}, nil
}

// nonASCIIAddress names the first non-ASCII address of the envelope, or "".
func (s *session) nonASCIIAddress() string {
	if !isASCII(s.env.From) {
		return "the non-ASCII sender address <" + s.env.From + ">"
	}
	for _, a := range s.addrs {
		if !isASCII(a) {
			return "the non-ASCII recipient address <" + a + ">"
		}
	}
	return ""
}

// recipients sends one RCPT per distinct address and returns the accepted
// ones, in order, with the connection's fate should no DATA follow: it
// returns no recipient when the connection broke or the server's answers
// can no longer be matched to recipients.
func (s *session) recipients(ctx context.Context, c *smtp.Client) (accepted []string, f fate) {
	for _, addr := range s.addrs {
		if !validAddress(addr, false) {
			s.settleAddr(addr, s.local(delivery.Failed, 553, "5.1.3", "invalid recipient address"))
			continue
		}
		err := c.Rcpt(addr, s.rcptOptions(addr))
		if err == nil {
			accepted = append(accepted, addr)
			continue
		}
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			s.settleRest(s.lost(ctx, "RCPT", err))
			return nil, fateDrop
		}
		if se.Code/100 != 4 && se.Code/100 != 5 {
			// A positive reply other than 25x: the server may send a reply
			// after the dot for this recipient that the client does not
			// expect, and every later reply would be credited to the wrong
			// recipient. Stop before DATA rather than guess, and do not
			// trust this server with another transaction.
			s.settleRest(s.remote(delivery.Deferred, 451, "4.5.0", "unexpected reply to RCPT: "+se.Error()))
			return nil, fateQuit
		}
		s.settleAddr(addr, s.serverReply(se))
	}
	return accepted, fateKeep
}

// rcptOptions carries the ORCPT of the first recipient with addr (RFC 3461
// §4.2); go-smtp's client sends it only to a server that offers DSN. An
// ORCPT the client would refuse to encode is left out rather than let it
// fail the RCPT.
func (s *session) rcptOptions(addr string) *smtp.RcptOptions {
	orcpt := s.rcpts[s.byAddr[addr][0]].DSN.ORCPT
	typ, orig, ok := strings.Cut(orcpt, ";")
	if !ok || orig == "" || !validAddress(orig, false) {
		return nil
	}
	switch strings.ToLower(typ) {
	case "rfc822":
		if !isASCII(orig) {
			return nil
		}
		return &smtp.RcptOptions{OriginalRecipientType: smtp.DSNAddressTypeRFC822, OriginalRecipient: orig}
	case "utf-8":
		return &smtp.RcptOptions{OriginalRecipientType: smtp.DSNAddressTypeUTF8, OriginalRecipient: orig}
	}
	return nil
}

// writeBody copies the message into the DATA writer, refreshing the write
// deadline before every write (RFC 5321 §4.5.3.2.5: a timeout per send,
// not for the whole message). On failure it returns the result for the
// unsettled recipients.
func (s *session) writeBody(ctx context.Context, conn net.Conn, w io.Writer, body io.Reader) *delivery.Result {
	src := &readErr{r: body}
	_, err := io.Copy(&delivery.DeadlineWriter{W: w, Conn: conn, Timeout: s.d.dataTimeout}, src)
	switch {
	case src.err != nil:
		// Closing the connection before the dot makes the server drop the
		// partial message (RFC 5321 §4.1.1.4), so nothing half-read is stored.
		r := s.local(delivery.Deferred, 451, "4.3.0", "cannot read queued message: "+src.err.Error())
		return &r
	case err != nil:
		r := s.lost(ctx, "sending message", err)
		return &r
	}
	return nil
}

// settleData turns the replies after the final dot into results (RFC 2033
// §4.2: one per accepted RCPT, in order). A recipient without a reply is
// Deferred: the connection broke before the server told us.
func (s *session) settleData(ctx context.Context, accepted []string, replies map[string]*smtp.DataResponse, err error) fate {
	var refused smtp.LMTPDataError
	errors.As(err, &refused)
	for _, addr := range accepted {
		if r, ok := replies[addr]; ok {
			s.settleAddr(addr, s.parsedReply(250, r.StatusText))
		} else if se, ok := refused[addr]; ok {
			s.settleAddr(addr, s.serverReply(se))
		}
	}
	// The client returns a bare LMTPDataError when every reply arrived and
	// some were negative; anything else is a broken connection, possibly
	// joined with the negative replies read before it broke.
	if _, onlyReplies := err.(smtp.LMTPDataError); err == nil || onlyReplies {
		// Every reply is in: the transaction is over (RFC 2033 §4.2) and
		// the connection may carry the next one.
		return fateKeep
	}
	s.settleRest(s.lost(ctx, "reply after end of data", networkError(err)))
	return fateDrop
}

// networkError picks, out of the client's errors.Join(netErr, LMTPDataError),
// the error that broke the connection.
func networkError(err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if _, isReplies := e.(smtp.LMTPDataError); !isReplies {
				return e
			}
		}
	}
	return err
}

// replyToAll settles every unsettled recipient with the reply (or network
// error) to a command that applies to all of them: MAIL or DATA.
func (s *session) replyToAll(ctx context.Context, stage string, err error) fate {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		s.settleRest(s.lost(ctx, stage, err))
		return fateDrop
	}
	if se.Code/100 != 4 && se.Code/100 != 5 {
		s.settleRest(s.remote(delivery.Deferred, 451, "4.5.0", "unexpected reply to "+stage+": "+se.Error()))
		return fateDrop
	}
	s.settleRest(s.serverReply(se))
	return fateKeep
}
