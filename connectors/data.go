package connectors

import (
	"bytes"
	"context"
	"io"
	"time"

	"github.com/emersion/go-smtp"
	"go.opentelemetry.io/otel/propagation"

	"hubd/connectors/authcheck"
	"hubd/hub"
	"hubd/internal/message"
	"hubd/policy"
)

// Data implements DATA and BDAT (RFC 5321 §4.1.1.4, RFC 3030): the content
// goes through message.Reader into Submit, and the reply is 250 only once
// Submit has returned, that is once the message is durable. Unless the
// session's rights include accept_org_headers, the hub-internal header
// fields (X-Hubd-*) are removed on the way: the header firewall.
//
// For BDAT, go-smtp runs Data in a goroutine of its own while it reads the
// chunks, concurrently with later commands: Data works on a snapshot of the
// transaction (txn) and never reads the live session.
func (s *session) Data(r io.Reader) error {
	s.mu.Lock()
	s.helo = s.conn.Hostname() // a later EHLO may have renamed the client
	tx := txn{id: s.queueID, helo: s.helo, ehlo: s.sc.greeting() == greetedEHLO, authUser: s.authUser,
		rights: s.rights(), from: s.from, mail: s.mail, rcpts: append([]hub.Recipient(nil), s.rcpts...), spf: s.spf}
	// DATA owns the transaction's span from here: it ends with the final
	// reply, whatever go-smtp's Reset does meanwhile.
	tt := s.tx
	s.tx = nil
	s.mu.Unlock()
	s.sc.inData.Store(true)
	defer s.sc.inData.Store(false)

	st := s.st
	id := string(tx.id)
	if tt == nil {
		tt = s.startTransaction() // cannot happen: DATA comes after an accepted MAIL
	}
	ctx, span := tt.ctx, tt.span
	span.SetAttributes(attrQueueID.String(id), attrRcptCount.Int(len(tx.rcpts)))
	if s.recordAddresses() {
		addrs := make([]string, len(tx.rcpts))
		for i, r := range tx.rcpts {
			addrs[i] = r.Address
		}
		span.SetAttributes(attrRcptTo.StringSlice(addrs))
	}

	// DATA content comes from the filter's dotReader (dotreader.go), not
	// from go-smtp's byte-at-a-time reader; BDAT content from go-smtp.
	content := r
	if body := s.sc.dataBody(r); body != nil {
		content = body
	}
	now := s.c.svc.now()
	mr := message.NewReader(content, s.readerOptions(tx, id, now))
	// The checks (checks.go) see the content as the client sent it, with
	// our Received: field on top.
	out, checks := s.dataChecks(ctx, tx, mr)
	defer checks.close()
	var firewall *message.OrgHeaderFilter
	if !tx.rights.Has(policy.RightAcceptOrgHeaders) {
		// The header firewall (message/orgheader.go): a client without the
		// accept_org_headers right cannot hand the hub its internal fields.
		firewall = message.StripOrgHeaders(out)
		out = firewall
	}
	watch := &errWatch{r: out}
	env := s.envelope(ctx, tx, now)
	// Read the first chunk before Submit: the reader examines the whole
	// header section then, so the envelope can carry the Message-ID, and a
	// broken header is refused without bothering the hub.
	head, err := readHead(watch)
	env.MessageID = mr.MessageID()
	var qid hub.QueueID
	if err == nil {
		// Submit may wait for the queue: replies still buffered (those to
		// MAIL and RCPT when the client pipelined BDAT, or a 354 it did not
		// wait for) go out first.
		s.sc.flush()
		var body io.Reader = io.MultiReader(bytes.NewReader(head), watch)
		if checks != nil {
			body = headerSource{body, checks}
		}
		qid, err = s.c.svc.sub.Submit(ctx, env, body)
	}
	authLog := checks.record(span)
	if watch.err != nil {
		// The content broke a rule: that reply wins over whatever Submit
		// made of the read error.
		err = watch.err
	}
	if err != nil {
		// Keep the session in step: the rest of the content must be read
		// before the reply (go-smtp drains DATA too; for BDAT this makes
		// the reply wait for the last chunk, RFC 3030 §2).
		io.Copy(io.Discard, content)
		if len(authLog) > 0 {
			st.log.InfoContext(ctx, "authentication results", authLog...)
		}
		return s.dataFailed(ctx, tt, err)
	}
	st.mu.Lock()
	st.messages++
	st.mu.Unlock()
	s.c.stats.accepted.Add(1)
	s.c.svc.meters.accepted(s.c.rc.Name, mr.Size())
	s.c.svc.meters.transaction(s.c.rc.Name, 250)
	span.SetAttributes(attrMessageSize.Int64(mr.Size()))
	st.log.InfoContext(ctx, "queued", append([]any{"queue_id", string(qid), "from", env.From, "rcpts", len(env.Recipients),
		"size", mr.Size(), "message_id", mr.MessageID()}, authLog...)...)
	if firewall != nil && firewall.Stripped() > 0 {
		st.log.InfoContext(ctx, "header firewall: hub-internal fields removed", "queue_id", string(qid),
			"fields", firewall.Stripped(), "prefix", message.OrgHeaderPrefix)
	}
	ok := reply(250, "2.0.0", "Ok: queued as "+string(qid))
	tt.end(ok)
	return smtpError(ok)
}

// txn is the part of the session a message needs, copied when DATA or BDAT
// starts.
type txn struct {
	id                   hub.QueueID // reserved at MAIL
	ehlo                 bool        // the client said EHLO, not HELO
	helo, authUser, from string
	rights               policy.Rights
	mail                 smtp.MailOptions
	rcpts                []hub.Recipient
	spf                  *authcheck.SPFResult // checks.go
}

// readerOptions are the connector's content limits and what to add.
func (s *session) readerOptions(tx txn, id string, now time.Time) message.Options {
	rc := s.c.rc
	maxSize := rc.MaxMessageSize
	if tx.rights.Has(policy.RightBypassSizeLimit) {
		maxSize = 0
	}
	opts := message.Options{
		MaxMessageSize: maxSize,
		MaxHeaderSize:  rc.MaxHeaderSize,
		MaxHopCount:    rc.MaxHopCount,
		MaxLineLength:  maxDataLineLength,
		Received:       message.ReceivedHeader(s.trace(tx, id, now)),
		Clock:          s.c.svc.now,
	}
	if tx.authUser != "" {
		// RFC 6409 §8.3, §8.4: a submission server may add Message-ID and Date.
		opts.AddMessageID = "<" + newID() + "@" + rc.FQDN + ">"
		opts.AddDate = true
	}
	return opts
}

// envelope is the transaction's hub.Envelope; ctx carries the message span
// whose traceparent goes with the message across the queue.
func (s *session) envelope(ctx context.Context, tx txn, now time.Time) hub.Envelope {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	return hub.Envelope{
		ID:          tx.id,
		From:        tx.from,
		Recipients:  tx.rcpts,
		SMTPUTF8:    tx.mail.UTF8,
		Body:        string(tx.mail.Body),
		DSNRet:      string(tx.mail.Return),
		DSNEnvID:    tx.mail.EnvelopeID,
		RequireTLS:  tx.mail.RequireTLS,
		ReceivedAt:  now,
		Connector:   s.c.rc.Name,
		ClientAddr:  s.st.remote,
		ClientHelo:  tx.helo,
		AuthUser:    tx.authUser,
		TraceParent: carrier["traceparent"],
	}
}

// dataFailed turns a content or Submit error into the reply: a reply the
// error carries, or 451 4.3.0 for anything else (logged).
// The transaction's span ends with that reply.
func (s *session) dataFailed(ctx context.Context, tt *txTrace, err error) error {
	s.c.stats.refused.Add(1)
	r, ok := replyOf(err)
	if ok {
		s.st.log.InfoContext(ctx, "refused", "command", "DATA", "reply", r.Error())
	} else {
		tt.span.RecordError(err)
		s.st.log.ErrorContext(ctx, "submit failed", "err", err)
		r = reply(451, "4.3.0", "Temporary failure, try again later")
	}
	s.c.svc.meters.transaction(s.c.rc.Name, r.Code)
	tt.end(r)
	return smtpError(r)
}

// trace describes this hop for the Received: field (RFC 5321 §4.4).
func (s *session) trace(tx txn, id string, now time.Time) message.Trace {
	t := message.Trace{
		FromHelo: tx.helo,
		FromIP:   s.st.peer.String(),
		By:       s.c.rc.FQDN,
		With:     withProtocol(tx.ehlo, tx.mail.UTF8, s.tls != nil, tx.authUser != ""),
		ID:       id,
		UTF8:     tx.mail.UTF8,
		Time:     now,
	}
	if len(tx.rcpts) == 1 {
		// RFC 5321 §7.2: naming one of several recipients would disclose it.
		t.For = tx.rcpts[0].Address
	}
	if s.tls != nil {
		t.TLS = message.TLSDetails(s.tls)
	}
	return t
}

// withProtocol is the Received: field's "with" keyword (the IANA "Mail
// Transmission Types" registry): SMTP after HELO; after EHLO ESMTP, with
// S for TLS and A for AUTH (RFC 3848: ESMTPS, ESMTPA, ESMTPSA), and
// UTF8SMTP in their place when the transaction used SMTPUTF8 (RFC 6531
// §3.7.3: UTF8SMTP, UTF8SMTPS, UTF8SMTPA, UTF8SMTPSA). hubd receives no
// LMTP, so the LMTP names never apply here.
func withProtocol(ehlo, utf8, tls, auth bool) string {
	if !ehlo {
		return "SMTP"
	}
	with := "ESMTP"
	if utf8 {
		with = "UTF8SMTP"
	}
	if tls {
		with += "S"
	}
	if auth {
		with += "A"
	}
	return with
}

// readHead reads the first chunk of r: at least one byte, or an error
// other than EOF. The chunk may be small: the first Read of a
// message.Reader examines the whole header section whatever its size.
func readHead(r io.Reader) ([]byte, error) {
	buf := make([]byte, 512)
	for {
		n, err := r.Read(buf)
		if n > 0 || err == io.EOF {
			return buf[:n], nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// errWatch remembers the first error other than EOF its reader returned.
type errWatch struct {
	r   io.Reader
	err error
}

func (w *errWatch) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err != nil && err != io.EOF && w.err == nil {
		w.err = err
	}
	return n, err
}
