// Package certgen makes self-signed TLS certificates: for tests (real TLS,
// certificates generated in the test) and for development connectors that
// set `self_signed = true`. Never for production use.
package certgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Generate returns a PEM certificate and PEM private key (ECDSA P-256),
// self-signed, valid from an hour ago for validFor, for the given DNS names
// and IP addresses.
func Generate(hosts []string, validFor time.Duration) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	cn := "hubd self-signed"
	if len(hosts) > 0 {
		cn = hosts[0]
	}
	tmpl := x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"hubd development"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(validFor),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

// WriteFiles generates a certificate as Generate does and writes it to
// certFile and keyFile (the key with mode 0600), creating the directory.
func WriteFiles(certFile, keyFile string, hosts []string, validFor time.Duration) error {
	certPEM, keyPEM, err := Generate(hosts, validFor)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return os.WriteFile(certFile, certPEM, 0o644)
}

// EnsureFiles creates certFile and keyFile with WriteFiles unless both exist
// and load as a key pair. It is what `self_signed = true` does at start-up.
func EnsureFiles(certFile, keyFile string, hosts []string) error {
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		return nil
	}
	if err := WriteFiles(certFile, keyFile, hosts, 365*24*time.Hour); err != nil {
		return fmt.Errorf("self-signed certificate: %w", err)
	}
	return nil
}

// ServerConfig returns a tls.Config serving a fresh self-signed certificate
// for hosts, and a pool that trusts it (for the test's client side).
func ServerConfig(hosts ...string) (*tls.Config, *x509.CertPool, error) {
	cfg, certPEM, err := ServerPEM(hosts...)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return cfg, pool, nil
}

// ServerPEM is ServerConfig with the certificate as PEM instead of a pool:
// for a client that reads its trusted CAs from a file (a send connector's
// ca_file).
func ServerPEM(hosts ...string) (*tls.Config, []byte, error) {
	certPEM, keyPEM, err := Generate(hosts, 24*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, certPEM, nil
}
