package connectors

// Sender authentication checks on receipt (connectors/authcheck does the
// checking; policy.ReceiveChecks says which run and what they refuse).
//
// Who is checked: sessions of a connector whose checks block turns a check
// on, unless they authenticated (AUTH), the connector is externally
// secured (every session has the Trusted rights), or its anonymous
// sessions may relay (a connector for trusted ranges: its remote_ip_ranges
// are our own hosts): those are our own users and hosts, and nothing is
// recorded for them. The Service needs a
// resolver (Options.Resolver); without one no check runs.
//
// When:
//   - SPF at MAIL FROM, once the command is otherwise acceptable. With
//     spf_reject, "fail" is refused there: "550 5.7.23" (RFC 7372 §3.2,
//     "SPF validation failed"); with temperror_defer (the default),
//     "temperror" is "451 4.7.24" (RFC 7372 §3.2, "SPF validation error",
//     transient). Softfail, neutral, none and permerror are accepted and
//     recorded: RFC 7208 §8.4-8.7 leave them to local policy, and refusing
//     a domain's broken record would punish its recipients.
//   - DKIM and DMARC while the content streams to the queue, decided at
//     its end. With dmarc_reject, a DMARC "fail" whose domain asks
//     p=reject (sp=reject for a subdomain; within pct=) is "550 5.7.1"
//     naming the From domain (RFC 7489 §6.7 and §10.3 suggest 5.7.1);
//     with temperror_defer, a "temperror" where the policy is reject or
//     could not be read is "451 4.7.5" (RFC 3463 X.7.5 "cryptographic
//     failure": the key or policy needed to verify is not available now;
//     RFC 7372 has no DMARC code). Nothing is queued then: the hub sees
//     the refusal as the content's read error.
//   - Every session of a connector with checks on gets the
//     Authentication-Results fields that claim the hub's hostname removed
//     (RFC 8601 §5), authenticated or not; checked sessions get one new
//     field, stored above the message (hub.HeaderSource).
//
// The results go to the "queued" (or "refused") log line as spf=, dkim=,
// dmarc=, and to the transaction's span as mta.auth.spf, mta.auth.dkim,
// mta.auth.dmarc.

import (
	"context"
	"io"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"hubd/connectors/authcheck"
	"hubd/hub"
	"hubd/policy"
)

const (
	attrAuthSPF   = attribute.Key("mta.auth.spf")
	attrAuthDKIM  = attribute.Key("mta.auth.dkim")
	attrAuthDMARC = attribute.Key("mta.auth.dmarc")
)

// checker is the session's authcheck.Checker, or nil when the session is
// not checked. s.mu is held or the caller works on a snapshot.
func (s *session) checker(authUser string) *authcheck.Checker {
	res := s.c.svc.resolver
	if res == nil || !s.c.rc.Checks.Any() || authUser != "" || s.c.rc.ExternallySecured ||
		s.c.rc.SessionRights(false).Has(policy.RightRelay) {
		return nil
	}
	return &authcheck.Checker{Resolver: res, AuthServID: s.c.cfg.Hub.Hostname}
}

// checkSPF runs SPF for an accepted MAIL FROM and keeps the result for
// the transaction; it returns the refusal spf_reject makes of it.
func (s *session) checkSPF(tx *txTrace, from string) error {
	s.mu.Lock()
	c := s.checker(s.authUser)
	helo := s.conn.Hostname()
	s.mu.Unlock()
	ck := s.c.rc.Checks
	if c == nil || !ck.SPF {
		return nil
	}
	res := c.CheckSPF(tx.ctx, s.st.peer, helo, from)
	tx.span.SetAttributes(attrAuthSPF.String(string(res.Result)))
	var r *policy.Reply
	switch {
	case ck.SPFReject && res.Result == authcheck.Fail:
		r = reply(550, "5.7.23", "SPF validation failed: "+res.Domain+" does not permit "+s.st.peer.String()+" to send its mail")
	case ck.SPFReject && ck.TempErrorDefer && res.Result == authcheck.TempError:
		r = reply(451, "4.7.24", "SPF validation error: temporary DNS failure for "+res.Domain+", try again later")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r == nil {
		s.spf = res
		return nil
	}
	// The transaction mailFrom opened ends with this refusal (Mail ends
	// its span).
	s.tx = nil
	s.resetLocked()
	s.st.log.InfoContext(s.st.ctx, "SPF", "spf", res.Result, "domain", res.Domain, "reason", res.Reason)
	return s.refuse("MAIL", r)
}

// dataChecks wraps the content of a message: the DKIM and DMARC checks
// see it as it goes by (tee), and the Authentication-Results fields with
// our authserv-id are removed from what goes on. It returns the content
// reader and the checks (nil when the session is not checked).
func (s *session) dataChecks(ctx context.Context, tx txn, content io.Reader) (io.Reader, *messageChecks) {
	if !s.c.rc.Checks.Any() {
		return content, nil
	}
	c := s.checker(tx.authUser)
	var mc *messageChecks
	if c != nil {
		ck := s.c.rc.Checks
		mc = &messageChecks{r: content, c: c, rc: s.c.rc, spf: tx.spf}
		mc.m = c.NewMessage(ctx, authcheck.MessageOptions{DKIM: ck.DKIM, DMARC: ck.DMARC, SPF: tx.spf})
		content = mc
	}
	return authcheck.StripOwnResults(content, s.c.cfg.Hub.Hostname), mc
}

// messageChecks is the content as the checks see it: every byte read is
// written to the check, and its source's end is the checks' end, where
// dmarc_reject may turn EOF into a refusal.
type messageChecks struct {
	r    io.Reader
	c    *authcheck.Checker
	rc   *policy.ReceiveConnector
	spf  *authcheck.SPFResult
	m    *authcheck.Message
	res  authcheck.Results
	done bool
	err  error
}

func (mc *messageChecks) Read(p []byte) (int, error) {
	if mc.done {
		return 0, mc.err
	}
	n, err := mc.r.Read(p)
	mc.m.Write(p[:n])
	switch {
	case err == io.EOF:
		mc.done = true
		mc.res = mc.m.Finish()
		mc.err = io.EOF
		if r := mc.refusal(); r != nil {
			mc.err = r
			return n, r
		}
	case err != nil:
		mc.done, mc.err = true, err
		mc.m.Abort()
	}
	return n, err
}

// refusal is what dmarc_reject makes of the results.
func (mc *messageChecks) refusal() *policy.Reply {
	ck, d := mc.rc.Checks, mc.res.DMARC
	if !ck.DMARCReject || d == nil {
		return nil
	}
	switch {
	case d.Reject():
		return reply(550, "5.7.1", "Message rejected by the DMARC policy of "+d.From+
			": the From: domain is not authenticated (no aligned SPF or DKIM pass)")
	case ck.TempErrorDefer && d.Result == authcheck.TempError && (d.Policy == "reject" || d.Policy == ""):
		return reply(451, "4.7.5", "DMARC check of "+d.From+" could not be completed, try again later")
	}
	return nil
}

// close ends the checks of a message that was not read to its end.
func (mc *messageChecks) close() {
	if mc != nil {
		mc.m.Abort()
	}
}

// field is the Authentication-Results field to store above the message.
func (mc *messageChecks) field() string { return mc.c.Field(mc.res) }

// record puts the results on the span and returns them for the log line.
func (mc *messageChecks) record(span trace.Span) []any {
	if mc == nil || !mc.done {
		return nil
	}
	spf, dkim, dmarc := mc.res.Summary()
	var attrs []attribute.KeyValue
	var log []any
	for _, kv := range []struct {
		key attribute.Key
		val string
	}{{attrAuthSPF, spf}, {attrAuthDKIM, dkim}, {attrAuthDMARC, dmarc}} {
		if kv.val != "" {
			attrs = append(attrs, kv.key.String(kv.val))
			log = append(log, strings.TrimPrefix(string(kv.key), "mta.auth."), kv.val)
		}
	}
	span.SetAttributes(attrs...)
	return log
}

// headerSource is a Submit body that brings the checks' field at its end
// (hub.HeaderSource).
type headerSource struct {
	io.Reader
	mc *messageChecks
}

func (h headerSource) HeadersAtEnd() string { return h.mc.field() }

// AuthResults is the results in short, for the tracking log.
func (h headerSource) AuthResults() string {
	spf, dkim, dmarc := h.mc.res.Summary()
	var parts []string
	for _, kv := range [][2]string{{"spf", spf}, {"dkim", dkim}, {"dmarc", dmarc}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+kv[1])
		}
	}
	return strings.Join(parts, " ")
}

var _ hub.AuthResultsSource = headerSource{}
