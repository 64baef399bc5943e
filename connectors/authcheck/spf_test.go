package authcheck

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"hubd/internal/dnstest"
)

const authserv = "mx.hub.test"

var client = netip.MustParseAddr("192.0.2.10")

func newChecker(t *testing.T) (*Checker, *dnstest.Server) {
	t.Helper()
	s := dnstest.Start(t)
	return &Checker{Resolver: s.Resolver(), AuthServID: authserv}, s
}

// oneLine is the Authentication-Results field of r, on one line for
// comparing.
func oneLine(c *Checker, r Results) string {
	return strings.ReplaceAll(c.Field(r), "\r\n\t", " ")
}

func TestSPF(t *testing.T) {
	c, dns := newChecker(t)
	dns.SetTXT("pass.example", "v=spf1 ip4:192.0.2.0/24 -all")
	dns.SetTXT("fail.example", "v=spf1 ip4:198.51.100.1 -all")
	dns.SetTXT("soft.example", "v=spf1 ~all")
	dns.SetTXT("neutral.example", "v=spf1 ?all")
	dns.SetTXT("nospf.example", "some other text")
	dns.SetFail("servfail.example", true)
	dns.SetTXT("broken.example", "v=spf1 frobnicate:x ip4:192.0.2.0/24 -all")
	dns.SetTXT("loop-a.example", "v=spf1 include:loop-b.example -all")
	dns.SetTXT("loop-b.example", "v=spf1 include:loop-a.example -all")
	for i := range 11 {
		dns.SetTXT(fmt.Sprintf("chain%d.example", i), fmt.Sprintf("v=spf1 include:chain%d.example -all", i+1))
	}
	dns.SetTXT("chain11.example", "v=spf1 +all")
	dns.SetTXT("void.example", "v=spf1 a:nx1.void.example a:nx2.void.example a:nx3.void.example +all")
	dns.SetTXT("two.example", "v=spf1 +all", "v=spf1 -all")
	dns.SetTXT("mail.helo.example", "v=spf1 ip4:192.0.2.10 -all")
	dns.SetTXT("mx.example", "v=spf1 mx -all")
	dns.SetMX("mx.example")
	dns.SetHosts("big.example", "192.0.2.10")
	dns.SetTXT("big.example", "v=spf1 a -all "+strings.Repeat("x=", 800)) // over the EDNS0 size: TCP

	cases := []struct{ helo, from, want string }{
		{"c.test", "alice@pass.example", "spf=pass smtp.mailfrom=alice@pass.example"},
		{"c.test", "alice@fail.example", "spf=fail smtp.mailfrom=alice@fail.example"},
		{"c.test", "alice@soft.example", "spf=softfail smtp.mailfrom=alice@soft.example"},
		{"c.test", "alice@neutral.example", "spf=neutral smtp.mailfrom=alice@neutral.example"},
		{"c.test", "alice@nospf.example", "spf=none smtp.mailfrom=alice@nospf.example"},
		{"c.test", "alice@nxdomain.example", "spf=none smtp.mailfrom=alice@nxdomain.example"},
		{"c.test", "alice@servfail.example",
			`spf=temperror reason="DNS temporary failure for servfail.example" smtp.mailfrom=alice@servfail.example`},
		{"c.test", "alice@broken.example",
			`spf=permerror reason="invalid SPF record: unknown field" smtp.mailfrom=alice@broken.example`},
		{"c.test", "alice@loop-a.example",
			`spf=permerror reason="more than 10 DNS-querying terms (RFC 7208 4.6.4)" smtp.mailfrom=alice@loop-a.example`},
		{"c.test", "alice@chain0.example",
			`spf=permerror reason="more than 10 DNS-querying terms (RFC 7208 4.6.4)" smtp.mailfrom=alice@chain0.example`},
		{"c.test", "alice@void.example",
			`spf=permerror reason="more than 2 void lookups (RFC 7208 4.6.4)" smtp.mailfrom=alice@void.example`},
		{"c.test", "alice@two.example", `spf=permerror reason="more than one SPF record" smtp.mailfrom=alice@two.example`},
		{"mail.helo.example", "", "spf=pass smtp.helo=mail.helo.example"},
		{"[192.0.2.10]", "", "spf=none smtp.helo=[192.0.2.10]"},
		{"c.test", "alice@mx.example", "spf=fail smtp.mailfrom=alice@mx.example"},
		{"c.test", "alice@big.example", "spf=pass smtp.mailfrom=alice@big.example"},
	}
	for _, tc := range cases {
		t.Run(tc.from+tc.helo, func(t *testing.T) {
			r := c.CheckSPF(context.Background(), client, tc.helo, tc.from)
			got := oneLine(c, Results{SPF: r})
			want := "Authentication-Results: " + authserv + "; " + tc.want + "\r\n"
			if got != want {
				t.Errorf("got  %q\nwant %q", got, want)
			}
		})
	}
	if dns.Queries("tcp") == 0 {
		t.Error("the long SPF record did not come over TCP")
	}
}

// A timeout (no answer) is a temporary error too, never a pass, and the
// evaluation as a whole is bounded by SPFTimeout.
func TestSPFTimeout(t *testing.T) {
	c, dns := newChecker(t)
	c.SPFTimeout = 300e6
	dns.SetTXT("slow.example", "v=spf1 include:drop.example +all")
	dns.SetDrop("drop.example", true)
	r := c.CheckSPF(context.Background(), client, "c.test", "a@slow.example")
	if r.Result != TempError || !strings.HasPrefix(r.Reason, "DNS timeout for drop.example") {
		t.Fatalf("%+v", r)
	}
}
