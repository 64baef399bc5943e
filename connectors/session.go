package connectors

import (
	"crypto/tls"
	"errors"
	"strconv"
	"strings"
	"sync"

	"github.com/emersion/go-smtp"

	"hubd/connectors/authcheck"
	"hubd/hub"
	"hubd/policy"
)

// session is one go-smtp session: from HELO/EHLO (or STARTTLS) to QUIT,
// holding at most one mail transaction at a time.
type session struct {
	c    *connector
	conn *smtp.Conn
	sc   *sessionConn
	st   *connState
	tls  *tls.ConnectionState // nil without TLS; fixed for the session's life

	// mu guards everything below. go-smtp calls Mail, Rcpt, Reset and Auth
	// from the connection's goroutine but, for BDAT, Data from another one,
	// with nothing ordering the two after "BDAT 0"; Data therefore works on
	// a snapshot (txn) taken under mu.
	mu       sync.Mutex
	helo     string
	authUser string // the login after a successful AUTH (canonical for local logins)
	authVia  string // the auth_backend that vouched for authUser; "" = local
	authMech string // the SASL mechanism of the last AUTH offered (for the session span)

	// The mail transaction (RFC 5321 §3.3); reset by Reset.
	haveMail  bool
	queueID   hub.QueueID // reserved at MAIL: the Received: id, the 250 reply and the logs name it
	from      string
	mail      smtp.MailOptions
	rcpts     []hub.Recipient
	seen      map[string]bool
	rcptCount int
	tx        *txTrace             // the transaction's span (tracing.go); nil outside one, and once DATA took it
	spf       *authcheck.SPFResult // the SPF check at MAIL (checks.go); nil when not checked
}

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

// rights are the session's rights now; s.mu is held.
func (s *session) rights() policy.Rights {
	return s.c.rc.SessionRights(s.authUser != "")
}

// Mail implements MAIL FROM (RFC 5321 §4.1.1.2); a refusal the session
// earns is tarpitted (tarpit.go).
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	tx := s.startTransaction()
	err := s.mailFrom(from, opts, tx)
	if err == nil {
		err = s.checkSPF(tx, from) // checks.go
	}
	err = s.delay("MAIL", err)
	if err != nil {
		// No transaction: its span ends with the refusal.
		r, _ := replyOf(err)
		tx.end(r)
	}
	return err
}

func (s *session) mailFrom(from string, opts *smtp.MailOptions, tx *txTrace) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rc := s.c.rc
	// Commands out of sequence (MAIL inside a transaction, before EHLO)
	// never get here: the command filter answers them (protocol.go).
	if rc.RequireTLS && s.tls == nil {
		return s.refuse("MAIL", reply(530, "5.7.0", "Must issue a STARTTLS command first"))
	}
	if opts != nil && opts.RequireTLS && s.tls == nil {
		// RFC 8689 §4: REQUIRETLS only over TLS (it is not offered before).
		return s.refuse("MAIL", reply(530, "5.7.10", "REQUIRETLS needs a TLS session"))
	}
	rights := s.rights()
	if !rights.Has(policy.RightSubmit) {
		if len(rc.Auth) > 0 && s.authUser == "" {
			// RFC 4954 §6: authentication would grant what is missing.
			return s.refuse("MAIL", reply(530, "5.7.0", "Authentication required"))
		}
		return s.refuse("MAIL", reply(550, "5.7.1", "Not authorized to submit"))
	}
	if opts != nil && opts.Size > 0 && rc.MaxMessageSize > 0 && opts.Size > rc.MaxMessageSize &&
		!rights.Has(policy.RightBypassSizeLimit) {
		// RFC 1870 §6.1: a declared size over the fixed limit.
		return s.refuse("MAIL", reply(552, "5.3.4", "Message size exceeds fixed maximum message size"))
	}
	if r := s.admit(opts); r != nil {
		return s.refuse("MAIL", r)
	}
	if r := s.c.cfg.CheckSenderVia(rights, s.authVia, s.authUser, from); r != nil {
		return s.refuse("MAIL", r)
	}
	// Last, so that only a MAIL we would accept takes a token.
	if key := messageKey(rc.MessageRateSource, s.st.peer, s.authUser); !s.c.limits.allowMessage(key) {
		// Exchange ends the connection; the client retries later.
		return s.limitRefusal("MAIL", "message_rate_limit", key,
			reply(421, "4.4.2", "Message rate limit exceeded"))
	}
	s.resetLocked()
	s.haveMail = true
	s.queueID = hub.NewQueueID(s.c.svc.now())
	s.from = from
	if opts != nil {
		s.mail = *opts
	}
	s.tx = tx
	tx.span.SetAttributes(attrQueueID.String(string(s.queueID)))
	if s.recordAddresses() {
		tx.span.SetAttributes(attrMailFrom.String(from))
	}
	return nil
}

// Rcpt implements RCPT TO (RFC 5321 §4.1.1.3); a refusal the session earns
// (an unknown user, a refused relay) is tarpitted, which slows directory
// harvesting.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	err := s.delay("RCPT", s.rcptTo(to, opts))
	if r, ok := replyOf(err); ok {
		s.mu.Lock()
		if s.tx != nil {
			addr := ""
			if s.recordAddresses() {
				addr = to
			}
			s.tx.refused("RCPT", r, addr)
		}
		s.mu.Unlock()
	}
	return err
}

func (s *session) rcptTo(to string, opts *smtp.RcptOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rc := s.c.rc
	if rc.MaxRecipients > 0 && s.rcptCount >= rc.MaxRecipients {
		// RFC 5321 §4.5.3.1.10: 452, and the client sends the rest later.
		return s.refuse("RCPT", reply(452, "4.5.3", "Too many recipients"))
	}
	if r := s.c.cfg.CheckRecipient(s.rights(), to); r != nil {
		return s.refuse("RCPT", r)
	}
	// Local addresses are compared without regard to case, each as
	// addressed: alice@ and alice+news@ are two recipients (RFC 5233), which
	// the categorizer delivers once to a Maildir and twice over LMTP.
	key := canonical(to)
	if s.c.cfg.ResolveLocal(to) != "" {
		key = strings.ToLower(to)
	}
	// A repeated recipient costs no delivery, so no recipient_rate_limit
	// token.
	if !s.seen[key] && !s.c.limits.allowRecipient(s.authUser) {
		// RFC 5321 §4.5.3.1.10: a 452 the client retries later.
		return s.limitRefusal("RCPT", "recipient_rate_limit", s.authUser,
			reply(452, "4.5.3", "Recipient rate limit exceeded, try later"))
	}
	s.rcptCount++
	if s.seen[key] {
		// Accepted, but queued once: one delivery per recipient.
		return nil
	}
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	s.seen[key] = true
	r := hub.Recipient{Address: to}
	if opts != nil {
		for _, n := range opts.Notify {
			r.Notify = append(r.Notify, string(n))
		}
		if opts.OriginalRecipient != "" {
			// RFC 3461 §4.2: addr-type ";" original address.
			r.ORCPT = strings.ToLower(string(opts.OriginalRecipientType)) + ";" + opts.OriginalRecipient
		}
	}
	s.rcpts = append(s.rcpts, r)
	return nil
}

// Reset implements RSET and the end of a transaction.
func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resetLocked()
}

func (s *session) resetLocked() {
	if s.tx != nil {
		s.tx.end(nil) // RSET, or the session ends, before a final reply
		s.tx = nil
	}
	s.haveMail = false
	s.queueID = ""
	s.from = ""
	s.mail = smtp.MailOptions{}
	s.rcpts = nil
	s.seen = nil
	s.rcptCount = 0
	s.spf = nil
}

// Logout implements smtp.Session; the connection's end is logged when the
// connection closes, since STARTTLS logs a session out without ending it.
// A transaction still open then ends here, without a final reply.
func (s *session) Logout() error {
	s.Reset()
	return nil
}

// refuse logs a refusal and returns it as the error go-smtp writes. Our
// refusals of bad syntax, of commands out of sequence and of bad AUTH count
// as protocol errors; past max_protocol_errors the connection ends with
// "421 4.7.0 Too many errors".
func (s *session) refuse(cmd string, r *policy.Reply) error {
	err := smtpError(r)
	if cmd == "MAIL" {
		s.c.stats.refused.Add(1) // a transaction refused (runtime.go)
		s.st.mailRefusals.Add(1)
	}
	if isProtocolError(r) {
		s.st.mu.Lock()
		s.st.protoErrors++
		n := s.st.protoErrors
		s.st.mu.Unlock()
		if max := s.c.rc.MaxProtocolErrors; max > 0 && n > max {
			s.st.log.InfoContext(s.st.ctx, "refused", "command", cmd, "reply", r.Error(), "closing", "too many errors")
			s.sc.closeAfterWrite.Store(true)
			if cmd == "MAIL" {
				s.c.svc.meters.transaction(s.c.rc.Name, 421)
			}
			return smtpError(reply(421, "4.7.0", "Too many errors"))
		}
	}
	if cmd == "MAIL" {
		s.c.svc.meters.transaction(s.c.rc.Name, r.Code)
	}
	s.st.log.InfoContext(s.st.ctx, "refused", "command", cmd, "reply", r.Error())
	return err
}

// limitRefusal logs a refusal by one of the connector's limits (the
// setting's name, and the key it counted: address or user) and returns it;
// a 421 ends the connection after the reply. s.mu is held.
func (s *session) limitRefusal(cmd, limit, key string, r *policy.Reply) error {
	s.c.svc.meters.limitRefusal(s.c.rc.Name, limit)
	if cmd == "MAIL" {
		s.c.stats.refused.Add(1)
		s.c.svc.meters.transaction(s.c.rc.Name, r.Code)
		s.st.mailRefusals.Add(1)
	}
	s.st.log.WarnContext(s.st.ctx, "refused", "command", cmd, "reply", r.Error(), "limit", limit,
		"key", key, "auth_user", s.authUser)
	if r.Code == 421 {
		s.sc.closeAfterWrite.Store(true)
	}
	return smtpError(r)
}

// isProtocolError says whether a reply refuses bad syntax (500-504, 555)
// or a command out of sequence (503, 530).
func isProtocolError(r *policy.Reply) bool {
	return (r.Code >= 500 && r.Code <= 504) || r.Code == 555 || r.Code == 530
}

func reply(code int, enhanced, text string) *policy.Reply {
	return &policy.Reply{Code: code, Enhanced: enhanced, Text: text}
}

// smtpError turns a policy reply into the error go-smtp writes verbatim.
func smtpError(r *policy.Reply) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: r.Code, Message: r.Text}
	if strings.Count(r.Enhanced, ".") == 2 {
		i := 0
		for p := range strings.SplitSeq(r.Enhanced, ".") {
			n, err := strconv.Atoi(p)
			if err != nil {
				return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCodeNotSet, Message: r.Text}
			}
			e.EnhancedCode[i] = n
			i++
		}
	}
	return e
}

// replyOf finds the SMTP reply an error should become, if it carries one.
func replyOf(err error) (*policy.Reply, bool) {
	var pr *policy.Reply
	if errors.As(err, &pr) {
		return pr, true
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		ec := se.EnhancedCode
		return reply(se.Code, strconv.Itoa(ec[0])+"."+strconv.Itoa(ec[1])+"."+strconv.Itoa(ec[2]), se.Message), true
	}
	return nil, false
}

// canonical is the de-duplication key of an address that is not one of our
// own (policy.Config.ResolveLocal canonicalises those): the domain is
// case-insensitive (RFC 5321 §2.4), the local part is kept as given.
func canonical(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr
	}
	return addr[:i] + strings.ToLower(addr[i:])
}

// admit asks the hub's back pressure whether this session may start a
// transaction (Exchange 2007: at Medium, mail from anonymous sources is
// refused while authenticated and internal traffic flows; at High, all).
// s.mu is held.
func (s *session) admit(opts *smtp.MailOptions) *policy.Reply {
	p := s.c.svc.press
	if p == nil {
		return nil
	}
	anonymous := s.authUser == "" && !s.c.rc.ExternallySecured
	if err := p.Admit(anonymous); err != nil {
		var r *policy.Reply
		if !errors.As(err, &r) {
			r = reply(452, "4.3.1", "Insufficient system resources")
		}
		s.st.log.WarnContext(s.st.ctx, "refused by back pressure", "anonymous", anonymous)
		return r
	}
	if opts != nil && opts.Size > 0 && !p.Fits(opts.Size) {
		// The declared size would take the spool below its floor.
		s.st.log.WarnContext(s.st.ctx, "refused by back pressure", "declared_size", opts.Size)
		return reply(452, "4.3.1", "Insufficient system storage")
	}
	return nil
}
