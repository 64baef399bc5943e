package dnstest

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAnswers(t *testing.T) {
	s := Start(t)
	r := s.Resolver()
	ctx := t.Context()
	s.SetHosts("mx.example.test", "192.0.2.1", "2001:db8::1")
	s.SetMX("Example.TEST.", &net.MX{Host: "mx.example.test", Pref: 10})
	long := "v=DKIM1; k=rsa; p=" + strings.Repeat("A", 600)
	s.SetTXT("example.test", "v=spf1 -all")
	s.SetTXT("sel._domainkey.example.test", long)

	mx, err := r.LookupMX(ctx, "example.test")
	if err != nil || len(mx) != 1 || mx[0].Host != "mx.example.test." || mx[0].Pref != 10 {
		t.Fatalf("MX: %v %v", mx, err)
	}
	addrs, err := r.LookupHost(ctx, "MX.example.test")
	slices.Sort(addrs)
	if err != nil || !slices.Equal(addrs, []string{"192.0.2.1", "2001:db8::1"}) {
		t.Fatalf("hosts: %v %v", addrs, err)
	}
	txt, err := r.LookupTXT(ctx, "example.test")
	if err != nil || !slices.Equal(txt, []string{"v=spf1 -all"}) {
		t.Fatalf("TXT: %q %v", txt, err)
	}
	// Over 255 bytes: several character-strings, joined by the reader.
	txt, err = r.LookupTXT(ctx, "sel._domainkey.example.test")
	if err != nil || len(txt) != 1 || txt[0] != long {
		t.Fatalf("long TXT: %d records, %v", len(txt), err)
	}
}

func TestTruncatedAnswerGoesOverTCP(t *testing.T) {
	s := Start(t)
	var many []string
	for i := range 40 {
		many = append(many, strings.Repeat(string(rune('a'+i%26)), 100))
	}
	s.SetTXT("big.example.test", many...) // ~4 KB: over any UDP size Go offers
	txt, err := s.Resolver().LookupTXT(t.Context(), "big.example.test")
	if err != nil || len(txt) != len(many) {
		t.Fatalf("TXT: %d records, %v", len(txt), err)
	}
	if s.Queries("tcp") == 0 {
		t.Errorf("no TCP query: the truncated answer was not retried over TCP")
	}
}

func TestNegativeAnswersAndFailures(t *testing.T) {
	s := Start(t)
	r := s.Resolver()
	ctx := t.Context()
	s.SetHosts("hostonly.example.test", "192.0.2.1")
	s.SetFail("broken.example.test", true)

	var de *net.DNSError
	_, err := r.LookupTXT(ctx, "nowhere.example.test")
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("NXDOMAIN: %v", err)
	}
	_, err = r.LookupMX(ctx, "hostonly.example.test")
	if !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("NODATA: %v", err)
	}
	_, err = r.LookupTXT(ctx, "broken.example.test")
	if !errors.As(err, &de) || !de.IsTemporary || de.IsNotFound {
		t.Errorf("SERVFAIL: %v", err)
	}

	s.SetDrop("silent.example.test", true)
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = r.LookupTXT(ctx, "silent.example.test")
	if !errors.As(err, &de) || !de.IsTimeout {
		t.Errorf("dropped: %v", err)
	}
}
