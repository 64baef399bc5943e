package smtpout

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"hubd/hub/delivery"
	"hubd/internal/certgen"
	"hubd/internal/logbuf"
	"hubd/internal/smtpsink"
	"hubd/policy"
)

const (
	authUser = "hub@example.test"
	authPass = "correct horse battery staple"
)

func authSinkOptions(t *testing.T) (smtpsink.Options, *x509.CertPool) {
	t.Helper()
	cfg, pool, err := certgen.ServerConfig("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return smtpsink.Options{TLSConfig: cfg, RequireAuth: true,
		Auth: &smtpsink.AuthOptions{Users: map[string]string{authUser: authPass}}}, pool
}

func authHop(addr, password, mechs string) delivery.NextHop {
	hop := smartHop(addr)
	hop.Auth = delivery.SMTPAuth{Username: authUser, Password: policy.Secret(password), Mechanisms: mechs}
	return hop
}

// verifiedAuthHop is authHop with tls = "required", what policy gives a
// send connector with auth unless told otherwise.
func verifiedAuthHop(addr, password, mechs string) delivery.NextHop {
	hop := authHop(addr, password, mechs)
	hop.TLS = policy.SendTLSRequired
	return hop
}

// trusting is testOptions trusting the test CA pool.
func trusting(pool *x509.CertPool) Options {
	opts := testOptions()
	opts.RootCAs = pool
	return opts
}

// logged returns Options with a text logger writing to the buffer.
func logged(opts Options, logs *logbuf.Buffer) Options {
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	return opts
}

func noPassword(t *testing.T, logs *logbuf.Buffer, results []delivery.Result) {
	t.Helper()
	if strings.Contains(logs.String(), authPass) || strings.Contains(logs.String(), "wrong-password") {
		t.Errorf("password in the log:\n%s", logs.String())
	}
	for _, r := range results {
		if strings.Contains(r.Text, authPass) || strings.Contains(r.Text, "wrong-password") {
			t.Errorf("password in result %q", r.Text)
		}
	}
}

func TestAuthPlainAfterSTARTTLS(t *testing.T) {
	so, pool := authSinkOptions(t)
	sink := smtpsink.Start(t, so)
	var logs logbuf.Buffer
	res := deliver(t, logged(trusting(pool), &logs), verifiedAuthHop(sink.Addr(), authPass, "PLAIN,LOGIN"), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	m := sink.WaitFor(t, 1, waitLong)[0]
	if m.AuthUser != authUser || m.AuthMech != "PLAIN" || !m.TLS {
		t.Errorf("arrived as user %q mech %q tls %v, want %s PLAIN over TLS", m.AuthUser, m.AuthMech, m.TLS, authUser)
	}
	if a := sink.Auths(); len(a) != 1 || !a[0].TLS || !a[0].OK {
		t.Errorf("AUTH commands %+v, want one over TLS", a)
	}
	noPassword(t, &logs, res)
}

func TestAuthLoginWhenConfigured(t *testing.T) {
	so, pool := authSinkOptions(t)
	sink := smtpsink.Start(t, so)
	res := deliver(t, trusting(pool), verifiedAuthHop(sink.Addr(), authPass, "LOGIN"), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if m := sink.WaitFor(t, 1, waitLong)[0]; m.AuthUser != authUser || m.AuthMech != "LOGIN" {
		t.Errorf("arrived as %q with %q, want LOGIN", m.AuthUser, m.AuthMech)
	}
}

// The first configured mechanism the server offers wins, whatever the
// server's order.
func TestAuthMechanismChoice(t *testing.T) {
	so, pool := authSinkOptions(t)
	so.Auth.Mechanisms = []string{"CRAM-MD5", "LOGIN"}
	sink := smtpsink.Start(t, so)
	res := deliver(t, trusting(pool), verifiedAuthHop(sink.Addr(), authPass, "PLAIN,LOGIN"), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if m := sink.WaitFor(t, 1, waitLong)[0]; m.AuthMech != "LOGIN" {
		t.Errorf("mechanism %q, want LOGIN (PLAIN is not offered)", m.AuthMech)
	}
}

func TestAuthNoUsableMechanism(t *testing.T) {
	so, pool := authSinkOptions(t)
	so.Auth.Mechanisms = []string{"CRAM-MD5", "SCRAM-SHA-256"}
	sink := smtpsink.Start(t, so)
	var logs logbuf.Buffer
	res := deliver(t, logged(trusting(pool), &logs), verifiedAuthHop(sink.Addr(), authPass, "PLAIN,LOGIN"), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.7.0")
	want := "127.0.0.1 offers no usable AUTH mechanism: configured PLAIN LOGIN, offered CRAM-MD5 SCRAM-SHA-256"
	if res[0].Text != want || !res[0].Connection {
		t.Errorf("text %q connection %v, want %q and a hop-level failure", res[0].Text, res[0].Connection, want)
	}
	if len(sink.Auths()) != 0 || len(sink.Messages()) != 0 {
		t.Errorf("AUTH %v, messages %v: nothing should have been sent", sink.Auths(), sink.Messages())
	}
	if logs.Count("level=ERROR", "smart host authentication failed", "offers no usable AUTH mechanism") != 1 {
		t.Errorf("no error log line:\n%s", logs.String())
	}
}

// A 535 defers every recipient as a failure of the next hop: nothing is
// bounced, and the reason quotes the server.
func TestAuth535DefersAtHopLevel(t *testing.T) {
	so, pool := authSinkOptions(t)
	sink := smtpsink.Start(t, so)
	var logs logbuf.Buffer
	res := deliver(t, logged(trusting(pool), &logs), verifiedAuthHop(sink.Addr(), "wrong-password", "PLAIN,LOGIN"),
		message("x\r\n"), rcpts("a@remote.test", "b@remote.test"))
	want := "127.0.0.1 refused AUTH PLAIN for " + authUser + ": 535 5.7.8 Authentication credentials invalid"
	for _, r := range res {
		expect(t, r, delivery.Deferred, 451, "4.7.8")
		if r.Text != want || !r.Connection || r.RemoteMTA != "127.0.0.1" {
			t.Errorf("result %q connection %v remote %q, want %q at hop level", r.Text, r.Connection, r.RemoteMTA, want)
		}
	}
	if len(sink.Messages()) != 0 {
		t.Errorf("a message arrived: %v", sink.Messages())
	}
	if n := logs.Count("level=ERROR", "smart host authentication failed", "535 5.7.8 Authentication credentials invalid", "user="+authUser); n != 1 {
		t.Errorf("%d error lines with the 535, want 1:\n%s", n, logs.String())
	}
	noPassword(t, &logs, res)
}

// A 454 (temporary authentication failure) is handled the same way.
func TestAuthTemporaryFailure(t *testing.T) {
	so, pool := authSinkOptions(t)
	so.Auth.Reject = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
	sink := smtpsink.Start(t, so)
	res := deliver(t, trusting(pool), verifiedAuthHop(sink.Addr(), "wrong-password", "LOGIN"), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.7.0")
	if want := "127.0.0.1 refused AUTH LOGIN for " + authUser + ": 454 4.7.0 Temporary authentication failure"; res[0].Text != want || !res[0].Connection {
		t.Errorf("text %q connection %v, want %q", res[0].Text, res[0].Connection, want)
	}
}

// A smart host that offers no STARTTLS never sees the credentials.
func TestAuthNeverInPlaintext(t *testing.T) {
	so, _ := authSinkOptions(t)
	so.TLSConfig, so.InsecureAuth = nil, true // AUTH offered in plaintext
	sink := smtpsink.Start(t, so)
	var logs logbuf.Buffer
	res := deliver(t, logged(testOptions(), &logs), authHop(sink.Addr(), authPass, "PLAIN,LOGIN"), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.7.10")
	want := "not sending credentials without TLS: 127.0.0.1 does not offer STARTTLS (auth allow_insecure is off)"
	if res[0].Text != want || !res[0].Connection {
		t.Errorf("text %q connection %v, want %q", res[0].Text, res[0].Connection, want)
	}
	if a := sink.Auths(); len(a) != 0 {
		t.Errorf("the server saw AUTH: %+v", a)
	}
	if logs.Count("level=ERROR", "not sending credentials without TLS") != 1 {
		t.Errorf("no error log line:\n%s", logs.String())
	}

	// allow_insecure: the operator accepts plaintext credentials.
	hop := authHop(sink.Addr(), authPass, "PLAIN,LOGIN")
	hop.Auth.AllowInsecure = true
	res = deliver(t, testOptions(), hop, message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if m := sink.WaitFor(t, 1, waitLong)[0]; m.AuthUser != authUser || m.TLS {
		t.Errorf("arrived as %q tls %v, want authenticated in plaintext", m.AuthUser, m.TLS)
	}
}

// Opportunistic TLS whose handshake fails falls back to plaintext, where
// the credentials are not sent.
func TestAuthNotAfterFailedHandshake(t *testing.T) {
	so, _ := authSinkOptions(t)
	so.TLSConfig.MinVersion, so.TLSConfig.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 // below our TLS 1.2 minimum
	so.InsecureAuth = true
	sink := smtpsink.Start(t, so)
	res := deliver(t, testOptions(), authHop(sink.Addr(), authPass, "PLAIN,LOGIN"), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.7.10")
	if want := "not sending credentials without TLS: the TLS handshake with 127.0.0.1 failed (auth allow_insecure is off)"; res[0].Text != want {
		t.Errorf("text %q, want %q", res[0].Text, want)
	}
	if a := sink.Auths(); len(a) != 0 {
		t.Errorf("the server saw AUTH: %+v", a)
	}
}

func TestImplicitTLSWithAuth(t *testing.T) {
	so, pool := authSinkOptions(t)
	so.ImplicitTLS = true
	sink := smtpsink.Start(t, so)
	opts := testOptions()
	opts.RootCAs = pool
	hop := authHop(sink.Addr(), authPass, "PLAIN,LOGIN")
	hop.TLS = policy.SendTLSImplicit
	res := deliver(t, opts, hop, message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if m := sink.WaitFor(t, 1, waitLong)[0]; m.AuthUser != authUser || !m.TLS {
		t.Errorf("arrived as %q tls %v", m.AuthUser, m.TLS)
	}

	// RFC 8314 §3.3: the certificate is verified; one we do not trust
	// passes the host over, and nothing is sent in plaintext.
	res = deliver(t, testOptions(), hop, message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.7.5")
	if !strings.HasPrefix(res[0].Text, "implicit TLS: TLS handshake: tls: failed to verify certificate") || !res[0].Connection {
		t.Errorf("text %q connection %v", res[0].Text, res[0].Connection)
	}
	if len(sink.Messages()) != 1 || len(sink.Auths()) != 1 {
		t.Errorf("messages %d auths %d after the unverified attempt, want 1 and 1", len(sink.Messages()), len(sink.Auths()))
	}
}

// writeClientCert makes a client certificate and key in dir and returns
// their paths and a pool that trusts the certificate (its own CA).
func writeClientCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	if err := certgen.WriteFiles(certFile, keyFile, []string{"hub1.example.test"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return certFile, keyFile, pool
}

func TestClientCertificate(t *testing.T) {
	for _, implicit := range []bool{false, true} {
		name := "STARTTLS"
		if implicit {
			name = "implicit"
		}
		t.Run(name, func(t *testing.T) {
			certFile, keyFile, clientCAs := writeClientCert(t, t.TempDir())
			so, serverCAs := authSinkOptions(t)
			so.TLSConfig.ClientAuth, so.TLSConfig.ClientCAs = tls.RequireAndVerifyClientCert, clientCAs
			so.ImplicitTLS = implicit
			sink := smtpsink.Start(t, so)
			opts := testOptions()
			opts.RootCAs = serverCAs
			hop := authHop(sink.Addr(), authPass, "PLAIN,LOGIN")
			if implicit {
				hop.TLS = policy.SendTLSImplicit
			} else {
				hop.TLS = policy.SendTLSRequired
			}
			// Without the certificate the server ends the handshake.
			res := deliver(t, opts, hop, message("x\r\n"), rcpts("a@remote.test"))
			expect(t, res[0], delivery.Deferred, 451, "4.7.5")
			if !strings.HasSuffix(res[0].Text, "remote error: tls: certificate required") || !res[0].Connection || len(sink.Auths()) != 0 {
				t.Errorf("result %+v, auths %v", res[0], sink.Auths())
			}

			hop.ClientCert, hop.ClientKey = certFile, keyFile
			res = deliver(t, opts, hop, message("x\r\n"), rcpts("a@remote.test"))
			expect(t, res[0], delivery.Delivered, 250, "2.0.0")
			if m := sink.WaitFor(t, 1, waitLong)[0]; m.PeerCN != "hub1.example.test" || m.AuthUser != authUser {
				t.Errorf("peer %q user %q, want the client certificate and the login", m.PeerCN, m.AuthUser)
			}
		})
	}
}

func TestClientCertificateUnreadable(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	hop := smartHop(sink.Addr())
	hop.ClientCert, hop.ClientKey = filepath.Join(t.TempDir(), "gone.pem"), filepath.Join(t.TempDir(), "gone.key")
	res := deliver(t, testOptions(), hop, message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.3.5")
	if !strings.HasPrefix(res[0].Text, "client certificate "+hop.ClientCert+": open ") || !res[0].Connection {
		t.Errorf("text %q connection %v", res[0].Text, res[0].Connection)
	}
	if sink.Connections() != 0 {
		t.Errorf("dialled the server %d times", sink.Connections())
	}
}

// An idle connection logged in as one user never carries mail for a hop
// with other credentials (the pool's key is the whole NextHop).
func TestAuthConnectionsNotSharedAcrossIdentities(t *testing.T) {
	so, pool := authSinkOptions(t)
	so.Auth.Users["other@example.test"] = "other-pass"
	sink := smtpsink.Start(t, so)
	d := shared(t, trusting(pool))
	a := verifiedAuthHop(sink.Addr(), authPass, "PLAIN")
	b := a
	b.Auth.Username, b.Auth.Password = "other@example.test", "other-pass"
	expect(t, deliverWith(t, d, a, numbered(0), rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	expect(t, deliverWith(t, d, b, numbered(1), rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	expect(t, deliverWith(t, d, a, numbered(2), rcpts("a@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	msgs := sink.WaitFor(t, 3, waitLong)
	if msgs[0].AuthUser != authUser || msgs[1].AuthUser != "other@example.test" || msgs[2].AuthUser != authUser {
		t.Errorf("users %q %q %q", msgs[0].AuthUser, msgs[1].AuthUser, msgs[2].AuthUser)
	}
	if msgs[0].Conn == msgs[1].Conn || msgs[0].Conn != msgs[2].Conn {
		t.Errorf("connections %d %d %d: want the first reused by the third only", msgs[0].Conn, msgs[1].Conn, msgs[2].Conn)
	}
	if n := len(sink.Auths()); n != 2 {
		t.Errorf("%d AUTH commands, want 2 (one per connection)", n)
	}
}

// Over opportunistic TLS the certificate is not verified (RFC 7435 §4):
// whoever answers could be an impostor, so it never sees the credentials
// unless allow_insecure says so. Policy refuses that configuration; the
// client holds the line anyway.
func TestAuthNeverOverUnverifiedTLS(t *testing.T) {
	so, _ := authSinkOptions(t)
	sink := smtpsink.Start(t, so)
	var logs logbuf.Buffer
	res := deliver(t, logged(testOptions(), &logs), authHop(sink.Addr(), authPass, "PLAIN"), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.7.10")
	if want := "not sending credentials over TLS whose certificate was not verified: 127.0.0.1 (auth allow_insecure is off)"; res[0].Text != want || !res[0].Connection {
		t.Errorf("text %q connection %v, want %q at hop level", res[0].Text, res[0].Connection, want)
	}
	if len(sink.Auths()) != 0 {
		t.Errorf("the unverified server saw AUTH: %+v", sink.Auths())
	}
	if logs.Count("level=ERROR", "not sending credentials over TLS whose certificate was not verified") != 1 {
		t.Errorf("no error log line:\n%s", logs.String())
	}
}

// A smart host whose certificate chains to a private CA verifies against
// the send connector's ca_file, not the system's roots; the file is read
// when the connection opens, and one that cannot be read defers with 4.3.5
// (our configuration, not the host).
func TestCAFileVerifiesSmartHost(t *testing.T) {
	tlsCfg, certPEM, err := certgen.ServerPEM("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	sink := smtpsink.Start(t, smtpsink.Options{TLSConfig: tlsCfg})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	hop := smartHop(sink.Addr())
	hop.TLS = policy.SendTLSRequired

	res := deliver(t, testOptions(), hop, message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.7.5") // the system's roots do not know it

	hop.CAFile = caFile
	res = deliver(t, testOptions(), hop, message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if m := sink.WaitFor(t, 1, waitLong)[0]; !m.TLS {
		t.Error("delivered without TLS")
	}

	hop.CAFile = filepath.Join(t.TempDir(), "gone.pem")
	res = deliver(t, testOptions(), hop, message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Deferred, 451, "4.3.5")
	if !res[0].Connection || !strings.HasPrefix(res[0].Text, "ca_file ") {
		t.Errorf("unreadable ca_file: %q connection %v", res[0].Text, res[0].Connection)
	}
}
