package resolver

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"hubd/internal/dnstest"
)

// TestAsksTheConfiguredServers: every lookup goes to the listed servers,
// in turn, whatever /etc/resolv.conf says; Set switches to another list
// for the *net.Resolver already handed out.
func TestAsksTheConfiguredServers(t *testing.T) {
	a, b, c := dnstest.Start(t), dnstest.Start(t), dnstest.Start(t)
	for _, s := range []*dnstest.Server{a, b} {
		s.SetTXT("example.test", "v=spf1 -all")
	}
	c.SetTXT("example.test", "from c")
	s := New([]string{a.Addr, b.Addr})
	r := s.Resolver()
	for range 4 {
		txt, err := r.LookupTXT(t.Context(), "example.test")
		if err != nil || len(txt) != 1 || txt[0] != "v=spf1 -all" {
			t.Fatalf("TXT: %q, %v", txt, err)
		}
	}
	if a.Queries("") != 2 || b.Queries("") != 2 {
		t.Errorf("queries: %d to a, %d to b; want 2 each (in turn)", a.Queries(""), b.Queries(""))
	}

	s.Set([]string{c.Addr})
	txt, err := r.LookupTXT(t.Context(), "example.test")
	if err != nil || len(txt) != 1 || txt[0] != "from c" {
		t.Errorf("after Set: %q, %v", txt, err)
	}
}

// TestRetryGoesToTheNextServer: a server that does not answer costs one
// attempt; the retry asks the next one.
func TestRetryGoesToTheNextServer(t *testing.T) {
	dead, live := dnstest.Start(t), dnstest.Start(t)
	dead.SetDrop("example.test", true)
	live.SetTXT("example.test", "ok")
	r := New([]string{dead.Addr, live.Addr}).Resolver()
	// resolv.conf's timeout per attempt is 5 s unless it says otherwise.
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	txt, err := r.LookupTXT(ctx, "example.test")
	if err != nil || len(txt) != 1 || txt[0] != "ok" {
		t.Fatalf("TXT: %q, %v", txt, err)
	}
	if dead.Queries("") == 0 {
		t.Error("the first server was never asked")
	}
}

// TestTemporaryErrorsStayTemporary: SERVFAIL is a temporary error, never
// "no such record" (RFC 7208 §5, RFC 6376 §6.1.2).
func TestTemporaryErrorsStayTemporary(t *testing.T) {
	d := dnstest.Start(t)
	d.SetFail("example.test", true)
	_, err := New([]string{d.Addr}).Resolver().LookupTXT(t.Context(), "example.test")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTemporary || de.IsNotFound {
		t.Errorf("SERVFAIL: %#v", err)
	}
}

// TestNoServersDialsTheSystems: with no list, the address Go's resolver
// picked (from /etc/resolv.conf) is dialled as it is.
func TestNoServersDialsTheSystems(t *testing.T) {
	d := dnstest.Start(t)
	d.SetTXT("example.test", "ok")
	s := New(nil)
	conn, err := s.dial(t.Context(), "udp", d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if conn.RemoteAddr().String() != d.Addr {
		t.Errorf("dialled %s, want %s", conn.RemoteAddr(), d.Addr)
	}
}
