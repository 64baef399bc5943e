package dkimsign

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"hubd/internal/dnstest"
	"hubd/policy"
)

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
	edKey   ed25519.PrivateKey
)

func keys(t testing.TB) (*rsa.PrivateKey, ed25519.PrivateKey) {
	t.Helper()
	rsaOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		_, edKey, _ = ed25519.GenerateKey(rand.Reader)
	})
	return rsaKey, edKey
}

// block is a dkim block for example.com with the given keys (selectors
// "r" for RSA, "e" for Ed25519).
func block(t testing.TB, which ...string) *policy.DKIMDomain {
	r, e := keys(t)
	d := &policy.DKIMDomain{Domain: "example.com", Headers: policy.DefaultDKIMHeaders, Sign: policy.DKIMSignSubmissions}
	for _, w := range which {
		switch w {
		case "rsa":
			d.Keys = append(d.Keys, policy.DKIMKey{Selector: "r", Algorithm: "rsa-sha256", Bits: 2048, Signer: r})
		case "ed25519":
			d.Keys = append(d.Keys, policy.DKIMKey{Selector: "e", Algorithm: "ed25519-sha256", Bits: 256, Signer: e})
		}
	}
	return d
}

// publish serves the public keys of d on a DNS server and returns a
// lookup function for go-msgauth asking it over the network.
func publish(t *testing.T, d *policy.DKIMDomain) func(string) ([]string, error) {
	t.Helper()
	srv := dnstest.Start(t)
	for _, k := range d.Keys {
		rec, err := TXTRecord(k.Signer.Public())
		if err != nil {
			t.Fatal(err)
		}
		srv.SetTXT(RecordName(k.Selector, d.Domain), rec)
	}
	res := srv.Resolver()
	return func(name string) ([]string, error) { return res.LookupTXT(context.Background(), name) }
}

// verify checks every signature of msg with go-msgauth and returns the
// signing domains of those that verified.
func verify(t *testing.T, msg string, lookup func(string) ([]string, error)) []*dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(strings.NewReader(msg), &dkim.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return vs
}

const sample = "From: Alice <alice@mail.example.com>\r\n" +
	"To: bob@remote.example\r\n" +
	"Subject: hello\r\n" +
	"  folded\r\n" +
	"Date: Mon, 7 Dec 2026 10:00:00 +0000\r\n" +
	"Message-ID: <1@mail.example.com>\r\n" +
	"X-Hubd-Expanded: list@example.com\r\n" +
	"\r\n" +
	"Hello  Bob,\r\n\r\ntrailing   \r\n\r\n\r\n"

func chooser(d *policy.DKIMDomain) Choose {
	return func(from string) *policy.DKIMDomain {
		if from == "example.com" || strings.HasSuffix(from, ".example.com") {
			return d
		}
		return nil
	}
}

func TestSignVerifies(t *testing.T) {
	for _, which := range [][]string{{"rsa"}, {"ed25519"}, {"rsa", "ed25519"}} {
		t.Run(strings.Join(which, "+"), func(t *testing.T) {
			d := block(t, which...)
			lookup := publish(t, d)
			res, err := Sign(strings.NewReader(sample), chooser(d))
			if err != nil {
				t.Fatal(err)
			}
			if res.FromDomain != "mail.example.com" || len(res.Signatures) != len(which) {
				t.Fatalf("result %+v", res)
			}
			vs := verify(t, res.Fields+sample, lookup)
			if len(vs) != len(which) {
				t.Fatalf("%d verifications, want %d", len(vs), len(which))
			}
			for _, v := range vs {
				if v.Err != nil || v.Domain != "example.com" {
					t.Errorf("verification %+v", v)
				}
				if got := strings.Join(v.HeaderKeys, ":"); got != "From:From:Subject:Date:To:Message-ID" {
					t.Errorf("h= %s", got)
				}
			}
			// Relaxed canonicalization survives whitespace changes and
			// re-folding; a second From: (oversigned) and a changed body do not.
			relaxed := strings.Replace(sample, "Subject: hello\r\n  folded", "Subject:   hello folded", 1)
			relaxed = strings.Replace(relaxed, "Hello  Bob", "Hello Bob", 1)
			for _, v := range verify(t, res.Fields+relaxed, lookup) {
				if v.Err != nil {
					t.Errorf("relaxed change: %v", v.Err)
				}
			}
			for name, bad := range map[string]string{
				"second From": "From: mallory@evil.example\r\n" + sample,
				"body":        strings.Replace(sample, "Bob", "Eve", 1),
			} {
				for _, v := range verify(t, res.Fields+bad, lookup) {
					if v.Err == nil {
						t.Errorf("%s: still verifies", name)
					}
				}
			}
		})
	}
}

func TestSignHeaderOnly(t *testing.T) {
	d := block(t, "ed25519")
	lookup := publish(t, d)
	for _, msg := range []string{"From: a@example.com\r\nSubject: x\r\n", "From: a@example.com\r\nSubject: x"} {
		res, err := Sign(strings.NewReader(msg), chooser(d))
		if err != nil || res.Fields == "" {
			t.Fatalf("%q: %v %+v", msg, err, res)
		}
		// A verifier reads the message with its empty line added.
		full := res.Fields + strings.TrimSuffix(msg, "\r\n") + "\r\n\r\n"
		for _, v := range verify(t, full, lookup) {
			if v.Err != nil {
				t.Errorf("%q: %v", msg, v.Err)
			}
		}
	}
}

func TestNotSigned(t *testing.T) {
	d := block(t, "rsa")
	for _, msg := range []string{
		"Subject: no from\r\n\r\nbody\r\n",
		"From: someone@elsewhere.example\r\n\r\nbody\r\n",
		"From: undisclosed\r\n\r\nbody\r\n",
		"From: x@[192.0.2.1]\r\n\r\nbody\r\n",
		"",
	} {
		res, err := Sign(strings.NewReader(msg), chooser(d))
		if err != nil || res.Fields != "" || res.Signatures != nil {
			t.Errorf("%q: %v %+v", msg, err, res)
		}
	}
}

func TestLimits(t *testing.T) {
	d := block(t, "ed25519")
	big := "From: a@example.com\r\nX-Big: " + strings.Repeat("x", MaxHeaderBytes) + "\r\n\r\nbody\r\n"
	if _, err := Sign(strings.NewReader(big), chooser(d)); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("big header: %v", err)
	}
	blank := io.MultiReader(strings.NewReader("From: a@example.com\r\n\r\nstart\r\n"),
		&pattern{unit: " \r\n", n: 2 * MaxBlankRun}, strings.NewReader("end\r\n"))
	if _, err := Sign(blank, chooser(d)); !errors.Is(err, ErrBlankRun) {
		t.Errorf("blank run: %v", err)
	}
	r, e := keys(t)
	_ = r
	failing := &policy.DKIMDomain{Domain: "example.com", Headers: []string{"From"},
		Keys: []policy.DKIMKey{{Selector: "e", Signer: failingSigner{e}}}}
	if _, err := Sign(strings.NewReader(sample), chooser(failing)); err == nil {
		t.Error("a failing key signed")
	}
	readErr := io.MultiReader(strings.NewReader(sample), errReader{})
	if _, err := Sign(readErr, chooser(d)); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("read error: %v", err)
	}
}

type failingSigner struct{ ed25519.PrivateKey }

func (failingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("hardware token unplugged")
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

// pattern reads unit repeated up to n bytes, never holding them all.
type pattern struct {
	unit string
	n    int64
	pos  int64
	// sample, when set, is called after each MiB.
	sample func()
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.pos >= p.n {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n-p.pos {
		b = b[:p.n-p.pos]
	}
	for i := range b {
		b[i] = p.unit[(p.pos+int64(i))%int64(len(p.unit))]
	}
	before := p.pos
	p.pos += int64(len(b))
	if p.sample != nil && before>>20 != p.pos>>20 {
		p.sample()
	}
	return len(b), nil
}

func TestHeaderKeys(t *testing.T) {
	present := splitFields([]byte("From: a\r\nTo: b\r\nTo: c\r\nList-Id: x\r\nReceived: y\r\n\r\n"))
	got := strings.Join(headerKeys([]string{"From", "From", "To", "Cc", "List-Id", "List-Post", "Subject", "Subject"}, present), ":")
	if got != "From:From:To:To:List-Id:Subject" {
		t.Errorf("headerKeys = %s", got)
	}
}

func TestFromDomain(t *testing.T) {
	for in, want := range map[string]string{
		" Alice <alice@Example.COM>":                         "example.com",
		" alice@example.com (Alice)":                         "example.com",
		" \"a@b\" <x@sub.example.com.>":                      "sub.example.com",
		" =?x-unknown?q?Alice?= <alice@example.com>":         "example.com",
		" Broken \"quote <alice@example.com>":                "example.com",
		" a@one.example, b@two.example":                      "one.example",
		" undisclosed-recipients:;":                          "",
		" alice":                                             "",
		" <alice@[192.0.2.1]>":                               "",
		" =?utf-8?q?J=C3=BCrgen?= <j@xn--mller-kva.example>": "xn--mller-kva.example",
	} {
		got, ok := fromDomain(in)
		if got != want || ok != (want != "") {
			t.Errorf("fromDomain(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

// TestBoundedMemory signs a large message streamed from a generator and
// watches the heap: it must not grow with the message. 8 MiB by default
// (seconds under -race); HUBD_DKIM_BIG=1 signs 100 MiB.
func TestBoundedMemory(t *testing.T) {
	size := int64(8 << 20)
	if os.Getenv("HUBD_DKIM_BIG") != "" {
		size = 100 << 20
	}
	d := block(t, "rsa", "ed25519")
	var base runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&base)
	var peak uint64
	body := &pattern{unit: "The quick brown fox jumps over the lazy dog  \r\n\r\n", n: size, sample: func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		peak = max(peak, m.HeapAlloc)
	}}
	msg := io.MultiReader(strings.NewReader("From: a@example.com\r\nSubject: big\r\n\r\n"), body)
	res, err := Sign(msg, chooser(d))
	if err != nil || len(res.Signatures) != 2 {
		t.Fatalf("%v %+v", err, res)
	}
	growth := int64(peak) - int64(base.HeapAlloc)
	t.Logf("signed %d MiB with two keys: peak heap %d KiB above the start", size>>20, growth>>10)
	if growth > 32<<20 {
		t.Errorf("heap grew by %d MiB signing %d MiB", growth>>20, size>>20)
	}
}

func BenchmarkSign(b *testing.B) {
	for _, c := range []struct {
		name string
		keys []string
		size int
	}{
		{"rsa/5KB", []string{"rsa"}, 5 << 10},
		{"ed25519/5KB", []string{"ed25519"}, 5 << 10},
		{"dual/5KB", []string{"rsa", "ed25519"}, 5 << 10},
		{"ed25519/1MB", []string{"ed25519"}, 1 << 20},
	} {
		b.Run(c.name, func(b *testing.B) {
			d := block(b, c.keys...)
			msg := "From: a@example.com\r\nTo: b@remote.example\r\nSubject: bench\r\n\r\n" +
				strings.Repeat("Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n", c.size/58)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Sign(strings.NewReader(msg), chooser(d)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
