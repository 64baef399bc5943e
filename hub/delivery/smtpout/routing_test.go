package smtpout

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"hubd/hub/delivery"
	"hubd/internal/dnstest"
	"hubd/internal/smtpsink"
	"hubd/policy"
)

func wantReply(t *testing.T, err error, code int, enhanced string) {
	t.Helper()
	var r *policy.Reply
	if !errors.As(err, &r) || r.Code != code || r.Enhanced != enhanced {
		t.Errorf("error %v, want %d %s", err, code, enhanced)
	}
}

func hostNames(hosts []Host) string {
	var names []string
	for _, h := range hosts {
		names = append(names, h.Name)
	}
	return strings.Join(names, ",")
}

// TestLookupHosts covers every rule of RFC 5321 §5.1 and RFC 7505.
func TestLookupHosts(t *testing.T) {
	dns := dnstest.Start(t)
	dns.SetMX("pref.test", &net.MX{Host: "c.pref.test.", Pref: 30}, &net.MX{Host: "a.pref.test.", Pref: 10}, &net.MX{Host: "b.pref.test.", Pref: 20})
	dns.SetMX("null.test", &net.MX{Host: ".", Pref: 0})
	dns.SetMX("mixed.test", &net.MX{Host: ".", Pref: 0}, &net.MX{Host: "a.pref.test.", Pref: 10})
	dns.SetMX("dangle.test", &net.MX{Host: "gone.dangle.test.", Pref: 10}, &net.MX{Host: "broken.dangle.test.", Pref: 20})
	dns.SetMX("partial.test", &net.MX{Host: "gone.dangle.test.", Pref: 10}, &net.MX{Host: "a.pref.test.", Pref: 20})
	dns.SetHosts("a.pref.test", "192.0.2.1", "2001:db8::1")
	dns.SetHosts("b.pref.test", "192.0.2.2")
	dns.SetHosts("c.pref.test", "192.0.2.3")
	dns.SetHosts("implicit.test", "192.0.2.9")
	dns.SetFail("servfail.test", true)
	dns.SetFail("broken.dangle.test", true)
	dns.SetDrop("slow.test", true)
	r := NetResolver{R: dns.Resolver()}
	ctx := context.Background()

	hosts, err := LookupHosts(ctx, r, "pref.test.")
	if err != nil || hostNames(hosts) != "a.pref.test,b.pref.test,c.pref.test" {
		t.Errorf("preference order: %v %v", hostNames(hosts), err)
	}
	if len(hosts) == 3 && (hosts[0].Pref != 10 || strings.Join(hosts[0].Addrs, ",") != "192.0.2.1,2001:db8::1" || hosts[0].Implicit) {
		t.Errorf("first host %+v", hosts[0])
	}

	// No MX: the domain is its own (implicit) MX.
	hosts, err = LookupHosts(ctx, r, "implicit.test")
	if err != nil || len(hosts) != 1 || !hosts[0].Implicit || hosts[0].Name != "implicit.test" || hosts[0].Addrs[0] != "192.0.2.9" {
		t.Errorf("implicit MX: %+v %v", hosts, err)
	}

	_, err = LookupHosts(ctx, r, "null.test")
	wantReply(t, err, 556, "5.1.10")
	hosts, err = LookupHosts(ctx, r, "mixed.test")
	if err != nil || hostNames(hosts) != "a.pref.test" {
		t.Errorf("null MX among real ones: %v %v", hostNames(hosts), err)
	}
	_, err = LookupHosts(ctx, r, "nxdomain.test")
	wantReply(t, err, 550, "5.1.2")
	_, err = LookupHosts(ctx, r, "servfail.test")
	wantReply(t, err, 451, "4.4.3")
	// A server that never answers: the lookup's deadline ends it.
	slow, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = LookupHosts(slow, r, "slow.test")
	cancel()
	wantReply(t, err, 451, "4.4.3")

	// MX hosts without addresses: temporary, and still listed for a routing table.
	hosts, err = LookupHosts(ctx, r, "dangle.test")
	wantReply(t, err, 451, "4.4.3")
	if len(hosts) != 2 || hosts[0].Err == nil || hosts[1].Err == nil || len(hosts[0].Addrs) != 0 {
		t.Errorf("dangling MX hosts: %+v", hosts)
	}
	hosts, err = LookupHosts(ctx, r, "partial.test")
	if err != nil || hostNames(hosts) != "gone.dangle.test,a.pref.test" || hosts[0].Err == nil || hosts[1].Err != nil {
		t.Errorf("one dangling MX: %+v %v", hosts, err)
	}
}

// TestLookupHostsRandomisesEqualPreference: over 200 lookups both orders of
// two equal-preference hosts appear, and the less preferred host is always
// last. The chance of one order never showing is 2 × 2^-200.
func TestLookupHostsRandomisesEqualPreference(t *testing.T) {
	dns := dnstest.Start(t)
	dns.SetMX("eq.test", &net.MX{Host: "backup.eq.test", Pref: 20}, &net.MX{Host: "a.eq.test", Pref: 10}, &net.MX{Host: "b.eq.test", Pref: 10})
	dns.SetHosts("a.eq.test", "192.0.2.1")
	dns.SetHosts("b.eq.test", "192.0.2.2")
	dns.SetHosts("backup.eq.test", "192.0.2.3")
	r := NetResolver{R: dns.Resolver()}
	seen := map[string]int{}
	for range 200 {
		hosts, err := LookupHosts(context.Background(), r, "eq.test")
		if err != nil {
			t.Fatal(err)
		}
		seen[hostNames(hosts)]++
	}
	if len(seen) != 2 || seen["a.eq.test,b.eq.test,backup.eq.test"] == 0 || seen["b.eq.test,a.eq.test,backup.eq.test"] == 0 {
		t.Errorf("orders seen: %v", seen)
	}
}

// TestMXFallbackAcrossSinks: real MX hosts on 127.0.0.2 and 127.0.0.3 on one
// port. The preferred one refuses its greeting; the other takes the mail.
// The idle connection kept afterwards is the second host's, and the next
// message uses it without asking DNS again.
func TestMXFallbackAcrossSinks(t *testing.T) {
	sinks := smtpsink.StartSamePort(t, smtpsink.Options{Addr: "127.0.0.2", RejectGreeting: true}, smtpsink.Options{Addr: "127.0.0.3"})
	dns := dnstest.Start(t)
	dns.SetMX("remote.test", &net.MX{Host: "mx1.remote.test.", Pref: 10}, &net.MX{Host: "mx2.remote.test.", Pref: 20})
	dns.SetHosts("mx1.remote.test", "127.0.0.2")
	dns.SetHosts("mx2.remote.test", "127.0.0.3")
	opts := testOptions()
	opts.Port = sinks[0].Port()
	opts.Resolver = NetResolver{R: dns.Resolver()}
	d := shared(t, opts)
	res := deliverWith(t, d, mxHop("remote.test"), numbered(0), rcpts("a@remote.test"))
	expect(t, res[0], delivery.Delivered, 250, "2.0.0")
	if res[0].RemoteMTA != "mx2.remote.test" || res[0].Connection {
		t.Errorf("result %+v", res[0])
	}
	lookups := dns.Queries("")
	expect(t, deliverWith(t, d, mxHop("remote.test"), numbered(1), rcpts("b@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	if dns.Queries("") != lookups {
		t.Error("DNS asked again although an idle connection was at hand")
	}
	sinks[1].WaitFor(t, 2, waitLong)
	wantPerConn(t, sinks[1], 2)
	if sinks[0].Connections() != 1 {
		t.Errorf("mx1 saw %d connections, want 1", sinks[0].Connections())
	}
}

// TestConnectionFlag: which failures are the next hop's (Connection) and
// which the message's.
func TestConnectionFlag(t *testing.T) {
	hang := smtpsink.Start(t, smtpsink.Options{Hang: true})
	refuse := smtpsink.Start(t, smtpsink.Options{RejectGreeting: true})
	plain := smtpsink.Start(t, smtpsink.Options{
		MaxMessageBytes: 1000,
		Mail: func(from string) error {
			if from == "busy@hub.test" {
				return smtpErr(451, 4, 3, 2, "try later")
			}
			return nil
		},
		Rcpt: func(addr string) error {
			if strings.HasPrefix(addr, "gone@") {
				return smtpErr(550, 5, 1, 1, "no such user")
			}
			return nil
		},
		Data: func(_ string, _ []string, data []byte) error {
			if strings.Contains(string(data), "spam") {
				return smtpErr(554, 5, 7, 1, "spam")
			}
			return nil
		},
	})
	dns := dnstest.Start(t)
	dns.SetMX("null.test", &net.MX{Host: ".", Pref: 0})
	dns.SetFail("servfail.test", true)
	r := NetResolver{R: dns.Resolver()}
	required := smartHop(plain.Addr())
	required.TLS = policy.SendTLSRequired
	utf8 := message("x\r\n")
	utf8.Envelope.SMTPUTF8 = true
	busy := message("x\r\n")
	busy.Envelope.From = "busy@hub.test"

	for _, c := range []struct {
		name string
		hop  delivery.NextHop
		msg  delivery.Message
		rcpt string
		st   delivery.Status
		code int
		enh  string
		conn bool
	}{
		{"DNS temporary failure", mxHop("servfail.test"), message("x\r\n"), "a@servfail.test", delivery.Deferred, 451, "4.4.3", true},
		{"no such domain", mxHop("nxdomain.test"), message("x\r\n"), "a@nxdomain.test", delivery.Failed, 550, "5.1.2", false},
		{"null MX", mxHop("null.test"), message("x\r\n"), "a@null.test", delivery.Failed, 556, "5.1.10", false},
		{"nothing listening", smartHop(deadAddr(t)), message("x\r\n"), "a@remote.test", delivery.Deferred, 451, "4.4.1", true},
		{"greeting refused", smartHop(refuse.Addr()), message("x\r\n"), "a@remote.test", delivery.Deferred, 421, "4.3.2", true},
		{"no greeting", smartHop(hang.Addr()), message("x\r\n"), "a@remote.test", delivery.Deferred, 451, "4.4.1", true},
		{"TLS required, not offered", required, message("x\r\n"), "a@remote.test", delivery.Deferred, 451, "4.7.5", true},
		{"MAIL 4xx", smartHop(plain.Addr()), busy, "a@remote.test", delivery.Deferred, 451, "4.3.2", false},
		{"RCPT 5xx", smartHop(plain.Addr()), message("x\r\n"), "gone@remote.test", delivery.Failed, 550, "5.1.1", false},
		{"data refused", smartHop(plain.Addr()), message("spam\r\n"), "a@remote.test", delivery.Failed, 554, "5.7.1", false},
		{"too big", smartHop(plain.Addr()), message(strings.Repeat("x", 2000)), "a@remote.test", delivery.Failed, 552, "5.3.4", false},
		{"SMTPUTF8 missing", smartHop(plain.Addr()), utf8, "zoë@remote.test", delivery.Failed, 553, "5.6.7", false},
		{"delivered", smartHop(plain.Addr()), message("x\r\n"), "a@remote.test", delivery.Delivered, 250, "2.0.0", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := testOptions()
			opts.Resolver = r
			opts.CommandTimeout = 300 * time.Millisecond
			start := time.Now()
			res := deliver(t, opts, c.hop, c.msg, rcpts(c.rcpt, c.rcpt+".second"))
			for _, got := range res {
				expect(t, got, c.st, c.code, c.enh)
				if got.Connection != c.conn {
					t.Errorf("Connection = %v, want %v (%s)", got.Connection, c.conn, got.Text)
				}
			}
			// A hanging server costs the command timeout, not more.
			if el := time.Since(start); el > 3*time.Second {
				t.Errorf("took %v", el)
			}
		})
	}
}

// TestSMTPUTF8AddressWithoutFlag: a non-ASCII address needs SMTPUTF8 even
// when the envelope did not ask for it (e.g. after alias expansion).
func TestSMTPUTF8AddressWithoutFlag(t *testing.T) {
	plain := smtpsink.Start(t, smtpsink.Options{})
	expect(t, deliver(t, testOptions(), smartHop(plain.Addr()), message("x\r\n"), rcpts("zoë@remote.test"))[0], delivery.Failed, 553, "5.6.7")
	utf8 := smtpsink.Start(t, smtpsink.Options{SMTPUTF8: true})
	expect(t, deliver(t, testOptions(), smartHop(utf8.Addr()), message("x\r\n"), rcpts("zoë@remote.test"))[0], delivery.Delivered, 250, "2.0.0")
	if m := utf8.WaitFor(t, 1, waitLong)[0]; !m.UTF8 {
		t.Error("SMTPUTF8 not given for a non-ASCII recipient")
	}
}
