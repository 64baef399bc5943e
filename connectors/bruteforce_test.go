package connectors

import (
	"crypto/tls"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"hubd/internal/certgen"
)

// bruteHCL offers PLAIN and LOGIN in clear (so the test sees every reply)
// with a small tarpit and brute-force limits the test sets.
func bruteHCL(perSource, perNetwork int) string {
	return `
receive_connector "in" {
  bind                          = ["127.0.0.1:0"]
  auth                          = ["plain", "login"]
  allow_insecure_auth           = true
  tarpit_interval               = "50ms"
  max_logon_failures            = 3
  max_auth_failures_per_source  = ` + strconv.Itoa(perSource) + `
  max_auth_failures_per_network = ` + strconv.Itoa(perNetwork) + `
  auth_failure_window           = "10m"
  permissions {
    anonymous     = []
    authenticated = ["submit", "relay"]
  }
}
`
}

// authFrom dials from the source address, says EHLO, and returns the client.
func (h *limitHarness) authFrom(src string) *client {
	h.t.Helper()
	c, _ := h.dial("127.0.0.1:0", src)
	c.expect("EHLO guess.test", "250")
	return c
}

// timed runs a command and returns its reply and how long it took.
func timed(c *client, line, want string) time.Duration {
	c.t.Helper()
	start := time.Now()
	c.expect(line, want)
	return time.Since(start)
}

func TestBruteForcePerSource(t *testing.T) {
	t.Parallel()
	h := startLimits(t, bruteHCL(3, 10))
	goodAuth := authPlain("alice@example.com", alicePassword)
	tarpit := 50 * time.Millisecond

	// Each failure from the address waits longer: 1, 2, 3 × tarpit_interval,
	// for a known user with a wrong password as for an unknown user.
	c1 := h.authFrom("127.0.0.1")
	if d := timed(c1, authPlain("alice@example.com", "wrong"), "535 5.7.8 "); d < tarpit {
		t.Errorf("first failure answered after %v, want ≥ %v", d, tarpit)
	}
	if d := timed(c1, authPlain("nobody@example.com", "wrong"), "535 5.7.8 "); d < 2*tarpit {
		t.Errorf("second failure answered after %v, want ≥ %v", d, 2*tarpit)
	}
	c1.expect("QUIT", "221")

	// A new connection from the same address goes on counting.
	c2 := h.authFrom("127.0.0.1")
	if d := timed(c2, authPlain("alice@example.com", "wrong2"), "535 5.7.8 "); d < 3*tarpit {
		t.Errorf("third failure answered after %v, want ≥ %v", d, 3*tarpit)
	}
	eventually(t, "the block's log line", func() bool {
		return hasLine(h.logs, "authentication blocked", "limit=max_auth_failures_per_source", "remote=127.0.0.1:")
	})
	// Blocked now: the right password is not even checked.
	c2.expect(goodAuth, "454 4.7.0 Temporary authentication failure")
	c3 := h.authFrom("127.0.0.1")
	c3.expect("AUTH LOGIN", "454 4.7.0 Temporary authentication failure")
	c3.expect(goodAuth, "454 4.7.0 ")
	eventually(t, "the refusal's log line", func() bool {
		return hasLine(h.logs, "msg=refused", "command=AUTH", "limit=max_auth_failures_per_source", "remote=127.0.0.1:")
	})

	// Another address (even in the same /24, under its network limit) is
	// not affected.
	other := h.authFrom("127.0.0.2")
	other.expect(goodAuth, "235 ")

	// Once the window has passed, the address may log in again.
	h.clock.advance(10*time.Minute + time.Second)
	c4 := h.authFrom("127.0.0.1")
	c4.expect(goodAuth, "235 ")
}

func TestBruteForcePerNetwork(t *testing.T) {
	t.Parallel()
	h := startLimits(t, bruteHCL(10, 3))
	goodAuth := authPlain("alice@example.com", alicePassword)

	c1 := h.authFrom("127.0.0.1")
	c1.expect(authPlain("alice@example.com", "a"), "535 5.7.8 ")
	c1.expect(authPlain("alice@example.com", "b"), "535 5.7.8 ")
	// A success elsewhere in the /24 does not reset the network's count.
	ok := h.authFrom("127.0.0.2")
	ok.expect(goodAuth, "235 ")
	c3 := h.authFrom("127.0.0.3")
	c3.expect("AUTH LOGIN", "334 "+b64("Username:"))
	c3.expect(b64("root"), "334 "+b64("Password:"))
	c3.expect(b64("toor"), "535 5.7.8 ") // the /24's third failure
	eventually(t, "the block's log line", func() bool {
		return hasLine(h.logs, "authentication blocked", "limit=max_auth_failures_per_network", "remote=127.0.0.3:")
	})

	// Every address of 127.0.0.0/24 is refused now, the one that logged
	// in before included...
	for _, src := range []string{"127.0.0.4", "127.0.0.2"} {
		c := h.authFrom(src)
		c.expect(goodAuth, "454 4.7.0 Temporary authentication failure")
	}
	// ...a session authenticated before the block keeps its rights...
	ok.expect("MAIL FROM:<alice@example.com>", "250 ")
	// ...and another /24 is not affected.
	far := h.authFrom("127.1.0.1")
	far.expect(goodAuth, "235 ")

	h.clock.advance(10*time.Minute + time.Second)
	again := h.authFrom("127.0.0.4")
	again.expect(goodAuth, "235 ")
}

// TestMaxLogonFailuresStays: the per-connection limit still ends a session.
func TestMaxLogonFailuresStays(t *testing.T) {
	t.Parallel()
	h := startLimits(t, bruteHCL(10, 30))
	c := h.authFrom("127.0.0.1")
	c.expect(authPlain("alice@example.com", "a"), "535 ")
	c.expect(authPlain("alice@example.com", "b"), "535 ")
	c.expect(authPlain("alice@example.com", "c"), "421 4.7.0 Too many authentication failures")
	if !c.closed() {
		t.Error("connection open after 421")
	}
}

// externalHarness runs a partner connector that authenticates clients by a
// certificate from the CA in its client_ca_file: the client certificate
// is self-signed for partner.example and is its own CA.
func externalHarness(t *testing.T) (*limitHarness, tls.Certificate) {
	t.Helper()
	certPEM, keyPEM, err := certgen.Generate([]string{"partner.example"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "client-ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	clientCert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	h := startLimits(t, `
receive_connector "partner" {
  bind = ["127.0.0.1:0"]
  tls {
    self_signed    = true
    client_ca_file = "`+caFile+`"
  }
  auth            = ["external"]
  tarpit_interval = "0s"
  permissions {
    anonymous     = []
    authenticated = ["submit", "relay", "any_sender"]
  }
}
`)
	return h, clientCert
}

// startTLSWith upgrades c with a client certificate (nil: none).
func (c *client) startTLSWith(h *limitHarness, cert *tls.Certificate) {
	c.t.Helper()
	c.expect("STARTTLS", "220 ")
	cfg := &tls.Config{RootCAs: h.pool, ServerName: "mx.test"}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn = tc
	c.tp = textproto.NewConn(tc)
}

func TestAuthExternal(t *testing.T) {
	t.Parallel()
	h, cert := externalHarness(t)

	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO partner.example", "250")
	c.startTLSWith(h, &cert)
	if ehlo := c.expect("EHLO partner.example", "250"); !strings.Contains(ehlo, "AUTH EXTERNAL") {
		t.Fatalf("EXTERNAL not offered with a verified certificate:\n%s", ehlo)
	}
	c.expect("MAIL FROM:<orders@partner.example>", "530 5.7.0 Authentication required")
	c.expect("AUTH EXTERNAL =", "235 ")
	got := c.send("orders@partner.example", []string{"someone@remote.test"}, "Subject: po\r\n\r\norder\r\n")
	if !strings.HasPrefix(got, "250 ") {
		t.Fatalf("DATA: %q", got)
	}
	if env, _ := h.sub.last(t); env.AuthUser != "partner.example" {
		t.Errorf("AuthUser %q, want partner.example", env.AuthUser)
	}
	eventually(t, "the log line", func() bool {
		return hasLine(h.logs, "msg=authenticated", "auth_user=partner.example", `with="client certificate"`)
	})

	// The authorization identity, when given, must be the certificate's:
	// asked for in a second step (empty 334 challenge, RFC 4422 §3.3)...
	c2, _ := h.dial("127.0.0.1:0", "")
	c2.expect("EHLO partner.example", "250")
	c2.startTLSWith(h, &cert)
	c2.expect("EHLO partner.example", "250")
	c2.expect("AUTH EXTERNAL", "334 ")
	c2.expect(b64("other.example"), "535 5.7.8 ")
	c2.expect("AUTH EXTERNAL", "334 ")
	c2.expect(b64("Partner.Example"), "235 ")
}

func TestAuthExternalWithoutCertificate(t *testing.T) {
	t.Parallel()
	h, _ := externalHarness(t)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO anon.test", "250")
	c.startTLSWith(h, nil)
	if ehlo := c.expect("EHLO anon.test", "250"); strings.Contains(ehlo, "EXTERNAL") {
		t.Errorf("EXTERNAL offered without a client certificate:\n%s", ehlo)
	}
	c.expect("AUTH EXTERNAL =", "535 5.7.8 ")
	c.expect("MAIL FROM:<orders@partner.example>", "530 5.7.0 Authentication required")

	// Before STARTTLS, no certificate can have been shown.
	plain, _ := h.dial("127.0.0.1:0", "")
	plain.expect("EHLO anon.test", "250")
	plain.expect("AUTH EXTERNAL =", "530 5.7.0 Must issue a STARTTLS command first")
}
