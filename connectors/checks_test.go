package connectors

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"hubd/internal/dnstest"
	"hubd/policy"
)

const bind = "127.0.0.1:0"

// startChecked starts an internet connector with checks answered by a
// real DNS server on loopback; extra goes inside its checks block.
func startChecked(t *testing.T, extra string) (*harness, *dnstest.Server) {
	t.Helper()
	return startCheckedAs(t, `["submit"]`, "", extra)
}

// startCheckedAs is startChecked with the anonymous permissions and more
// connector settings given.
func startCheckedAs(t *testing.T, anonymous, connector, extra string) (*harness, *dnstest.Server) {
	t.Helper()
	dns := dnstest.Start(t)
	h := startWith(t, `
receive_connector "in" {
  usage = "internet"
  bind  = ["`+bind+`"]
  `+connector+`
  allow_insecure_auth = true
  auth = ["plain"]
  permissions {
    anonymous     = `+anonymous+`
    authenticated = ["submit", "relay"]
  }
  checks {
    `+extra+`
  }
}
`, func(_ *policy.Config, o *Options) { o.Resolver = dns.Resolver() })
	// The test client is 127.0.0.1.
	dns.SetTXT("example.org", "v=spf1 ip4:127.0.0.1 -all")
	dns.SetTXT("other.example", "v=spf1 ip4:127.0.0.1 -all")
	dns.SetTXT("fail.example", "v=spf1 -all")
	dns.SetTXT("soft.example", "v=spf1 ~all")
	dns.SetFail("servfail.example", true)
	dns.SetTXT("_dmarc.example.org", "v=DMARC1; p=reject")
	dns.SetTXT("_dmarc.q.example", "v=DMARC1; p=quarantine")
	dns.SetFail("_dmarc.tmp.example", true)
	return h, dns
}

func msgFrom(from, extra string) string {
	return extra + "From: " + from + "\r\nTo: bob@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"
}

// arOf is the Authentication-Results field on top of a stored message, on
// one line.
func arOf(t *testing.T, body string) string {
	t.Helper()
	if !strings.HasPrefix(body, "Authentication-Results: ") {
		t.Fatalf("no Authentication-Results on top:\n%.300s", body)
	}
	end := strings.Index(body, "\r\nReceived: ")
	return strings.ReplaceAll(body[:end], "\r\n\t", " ")
}

func TestChecksSPFAtMAIL(t *testing.T) {
	h, _ := startChecked(t, "spf_reject = true")
	c, _ := h.dial(bind, "")
	c.expect("EHLO client.test", "250")
	c.expect("MAIL FROM:<a@fail.example>", "550 5.7.23 SPF validation failed: fail.example does not permit 127.0.0.1 to send its mail")
	c.expect("MAIL FROM:<a@servfail.example>", "451 4.7.24 SPF validation error: temporary DNS failure for servfail.example, try again later")
	if got := c.send("a@soft.example", []string{"bob@example.com"}, msgFrom("a@soft.example", "")); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("softfail: %q", got)
	}
	_, body := h.sub.last(t)
	want := "Authentication-Results: mx.test; spf=softfail smtp.mailfrom=a@soft.example; dkim=none; dmarc=none header.from=soft.example"
	if got := arOf(t, body); got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

// Without spf_reject an SPF fail is only recorded.
func TestChecksSPFRecorded(t *testing.T) {
	h, _ := startChecked(t, "")
	c, _ := h.dial(bind, "")
	c.expect("EHLO client.test", "250")
	for _, tc := range []struct{ from, want string }{
		{"a@fail.example", "spf=fail smtp.mailfrom=a@fail.example; dkim=none; dmarc=none header.from=fail.example"},
		{"a@servfail.example", `spf=temperror reason="DNS temporary failure for servfail.example" smtp.mailfrom=a@servfail.example; dkim=none; dmarc=none header.from=servfail.example`},
		{"", "spf=none smtp.helo=client.test; dkim=none; dmarc=none header.from=other.example"},
	} {
		from := tc.from
		if from == "" {
			from = "x@other.example"
		}
		if got := c.send(tc.from, []string{"bob@example.com"}, msgFrom(from, "")); !strings.HasPrefix(got, "250 ") {
			t.Fatalf("%s: %q", tc.from, got)
		}
		_, body := h.sub.last(t)
		if got := arOf(t, body); got != "Authentication-Results: mx.test; "+tc.want {
			t.Errorf("got  %q\nwant %q", got, "Authentication-Results: mx.test; "+tc.want)
		}
	}
}

// dmarc_reject refuses a spoofed From: over SMTP, queues nothing, and the
// session goes on.
func TestChecksDMARCReject(t *testing.T) {
	h, _ := startChecked(t, "dmarc_reject = true")
	c, _ := h.dial(bind, "")
	c.expect("EHLO client.test", "250")
	got := c.send("x@other.example", []string{"bob@example.com"}, msgFrom("CEO <ceo@example.org>", ""))
	if want := "550 5.7.1 Message rejected by the DMARC policy of example.org: the From: domain is not authenticated (no aligned SPF or DKIM pass)"; got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	if h.sub.count() != 0 {
		t.Fatal("the spoofed message was queued")
	}
	got = c.send("x@other.example", []string{"bob@example.com"}, msgFrom("a@tmp.example", ""))
	if want := "451 4.7.5 DMARC check of tmp.example could not be completed, try again later"; got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	// Quarantine is recorded, not refused; an aligned message passes.
	if got := c.send("x@other.example", []string{"bob@example.com"}, msgFrom("a@q.example", "")); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("quarantine: %q", got)
	}
	_, body := h.sub.last(t)
	if got, want := arOf(t, body), "Authentication-Results: mx.test; spf=pass smtp.mailfrom=x@other.example; dkim=none; dmarc=fail (p=quarantine) header.from=q.example"; got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	if got := c.send("ceo@example.org", []string{"bob@example.com"}, msgFrom("ceo@example.org", "")); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("aligned: %q", got)
	}
	_, body = h.sub.last(t)
	if got, want := arOf(t, body), "Authentication-Results: mx.test; spf=pass smtp.mailfrom=ceo@example.org; dkim=none; dmarc=pass (p=reject) header.from=example.org"; got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

// Forged Authentication-Results with our authserv-id go; others' stay.
func TestChecksStripForgedResults(t *testing.T) {
	h, _ := startChecked(t, "")
	c, _ := h.dial(bind, "")
	c.expect("EHLO client.test", "250")
	forged := "Authentication-Results: MX.TEST; dmarc=pass header.from=example.org\r\n" +
		"Authentication-Results: (ours?)\r\n mx.test; spf=pass\r\n" +
		"Authentication-Results: relay.example; spf=pass smtp.mailfrom=x@other.example\r\n"
	if got := c.send("x@other.example", []string{"bob@example.com"}, msgFrom("x@other.example", forged)); !strings.HasPrefix(got, "250 ") {
		t.Fatal(got)
	}
	_, body := h.sub.last(t)
	if n := strings.Count(strings.ToLower(body), "authentication-results: "); n != 2 {
		t.Fatalf("%d fields:\n%s", n, body)
	}
	if !strings.Contains(body, "\r\nAuthentication-Results: relay.example; spf=pass smtp.mailfrom=x@other.example\r\n") {
		t.Fatalf("the relay's field is gone:\n%s", body)
	}
	if strings.Contains(body, "MX.TEST") || strings.Contains(body, "(ours?)") {
		t.Fatalf("a forged field is left:\n%s", body)
	}
}

// Authenticated sessions are not checked: no refusal, no field.
func TestChecksNotForAuthenticated(t *testing.T) {
	h, dns := startChecked(t, "spf_reject = true\n dmarc_reject = true")
	c, _ := h.dial(bind, "")
	c.expect("EHLO client.test", "250")
	c.expect("AUTH PLAIN "+b64("\x00alice@example.com\x00"+alicePassword), "235 ")
	before := dns.Queries("udp") + dns.Queries("tcp")
	if got := c.send("alice@example.com", []string{"bob@example.com"}, msgFrom("alice@example.com", "")); !strings.HasPrefix(got, "250 ") {
		t.Fatal(got)
	}
	_, body := h.sub.last(t)
	if strings.Contains(body, "Authentication-Results") {
		t.Fatalf("checked:\n%s", body)
	}
	if n := dns.Queries("udp") + dns.Queries("tcp"); n != before {
		t.Fatalf("%d DNS questions for an authenticated session", n-before)
	}
}

// A connector whose anonymous sessions may relay serves trusted ranges
// (our own hosts): they are not checked either.
func TestChecksNotForTrustedRanges(t *testing.T) {
	h, dns := startCheckedAs(t, `["submit", "relay"]`, `remote_ip_ranges = ["127.0.0.1"]`, "spf_reject = true\n dmarc_reject = true")
	c, _ := h.dial(bind, "")
	c.expect("EHLO client.test", "250")
	if got := c.send("ceo@fail.example", []string{"bob@example.com"}, msgFrom("ceo@fail.example", "")); !strings.HasPrefix(got, "250 ") {
		t.Fatal(got)
	}
	if _, body := h.sub.last(t); strings.Contains(body, "Authentication-Results") {
		t.Fatalf("checked:\n%s", body)
	}
	if n := dns.Queries(""); n != 0 {
		t.Fatalf("%d DNS questions for a trusted session", n)
	}
}

// dkimPython finds a Python that has dkimpy (Debian's python3-dkim).
func dkimPython(t *testing.T) string {
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(py, "-c", "import dkim").Run() == nil {
			return py
		}
	}
	t.Skip("dkimpy (python3-dkim) is not installed; .ci/run installs it")
	return ""
}

// A message signed by dkimpy verifies in hubd; altered after signing, it
// fails; a malformed signature is neutral and the session goes on.
func TestChecksDKIMSignedByDkimpy(t *testing.T) {
	py := dkimPython(t)
	h, dns := startChecked(t, "")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	dns.SetTXT("py._domainkey.example.org", "v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(pub))
	keyFile := filepath.Join(t.TempDir(), "key.pem")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)
	cmd := exec.Command(py, "-c", `
import sys, dkim
msg = sys.stdin.buffer.read()
sig = dkim.sign(msg, b"py", b"example.org", open(sys.argv[1], "rb").read(),
                include_headers=[b"from", b"to", b"subject"], canonicalize=(b"relaxed", b"relaxed"))
sys.stdout.buffer.write(sig + msg)
`, keyFile)
	cmd.Stdin = strings.NewReader(msgFrom("Alice <alice@example.org>", ""))
	signed, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy: %v", err)
	}
	c, _ := h.dial(bind, "")
	c.expect("EHLO client.test", "250")
	send := func(msg string) string {
		t.Helper()
		if got := c.send("x@other.example", []string{"bob@example.com"}, msg); !strings.HasPrefix(got, "250 ") {
			t.Fatal(got)
		}
		_, body := h.sub.last(t)
		return arOf(t, body)
	}
	got := send(string(signed))
	if !strings.Contains(got, "; dkim=pass header.b=") || !strings.Contains(got, " header.d=example.org header.i=@example.org header.s=py; dmarc=pass (p=reject) header.from=example.org") {
		t.Fatalf("dkimpy signature: %q", got)
	}
	got = send(strings.Replace(string(signed), "Hello.", "Hello, altered.", 1))
	if !strings.Contains(got, `; dkim=fail reason="body hash did not verify" header.b=`) || !strings.Contains(got, "dmarc=fail (p=reject)") {
		t.Fatalf("altered: %q", got)
	}
	got = send("DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=py; bh\r\n" + msgFrom("a@example.org", ""))
	if want := `Authentication-Results: mx.test; spf=pass smtp.mailfrom=x@other.example; dkim=neutral reason="malformed signature tags: malformed header params" header.d=example.org header.i=@example.org header.s=py; dmarc=fail (p=reject) header.from=example.org`; got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}
