package transport

import (
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"hubd/hub"
	"hubd/hub/dkimsign"
	"hubd/policy"
)

// DKIM signing (RFC 6376, hub/dkimsign) happens once per message, in the
// categorizer's pass that fixes its recipient list (expand), before any
// delivery: the DKIM-Signature fields go at the front of State.Prepend, so
// they sign — and every attempt and every DSN returning the content sends —
// exactly Prepend's other fields and the stored body; list trace fields,
// added above per list at delivery, are outside the signature.
//
// Once: the fields are computed only while the message is not yet
// Expanded, and they enter the state together with Expanded. When that
// state is persisted at once (an alias expanded, a recipient refused) the
// signature is durable before the first attempt. When the recipient list
// is the envelope's own, expand keeps it in memory and the first attempt's
// Update persists it (an fsync per message saved, expand.go); a crash
// before that Update re-signs after the restart, but nothing was recorded
// as delivered then either, so every attempt a recipient's outcome was
// recorded for, and every retry after it, sends the same signed bytes.
//
// Which mail: the dkim block of the From: domain (or its nearest parent,
// policy.Config.DKIMFor), when its sign setting covers how the message
// came in (policy.Config.DKIMSigns: authenticated, a trusted connector,
// the local pickup, the hub's own DSNs; or all). A DSN's From: is
// MAILER-DAEMON@<hub hostname>, so a hub whose host name lies under a
// signed domain signs its bounces with that domain.
//
// On failure (a read error of the stored body, a limit of dkimsign, a key
// refusing to sign) the message is delivered unsigned, and the failure is
// logged at Error and recorded on the categorize span. Not bounced: the
// message was accepted with 250 and nothing about it is wrong; not
// retried: the keys are in memory since the configuration was loaded (a
// key that cannot be read never loads, `hubd check` reports it), so the
// failures left are either lasting (the limits) or would fail the delivery
// itself, which retries on its own. An unsigned message fares at a
// receiver like one whose signature broke in transit (RFC 6376 §6.1: a
// failed signature is treated as absent); under a DMARC policy of reject
// without an aligned SPF pass it is refused and the sender gets the DSN,
// so the failure is not silent either way.
//
// Conversions: no signature survives a change of the body, and the SMTP
// deliverer changes it for a next hop without 8BITMIME (8-bit parts
// re-encoded) and for every next hop when a line is over 998 octets (RFC
// 5321 §4.5.3.1.6). RFC 6376 §5.3 asks signers to convert before signing;
// hubd stores the body as received and signs it so, since nearly every
// next hop takes it unchanged. For the few that do not, the deliverer
// sends the converted content without the hub's own DKIM-Signature fields
// (delivery.Message.OpenUnsigned, splitOwnSignatures) and logs it at Warn:
// an absent signature and a broken one are the same to a verifier (RFC
// 6376 §6.1), and the message is delivered rather than refused.

// presign signs e for expand, before expand takes e.mu: reading a large
// message through the signer takes a while (a 100 MiB message about 2.5
// s), and operators' views of the message wait for e.mu. It returns the
// fields, and the prepend they sign over ("" and "" when e is not to be
// signed now: no dkim block, or it is expanded, held or poisoned). The
// pass owns e (e.busy): its Message stays, and its prepend changes only
// with the pass's own state; expand checks that it is still the one
// signed over before it uses the fields.
func (t *Transport) presign(cfg *policy.Config, e *entry, span trace.Span) (fields, over string) {
	if len(cfg.DKIM) == 0 {
		return "", ""
	}
	e.mu.Lock()
	m := e.msg
	skip := m.Expanded || m.Held || m.Poisoned
	id, env, prepend := m.ID, m.Envelope, m.Prepend
	e.mu.Unlock()
	if skip {
		return "", ""
	}
	return t.signDKIM(cfg, id, &env, prepend, span), prepend
}

// signDKIM returns the DKIM-Signature fields for message id (envelope env,
// prepend the fields already stored above its content), or "" when it is
// not signed.
func (t *Transport) signDKIM(cfg *policy.Config, id hub.QueueID, env *hub.Envelope, prepend string, span trace.Span) string {
	choose := func(domain string) *policy.DKIMDomain {
		d := cfg.DKIMFor(domain)
		if d == nil || !cfg.DKIMSigns(d, env.Connector, env.AuthUser != "") {
			return nil
		}
		return d
	}
	rc, err := t.openContent(id, prepend, nil)
	var res dkimsign.Result
	if err == nil {
		res, err = dkimsign.Sign(rc, choose)
		rc.Close()
	}
	if err != nil {
		t.log.Error("DKIM signing failed: the message is delivered unsigned", "id", id,
			"from_domain", res.FromDomain, "err", err)
		span.SetAttributes(attrDKIMError.String(err.Error()))
		span.SetStatus(codes.Error, "DKIM signing failed")
		return ""
	}
	if res.Fields == "" {
		return ""
	}
	sigs := make([]string, len(res.Signatures))
	for i, s := range res.Signatures {
		sigs[i] = "d=" + s.Domain + " s=" + s.Selector + " a=" + s.Algorithm
		t.log.Info("DKIM signed", "id", id, "d", s.Domain, "s", s.Selector, "a", s.Algorithm)
	}
	span.SetAttributes(attrDKIMSignatures.StringSlice(sigs))
	return res.Fields
}

// splitOwnSignatures cuts the DKIM-Signature fields the hub put at the
// front of a prepend (signDKIM) from the fields after them (the receipt
// checks' Authentication-Results).
func splitOwnSignatures(prepend string) (sigs, rest string) {
	n := 0
	for len(prepend[n:]) > len("DKIM-Signature:") && strings.EqualFold(prepend[n:n+len("DKIM-Signature:")], "DKIM-Signature:") {
		// One field: its first line and the continuation lines (WSP first).
		for {
			i := strings.Index(prepend[n:], "\r\n")
			if i < 0 {
				return prepend, "" // cannot happen: every field ends in CRLF
			}
			n += i + 2
			if n == len(prepend) || (prepend[n] != ' ' && prepend[n] != '\t') {
				break
			}
		}
	}
	return prepend[:n], prepend[n:]
}

// Attributes of the categorize span for DKIM signing (docs/spans.md).
const (
	attrDKIMSignatures = attribute.Key("mta.dkim.signatures") // "d=example.com s=s1 a=rsa-sha256", one per signature
	attrDKIMError      = attribute.Key("mta.dkim.error")      // why the message went unsigned
)
