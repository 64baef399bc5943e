package smtpout

// Implicit TLS and client certificates, for smart hosts:
//
//   - tls = "implicit" (RFC 8314 §3.3, the "submissions" port 465): the TLS
//     handshake starts as soon as the TCP connection is up, before the
//     greeting, and the server's certificate is verified (chain against
//     Options.RootCAs, and the name dialled) as §3.3 requires of clients.
//     There is no plaintext fallback: a failed handshake passes the host
//     over with Deferred 451 4.7.5 and Connection set, as a failed
//     "required" STARTTLS does. A REQUIRETLS message (RFC 8689) still needs
//     REQUIRETLS in the EHLO reply that follows.
//   - A verified certificate (required and implicit TLS) chains to the
//     send connector's ca_file (NextHop.CAFile) when it has one, else to
//     Options.RootCAs (the system's roots): a smart host with a private
//     CA. It is read with the client certificate, and fails the same way.
//   - A client certificate (NextHop.ClientCert and ClientKey) is presented
//     in every handshake, STARTTLS or implicit, so that a server can
//     verify this hub (for two hubs: AUTH EXTERNAL on the receive side).
//     The pair is read when a connection is opened, so that a renewed
//     certificate is used without a restart; if it cannot be read the
//     attempt is Deferred 451 4.3.5 ("system incorrectly configured", RFC
//     3463) with Connection set: our side is broken, not the message.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"hubd/hub/delivery"
	"hubd/policy"
)

// loadClientCert reads the hop's client certificate into tr.cert, and its
// CA file into tr.roots.
func (tr *transaction) loadClientCert() error {
	tr.cert, tr.roots = nil, nil
	if f := tr.hop.CAFile; f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("ca_file %s: %v", f, err)
		}
		tr.roots = x509.NewCertPool()
		if !tr.roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("ca_file %s: no PEM certificate in it", f)
		}
	}
	if tr.hop.ClientCert == "" {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(tr.hop.ClientCert, tr.hop.ClientKey)
	if err != nil {
		return fmt.Errorf("client certificate %s: %v", tr.hop.ClientCert, err)
	}
	tr.cert = &cert
	return nil
}

// implicitTLS runs the handshake of an implicit-TLS hop; for other hops it
// does nothing. It returns done when the session may go on to the greeting.
func (tr *transaction) implicitTLS(ctx context.Context, c *conn) (delivery.Result, nextAction) {
	if tr.hop.TLS != policy.SendTLSImplicit {
		return delivery.Result{}, done
	}
	err := c.handshake(tr.tlsConfig(policy.SendTLSImplicit), tr.d.cmdTimeout)
	var te *tlsError
	switch {
	case err == nil:
		return delivery.Result{}, done
	case ctx.Err() != nil || !errors.As(err, &te):
		return tr.netResult(ctx, "4.4.2", "TLS handshake", err), nextHost
	case tr.pol.requireTLS && isVerifyError(err):
		return tr.requireTLSFailed(te.Error()), nextHost
	default:
		return tr.deferred(451, "4.7.5", "implicit TLS: "+te.Error()), nextHost
	}
}
