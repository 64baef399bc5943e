package hubtest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	gosmtp "github.com/emersion/go-smtp"

	"hubd/hub/dkimsign"
	"hubd/internal/dnstest"
	"hubd/internal/logbuf"
	"hubd/internal/smtpsink"
)

// The DKIM signing tests end to end: an authenticated submission into a
// real hub, signed once after categorization, delivered over SMTP to a
// sink; the bytes that arrived verify with go-msgauth and with an
// independent verifier, Python's dkimpy (Debian's python3-dkim), both
// fetching the public keys from a real DNS server on loopback.

var (
	dkimKeysOnce sync.Once
	dkimRSA      *rsa.PrivateKey
	dkimEd       ed25519.PrivateKey
)

// dkimKeys writes the test's keys as PKCS#8 PEM files into a new
// directory: rsa.key (2048 bits) and ed.key.
func dkimKeys(t *testing.T) (dir string, pubs map[string]crypto.PublicKey) {
	t.Helper()
	dkimKeysOnce.Do(func() {
		var err error
		if dkimRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		_, dkimEd, _ = ed25519.GenerateKey(rand.Reader)
	})
	dir = t.TempDir()
	for name, k := range map[string]crypto.Signer{"rsa.key": dkimRSA, "ed.key": dkimEd} {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, map[string]crypto.PublicKey{"rsa.key": dkimRSA.Public(), "ed.key": dkimEd.Public()}
}

// dkimHub is the configuration of the tests: alice submits with AUTH on
// "in" (anonymous sessions may only submit to accepted domains), remote
// mail goes to the sink at port %[2]d, and %[3]s are the dkim block's keys.
const dkimHub = `
hub {
  hostname                 = "hub.example.test"
  spool_dir                = "%[1]s/spool"
  quick_retry_interval     = "300ms"
  transient_retry_interval = "300ms"
  retry_interval           = "300ms"
  delay_dsn_after          = "0s"
}
accepted_domain "example.test" {}
mailbox "alice@example.test" {
  maildir       = "%[1]s/mail/alice"
  password_hash = "$2a$04$XGrA6JG2Vkf0nvnK45OB3eSg/cWZV/HP15Lg2e4.7A97y2vpztShO"
}
receive_connector "in" {
  bind                = ["127.0.0.1:0"]
  auth                = ["plain"]
  allow_insecure_auth = true
  tarpit_interval     = "0s"
  permissions {
    anonymous     = ["submit"]
    authenticated = ["submit", "relay"]
  }
}
send_connector "out" {
  address_spaces = ["*"]
  smart_hosts    = ["127.0.0.1:%[2]d"]
}
dkim "example.test" {
%[3]s
}
`

// keyBlocks renders key blocks for the named files (selector = file name
// without ".key").
func keyBlocks(dir string, files ...string) string {
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "  key {\n    selector = %q\n    key_file = %q\n  }\n", strings.TrimSuffix(f, ".key"), filepath.Join(dir, f))
	}
	return b.String()
}

// dkimDNS serves the public keys of files under example.test.
func dkimDNS(t *testing.T, pubs map[string]crypto.PublicKey, files ...string) *dnstest.Server {
	t.Helper()
	srv := dnstest.Start(t)
	for _, f := range files {
		rec, err := dkimsign.TXTRecord(pubs[f])
		if err != nil {
			t.Fatal(err)
		}
		srv.SetTXT(dkimsign.RecordName(strings.TrimSuffix(f, ".key"), "example.test"), rec)
	}
	return srv
}

// startDKIMHub starts a hub on the configuration in dir (written there),
// with a lifetime the test controls (stop), so that a second hub can take
// over the same spool.
func startDKIMHub(t *testing.T, dir, hcl string, log ...*slog.Logger) (addr string, stop func()) {
	t.Helper()
	opts := Options{Dir: dir}
	if len(log) > 0 {
		opts.Logger = log[0]
	}
	h := Start(t, hcl, opts)
	return h.Addr(t, h.Config.ReceiveConnectors[0].Name), h.Stop
}

func submitAsAlice(t *testing.T, addr, to, body string) {
	t.Helper()
	auth := smtp.PlainAuth("", "alice@example.test", "secret", "127.0.0.1")
	if err := smtp.SendMail(addr, auth, "alice@example.test", []string{to}, []byte(body)); err != nil {
		t.Fatalf("submission: %v", err)
	}
}

func aliceMessage(to string) string {
	return "From: Alice <alice@example.test>\r\nTo: <" + to + ">\r\nSubject: signed\r\n" +
		"Date: Mon, 7 Dec 2026 10:00:00 +0000\r\nMessage-ID: <dkim-test@example.test>\r\n\r\n" +
		"Hello Bob,\r\n\r\n  a line with  spaces  \r\n-- \r\nAlice\r\n"
}

// goVerify verifies every signature of msg with go-msgauth against srv
// and returns the selectors that verified.
func goVerify(t *testing.T, msg []byte, srv *dnstest.Server) []string {
	t.Helper()
	res := srv.Resolver()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return res.LookupTXT(context.Background(), name) },
	})
	if err != nil {
		t.Fatalf("go-msgauth: %v", err)
	}
	var ok []string
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("go-msgauth: signature of %s does not verify: %v", v.Domain, v.Err)
			continue
		}
		ok = append(ok, v.Domain)
	}
	return ok
}

// dkimpyScript verifies every DKIM-Signature of the message on stdin with
// dkimpy, asking the DNS server at 127.0.0.1:argv[1] with dnspython, and
// prints one line "ok d=<domain> s=<selector>" per signature (exit 1 on
// the first that fails).
const dkimpyScript = `
import sys, dkim, dns.resolver
port = int(sys.argv[1])
def dnsfunc(name, timeout=5):
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.port = port
    r.lifetime = timeout
    ans = r.resolve(name.decode("ascii").rstrip("."), "TXT")
    return b"".join(ans[0].strings)
msg = sys.stdin.buffer.read()
d = dkim.DKIM(msg)
n = sum(1 for k, v in d.headers if k.lower() == b"dkim-signature")
if n == 0:
    print("no signature"); sys.exit(1)
for i in range(n):
    d = dkim.DKIM(msg)
    if not d.verify(idx=i, dnsfunc=dnsfunc):
        print("fail", i); sys.exit(1)
    print("ok d=%s s=%s" % (d.domain.decode(), d.selector.decode()))
`

// dkimpy returns a Python interpreter that has dkimpy and dnspython: the
// first python3 on PATH, or Debian's /usr/bin/python3 (python3-dkim). It
// skips the test when there is none, except under CI, whose .ci/run
// installs python3-dkim.
func dkimpy(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		if err := exec.Command(py, "-c", "import dkim, dns.resolver").Run(); err == nil {
			return py
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("python3 with dkimpy is not installed; .ci/run installs python3-dkim")
	}
	t.Skip("dkimpy not installed (apt-get install python3-dkim)")
	return ""
}

func pyVerify(t *testing.T, py string, msg []byte, srv *dnstest.Server) string {
	t.Helper()
	_, port, _ := strings.Cut(srv.Addr, ":")
	cmd := exec.Command(py, "-c", dkimpyScript, port)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s\nmessage:\n%s", err, out, msg)
	}
	return strings.TrimSpace(string(out))
}

// TestDKIMSignedSubmissionVerifies: RSA, Ed25519 and both at once.
func TestDKIMSignedSubmissionVerifies(t *testing.T) {
	py := dkimpy(t)
	keyDir, pubs := dkimKeys(t)
	for _, c := range []struct {
		name  string
		files []string
		want  string
	}{
		{"rsa", []string{"rsa.key"}, "ok d=example.test s=rsa"},
		{"ed25519", []string{"ed.key"}, "ok d=example.test s=ed"},
		{"dual", []string{"rsa.key", "ed.key"}, "ok d=example.test s=rsa\nok d=example.test s=ed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sink := smtpsink.Start(t, smtpsink.Options{})
			srv := dkimDNS(t, pubs, c.files...)
			addr, _ := startDKIMHub(t, t.TempDir(), fmt.Sprintf(dkimHub, t.TempDir(), sink.Port(), keyBlocks(keyDir, c.files...)))
			submitAsAlice(t, addr, "bob@remote.test", aliceMessage("bob@remote.test"))
			got := sink.WaitFor(t, 1, 10*time.Second)[0].Data
			if n := bytes.Count(got, []byte("DKIM-Signature:")); n != len(c.files) {
				t.Fatalf("%d DKIM-Signature fields, want %d:\n%s", n, len(c.files), got)
			}
			if !bytes.HasPrefix(got, []byte("DKIM-Signature:")) {
				t.Errorf("the signature is not the first field:\n%s", got)
			}
			if v := goVerify(t, got, srv); len(v) != len(c.files) {
				t.Errorf("go-msgauth verified %v", v)
			}
			if out := pyVerify(t, py, got, srv); out != c.want {
				t.Errorf("dkimpy: %q, want %q", out, c.want)
			}
		})
	}
}

// TestDKIMRelayedNotSigned: mail from an anonymous session is relayed for
// others and not signed, even with a From: in the signed domain; an
// authenticated one to the same mailbox is, and so is the DSN the hub
// sends from MAILER-DAEMON@hub.example.test (a subdomain: d=example.test).
func TestDKIMRelayedNotSigned(t *testing.T) {
	keyDir, pubs := dkimKeys(t)
	sink := smtpsink.Start(t, smtpsink.Options{Rcpt: func(addr string) error {
		if strings.HasPrefix(addr, "nobody@") {
			return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		}
		return nil
	}})
	srv := dkimDNS(t, pubs, "ed.key")
	dir := t.TempDir()
	addr, _ := startDKIMHub(t, t.TempDir(), fmt.Sprintf(dkimHub, dir, sink.Port(), keyBlocks(keyDir, "ed.key")))
	spoof := "From: <ceo@example.test>\r\nSubject: relayed\r\n\r\nx\r\n"
	if err := smtp.SendMail(addr, nil, "someone@remote.test", []string{"alice@example.test"}, []byte(spoof)); err != nil {
		t.Fatal(err)
	}
	got := WaitMaildir(t, filepath.Join(dir, "mail/alice"), 1, 10*time.Second)
	if strings.Contains(got[0], "DKIM-Signature") {
		t.Errorf("anonymous mail was signed:\n%s", got[0])
	}
	// The same mailbox, authenticated: signed. Then a bounce from the
	// sink: the DSN comes back to alice, signed too.
	submitAsAlice(t, addr, "alice@example.test", aliceMessage("alice@example.test"))
	submitAsAlice(t, addr, "nobody@remote.test", aliceMessage("nobody@remote.test"))
	got = WaitMaildir(t, filepath.Join(dir, "mail/alice"), 3, 10*time.Second)
	signed := 0
	for _, m := range got {
		if !strings.Contains(m, "DKIM-Signature") {
			continue
		}
		signed++
		if v := goVerify(t, []byte(m), srv); len(v) != 1 {
			t.Errorf("signed message does not verify:\n%s", m)
		}
		if strings.Contains(m, "MAILER-DAEMON@hub.example.test") && !strings.Contains(m, "d=example.test") {
			t.Errorf("DSN not signed as example.test:\n%s", m)
		}
	}
	if signed != 2 {
		t.Errorf("%d of 3 messages signed, want 2 (the submission and the DSN)", signed)
	}
}

// TestDKIMRetrySendsSameBytes: the first attempt is refused with 451, the
// hub is stopped and another one started on the same spool (with one key
// fewer), and the retry sends exactly the bytes of the first attempt, both
// signatures included: the message is signed once, not per attempt.
func TestDKIMRetrySendsSameBytes(t *testing.T) {
	keyDir, pubs := dkimKeys(t)
	var mu sync.Mutex
	var attempts [][]byte
	refused := make(chan struct{})
	sink := smtpsink.Start(t, smtpsink.Options{Data: func(_ string, _ []string, data []byte) error {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, bytes.Clone(data))
		if len(attempts) == 1 {
			close(refused)
			return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 3, 0}, Message: "try later"}
		}
		return nil
	}})
	srv := dkimDNS(t, pubs, "rsa.key", "ed.key")
	dir, cfgDir := t.TempDir(), t.TempDir()
	hcl := fmt.Sprintf(dkimHub, dir, sink.Port(), keyBlocks(keyDir, "rsa.key", "ed.key"))
	addr, stop := startDKIMHub(t, cfgDir, hcl)
	submitAsAlice(t, addr, "bob@remote.test", aliceMessage("bob@remote.test"))
	select {
	case <-refused:
	case <-time.After(10 * time.Second):
		t.Fatal("no first attempt")
	}
	stop() // lets the attempt settle (deferred, persisted), then closes the spool
	// The next hub has only the Ed25519 key: a message signed again would
	// carry one signature, not the two stored with it.
	startDKIMHub(t, cfgDir, fmt.Sprintf(dkimHub, dir, sink.Port(), keyBlocks(keyDir, "ed.key")))
	got := sink.WaitFor(t, 1, 10*time.Second)[0].Data
	mu.Lock()
	first := attempts[0]
	mu.Unlock()
	if !bytes.Equal(first, got) {
		t.Errorf("the retry sent other bytes:\nfirst:\n%s\nretry:\n%s", first, got)
	}
	if v := goVerify(t, got, srv); len(v) != 2 {
		t.Errorf("verified %v", v)
	}
}

// TestDKIMConversions: a message hubd signed whose next hop needs it
// converted goes without hubd's signature, which the conversion would
// break (hub/transport/dkim.go), and is delivered, never refused: a line
// over 998 octets (folded for every next hop) and 8-bit content for a next
// hop without 8BITMIME (re-encoded). The deliverer says so at Warn.
func TestDKIMConversions(t *testing.T) {
	keyDir, pubs := dkimKeys(t)
	sink := smtpsink.Start(t, smtpsink.Options{No8BITMIME: true})
	srv := dkimDNS(t, pubs, "ed.key")
	var logs logbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	dir := t.TempDir()
	addr, _ := startDKIMHub(t, t.TempDir(), fmt.Sprintf(dkimHub, dir, sink.Port(), keyBlocks(keyDir, "ed.key")), log)
	long := "From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: long\r\n\r\n" + strings.Repeat("word ", 300) + "\r\n"
	submitAsAlice(t, addr, "bob@remote.test", long)
	eight := "From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n"
	submitAsAlice(t, addr, "bob@remote.test", eight)
	got := sink.WaitFor(t, 2, 10*time.Second)
	res := srv.Resolver()
	for _, m := range got {
		if bytes.Contains(m.Data, []byte("DKIM-Signature:")) {
			t.Errorf("converted message sent with hubd's signature:\n%s", m.Data)
		}
		vs, err := dkim.VerifyWithOptions(bytes.NewReader(m.Data), &dkim.VerifyOptions{
			LookupTXT: func(name string) ([]string, error) { return res.LookupTXT(context.Background(), name) },
		})
		if err != nil || len(vs) != 0 {
			t.Errorf("signatures found: %v %v", vs, err)
		}
	}
	if !bytes.Contains(got[0].Data, []byte("Subject: long")) && !bytes.Contains(got[1].Data, []byte("Subject: long")) {
		t.Error("the long-line message was not delivered")
	}
	if n := logs.Count("level=WARN", "message converted for the next hop", "dkim_signature_dropped=true"); n != 2 {
		t.Errorf("%d warnings about the dropped signature, want 2:\n%s", n, logs.String())
	}
	if n := logs.Count("level=INFO", "DKIM signed", "d=example.test", "s=ed", "a=ed25519-sha256"); n != 2 {
		t.Errorf("%d log lines for the signatures, want 2:\n%s", n, logs.String())
	}
	if dsns, _ := os.ReadDir(filepath.Join(dir, "mail/alice/new")); len(dsns) != 0 {
		t.Errorf("%d DSNs to the sender, want none", len(dsns))
	}
}
