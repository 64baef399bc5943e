package policy

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

var (
	rsa2048Once sync.Once
	rsa2048Key  *rsa.PrivateKey
)

// dkimKeyDir writes the key files the DKIM tests use into a new directory.
func dkimKeyDir(t *testing.T) string {
	t.Helper()
	rsa2048Once.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		rsa2048Key = k
	})
	dir := t.TempDir()
	write := func(name, typ string, der []byte) {
		b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p8, _ := x509.MarshalPKCS8PrivateKey(rsa2048Key)
	write("rsa.key", "PRIVATE KEY", p8)
	write("rsa1.key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsa2048Key))
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ed, _ := x509.MarshalPKCS8PrivateKey(edPriv)
	write("ed.key", "PRIVATE KEY", ed)
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	write("weak.key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(weak))
	write("cert.pem", "CERTIFICATE", []byte("not really"))
	write("enc.key", "ENCRYPTED PRIVATE KEY", []byte("opaque"))
	write("bad.key", "PRIVATE KEY", []byte("garbage"))
	if err := os.WriteFile(filepath.Join(dir, "garbage.key"), []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "unreadable.key"), []byte("x"), 0o000); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestDKIMConfig(t *testing.T) {
	dir := dkimKeyDir(t)
	cfg, diags := loadSrc(t, dir, baseConfig+`
dkim "Example.COM" {
  key {
    selector = "s1"
    key_file = "rsa.key"
  }
  key {
    selector = "e1"
    key_file = "ed.key"
  }
}
dkim "other.example" {
  key {
    selector = "legacy"
    key_file = "rsa1.key"
  }
  headers = ["From", "From", "Subject", "List-Id"]
  sign    = "all"
}
`)
	if cfg == nil {
		t.Fatalf("load: %v", diags)
	}
	if len(cfg.DKIM) != 2 {
		t.Fatalf("DKIM = %+v", cfg.DKIM)
	}
	d := cfg.DKIM[0]
	if d.Domain != "example.com" || d.Sign != DKIMSignSubmissions || len(d.Keys) != 2 ||
		d.Keys[0].Algorithm != "rsa-sha256" || d.Keys[0].Bits != 2048 || d.Keys[1].Algorithm != "ed25519-sha256" ||
		d.Keys[0].KeyFile != filepath.Join(dir, "rsa.key") {
		t.Errorf("example.com block: %+v", d)
	}
	if strings.Join(d.Headers, ",") != strings.Join(DefaultDKIMHeaders, ",") {
		t.Errorf("default headers: %v", d.Headers)
	}
	o := cfg.DKIM[1]
	if o.Sign != DKIMSignAll || strings.Join(o.Headers, ",") != "From,From,Subject,List-Id" || o.Keys[0].Bits != 2048 {
		t.Errorf("other.example block: %+v", o)
	}
	for domain, want := range map[string]string{
		"example.com": "example.com", "Sub.Example.com": "example.com", "a.b.example.com.": "example.com",
		"other.example": "other.example", "example.org": "", "com": "", "": "", "exa mple.com": "",
	} {
		got := ""
		if d := cfg.DKIMFor(domain); d != nil {
			got = d.Domain
		}
		if got != want {
			t.Errorf("DKIMFor(%q) = %q, want %q", domain, got, want)
		}
	}
}

func TestDKIMSigns(t *testing.T) {
	dir := dkimKeyDir(t)
	cfg, diags := loadSrc(t, dir, baseConfig+`
receive_connector "apps" {
  bind             = ["127.0.0.1:12525"]
  remote_ip_ranges = ["10.0.0.0/8"]
  permissions { anonymous = ["submit", "relay"] }
}
receive_connector "pickup" {
  bind             = ["127.0.0.1:12526"]
}
dkim "example.com" {
  key {
    selector = "s1"
    key_file = "ed.key"
  }
}
`)
	if cfg == nil {
		t.Fatalf("load: %v", diags)
	}
	d := cfg.DKIMFor("example.com")
	for _, c := range []struct {
		connector string
		auth      bool
		want      bool
	}{
		{"default", false, false}, // anonymous, may not relay: mail relayed for others
		{"default", true, true},   // an authenticated submission
		{"apps", false, true},     // a trusted range
		{"hub", false, true},      // a DSN
		{"pickup", false, false},  // a receive connector of that name decides, not the local pickup
		{"gone", false, false},    // a connector removed by a reload
	} {
		if got := cfg.DKIMSigns(d, c.connector, c.auth); got != c.want {
			t.Errorf("DKIMSigns(%q, auth=%v) = %v, want %v", c.connector, c.auth, got, c.want)
		}
	}
	all := *d
	all.Sign = DKIMSignAll
	if !cfg.DKIMSigns(&all, "default", false) {
		t.Error(`sign = "all" does not sign anonymous mail`)
	}
}

// TestDKIMDiagnostics: every bad key file and bad field is an error at the
// attribute's own line.
func TestDKIMDiagnostics(t *testing.T) {
	dir := dkimKeyDir(t)
	cases := []struct {
		name, block, summary, detail string
	}{
		{"missing file", `key {
    selector = "s1"
    key_file = "nope.key" # <-
  }`, "Unreadable DKIM key", "no such file"},
		{"weak RSA", `key {
    selector = "s1"
    key_file = "weak.key" # <-
  }`, "Weak DKIM key", "1024-bit RSA key"},
		{"garbage", `key {
    selector = "s1"
    key_file = "garbage.key" # <-
  }`, "Unusable DKIM key", "no PEM block"},
		{"bad DER", `key {
    selector = "s1"
    key_file = "bad.key" # <-
  }`, "Unusable DKIM key", "not a PKCS#8"},
		{"certificate", `key {
    selector = "s1"
    key_file = "cert.pem" # <-
  }`, "Unusable DKIM key", `"CERTIFICATE"`},
		{"encrypted", `key {
    selector = "s1"
    key_file = "enc.key" # <-
  }`, "Unusable DKIM key", "encrypted"},
		{"directory", `key {
    selector = "s1"
    key_file = "." # <-
  }`, "Unreadable DKIM key", "directory"},
		{"bad selector", `key {
    selector = "s_1" # <-
    key_file = "ed.key"
  }`, "Invalid DKIM selector", "s_1"},
		{"duplicate selector", `key {
    selector = "s1"
    key_file = "ed.key"
  }
  key { # <-
    selector = "S1"
    key_file = "rsa.key"
  }`, "Duplicate DKIM selector", "more than once"},
		{"no key", `sign = "all" # <- (the block's line, one above)`, "Missing DKIM key", "at least one key"},
		{"bad sign", `sign = "relayed" # <-
  key {
    selector = "s1"
    key_file = "ed.key"
  }`, "Invalid sign", `"relayed"`},
		{"no From", `headers = ["Subject", "To"] # <-
  key {
    selector = "s1"
    key_file = "ed.key"
  }`, "From not signed", "RFC 6376"},
		{"Received", `headers = ["From",
    "Received", # <-
  ]
  key {
    selector = "s1"
    key_file = "ed.key"
  }`, "Header field not signable", "trace field"},
		{"X-Hubd", `headers = ["From",
    "X-Hubd-Expanded", # <-
  ]
  key {
    selector = "s1"
    key_file = "ed.key"
  }`, "Header field not signable", "header firewall"},
		{"bad name", `headers = ["From",
    "Sub ject", # <-
  ]
  key {
    selector = "s1"
    key_file = "ed.key"
  }`, "Invalid header field name", "Sub ject"},
	}
	if os.Getuid() != 0 { // root reads a mode 0000 file
		cases = append(cases, struct{ name, block, summary, detail string }{"unreadable", `key {
    selector = "s1"
    key_file = "unreadable.key" # <-
  }`, "Unreadable DKIM key", "permission denied"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := baseConfig + "dkim \"example.com\" {\n  " + c.block + "\n}\n"
			cfg, diags := loadSrc(t, dir, src)
			if cfg != nil {
				t.Fatal("loaded without error")
			}
			line := markedLine(t, src)
			if strings.Contains(src, "one above") {
				line--
			}
			for _, d := range diags {
				if d.Severity == hcl.DiagError && strings.HasPrefix(d.Summary, c.summary) {
					if d.Subject == nil || d.Subject.Start.Line != line {
						t.Errorf("%q at %v, want line %d", d.Summary, d.Subject, line)
					}
					if !strings.Contains(d.Detail, c.detail) {
						t.Errorf("detail %q does not mention %q", d.Detail, c.detail)
					}
					return
				}
			}
			t.Fatalf("no %q diagnostic in %v", c.summary, diags)
		})
	}
}

func TestDKIMDuplicateAndBadDomain(t *testing.T) {
	dir := dkimKeyDir(t)
	src := baseConfig + `
dkim "example.com" {
  key {
    selector = "s1"
    key_file = "ed.key"
  }
}
dkim "EXAMPLE.com" {
  key {
    selector = "s2"
    key_file = "ed.key"
  }
}
dkim "bad domain" {
  key {
    selector = "s2"
    key_file = "ed.key"
  }
}
`
	_, diags := loadSrc(t, dir, src)
	var got []string
	for _, d := range diags {
		got = append(got, d.Summary)
	}
	if s := strings.Join(got, "|"); !strings.Contains(s, `Duplicate dkim "EXAMPLE.com"`) || !strings.Contains(s, "Invalid DKIM domain") {
		t.Errorf("diagnostics: %v", got)
	}
}

// TestDKIMKeyInHash: a new key in the same file is a new configuration
// (hubctl shows another hash), and a reload signs with it.
func TestDKIMKeyInHash(t *testing.T) {
	dir := dkimKeyDir(t)
	src := baseConfig + `
dkim "example.com" {
  key {
    selector = "e1"
    key_file = "ed.key"
  }
}
`
	cfg1, diags := loadSrc(t, dir, src)
	if cfg1 == nil {
		t.Fatal(diags)
	}
	other, err := os.ReadFile(filepath.Join(dir, "rsa.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ed.key"), other, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg2, diags := loadSrc(t, dir, src)
	if cfg2 == nil {
		t.Fatal(diags)
	}
	if cfg1.Hash() == cfg2.Hash() {
		t.Error("hash unchanged after the key changed")
	}
	if a := cfg2.DKIM[0].Keys[0].Algorithm; a != "rsa-sha256" {
		t.Errorf("reloaded key signs with %s, want rsa-sha256", a)
	}
}
