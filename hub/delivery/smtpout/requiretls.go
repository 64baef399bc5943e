package smtpout

import (
	"crypto/tls"
	"errors"
	"strings"

	"hubd/hub/delivery"
	mailmsg "hubd/internal/message"
	"hubd/policy"
)

// tlsPolicy is what one message asks of the connection that carries it. The
// hop's TLS setting is the default; the message can make it stricter
// (REQUIRETLS) or, where the hop requires TLS, looser (TLS-Required: No).
type tlsPolicy struct {
	mode policy.SendTLS // how STARTTLS is used: none, opportunistic (unverified), required (verified)
	// requireTLS is RFC 8689's REQUIRETLS: verified TLS to a server that
	// advertises REQUIRETLS, the parameter on MAIL, and a host that cannot
	// give all that is passed over with 550 5.7.30 rather than used.
	requireTLS bool
}

// maxHeaderScan bounds the header section read to find TLS-Required. A
// field past it is not seen, which keeps the hop's stricter setting.
const maxHeaderScan = 2 << 20

// messageTLS decides the message's TLS policy on hop:
//
//   - REQUIRETLS in the envelope (RFC 8689 §4.2.1): verified TLS whatever the
//     hop's setting, "none" included; the TLS-Required field is then ignored
//     (RFC 8689 §3: the MAIL parameter wins).
//   - "TLS-Required: No" in the header (RFC 8689 §3, §4.2.2): the sender
//     asks that the message go even where TLS cannot be had, so a hop that
//     requires TLS treats it as opportunistic: STARTTLS is still tried when
//     offered (RFC 8689 §4.2.2 allows it), and plaintext is accepted.
//   - otherwise the hop's setting.
//
// A non-nil Result (the message could not be read) is every recipient's.
func (d *Deliverer) messageTLS(hop delivery.NextHop, msg delivery.Message) (tlsPolicy, *delivery.Result) {
	if msg.Envelope != nil && msg.Envelope.RequireTLS {
		return tlsPolicy{mode: policy.SendTLSRequired, requireTLS: true}, nil
	}
	mode := tlsMode(hop)
	if mode != policy.SendTLSRequired {
		return tlsPolicy{mode: mode}, nil // TLS-Required: No would change nothing
	}
	no, err := tlsRequiredNo(msg)
	if err != nil {
		return tlsPolicy{}, &delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.3.0",
			Text: "cannot read queued message: " + err.Error()}
	}
	if no {
		mode = policy.SendTLSOpportunistic
	}
	return tlsPolicy{mode: mode}, nil
}

// tlsRequiredNo reports whether the message's header has "TLS-Required: No"
// (RFC 8689 §3; "No" is the only value defined, compared without regard to
// case as ABNF literals are).
func tlsRequiredNo(msg delivery.Message) (bool, error) {
	body, err := msg.Open()
	if err != nil {
		return false, err
	}
	defer body.Close()
	hdr, err := mailmsg.ReadHeader(body, maxHeaderScan)
	if err != nil && !errors.Is(err, mailmsg.ErrHeaderTooLong) {
		return false, err
	}
	v, ok := mailmsg.Field(hdr, "TLS-Required")
	return ok && strings.EqualFold(v, "No"), nil
}

// allows reports whether an idle connection may carry a message with this
// policy: a connection opened for a message with a looser policy (in
// plaintext for "TLS-Required: No", or with unverified TLS) never carries
// one that needs more.
func (p tlsPolicy) allows(c *conn) bool {
	switch {
	case p.requireTLS:
		return c.tls && c.verified && c.has("REQUIRETLS")
	case p.mode == policy.SendTLSRequired:
		return c.tls && c.verified
	default:
		return true
	}
}

// requireTLSFailed is the result for a host that cannot carry a REQUIRETLS
// message: permanent (RFC 8689 §5 returns the message to its sender when no
// host can), with the enhanced status code RFC 8689 §7.3 registered for it.
// It says nothing about the next hop as a whole (Connection stays false):
// other messages may go there as before.
func (tr *transaction) requireTLSFailed(reason string) delivery.Result {
	return tr.failed(550, "5.7.30", "REQUIRETLS support required: "+reason)
}

// isVerifyError tells a certificate that failed verification (permanent for
// a REQUIRETLS message) from a handshake cut short by the network.
func isVerifyError(err error) bool {
	var ve *tls.CertificateVerificationError
	return errors.As(err, &ve)
}
