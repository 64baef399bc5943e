package connectors

// TLS of receive connectors.
//
// What a connector with a tls block promises:
//
//   - Protocol versions from min_version: TLS 1.2 by default (RFC 8996
//     deprecates 1.0 and 1.1; a client offering only those fails the
//     handshake), or TLS 1.3 only.
//   - For TLS 1.2, only ECDHE key exchange with AEAD ciphers (forward
//     secrecy, no CBC, no RSA key transport): tls12CipherSuites. TLS 1.3
//     suites are all AEAD and Go does not let them be configured.
//   - The certificate is read from cert_file/key_file when the config is
//     built, at Start and at every Reload. A tls.Config reads the connector's
//     certSlot at each handshake, so a reload with new file contents serves
//     the new certificate to new handshakes without rebinding. A file that no
//     longer loads makes the whole Reload fail: the old config, and the old
//     certificate, stay in force, and the error is returned to the caller.
//   - With client_ca_file, the server asks for a client certificate and
//     verifies it against those CAs (tls.VerifyClientCertIfGiven): a client
//     without one still gets TLS, a client with a bad one fails the
//     handshake, and a good one shows up in the session's
//     ConnectionState().VerifiedChains for AUTH EXTERNAL to use.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"hubd/internal/certgen"
	"hubd/policy"
)

// tls12CipherSuites are Go's default TLS 1.2 suites minus every CBC one:
// ECDHE (forward secrecy) with AES-GCM or ChaCha20-Poly1305 only. Order
// does not matter: Go picks by its own preference (and the client's
// hardware).
var tls12CipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// certSlot holds a connector's current certificate; a reload swaps it, and
// the connector's tls.Config reads it at each handshake.
type certSlot struct {
	cert atomic.Pointer[tls.Certificate]
}

// pendingCert is a certificate loaded by build, stored into its slot only
// once the whole generation has been built (so that a reload that fails on
// a later connector changes no certificate).
type pendingCert struct {
	slot *certSlot
	cert *tls.Certificate
}

// tlsConfig loads (or, with self_signed, creates) the connector's
// certificate and returns a tls.Config that serves whatever certificate is
// current, plus the certificate to publish when the build succeeds. s.mu is
// held.
func (s *Service) tlsConfig(cfg *policy.Config, rc *policy.ReceiveConnector) (*tls.Config, *pendingCert, error) {
	if rc.TLS.Mode == "" || rc.TLS.Mode == policy.TLSOff {
		return nil, nil, nil
	}
	certFile, keyFile := rc.TLS.CertFile, rc.TLS.KeyFile
	if rc.TLS.SelfSigned && certFile == "" {
		dir := filepath.Join(cfg.Hub.SpoolDir, "tls")
		certFile = filepath.Join(dir, rc.Name+".crt")
		keyFile = filepath.Join(dir, rc.Name+".key")
		if err := certgen.EnsureFiles(certFile, keyFile, []string{rc.FQDN}); err != nil {
			return nil, nil, err
		}
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, err
	}
	slot := s.certs[rc.Name]
	if slot == nil {
		slot = &certSlot{}
		s.certs[rc.Name] = slot
	}
	minVersion := rc.TLS.MinVersion
	if minVersion < tls.VersionTLS12 {
		minVersion = tls.VersionTLS12
	}
	tc := &tls.Config{
		MinVersion:   minVersion,
		CipherSuites: tls12CipherSuites,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := slot.cert.Load(); c != nil {
				return c, nil
			}
			return nil, errors.New("no certificate")
		},
	}
	if rc.TLS.ClientCAFile != "" {
		pool, err := loadCAs(rc.TLS.ClientCAFile)
		if err != nil {
			return nil, nil, err
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tc, &pendingCert{slot: slot, cert: &pair}, nil
}

// loadCAs reads a PEM bundle of CA certificates.
func loadCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", file)
	}
	return pool, nil
}
