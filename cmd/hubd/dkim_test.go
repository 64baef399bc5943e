package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"hubd/hub/dkimsign"
	"hubd/policy"
)

// TestDKIMKeygen: the key is written mode 0600 and never over another
// file; the printed record publishes its public key and the printed HCL
// block loads.
func TestDKIMKeygen(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ alg, sel, k string }{{"rsa", "s1", "k=rsa"}, {"ed25519", "e1", "k=ed25519"}} {
		key := filepath.Join(dir, c.sel+".key")
		var out, errb bytes.Buffer
		if code := run([]string{"dkim", "keygen", "-domain", "Example.COM", "-selector", c.sel, "-algorithm", c.alg, "-out", key}, &out, &errb); code != 0 {
			t.Fatalf("%s: exit %d: %s", c.alg, code, errb.String())
		}
		st, err := os.Stat(key)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: key file %v %v", c.alg, st, err)
		}
		pemBytes, _ := os.ReadFile(key)
		signer, err := policy.ParseDKIMKey(pemBytes)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := dkimsign.TXTRecord(signer.Public())
		m := regexp.MustCompile(`(?m)^` + c.sel + `\._domainkey\.example\.com\. IN TXT (.*)$`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("%s: no record line in\n%s", c.alg, out.String())
		}
		var got strings.Builder
		for _, part := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(m[1], -1) {
			if len(part[1]) > 255 {
				t.Errorf("a TXT string of %d octets", len(part[1]))
			}
			got.WriteString(part[1])
		}
		if got.String() != want || !strings.Contains(want, c.k) {
			t.Errorf("%s: record %q, want %q", c.alg, got.String(), want)
		}
		hcl := out.String()[strings.Index(out.String(), "dkim \"example.com\""):]
		src := "hub {\n hostname = \"mx.example.com\"\n spool_dir = \"spool\"\n}\nreceive_connector \"in\" { bind = [\"127.0.0.1:0\"] }\n" + hcl
		if _, err := policy.LoadBytes("keygen.hcl", []byte(src), dir); err != nil {
			t.Errorf("%s: the printed block does not load: %v\n%s", c.alg, err, hcl)
		}
		// Again: refused, and the key is unchanged.
		errb.Reset()
		if code := run([]string{"dkim", "keygen", "-domain", "example.com", "-selector", c.sel, "-algorithm", c.alg, "-out", key}, &out, &errb); code != 1 ||
			!strings.Contains(errb.String(), "not overwriting") {
			t.Errorf("%s: second keygen: exit %d: %s", c.alg, code, errb.String())
		}
		if again, _ := os.ReadFile(key); !bytes.Equal(again, pemBytes) {
			t.Errorf("%s: key overwritten", c.alg)
		}
	}
	for _, args := range [][]string{
		{"dkim"}, {"dkim", "keygen", "-domain", "example.com"},
		{"dkim", "keygen", "-domain", "example.com", "-selector", "bad_sel"},
		{"dkim", "keygen", "-domain", "example.com", "-selector", "s", "-bits", "1024"},
		{"dkim", "keygen", "-domain", "example.com", "-selector", "s", "-algorithm", "dsa"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}

// TestCheckDKIMExample: examples/dkim.hcl passes hubd check with the keys
// its comment makes (by the built hubd's keygen); without them, check
// names the key_file line.
func TestCheckDKIMExample(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile("../../examples/dkim.hcl")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "dkim.hcl")
	if err := os.WriteFile(cfg, src, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runHubd(t, "check", "-config", cfg, "-paths=false")
	if code != 1 || !strings.Contains(out, "Unreadable DKIM key") || !strings.Contains(out, "dkim.hcl line") {
		t.Fatalf("missing keys: exit %d\n%s", code, out)
	}
	os.Mkdir(filepath.Join(dir, "dkim"), 0o700)
	for _, args := range [][]string{
		{"-selector", "s2026r", "-out", filepath.Join(dir, "dkim/example.com.s2026r.key")},
		{"-selector", "s2026e", "-algorithm", "ed25519", "-out", filepath.Join(dir, "dkim/example.com.s2026e.key")},
	} {
		if out, code := runHubd(t, append([]string{"dkim", "keygen", "-domain", "example.com"}, args...)...); code != 0 {
			t.Fatalf("keygen: exit %d\n%s", code, out)
		}
	}
	out, code = runHubd(t, "check", "-config", cfg, "-paths=false")
	if code != 0 || !strings.Contains(out, "configuration OK") {
		t.Fatalf("hubd check examples/dkim.hcl: exit %d\n%s", code, out)
	}
}
