package connectors

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"hubd/internal/logbuf"
	"hubd/policy"
)

// floodAddr is the i-th address of a flood in which every address is in a
// /48 (and so a /64) of its own.
func floodAddr(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, byte(i >> 16), byte(i >> 8), byte(i), 15: 1})
}

// TestFloodKeepsLimits: 300,000 fresh /64s (three times maxTracked) neither
// free a source that is over its limit, nor leave new sources unlimited.
// The state is evicted least recently used first, and the source over its
// limit keeps coming back, so its entry is never the oldest.
func TestFloodKeepsLimits(t *testing.T) {
	t.Parallel()
	const flood = 3 * maxTracked
	logs := &logbuf.Buffer{}
	rc := &policy.ReceiveConnector{
		Name:                      "in",
		MessageRateLimit:          2,
		MaxAuthFailuresPerSource:  3,
		MaxAuthFailuresPerNetwork: 30,
		AuthFailureWindow:         10 * time.Minute,
	}
	clock := newFakeClock()
	l := newLimits(rc, clock.now, slog.New(slog.NewTextHandler(logs, nil)))
	over := netip.MustParseAddr("2001:db8:bad:1::1")
	sameSlash64 := netip.MustParseAddr("2001:db8:bad:1:ffff:ffff:ffff:fffe")
	key := func(a netip.Addr) string { return messageKey(policy.RateSourceIP, a, "") }

	// The attacker's own /64 spends its two messages and fails AUTH three
	// times: over both limits.
	if !l.allowMessage(key(over)) || !l.allowMessage(key(sameSlash64)) || l.allowMessage(key(over)) {
		t.Fatal("want two messages from the /64, then a refusal")
	}
	for range 3 {
		l.authFailed(over)
	}
	if got := l.authBlocked(sameSlash64); got != "max_auth_failures_per_source" {
		t.Fatalf("after 3 failures the /64 is blocked by %q", got)
	}

	// The flood, with the attacker trying again every 1,000 sources. The
	// clock stands still, so every flood entry keeps its state (a bucket
	// short of a token, a failure inside its window) and must be evicted.
	for i := range flood {
		a := floodAddr(i)
		if !l.allowMessage(key(a)) {
			t.Fatalf("first message of flood source %d refused", i)
		}
		if _, _, tripped := l.authFailed(a); tripped != "" {
			t.Fatalf("first failure of flood source %d tripped %s", i, tripped)
		}
		if i%1000 == 999 {
			if l.allowMessage(key(sameSlash64)) {
				t.Fatalf("after %d flood sources the /64 over its message limit got a token", i+1)
			}
			if got := l.authBlocked(over); got != "max_auth_failures_per_source" {
				t.Fatalf("after %d flood sources the blocked /64 is blocked by %q", i+1, got)
			}
		}
	}
	for name, tab := range map[string]int{
		"messages":     l.messages.t.len(),
		"auth source":  l.auth.source.t.len(),
		"auth network": l.auth.network.t.len(),
	} {
		if tab > maxTracked {
			t.Errorf("%s table holds %d entries, more than %d", name, tab, maxTracked)
		}
	}

	// A source that arrives after the flood is limited as usual (the old
	// full table let every new source through untracked).
	late := netip.MustParseAddr("2001:db8:beef:1::1")
	if !l.allowMessage(key(late)) || !l.allowMessage(key(late)) || l.allowMessage(key(late)) {
		t.Error("new source after the flood: want two messages, then a refusal")
	}
	for range 3 {
		l.authFailed(late)
	}
	if got := l.authBlocked(late); got != "max_auth_failures_per_source" {
		t.Errorf("new source after the flood, 3 failures: blocked by %q", got)
	}
	for _, limit := range []string{"message_rate_limit", "max_auth_failures_per_source", "max_auth_failures_per_network"} {
		if n := logs.Count("limit table full", "limit="+limit); n != 1 {
			t.Errorf("%d eviction warnings for %s, want 1 (at most one a minute)", n, limit)
		}
	}
}

// TestFloodInsideOneSlash48: fresh /64s inside one /48 are one network for
// max_auth_failures_per_network, so the flood blocks itself.
func TestFloodInsideOneSlash48(t *testing.T) {
	t.Parallel()
	rc := &policy.ReceiveConnector{
		Name:                      "in",
		MaxAuthFailuresPerSource:  3,
		MaxAuthFailuresPerNetwork: 30,
		AuthFailureWindow:         10 * time.Minute,
	}
	l := newLimits(rc, newFakeClock().now, nil)
	in48 := func(i int) netip.Addr {
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xca, 0xfe, byte(i >> 8), byte(i), 15: 1})
	}
	for i := range 29 {
		if _, _, tripped := l.authFailed(in48(i)); tripped != "" {
			t.Fatalf("failure %d tripped %s", i+1, tripped)
		}
	}
	if _, network, tripped := l.authFailed(in48(29)); network != 30 || tripped != "max_auth_failures_per_network" {
		t.Fatalf("30th failure in the /48: network count %d, tripped %q", network, tripped)
	}
	if got := l.authBlocked(in48(1000)); got != "max_auth_failures_per_network" {
		t.Errorf("a fresh /64 in the /48: blocked by %q", got)
	}
	if got := l.authBlocked(netip.MustParseAddr("2001:db8:caff::1")); got != "" {
		t.Errorf("the next /48: blocked by %q", got)
	}
}

// BenchmarkBucketsFull is the cost of one call when the table is full and
// every call brings a new source, the worst case: the least recently used
// bucket is evicted and a new one made. It stays flat in the table size
// (the table it replaced swept all 100,000 entries on every such call).
func BenchmarkBucketsFull(b *testing.B) {
	bk := newBuckets[netip.Prefix](60, "connection_rate_limit", nil)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range maxTracked {
		bk.allow(sourceKey(floodAddr(i)), now)
	}
	i := maxTracked
	for b.Loop() {
		bk.allow(sourceKey(floodAddr(i)), now)
		i++
	}
}
