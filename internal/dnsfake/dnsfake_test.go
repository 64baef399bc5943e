package dnsfake

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
)

func dnsErr(t *testing.T, err error) *net.DNSError {
	t.Helper()
	var de *net.DNSError
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T), want *net.DNSError", err, err)
	}
	return de
}

func TestAnswers(t *testing.T) {
	r := &Resolver{
		MX:      map[string][]*net.MX{"example.test": {{Host: "mx.example.test.", Pref: 10}}},
		Hosts:   map[string][]string{"MX.Example.Test.": {"127.0.0.2"}, "noMX.test": {"127.0.0.3"}},
		Fail:    map[string]bool{"servfail.test": true},
		Timeout: map[string]bool{"slow.test": true},
	}
	ctx := context.Background()
	mx, err := r.LookupMX(ctx, "EXAMPLE.test.")
	if err != nil || len(mx) != 1 || mx[0].Host != "mx.example.test." || mx[0].Pref != 10 {
		t.Fatalf("LookupMX = %v, %v", mx, err)
	}
	mx[0].Pref = 99 // callers may modify the answer
	if again, _ := r.LookupMX(ctx, "example.test"); again[0].Pref != 10 {
		t.Error("answer shares memory with the resolver")
	}
	if a, err := r.LookupHost(ctx, "mx.example.test"); err != nil || len(a) != 1 || a[0] != "127.0.0.2" {
		t.Errorf("LookupHost = %v, %v", a, err)
	}
	// NODATA and NXDOMAIN are both "not found".
	if _, err := r.LookupMX(ctx, "nomx.test"); !dnsErr(t, err).IsNotFound {
		t.Errorf("NODATA: %v", err)
	}
	if _, err := r.LookupHost(ctx, "nowhere.test"); !dnsErr(t, err).IsNotFound {
		t.Errorf("NXDOMAIN: %v", err)
	}
	if de := dnsErr(t, func() error { _, err := r.LookupMX(ctx, "servfail.test"); return err }()); de.IsNotFound || !de.IsTemporary {
		t.Errorf("SERVFAIL: %+v", de)
	}
	if de := dnsErr(t, func() error { _, err := r.LookupHost(ctx, "slow.test"); return err }()); !de.IsTimeout {
		t.Errorf("timeout: %+v", de)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.LookupMX(cctx, "example.test"); !dnsErr(t, err).IsTimeout {
		t.Errorf("cancelled ctx: %v", err)
	}
	if n := r.Lookups(); n != 8 {
		t.Errorf("Lookups = %d, want 8", n)
	}
}

func TestSettersConcurrent(t *testing.T) {
	var r Resolver
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			r.SetHosts("h.test", "127.0.0.1")
			r.SetMX("d.test", &net.MX{Host: "h.test", Pref: uint16(i)})
			_, _ = r.LookupMX(context.Background(), "d.test")
			_, _ = r.LookupHost(context.Background(), "h.test")
		})
	}
	wg.Wait()
	r.SetFail("H.TEST.", true)
	if _, err := r.LookupHost(context.Background(), "h.test"); !dnsErr(t, err).IsTemporary {
		t.Errorf("after SetFail: %v", err)
	}
	r.SetFail("h.test", false)
	r.SetHosts("h.test")
	if _, err := r.LookupHost(context.Background(), "h.test"); !dnsErr(t, err).IsNotFound {
		t.Errorf("after removing: %v", err)
	}
}
