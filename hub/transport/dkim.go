package transport

import (
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"hubd/hub/dkimsign"
	"hubd/hub/queue"
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
// Update persists it (an fsync per message saved, process.go); a crash
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
// Known limitation: a signed body is never re-encoded for a next hop
// (hub/delivery/mime7bit: the body hash covers the encoded bytes), so a
// message hubd signed that has 8-bit content and meets a next hop without
// 8BITMIME fails with 554 5.6.3 and its sender gets a DSN, where unsigned
// it would have been converted; and a line over 998 octets is folded for
// every next hop (RFC 5321 §4.5.3.1.6), which breaks the signature, as it
// does for Postfix with OpenDKIM. RFC 6376 §5.3 asks signers to convert
// before signing; hubd stores the body as received and cannot. The
// deliverer logs a fold of a message hubd signed at Warn
// (delivery.Message.DKIMSigned). Nearly every MTA offers 8BITMIME.

// signDKIM returns the DKIM-Signature fields for m, or "" when m is not
// signed. e.mu is held (as for readTrace: the pass owns the message).
func (t *Transport) signDKIM(cfg *policy.Config, m *queue.Message, span trace.Span) string {
	choose := func(domain string) *policy.DKIMDomain {
		d := cfg.DKIMFor(domain)
		if d == nil || !cfg.DKIMSigns(d, m.Envelope.Connector, m.Envelope.AuthUser != "") {
			return nil
		}
		return d
	}
	rc, err := t.openContent(m.ID, m.Prepend, nil)
	var res dkimsign.Result
	if err == nil {
		res, err = dkimsign.Sign(rc, choose)
		rc.Close()
	}
	if err != nil {
		t.log.Error("DKIM signing failed: the message is delivered unsigned", "id", m.ID,
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
		t.log.Info("DKIM signed", "id", m.ID, "d", s.Domain, "s", s.Selector, "a", s.Algorithm)
	}
	span.SetAttributes(attrDKIMSignatures.StringSlice(sigs))
	return res.Fields
}

// dkimSigned reports whether a prepend holds a DKIM-Signature field (the
// hub's own: Prepend's other fields are Authentication-Results).
func dkimSigned(prepend string) bool {
	return strings.HasPrefix(prepend, "DKIM-Signature:") || strings.Contains(prepend, "\r\nDKIM-Signature:")
}

// Attributes of the categorize span for DKIM signing (docs/spans.md).
const (
	attrDKIMSignatures = attribute.Key("mta.dkim.signatures") // "d=example.com s=s1 a=rsa-sha256", one per signature
	attrDKIMError      = attribute.Key("mta.dkim.error")      // why the message went unsigned
)
