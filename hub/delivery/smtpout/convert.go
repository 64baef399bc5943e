package smtpout

import (
	"context"
	"io"
	"log/slog"
	"strings"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/delivery/mime7bit"
	mailmsg "hubd/internal/message"
)

// bodyType plans what the message must become for this server
// (hub/delivery/mime7bit) and returns the BODY= value to declare (RFC
// 6152), or a refusal.
//
//   - A server without 8BITMIME gets 8-bit content converted: text parts to
//     quoted-printable, other parts to base64 (RFC 6152 §3 lets the client
//     convert; Postfix does). What may not be converted (a signed message,
//     a message/* part, a MIME part header) fails the message with 554
//     5.6.3 "conversion required but not supported" (RFC 3463), and so do
//     8-bit octets in the top-level header section, which is never
//     converted (with SMTPUTF8 asked for, mailParams has refused the
//     message with 5.6.7 already).
//   - Every server gets no line longer than 998 octets (RFC 5321
//     §4.5.3.1.6): text parts with longer lines are re-encoded
//     quoted-printable (lossless, also for a server with 8BITMIME), others
//     folded as mime7bit describes; folds are logged.
//   - A message the hub signed (Message.OpenUnsigned) that needs any of
//     this goes without the hub's DKIM-Signature fields, which it would
//     break, logged at Warn: delivered unsigned rather than refused.
//   - BODY=8BITMIME is declared when the server has 8BITMIME and the client
//     declared it or what is sent has 8-bit octets.
//
// The converted message is what DATA sends (tr.conv) and what SIZE counts.
func (tr *transaction) bodyType(ctx context.Context, c *conn, env *hub.Envelope) (string, *delivery.Result) {
	has8 := c.has("8BITMIME")
	tr.conv, tr.convSize = nil, 0
	if tr.msg.Plain {
		// 7-bit with short lines, seen whole when it was queued: Analyze
		// would change nothing and find nothing 8-bit (mime7bit.PlainReader).
		if has8 && strings.EqualFold(env.Body, "8BITMIME") {
			return "8BITMIME", nil
		}
		return "", nil
	}
	tr.unsigned = false
	plan, err := tr.analyse(mime7bit.Options{EightBit: has8})
	if err == nil && tr.msg.OpenUnsigned != nil && (plan.Refusal != "" || plan.Changes()) {
		// The hub's own signature would not survive the conversion (or
		// forbids it): send the content without it (hub/transport/dkim.go).
		tr.unsigned = true
		plan, err = tr.analyse(mime7bit.Options{EightBit: has8})
	}
	if err != nil {
		r := tr.deferred(451, "4.3.0", "cannot read queued message: "+err.Error())
		return "", &r
	}
	why := plan.Refusal
	if why == "" && plan.Header8bit && !has8 {
		why = "8-bit octets in the header section, which is never converted"
	}
	if why != "" {
		r := tr.failed(554, "5.6.3", "conversion required but not supported: "+why+"; "+tr.target.host+" lacks 8BITMIME")
		return "", &r
	}
	tr.conv, tr.convSize = nil, 0
	if plan.Changes() {
		n, err := tr.convertedSize(plan)
		if err != nil {
			r := tr.deferred(451, "4.3.0", "cannot read queued message: "+err.Error())
			return "", &r
		}
		tr.conv, tr.convSize = plan, n
		level := slog.LevelInfo
		if plan.Folded > 0 || tr.unsigned {
			// The reader sees the folds; the receiver of a message the
			// hub signed gets it without the signature, which the
			// conversion would have broken (hub/transport/dkim.go).
			level = slog.LevelWarn
		}
		tr.d.log.Log(ctx, level, "smtpout: message converted for the next hop",
			slog.String("queue_id", string(tr.msg.ID)), slog.String("host", tr.target.host),
			slog.Bool("8bitmime", has8), slog.Int("parts_reencoded", plan.Converted),
			slog.Int("lines_folded", plan.Folded), slog.Int64("size", n),
			slog.Bool("dkim_signature_dropped", tr.unsigned))
	}
	if has8 && (strings.EqualFold(env.Body, "8BITMIME") || plan.Output8bit) {
		return "8BITMIME", nil
	}
	return "", nil
}

// content opens the message as it leaves through this hop: without the
// hub-internal header fields unless the send connector keeps them (the
// header firewall, internal/message).
func (tr *transaction) content() (io.ReadCloser, error) {
	body, err := tr.openContent()
	if err != nil || tr.hop.OrgHeaders {
		return body, err
	}
	return struct {
		io.Reader
		io.Closer
	}{mailmsg.StripOrgHeaders(body), body}, nil
}

// openContent opens the message as queued, or without the hub's DKIM signature
// when bodyType decided so (tr.unsigned).
func (tr *transaction) openContent() (io.ReadCloser, error) {
	if tr.unsigned {
		return tr.msg.OpenUnsigned()
	}
	return tr.msg.Open()
}

func (tr *transaction) analyse(opts mime7bit.Options) (*mime7bit.Plan, error) {
	body, err := tr.content()
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return mime7bit.Analyze(body, opts)
}

// convertedSize runs the conversion once without sending, for SIZE= (RFC
// 1870) and the server's limit.
func (tr *transaction) convertedSize(plan *mime7bit.Plan) (int64, error) {
	body, err := tr.content()
	if err != nil {
		return 0, err
	}
	defer body.Close()
	return plan.WriteTo(io.Discard, body)
}

// size is the size of what DATA sends: the converted message's, else the
// queued message's (the header firewall only ever makes it smaller).
func (tr *transaction) size() int64 {
	if tr.conv != nil {
		return tr.convSize
	}
	return tr.msg.Size
}
