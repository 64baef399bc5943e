package authcheck

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"hubd/internal/dnstest"
)

const plain = "From: Alice <alice@example.org>\r\nTo: bob@hub.test\r\nSubject: hi\r\n\r\nHello.\r\n"

// signer publishes an Ed25519 key for d= domain, s= selector.
type signer struct {
	key             ed25519.PrivateKey
	domain, select_ string
}

func newSigner(t testing.TB, dns *dnstest.Server, domain, selector string) *signer {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dns.SetTXT(selector+"._domainkey."+domain, "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub))
	return &signer{key: key, domain: domain, select_: selector}
}

func (s *signer) sign(t testing.TB, msg string) string {
	var b bytes.Buffer
	err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: s.domain, Selector: s.select_, Signer: s.key,
		HeaderKeys: []string{"From", "To", "Subject"}})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// bOf is the header.b of the first signature of msg.
func bOf(msg string) string {
	h, _ := readHeaderSection(bufioReader(msg))
	for _, f := range headerFields(h) {
		if strings.EqualFold(f.name, "DKIM-Signature") {
			return parseSigTags(f.value).b[:8]
		}
	}
	return ""
}

func check(c *Checker, msg string, opts MessageOptions) Results {
	m := c.NewMessage(context.Background(), opts)
	io.Copy(m, &chunks{r: strings.NewReader(msg), n: 7})
	return m.Finish()
}

type chunks struct {
	r io.Reader
	n int
}

func (c *chunks) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

func TestDKIM(t *testing.T) {
	c, dns := newChecker(t)
	s := newSigner(t, dns, "example.org", "sel")
	dns.SetFail("tmp._domainkey.example.org", true)
	signed := s.sign(t, plain)
	b := bOf(signed)
	props := " header.b=" + b + " header.d=example.org header.i=@example.org header.s=sel"
	cases := []struct{ name, msg, want string }{
		{"pass", signed, "dkim=pass" + props},
		{"body altered", strings.Replace(signed, "Hello.", "Hello!", 1),
			`dkim=fail reason="body hash did not verify"` + props},
		{"header altered", strings.Replace(signed, "Subject: hi", "Subject: ho", 1),
			`dkim=fail reason="signature did not verify: invalid Ed25519 signature"` + props},
		{"no signature", plain, "dkim=none"},
		{"malformed", "DKIM-Signature: v=1; a; d=example.org; s=sel\r\n" + plain,
			`dkim=neutral reason="malformed signature tags: malformed header params" header.d=example.org header.i=@example.org header.s=sel`},
		{"missing tags", "DKIM-Signature: v=1; d=example.org; s=sel\r\n" + plain,
			`dkim=neutral reason="signature missing required tag" header.d=example.org header.i=@example.org header.s=sel`},
		{"no key", strings.Replace(signed, "s=sel", "s=gone", 1),
			`dkim=permerror reason="no key for signature" header.b=` + b + ` header.d=example.org header.i=@example.org header.s=gone`},
		{"key lookup SERVFAIL", strings.Replace(signed, "s=sel", "s=tmp", 1),
			`dkim=temperror reason="key unavailable" header.b=` + b + ` header.d=example.org header.i=@example.org header.s=tmp`},
		{"control characters in tags", "DKIM-Signature: v=1; d=ex\x01ample.org; s=s\x7fel\r\n" + plain,
			`dkim=neutral reason="signature missing required tag" header.d="ex?ample.org" header.i="@ex?ample.org" header.s="s?el"`},
		{"header only", strings.TrimSuffix(s.sign(t, "From: a@example.org\r\n\r\n"), "\r\n"), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := oneLine(c, check(c, tc.msg, MessageOptions{DKIM: true}))
			if tc.want == "" {
				if !strings.Contains(got, "dkim=pass") {
					t.Fatalf("got %q", got)
				}
				return
			}
			if want := "Authentication-Results: " + authserv + "; " + tc.want + "\r\n"; got != want {
				t.Errorf("got  %q\nwant %q", got, want)
			}
		})
	}
}

// Two signatures, two results in header order; past MaxSignatures the
// rest are not verified.
func TestDKIMSeveralSignatures(t *testing.T) {
	c, dns := newChecker(t)
	a := newSigner(t, dns, "example.org", "a")
	b := newSigner(t, dns, "relay.example", "b")
	msg := b.sign(t, a.sign(t, plain))
	res := check(c, msg, MessageOptions{DKIM: true})
	if len(res.DKIM) != 2 || res.DKIM[0].Domain != "relay.example" || res.DKIM[1].Domain != "example.org" ||
		res.DKIM[0].Result != Pass || res.DKIM[1].Result != Pass {
		t.Fatalf("%+v", res.DKIM)
	}
	for range 6 {
		msg = a.sign(t, msg)
	}
	res = check(c, msg, MessageOptions{DKIM: true})
	if len(res.DKIM) != MaxSignatures {
		t.Fatalf("%d results, want %d", len(res.DKIM), MaxSignatures)
	}
	if _, dk, _ := res.Summary(); dk != "pass,pass,pass,pass,pass" {
		t.Fatalf("summary %q", dk)
	}
}

// A body of blank lines past MaxBlankRun is not hashed to the end: the
// signature gets "policy", and memory stays bounded.
func TestDKIMBlankRun(t *testing.T) {
	c, dns := newChecker(t)
	s := newSigner(t, dns, "example.org", "sel")
	msg := s.sign(t, plain+strings.Repeat("\r\n", MaxBlankRun)+"end\r\n")
	res := check(c, msg, MessageOptions{DKIM: true})
	if len(res.DKIM) != 1 || res.DKIM[0].Result != Policy {
		t.Fatalf("%+v", res.DKIM)
	}
}

// TestDKIMLargeMessage streams a signed 100 MB message through the
// verifier and measures the live heap (after a collection) every 16 MB:
// what the verifier holds does not grow with the message.
func TestDKIMLargeMessage(t *testing.T) {
	size := 100 << 20
	if testing.Short() {
		size = 8 << 20
	}
	c, dns := newChecker(t)
	s := newSigner(t, dns, "example.org", "sel")
	line := strings.Repeat("0123456789abcdef", 4) + "\r\n" // 66 bytes
	body := &repeatReader{line: line, left: size}
	// Sign by streaming too: dkim.Signer takes the message as a writer.
	signer, err := dkim.NewSigner(&dkim.SignOptions{Domain: "example.org", Selector: "sel", Signer: s.key})
	if err != nil {
		t.Fatal(err)
	}
	head := "From: alice@example.org\r\nSubject: big\r\n\r\n"
	io.WriteString(signer, head)
	io.Copy(signer, body)
	if err := signer.Close(); err != nil {
		t.Fatal(err)
	}
	sig := signer.Signature()

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	peak := before.HeapAlloc
	m := c.NewMessage(context.Background(), MessageOptions{DKIM: true, DMARC: true})
	start := time.Now()
	src := io.MultiReader(strings.NewReader(sig+head), &repeatReader{line: line, left: size})
	buf := make([]byte, 64<<10)
	for n := 0; ; n++ {
		k, err := src.Read(buf)
		m.Write(buf[:k])
		if n%256 == 0 { // every 16 MB
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
		if err != nil {
			break
		}
	}
	res := m.Finish()
	elapsed := time.Since(start)
	if len(res.DKIM) != 1 || res.DKIM[0].Result != Pass {
		t.Fatalf("%+v", res.DKIM)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	growth := int64(peak) - int64(before.HeapAlloc)
	t.Logf("%d MB verified in %v; live heap grew by at most %d KB; %d MB allocated in all",
		size>>20, elapsed, growth>>10, (after.TotalAlloc-before.TotalAlloc)>>20)
	if growth > 4<<20 {
		t.Errorf("heap grew by %d MB while verifying", growth>>20)
	}
}

type repeatReader struct {
	line string
	left int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n+len(r.line) <= len(p) && r.left > 0 {
		n += copy(p[n:], r.line)
		r.left -= len(r.line)
	}
	if n == 0 {
		n = copy(p, r.line[:min(len(p), len(r.line))])
		r.left -= n
	}
	return n, nil
}

// Abort ends the checks of a message cut off half way, without leaving a
// goroutine behind.
func TestMessageAbort(t *testing.T) {
	c, dns := newChecker(t)
	s := newSigner(t, dns, "example.org", "sel")
	signed := s.sign(t, plain)
	before := runtime.NumGoroutine()
	for range 20 {
		m := c.NewMessage(context.Background(), MessageOptions{DKIM: true, DMARC: true})
		io.WriteString(m, signed[:len(signed)-4])
		m.Abort()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before, %d after", before, runtime.NumGoroutine())
		}
		runtime.Gosched()
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
