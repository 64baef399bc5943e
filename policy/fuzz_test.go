package policy

import (
	"strings"
	"testing"
	"time"
)

// Fuzz targets for every parser of untrusted or operator input in policy:
// addresses (from MAIL/RCPT), sizes, durations and IP ranges (from HCL).
// Seeds live in testdata/fuzz/<target>/; `make test` runs them, `make fuzz`
// explores.

func FuzzSplitAddress(f *testing.F) {
	for _, s := range []string{"alice@example.com", `"a b"@example.com`, "a@[192.0.2.1]", "a@[IPv6:2001:db8::1]",
		"x@", "@x", "a@b@c", "ü@例え.jp", "postmaster", "a+tag@Example.COM", `"\"@x`, "a..b@x", strings.Repeat("a", 300) + "@x"} {
		f.Add(s)
	}
	cfg := mustLoad(f, decideConfig)
	f.Fuzz(func(t *testing.T, addr string) {
		local, domain, err := SplitAddress(addr)
		if err != nil {
			return
		}
		if domain == "" || strings.ContainsAny(domain, " \r\n\x00") {
			t.Fatalf("SplitAddress(%q) = %q, %q: empty or unsafe domain accepted", addr, local, domain)
		}
		// The decisions built on the address must not panic either.
		cfg.ResolveLocal(addr)
		cfg.CheckRecipient(Rights(RightSubmit), addr)
		cfg.CheckSender(Rights(RightSubmit), "alice@example.com", addr)
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"36MB", "1 KB", "10KiB", "0B", "9223372036854775807B", "99999999999GB", "-1MB", "1.5MB", "MB", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d: negative size accepted", s, n)
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"5m", "1d12h", "2w", "90s", "0s", "-1h", "1000000w", "1.5h", "d", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err == nil && d < 0 && !strings.HasPrefix(strings.TrimSpace(s), "-") {
			t.Fatalf("ParseDuration(%q) = %v: overflowed into a negative duration", s, d)
		}
		_ = time.Duration(d)
	})
}

func FuzzParseIPRange(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "192.0.2.1", "10.0.0.1-10.0.0.9", "::/0", "2001:db8::/33", "10.0.0.9-10.0.0.1",
		"1.2.3.4/33", "::ffff:1.2.3.4", "fe80::1%eth0", "1.2.3.4-::1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseIPRange(s)
		if err != nil {
			return
		}
		if !r.First.IsValid() || !r.Last.IsValid() || r.Last.Less(r.First) || r.First.Is4() != r.Last.Is4() {
			t.Fatalf("ParseIPRange(%q) = %v..%v: not an ordered range of one family", s, r.First, r.Last)
		}
		if !r.Contains(r.First) || !r.Contains(r.Last) {
			t.Fatalf("ParseIPRange(%q) does not contain its own bounds", s)
		}
	})
}

func mustLoad(tb testing.TB, src string) *Config {
	tb.Helper()
	cfg, err := LoadBytes("fuzz.hcl", []byte(src), tb.TempDir())
	if err != nil {
		tb.Fatalf("config: %v", err)
	}
	return cfg
}

func FuzzParseAliases(f *testing.F) {
	for _, s := range []string{"postmaster: root\n", "a: b,\n  c\r\n# x\n", "x: :include:inc\n", "p: |cmd\nf: /file\n",
		"\"q\\\"x\": \"|a, b\", c\n", "  lead\n", "a:", "é: ü@例え.jp,", "a: :include:loop\n", "\"\n", "a: \"\n"} {
		f.Add(s)
	}
	files := map[string]string{"/inc": "a, b\n:include:/loop\n", "/loop": ":include:inc\n"}
	f.Fuzz(func(t *testing.T, src string) {
		entries, sources, diags := parseAliases("/aliases", []byte(src), fakeFiles(files))
		for _, d := range diags {
			r := d.Subject
			body, ok := sources[r.Filename]
			if !ok || r.Start.Byte < 0 || r.Start.Byte > r.End.Byte || r.End.Byte > len(body) || r.Start.Line < 1 {
				t.Fatalf("diagnostic %q has range %v outside its file (%d bytes)", d.Summary, r, len(body))
			}
		}
		for _, e := range entries {
			if len(e.targets) == 0 || !validAliasWord(e.name) {
				t.Fatalf("entry %+v accepted", e)
			}
			for _, tg := range e.targets {
				if !validAliasWord(tg.text) || strings.HasPrefix(tg.text, "|") || strings.HasPrefix(tg.text, "/") {
					t.Fatalf("target %q accepted", tg.text)
				}
			}
		}
	})
}
