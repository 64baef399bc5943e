package connectors

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hubd/internal/certgen"
)

// writeCert writes a fresh self-signed certificate for hosts and returns
// its PEM.
func writeCert(t *testing.T, certFile, keyFile string, hosts ...string) []byte {
	t.Helper()
	if err := certgen.WriteFiles(certFile, keyFile, hosts, time.Hour); err != nil {
		t.Fatal(err)
	}
	p, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// implicitTLSHCL is a port-465 style connector with files from dir.
func implicitTLSHCL(dir, extra string) string {
	return fmt.Sprintf(`
receive_connector "smtps" {
  bind = ["127.0.0.1:0"]
  tls {
    mode      = "implicit"
    cert_file = %q
    key_file  = %q
    %s
  }
}
`, filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), extra)
}

// handshake dials addr with cfg and returns the connection state.
func handshake(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}

func TestTLSVersionsAndCiphers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeCert(t, filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), "mx.test")
	h, _ := startIn(t, dir, loadConfig(t, dir, implicitTLSHCL(dir, "")), false)
	addr := h.addr("127.0.0.1:0")
	base := func() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

	old := base()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, err := handshake(addr, old); err == nil {
		t.Error("TLS 1.1 client accepted")
	}
	cbc := base()
	cbc.MaxVersion = tls.VersionTLS12
	cbc.CipherSuites = []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
	if _, err := handshake(addr, cbc); err == nil {
		t.Error("TLS 1.2 CBC suite accepted")
	}
	v12 := base()
	v12.MaxVersion = tls.VersionTLS12
	cs, err := handshake(addr, v12)
	if err != nil {
		t.Fatalf("TLS 1.2: %v", err)
	}
	if cs.Version != tls.VersionTLS12 || !strings.Contains(tls.CipherSuiteName(cs.CipherSuite), "ECDHE") ||
		strings.Contains(tls.CipherSuiteName(cs.CipherSuite), "CBC") {
		t.Errorf("TLS 1.2 negotiated %s", tls.CipherSuiteName(cs.CipherSuite))
	}
	if cs, err := handshake(addr, base()); err != nil || cs.Version != tls.VersionTLS13 {
		t.Errorf("TLS 1.3: %v, version %x", err, cs.Version)
	}
}

func TestTLSMinVersion13(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeCert(t, filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), "mx.test")
	h, _ := startIn(t, dir, loadConfig(t, dir, implicitTLSHCL(dir, `min_version = "1.3"`)), false)
	if _, err := handshake(h.addr("127.0.0.1:0"), &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}); err == nil {
		t.Error("TLS 1.2 client accepted with min_version 1.3")
	}
}

// TestCertReload: a reload serves new certificate contents to new
// sessions; a broken file fails the reload and keeps the old certificate.
func TestCertReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	writeCert(t, certFile, keyFile, "mx.test")
	hcl := implicitTLSHCL(dir, "")
	h, _ := startIn(t, dir, loadConfig(t, dir, hcl), false)
	addr := h.addr("127.0.0.1:0")
	fingerprint := func() [32]byte {
		t.Helper()
		cs, err := handshake(addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(cs.PeerCertificates[0].Raw)
	}
	first := fingerprint()
	newPEM := writeCert(t, certFile, keyFile, "mx.test")
	if err := h.svc.Reload(loadConfig(t, dir, hcl)); err != nil {
		t.Fatal(err)
	}
	second := fingerprint()
	if first == second {
		t.Fatal("certificate unchanged after reload")
	}
	blk, _ := pem.Decode(newPEM)
	if second != sha256.Sum256(blk.Bytes) {
		t.Error("reload serves a certificate that is not the file's")
	}
	cfg := loadConfig(t, dir, hcl)
	if err := os.WriteFile(certFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Reload(cfg); err == nil {
		t.Error("reload with a broken certificate file succeeded")
	}
	if fingerprint() != second {
		t.Error("failed reload changed the certificate")
	}
}

// TestClientCertificateVerified: with client_ca_file, a client certificate
// is verified into the session's VerifiedChains (for AUTH EXTERNAL), a
// client without one still gets TLS, and an unknown one is refused.
func TestClientCertificateVerified(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeCert(t, filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), "mx.test")
	partner := filepath.Join(dir, "partner.crt")
	writeCert(t, partner, filepath.Join(dir, "partner.key"), "partner.test")
	stranger := filepath.Join(dir, "stranger.crt")
	writeCert(t, stranger, filepath.Join(dir, "stranger.key"), "stranger.test")
	// A self-signed client certificate is its own CA.
	hcl := fmt.Sprintf(`
receive_connector "partner" {
  bind = ["127.0.0.1:0"]
  tls {
    cert_file      = %q
    key_file       = %q
    client_ca_file = %q
  }
}
`, filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), partner)
	h, _ := startIn(t, dir, loadConfig(t, dir, hcl), false)
	pair := func(name string) []tls.Certificate {
		p, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		return []tls.Certificate{p}
	}
	starttls := func(certs []tls.Certificate) (*client, error) {
		c, _ := h.dial("127.0.0.1:0", "")
		c.expect("EHLO client.test", "250")
		c.expect("STARTTLS", "220 ")
		cfg := &tls.Config{InsecureSkipVerify: true}
		if certs != nil {
			// Sent even when the server's CA list does not name its issuer.
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
		}
		tc := tls.Client(c.conn, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, err
		}
		c = newClient(t, tc)
		// TLS 1.3 reports a refused client certificate at the first read.
		if _, err := tc.Write([]byte("EHLO client.test\r\n")); err != nil {
			return nil, err
		}
		if _, err := c.tp.ReadLine(); err != nil {
			return nil, err
		}
		c.reply()
		return c, nil
	}
	if _, err := starttls(pair("partner")); err != nil {
		t.Fatalf("partner certificate: %v", err)
	}
	chains := func() int {
		h.svc.mu.Lock()
		defer h.svc.mu.Unlock()
		n := 0
		for sc := range h.svc.conns {
			sc.mu.Lock()
			if sc.tlsConn != nil {
				cs := sc.tlsConn.ConnectionState()
				if len(cs.VerifiedChains) > 0 && cs.VerifiedChains[0][0].Subject.String() != "" {
					n++
				}
			}
			sc.mu.Unlock()
		}
		return n
	}
	eventually(t, "a session with a verified client chain", func() bool { return chains() == 1 })
	if _, err := starttls(nil); err != nil {
		t.Errorf("no client certificate: %v", err)
	}
	if _, err := starttls(pair("stranger")); err == nil {
		t.Error("unknown client certificate accepted")
	}
	if chains() != 1 {
		t.Errorf("%d sessions with verified chains, want 1", chains())
	}
}
