package smtpout

import (
	"errors"
	"net"
	"strings"
	"testing"

	"hubd/hub/delivery"
	"hubd/internal/dnstest"
	"hubd/internal/smtpsink"
)

func mxHop(domain string) delivery.NextHop {
	return delivery.NextHop{Kind: delivery.KindSMTP, Connector: "internet", Domain: domain, FQDN: "out.hub.test"}
}

func TestMXDelivery(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	opts := testOptions()
	opts.Port = sink.Port()
	dns := dnstest.Start(t)
	// The preferred MX has an address where nothing listens: the next one
	// by preference takes the message.
	dns.SetMX("remote.test", &net.MX{Host: "mx2.remote.test.", Pref: 20}, &net.MX{Host: "mx1.remote.test.", Pref: 10})
	dns.SetHosts("mx1.remote.test", "127.0.0.2")
	dns.SetHosts("mx2.remote.test", "127.0.0.1")
	opts.Resolver = NetResolver{R: dns.Resolver()}
	res := deliver(t, opts, mxHop("remote.test"), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if res[0].RemoteMTA != "mx2.remote.test" {
		t.Errorf("RemoteMTA = %q", res[0].RemoteMTA)
	}
	sink.WaitFor(t, 1, waitLong)
}

func TestImplicitMX(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	opts := testOptions()
	opts.Port = sink.Port()
	dns := dnstest.Start(t)
	dns.SetHosts("remote.test", "127.0.0.1")
	opts.Resolver = NetResolver{R: dns.Resolver()}
	res := deliver(t, opts, mxHop("remote.test"), message("x\r\n"), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if res[0].RemoteMTA != "remote.test" {
		t.Errorf("RemoteMTA = %q", res[0].RemoteMTA)
	}
}

func TestMXRoutingFailures(t *testing.T) {
	dns := dnstest.Start(t)
	dns.SetMX("null.test", &net.MX{Host: ".", Pref: 0})
	dns.SetMX("nohosts.test", &net.MX{Host: "gone.nohosts.test.", Pref: 10})
	dns.SetFail("servfail.test", true)
	opts := testOptions()
	opts.Resolver = NetResolver{R: dns.Resolver()}
	for _, c := range []struct {
		domain string
		st     delivery.Status
		code   int
		enh    string
	}{
		{"null.test", delivery.Failed, 556, "5.1.10"},
		{"nxdomain.test", delivery.Failed, 550, "5.1.2"},
		{"servfail.test", delivery.Deferred, 451, "4.4.3"},
		{"nohosts.test", delivery.Deferred, 451, "4.4.3"},
	} {
		res := deliver(t, opts, mxHop(c.domain), message("x\r\n"), rcpts("a@"+c.domain, "b@"+c.domain))
		for _, r := range res {
			expect(t, r, c.st, c.code, c.enh)
		}
	}
}

func TestOrderMX(t *testing.T) {
	in := []*net.MX{{Host: "c", Pref: 30}, {Host: "a1", Pref: 10}, {Host: "b", Pref: 20}, {Host: "a2", Pref: 10}}
	seen := map[string]bool{}
	for range 50 {
		out := orderMX(in)
		var names []string
		for _, m := range out {
			names = append(names, m.Host)
		}
		got := strings.Join(names, ",")
		if got != "a1,a2,b,c" && got != "a2,a1,b,c" {
			t.Fatalf("order %s", got)
		}
		seen[got] = true
	}
	if len(seen) != 2 {
		t.Errorf("equal preferences never shuffled: %v", seen)
	}
	if in[0].Host != "c" {
		t.Error("orderMX modified its input")
	}
}

func TestSplitHostPort(t *testing.T) {
	for in, want := range map[string]string{
		"mx.example.com:2525": "mx.example.com 2525",
		"[192.0.2.5]:25":      "192.0.2.5 25",
		"[192.0.2.5]":         "192.0.2.5 25",
		"mx.example.com":      "mx.example.com 25",
		"[2001:db8::1]:587":   "2001:db8::1 587",
		"2001:db8::1":         "2001:db8::1 25",
	} {
		h, p := splitHostPort(in, 25)
		if got := h + " " + p; got != want {
			t.Errorf("splitHostPort(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsNotFoundWrapped(t *testing.T) {
	if !isNotFound(errors.Join(errors.New("x"), &net.DNSError{Err: "no such host", Name: "a", IsNotFound: true})) || isNotFound(errors.New("x")) {
		t.Error("isNotFound")
	}
}
