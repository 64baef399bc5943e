package authcheck

import (
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAuthServID(t *testing.T) {
	cases := []struct{ in, want string }{
		{" mx.hub.test; spf=pass", "mx.hub.test"},
		{"mx.hub.test 1; none", "mx.hub.test"},
		{"\r\n\t(our (nested \\) comment)) MX.Hub.Test;", "MX.Hub.Test"},
		{` "mx.hub.test"; none`, "mx.hub.test"},
		{` "mx.h\"ub"; none`, `mx.h"ub`},
		{"mx.hub.test;", "mx.hub.test"},
		{"", ""},
		{" ; spf=pass", ""},
		{" (unclosed mx.hub.test", ""},
		{` "unclosed`, ""},
		{` ""; none`, ""},
	}
	for _, tc := range cases {
		got, err := AuthServID(tc.in)
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("AuthServID(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestStripOwnResults(t *testing.T) {
	in := "Received: from x\r\n" +
		"Authentication-Results: mx.hub.test; spf=pass smtp.mailfrom=ceo@example.org\r\n" +
		"Authentication-Results: (forged)\r\n MX.HUB.TEST;\r\n dmarc=pass\r\n" +
		"Authentication-Results: \"mx.hub.test\"; dkim=pass\r\n" +
		"Authentication-Results: relay.example; spf=fail\r\n" +
		"Authentication-Results: mx.hub.test.evil; spf=pass\r\n" +
		"Authentication-Results: ;garbage\r\n" +
		"Subject: hi\r\n\r\n" +
		"Authentication-Results: mx.hub.test; in the body\r\n"
	want := "Received: from x\r\n" +
		"Authentication-Results: relay.example; spf=fail\r\n" +
		"Authentication-Results: mx.hub.test.evil; spf=pass\r\n" +
		"Subject: hi\r\n\r\n" +
		"Authentication-Results: mx.hub.test; in the body\r\n"
	f := StripOwnResults(strings.NewReader(in), "mx.hub.test")
	out, err := io.ReadAll(f)
	if err != nil || string(out) != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
	if f.Removed() != 4 {
		t.Fatalf("Removed = %d", f.Removed())
	}
}

func TestParseSigTags(t *testing.T) {
	got := parseSigTags(" v=1; a=rsa-sha256; d=Example.ORG;\r\n\ts=sel ; i=a@example.org; b=ab cd\r\n\tef gh=;")
	if got != (sigTags{d: "example.org", s: "sel", i: "a@example.org", b: "abcdefgh="}) {
		t.Fatalf("%+v", got)
	}
}

// FuzzAuthServID: the id found is a token or the content of a quoted
// string, never empty, and found only when the value is readable.
func FuzzAuthServID(f *testing.F) {
	for _, s := range []string{" mx.hub.test; spf=pass", "(a(b)c) \"x\\\"y\";", "\r\n\tid 1; none", "((", `"`, "é; x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		id, err := AuthServID(v)
		if err != nil {
			if id != "" {
				t.Fatalf("id %q with error", id)
			}
			return
		}
		if id == "" || len(id) > len(v) {
			t.Fatalf("id %q from %q", id, v)
		}
		if !strings.Contains(v, `"`) && (strings.ContainsAny(id, " \t\r\n;()") || !strings.Contains(v, id)) {
			t.Fatalf("token %q from %q", id, v)
		}
	})
}

// FuzzParseSigTags: any value parses without panicking, b= has no white
// space, and d= is lower case.
func FuzzParseSigTags(f *testing.F) {
	for _, s := range []string{"v=1; d=x.org; s=s; b=a b", ";;==;", "d", "b=\r\n\t x", "d=ÉX.org"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		tags := parseSigTags(v)
		if strings.ContainsAny(tags.b, " \t\r\n") {
			t.Fatalf("b=%q", tags.b)
		}
		if utf8.ValidString(tags.d) && tags.d != strings.ToLower(tags.d) {
			t.Fatalf("d=%q", tags.d)
		}
	})
}

// FuzzField: whatever the sender put in the values the field names, the
// Authentication-Results field is one field: its only line breaks are our
// folds.
func FuzzField(f *testing.F) {
	f.Add("a@b.example", "helo", "x.org", "@x.org", "sel", "abcdefgh", "example.org", "reason")
	f.Fuzz(func(t *testing.T, mailFrom, helo, d, i, s, b, from, reason string) {
		c := &Checker{AuthServID: "mx.hub.test"}
		got := c.Field(Results{
			SPF:         &SPFResult{Result: PermError, MailFrom: mailFrom, Helo: helo, Reason: reason},
			DKIMChecked: true,
			DKIM:        []DKIMResult{{Result: Neutral, Domain: d, Identifier: i, Selector: s, B: b, Reason: reason}},
			DMARC:       &DMARCResult{Result: PermError, From: from, Reason: reason},
		})
		lines := strings.Split(strings.TrimSuffix(got, "\r\n"), "\r\n\t")
		if len(lines) != 4 {
			t.Fatalf("%d lines: %q", len(lines), got)
		}
		for _, l := range lines {
			if strings.ContainsAny(l, "\r\n") || len(l) > 998 {
				t.Fatalf("line %q", l)
			}
		}
	})
}
