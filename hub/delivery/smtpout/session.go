package smtpout

import (
	"context"
	"crypto/tls"
	"errors"
	"net"

	"hubd/hub/delivery"
	"hubd/policy"
)

// open dials the transaction's target and brings the session to the point
// where MAIL may be sent: greeting, EHLO, and the hop's TLS policy. On
// success the connection is bound to ctx (see conn.bind). On failure the
// connection is closed and the Result, which has Connection set, says why
// the host was passed over.
func (tr *transaction) open(ctx context.Context, plain bool) (*conn, delivery.Result, nextAction) {
	dialer := net.Dialer{Timeout: tr.d.dialTimeout}
	if err := tr.loadClientCert(); err != nil {
		// Our own files, not the host: every host would fail the same way.
		res := tr.deferred(451, "4.3.5", err.Error())
		res.Connection = true
		return nil, res, nextHost
	}
	nc, err := dialer.DialContext(ctx, "tcp", tr.target.addr)
	if err != nil {
		res := tr.netResult(ctx, "4.4.1", "connect", err)
		res.Connection = true
		return nil, res, nextHost
	}
	c := newConn(nc, tr.target.host, tr.target.addr)
	c.bind(ctx)
	res, next := tr.implicitTLS(ctx, c)
	if next == done {
		res, next = tr.greet(ctx, c, plain)
	}
	if next != done {
		c.release()
		_ = c.close()
		// A Failed result here is a REQUIRETLS message this host cannot
		// carry: about the message, not the hop.
		res.Connection = res.Status != delivery.Failed
		return nil, res, next
	}
	return c, delivery.Result{}, done
}

// greet waits for the 220 greeting (RFC 5321 §4.5.3.2.1), says EHLO and
// applies the TLS policy.
func (tr *transaction) greet(ctx context.Context, c *conn, plain bool) (delivery.Result, nextAction) {
	r, err := c.readReply(tr.d.cmdTimeout)
	if err != nil {
		return tr.netResult(ctx, "4.4.1", "no greeting", err), nextHost
	}
	if r.Code != 220 {
		c.quit(tr.d.quitTimeout)
		return tr.refused("greeting", r), nextHost
	}
	if res, ok := tr.hello(ctx, c); !ok {
		return res, nextHost
	}
	if res, next := tr.negotiateTLS(ctx, c, plain); next != done {
		return res, next
	}
	return tr.authenticate(ctx, c, plain)
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
		c.quit(tr.d.quitTimeout)
		return tr.refused("EHLO/HELO", r), false
	}
	return delivery.Result{}, true
}

// negotiateTLS applies the message's TLS policy (tr.pol, see
// requiretls.go); it returns done when the session may go on to MAIL (with
// or without TLS as the policy allows). A REQUIRETLS message never goes on
// without verified TLS and the REQUIRETLS keyword: the host is passed over
// with 550 5.7.30, or with a temporary failure when the network, not the
// host's abilities, cut the handshake short.
func (tr *transaction) negotiateTLS(ctx context.Context, c *conn, plain bool) (delivery.Result, nextAction) {
	mode, strict := tr.pol.mode, tr.pol.requireTLS
	if mode != policy.SendTLSNone && !plain && !c.tls && c.has("STARTTLS") {
		r, err := c.startTLS(tr.tlsConfig(mode), tr.d.cmdTimeout)
		var te *tlsError
		switch {
		case errors.As(err, &te) && strict && isVerifyError(err):
			return tr.requireTLSFailed(te.Error()), nextHost
		case errors.As(err, &te) && mode == policy.SendTLSOpportunistic:
			return tr.deferred(451, "4.7.5", te.Error()), retryPlain
		case errors.As(err, &te):
			return tr.deferred(451, "4.7.5", te.Error()), nextHost
		case err != nil:
			return tr.netResult(ctx, "4.4.2", "STARTTLS", err), nextHost
		case r.Code != 220 && mode == policy.SendTLSRequired:
			c.quit(tr.d.quitTimeout)
			if strict {
				return tr.requireTLSFailed("STARTTLS refused: " + r.String()), nextHost
			}
			return tr.deferred(451, "4.7.5", "STARTTLS refused: "+r.String()), nextHost
		case r.Code == 220:
			// RFC 3207 §4.2: the server forgot everything; EHLO again.
			if res, ok := tr.hello(ctx, c); !ok {
				return res, nextHost
			}
		}
		// A refused STARTTLS in opportunistic mode: go on in plaintext.
	}
	switch {
	case mode == policy.SendTLSRequired && !c.tls:
		c.quit(tr.d.quitTimeout)
		if strict {
			return tr.requireTLSFailed(tr.target.host + " does not offer STARTTLS"), nextHost
		}
		return tr.deferred(451, "4.7.5", "TLS required but not offered by "+tr.target.host), nextHost
	case strict && !c.has("REQUIRETLS"):
		// RFC 8689 §4.2.1: the server must advertise REQUIRETLS (after
		// STARTTLS, where servers offer it).
		c.quit(tr.d.quitTimeout)
		return tr.requireTLSFailed(tr.target.host + " does not advertise REQUIRETLS"), nextHost
	}
	return delivery.Result{}, done
}

// tlsConfig: opportunistic TLS does not authenticate the server (RFC 7435
// §4); required and implicit TLS (RFC 8314 §3.3: the client MUST validate
// the certificate) verify the chain and the name we dialled. The client
// certificate, when the hop has one, is presented whatever the server's
// list of acceptable CAs says (as Postfix does): the server decides.
func (tr *transaction) tlsConfig(mode policy.SendTLS) *tls.Config {
	cfg := &tls.Config{ServerName: tr.target.host, MinVersion: tls.VersionTLS12}
	if cert := tr.cert; cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	if mode != policy.SendTLSRequired && mode != policy.SendTLSImplicit {
		cfg.InsecureSkipVerify = true // RFC 7435 §4: opportunistic, unauthenticated
		return cfg
	}
	cfg.RootCAs = tr.d.roots
	if tr.roots != nil {
		cfg.RootCAs = tr.roots // the send connector's ca_file
	}
	return cfg
}
