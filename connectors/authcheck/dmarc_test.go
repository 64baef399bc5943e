package authcheck

import (
	"context"
	"strings"
	"testing"

	"hubd/internal/dnstest"
)

func TestDMARC(t *testing.T) {
	c, dns := newChecker(t)
	org := newSigner(t, dns, "example.org", "sel")
	sub := newSigner(t, dns, "mail.example.org", "sel")
	other := newSigner(t, dns, "other.example", "sel")
	dns.SetTXT("_dmarc.example.org", "v=DMARC1; p=reject; sp=quarantine")
	dns.SetTXT("_dmarc.strict.example", "v=DMARC1; p=reject; adkim=s; aspf=s")
	strict := newSigner(t, dns, "strict.example", "sel")
	dns.SetTXT("_dmarc.q.example", "v=DMARC1; p=quarantine")
	dns.SetTXT("_dmarc.none.example", "v=DMARC1; p=none; rua=mailto:r@none.example")
	dns.SetTXT("_dmarc.broken.example", "v=DMARC1; p=sometimes")
	dns.SetTXT("_dmarc.twice.example", "v=DMARC1; p=reject", "v=DMARC1; p=none")
	dns.SetTXT("_dmarc.pct0.example", "v=DMARC1; p=reject; pct=0")
	dns.SetFail("_dmarc.servfail.example", true)
	dns.SetTXT("example.org", "v=spf1 ip4:192.0.2.10 -all")
	dns.SetTXT("bounce.example.org", "v=spf1 ip4:192.0.2.10 -all")
	dns.SetTXT("other.example", "v=spf1 ip4:192.0.2.10 -all")

	msg := func(from string) string { return strings.Replace(plain, "alice@example.org", from, 1) }
	cases := []struct {
		name, mailFrom, msg, want string
		reject                    bool
	}{
		{"aligned SPF", "alice@example.org", msg("alice@example.org"), "dmarc=pass (p=reject) header.from=example.org", false},
		{"relaxed SPF: bounce subdomain", "b@bounce.example.org", msg("alice@example.org"),
			"dmarc=pass (p=reject) header.from=example.org", false},
		{"aligned DKIM, SPF of another domain", "x@other.example", org.sign(t, msg("alice@example.org")),
			"dmarc=pass (p=reject) header.from=example.org", false},
		{"relaxed DKIM: d= parent of a From subdomain", "x@other.example", org.sign(t, msg("alice@news.example.org")),
			"dmarc=pass (p=quarantine) header.from=news.example.org", false},
		{"relaxed DKIM: d= subdomain of From", "x@other.example", sub.sign(t, msg("alice@example.org")),
			"dmarc=pass (p=reject) header.from=example.org", false},
		{"strict DKIM refuses a subdomain", "x@other.example", strict.sign(t, msg("alice@strict.example")),
			"dmarc=pass (p=reject) header.from=strict.example", false},
		{"spoofed: pass for another domain only", "x@other.example", other.sign(t, msg("ceo@example.org")),
			"dmarc=fail (p=reject) header.from=example.org", true},
		{"subdomain takes sp=", "x@other.example", msg("ceo@news.example.org"),
			"dmarc=fail (p=quarantine) header.from=news.example.org", false},
		{"quarantine is recorded, not refused", "x@other.example", msg("a@q.example"),
			"dmarc=fail (p=quarantine) header.from=q.example", false},
		{"p=none", "x@other.example", msg("a@none.example"), "dmarc=fail (p=none) header.from=none.example", false},
		{"no record", "x@other.example", msg("a@norecord.example"), "dmarc=none header.from=norecord.example", false},
		{"two records", "x@other.example", msg("a@twice.example"), "dmarc=none header.from=twice.example", false},
		{"broken record", "x@other.example", msg("a@broken.example"),
			`dmarc=permerror reason="invalid DMARC record at _dmarc.broken.example: invalid policy for parameter 'p'" header.from=broken.example`, false},
		{"SERVFAIL", "x@other.example", msg("a@servfail.example"),
			`dmarc=temperror reason="DNS temporary failure for _dmarc.servfail.example" header.from=servfail.example`, false},
		{"pct=0 leaves the message out", "x@other.example", msg("a@pct0.example"),
			"dmarc=fail (p=reject pct=not sampled) header.from=pct0.example", false},
		{"no From", "x@other.example", "Subject: x\r\n\r\nbody\r\n", `dmarc=permerror reason="no From field"`, false},
		{"two From fields", "x@other.example", "From: a@example.org\r\n" + msg("b@example.org"),
			`dmarc=permerror reason="several From fields"`, false},
		{"From of two domains", "x@other.example", strings.Replace(plain, "Alice <alice@example.org>", "a@example.org, b@other.example", 1),
			`dmarc=permerror reason="From addresses of several domains"`, false},
		{"unparsable From still judged", "x@other.example", msg("<<ceo@example.org>"),
			"dmarc=fail (p=reject) header.from=example.org", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spf := c.CheckSPF(context.Background(), client, "c.test", tc.mailFrom)
			res := check(c, tc.msg, MessageOptions{DKIM: true, DMARC: true, SPF: spf})
			got := oneLine(c, Results{DMARC: res.DMARC})
			if want := "Authentication-Results: " + authserv + "; " + tc.want + "\r\n"; got != want {
				t.Errorf("got  %q\nwant %q\n(spf %s, dkim %+v)", got, want, spf.Result, res.DKIM)
			}
			if res.DMARC.Reject() != tc.reject {
				t.Errorf("Reject() = %v", res.DMARC.Reject())
			}
		})
	}
}

// The whole field, as the connector writes it.
func TestField(t *testing.T) {
	c, dns := newChecker(t)
	s := newSigner(t, dns, "example.org", "sel")
	dns.SetTXT("example.org", "v=spf1 ip4:192.0.2.10 -all")
	dns.SetTXT("_dmarc.example.org", "v=DMARC1; p=reject")
	signed := s.sign(t, plain)
	spf := c.CheckSPF(context.Background(), client, "c.test", "alice@example.org")
	got := c.Field(check(c, signed, MessageOptions{DKIM: true, DMARC: true, SPF: spf}))
	want := "Authentication-Results: mx.hub.test;\r\n" +
		"\tspf=pass smtp.mailfrom=alice@example.org;\r\n" +
		"\tdkim=pass header.b=" + bOf(signed) + " header.d=example.org header.i=@example.org header.s=sel;\r\n" +
		"\tdmarc=pass (p=reject) header.from=example.org\r\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if c.Field(Results{}) != "" {
		t.Fatal("a field without checks")
	}
}

// BenchmarkChecks is the cost of checking one small signed message: SPF,
// DKIM and DMARC, with a DNS server on loopback.
func BenchmarkChecks(b *testing.B) {
	dns := dnstest.Start(b)
	c := &Checker{Resolver: dns.Resolver(), AuthServID: authserv}
	s := newSigner(b, dns, "example.org", "sel")
	dns.SetTXT("example.org", "v=spf1 ip4:192.0.2.10 -all")
	dns.SetTXT("_dmarc.example.org", "v=DMARC1; p=reject")
	signed := s.sign(b, plain+strings.Repeat("Some text of the message.\r\n", 200))
	b.ReportAllocs()
	for b.Loop() {
		spf := c.CheckSPF(context.Background(), client, "c.test", "alice@example.org")
		res := check(c, signed, MessageOptions{DKIM: true, DMARC: true, SPF: spf})
		if res.DMARC.Result != Pass {
			b.Fatal(res.DMARC)
		}
	}
}
