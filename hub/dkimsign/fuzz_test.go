package dkimsign

import (
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

// FuzzFromDomain: any From: value gives a domain without spaces, '@' or
// upper case, or none, and never panics.
func FuzzFromDomain(f *testing.F) {
	for _, s := range []string{" Alice <alice@example.com>", " a@b", " \"x\" <@>", " <a@[1.2.3.4]>", " =?utf-8?q?x?= <@@>", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := fromDomain(v)
		if ok != (d != "") {
			t.Fatalf("fromDomain(%q) = %q, %v", v, d, ok)
		}
		if strings.ContainsAny(d, "@ \t\r\n<>") || d != strings.ToLower(d) {
			t.Fatalf("fromDomain(%q) = %q", v, d)
		}
	})
}

// FuzzSignVerify: a message of CRLF lines that Sign signs verifies with
// go-msgauth against the same key, and splitFields never panics.
func FuzzSignVerify(f *testing.F) {
	f.Add("From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n")
	f.Add("From: a@example.com\r\nFrom: b@example.com\r\n\r\n\r\n\r\n")
	f.Add("Subject: x\r\n  y\r\nFROM: <a@Example.com>\r\n\r\n  \r\n\t\r\nz")
	f.Fuzz(func(t *testing.T, msg string) {
		d := block(t, "ed25519")
		res, err := Sign(strings.NewReader(msg), chooser(d))
		if err != nil || res.Fields == "" {
			return
		}
		// Only what a strict DATA reader stores: CRLF lines, no bare CR or
		// LF, and a header section of fields (every verifier's input).
		if strings.Contains(strings.ReplaceAll(msg, "\r\n", ""), "\n") || strings.Contains(strings.ReplaceAll(msg, "\r\n", ""), "\r") {
			return
		}
		head, _, _ := strings.Cut(msg, "\r\n\r\n")
		for line := range strings.SplitSeq(head, "\r\n") {
			if line != "" && line[0] != ' ' && line[0] != '\t' && !strings.Contains(line, ":") {
				return
			}
		}
		if !strings.Contains(msg, "\r\n\r\n") {
			msg = strings.TrimSuffix(msg, "\r\n") + "\r\n\r\n"
		}
		rec, _ := TXTRecord(d.Keys[0].Signer.Public())
		vs, err := dkim.VerifyWithOptions(strings.NewReader(res.Fields+msg), &dkim.VerifyOptions{
			LookupTXT: func(string) ([]string, error) { return []string{rec}, nil },
		})
		if err != nil || len(vs) != 1 || vs[0].Err != nil {
			t.Fatalf("signed message does not verify: %v %+v\n%q", err, vs, msg)
		}
	})
}
