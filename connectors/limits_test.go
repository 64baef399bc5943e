package connectors

import (
	"context"
	"crypto/x509"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hubd/internal/logbuf"
	"hubd/policy"
)

// fakeClock is the Service's clock in limit tests: windows and buckets move
// when the test says so. Tarpit delays are real time.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// hasLine reports whether one logged line contains every one of parts.
func hasLine(b *logbuf.Buffer, parts ...string) bool { return b.Count(parts...) > 0 }

// limitHarness is a harness with an injected clock and a log to search.
type limitHarness struct {
	*harness
	clock *fakeClock
	logs  *logbuf.Buffer
}

// startLimits starts a Service on base + connectors HCL with a fake clock;
// the config's spool is under the returned harness's dir.
func startLimits(t *testing.T, connectors string) *limitHarness {
	t.Helper()
	dir := t.TempDir()
	cfg := loadLimitsConfig(t, dir, connectors)
	lh := &limitHarness{harness: &harness{t: t, sub: &capture{}, dir: dir}, clock: newFakeClock(), logs: &logbuf.Buffer{}}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, lh.logs),
		&slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := New(Options{Config: cfg, Submitter: lh.sub, Logger: logger, Clock: lh.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	lh.svc = svc
	lh.pool = x509.NewCertPool()
	certs, _ := filepath.Glob(filepath.Join(dir, "spool", "tls", "*.crt"))
	for _, f := range certs {
		pem, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lh.pool.AppendCertsFromPEM(pem)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := svc.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return lh
}

func loadLimitsConfig(t *testing.T, dir, connectors string) *policy.Config {
	t.Helper()
	cfg, err := policy.LoadBytes(filepath.Join(dir, "hubd.hcl"), []byte(baseHCL(t, dir)+connectors), dir)
	if err != nil {
		var b strings.Builder
		if le, ok := err.(*policy.LoadError); ok {
			le.Write(&b, false)
		}
		t.Fatalf("config: %v\n%s", err, b.String())
	}
	return cfg
}

// carolHCL adds a second mailbox that can log in, for "another user is not
// affected".
func carolHCL(t *testing.T) string {
	return `
mailbox "carol@example.com" {
  password_hash = "` + hashFor(t, "carol pw") + `"
}
`
}

// authPlain is an AUTH PLAIN command line with an initial response.
func authPlain(user, pw string) string { return "AUTH PLAIN " + b64("\x00"+user+"\x00"+pw) }

const rateIPHCL = `
receive_connector "in" {
  bind               = ["127.0.0.1:0"]
  message_rate_limit = 2
  tarpit_interval    = "0s"
}
`

func TestMessageRateLimitPerIP(t *testing.T) {
	t.Parallel()
	h := startLimits(t, rateIPHCL)
	c, _ := h.dial("127.0.0.1:0", "127.0.0.1")
	c.expect("EHLO one.test", "250")
	for range 2 {
		c.expect("MAIL FROM:<x@remote.test>", "250 ")
		c.expect("RSET", "250 ")
	}
	c.expect("MAIL FROM:<x@remote.test>", "421 4.4.2 Message rate limit exceeded")
	if !c.closed() {
		t.Error("connection still open after 421")
	}
	eventually(t, "the refusal's log line", func() bool {
		return hasLine(h.logs, "msg=refused", "connector=in", "remote=127.0.0.1:", "limit=message_rate_limit", "key=ip:127.0.0.1")
	})

	// Another client address has its own bucket.
	other, _ := h.dial("127.0.0.1:0", "127.0.0.2")
	other.expect("EHLO two.test", "250")
	if got := other.send("x@remote.test", []string{"alice@example.com"}, "Subject: s\r\n\r\nhi\r\n"); !strings.HasPrefix(got, "250 ") {
		t.Fatalf("other source: %q", got)
	}

	// Half a minute refills one of the two tokens (2 a minute).
	h.clock.advance(30 * time.Second)
	c, _ = h.dial("127.0.0.1:0", "127.0.0.1")
	c.expect("EHLO one.test", "250")
	c.expect("MAIL FROM:<x@remote.test>", "250 ")
	c.expect("RSET", "250 ")
	c.expect("MAIL FROM:<x@remote.test>", "421 4.4.2 ")
}

func TestMessageRateLimitPerUser(t *testing.T) {
	t.Parallel()
	h := startLimits(t, carolHCL(t)+`
receive_connector "in" {
  bind                = ["127.0.0.1:0"]
  auth                = ["plain"]
  allow_insecure_auth = true
  message_rate_limit  = 1
  message_rate_source = "user"
  tarpit_interval     = "0s"
  permissions {
    anonymous     = ["submit"]
    authenticated = ["submit", "relay"]
  }
}
`)
	alice, _ := h.dial("127.0.0.1:0", "")
	alice.expect("EHLO a.test", "250")
	alice.expect(authPlain("alice@example.com", alicePassword), "235 ")
	alice.expect("MAIL FROM:<alice@example.com>", "250 ")
	alice.expect("RSET", "250 ")
	alice.expect("MAIL FROM:<alice@example.com>", "421 4.4.2 Message rate limit exceeded")
	eventually(t, "the refusal's log line", func() bool {
		return hasLine(h.logs, "msg=refused", "limit=message_rate_limit", "key=user:alice@example.com", "auth_user=alice@example.com")
	})

	// A fresh connection as alice is still over the limit...
	again, _ := h.dial("127.0.0.1:0", "127.0.0.2")
	again.expect("EHLO a.test", "250")
	again.expect(authPlain("alice@example.com", alicePassword), "235 ")
	again.expect("MAIL FROM:<alice@example.com>", "421 4.4.2 ")

	// ...while carol, from the same address, and unauthenticated sessions
	// are not limited by alice's bucket.
	carol, _ := h.dial("127.0.0.1:0", "127.0.0.1")
	carol.expect("EHLO c.test", "250")
	carol.expect(authPlain("carol@example.com", "carol pw"), "235 ")
	carol.expect("MAIL FROM:<carol@example.com>", "250 ")
	anon, _ := h.dial("127.0.0.1:0", "127.0.0.1")
	anon.expect("EHLO x.test", "250")
	for range 3 {
		anon.expect("MAIL FROM:<x@remote.test>", "250 ")
		anon.expect("RSET", "250 ")
	}
}

func TestRecipientRateLimit(t *testing.T) {
	t.Parallel()
	h := startLimits(t, carolHCL(t)+`
receive_connector "in" {
  bind                 = ["127.0.0.1:0"]
  auth                 = ["plain"]
  allow_insecure_auth  = true
  recipient_rate_limit = 2
  tarpit_interval      = "0s"
  permissions {
    anonymous     = ["submit"]
    authenticated = ["submit", "relay"]
  }
}
`)
	alice, _ := h.dial("127.0.0.1:0", "")
	alice.expect("EHLO a.test", "250")
	alice.expect(authPlain("alice@example.com", alicePassword), "235 ")
	alice.expect("MAIL FROM:<alice@example.com>", "250 ")
	alice.expect("RCPT TO:<r1@remote.test>", "250 ")
	alice.expect("RCPT TO:<r2@remote.test>", "250 ")
	alice.expect("RCPT TO:<r1@REMOTE.TEST>", "250 ") // a repeat takes no token
	alice.expect("RCPT TO:<r3@remote.test>", "452 4.5.3 Recipient rate limit exceeded, try later")
	eventually(t, "the refusal's log line", func() bool {
		return hasLine(h.logs, "msg=refused", "limit=recipient_rate_limit", "auth_user=alice@example.com")
	})
	// The transaction goes on with the recipients accepted.
	alice.expect("DATA", "354 ")
	alice.raw("Subject: s\r\n\r\nhi\r\n.\r\n")
	if r := alice.reply(); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("DATA: %q", r)
	}
	if env, _ := h.sub.last(t); len(env.Recipients) != 2 {
		t.Errorf("recipients %+v", env.Recipients)
	}

	carol, _ := h.dial("127.0.0.1:0", "")
	carol.expect("EHLO c.test", "250")
	carol.expect(authPlain("carol@example.com", "carol pw"), "235 ")
	carol.expect("MAIL FROM:<carol@example.com>", "250 ")
	carol.expect("RCPT TO:<r3@remote.test>", "250 ")

	// Unauthenticated sessions are not counted.
	anon, _ := h.dial("127.0.0.1:0", "")
	anon.expect("EHLO x.test", "250")
	anon.expect("MAIL FROM:<x@remote.test>", "250 ")
	for _, r := range []string{"alice", "bob", "carol"} {
		anon.expect("RCPT TO:<"+r+"@example.com>", "250 ")
	}

	// A minute later alice has her two recipients back.
	h.clock.advance(time.Minute)
	alice.expect("RSET", "250 ")
	alice.expect("MAIL FROM:<alice@example.com>", "250 ")
	alice.expect("RCPT TO:<r3@remote.test>", "250 ")
}

func TestReloadResetsLimits(t *testing.T) {
	t.Parallel()
	h := startLimits(t, rateIPHCL)
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO one.test", "250")
	c.expect("MAIL FROM:<x@remote.test>", "250 ")
	c.expect("RSET", "250 ")
	c.expect("MAIL FROM:<x@remote.test>", "250 ")
	c.expect("RSET", "250 ")

	// The same limit reloaded: a fresh, full bucket for new sessions...
	if err := h.svc.Reload(loadLimitsConfig(t, h.dir, rateIPHCL)); err != nil {
		t.Fatal(err)
	}
	// ...while the session in progress keeps the state it started with.
	c.expect("MAIL FROM:<x@remote.test>", "421 4.4.2 ")
	fresh, _ := h.dial("127.0.0.1:0", "")
	fresh.expect("EHLO one.test", "250")
	fresh.expect("MAIL FROM:<x@remote.test>", "250 ")
	fresh.expect("RSET", "250 ")

	// A changed limit applies to new sessions.
	if err := h.svc.Reload(loadLimitsConfig(t, h.dir, strings.Replace(rateIPHCL, "= 2", "= 1", 1))); err != nil {
		t.Fatal(err)
	}
	one, _ := h.dial("127.0.0.1:0", "")
	one.expect("EHLO one.test", "250")
	one.expect("MAIL FROM:<x@remote.test>", "250 ")
	one.expect("RSET", "250 ")
	one.expect("MAIL FROM:<x@remote.test>", "421 4.4.2 ")
}

func TestMessageKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		src  policy.RateSource
		ip   string
		user string
		want string
	}{
		{policy.RateSourceIP, "192.0.2.7", "", "ip:192.0.2.7"},
		{policy.RateSourceIP, "192.0.2.7", "a@example.com", "ip:192.0.2.7"},
		{policy.RateSourceIP, "::ffff:192.0.2.7", "", "ip:192.0.2.7"},
		{policy.RateSourceIP, "2001:db8:1:2:3:4:5:6", "", "ip:2001:db8:1:2::/64"},
		{policy.RateSourceUser, "192.0.2.7", "", ""},
		{policy.RateSourceUser, "192.0.2.7", "a@example.com", "user:a@example.com"},
		{policy.RateSourceAll, "192.0.2.7", "", "ip:192.0.2.7"},
		{policy.RateSourceAll, "2001:db8::1", "", "ip:2001:db8::/64"},
		{policy.RateSourceAll, "192.0.2.7", "a@example.com", "user:a@example.com"},
	} {
		if got := messageKey(tc.src, netip.MustParseAddr(tc.ip), tc.user); got != tc.want {
			t.Errorf("messageKey(%s, %s, %q) = %q, want %q", tc.src, tc.ip, tc.user, got, tc.want)
		}
	}
}

// TestBucketsForgetIdleSources: a flood of one-message sources does not
// stay in memory once their buckets have refilled, and no call pays for
// the whole table: each drops at most sweepBatch idle buckets.
func TestBucketsForgetIdleSources(t *testing.T) {
	t.Parallel()
	b := newBuckets[string](3, "message_rate_limit", nil)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5000 {
		key := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
		if !b.allow(key, now) {
			t.Fatalf("first message of %s refused", key)
		}
	}
	if !b.allow("busy", now) || !b.allow("busy", now) || !b.allow("busy", now) || b.allow("busy", now) {
		t.Fatal("busy source: want 3 allowed then refused")
	}
	if n := b.t.len(); n != 5001 {
		t.Fatalf("tracked %d, want 5001", n)
	}
	// At +10s no bucket has refilled (a token each 20 s, and each took
	// one): everything is kept.
	b.allow("other", now.Add(10*time.Second))
	for range 3 {
		b.allow("recent", now.Add(10*time.Second))
	}
	if n := b.t.len(); n != 5003 {
		t.Fatalf("at +10s: tracked %d, want 5003", n)
	}
	// At +50s the flood's buckets have refilled; "busy" (emptied at 0) and
	// "recent" (emptied at +10s) have not. One call drops sweepBatch of
	// the idle ones, not all...
	at := now.Add(50 * time.Second)
	b.allow("late", at)
	if n, want := b.t.len(), 5003-sweepBatch+1; n != want {
		t.Fatalf("after one call at +50s: tracked %d, want %d", n, want)
	}
	// ...and further calls the rest of the flood, from the least recently
	// used end, up to "busy": busy, other, recent and late remain.
	for i := 0; b.t.len() > 4; i++ {
		if i > 5000/sweepBatch+10 {
			t.Fatalf("still %d tracked after %d calls", b.t.len(), i)
		}
		b.allow("late", at)
	}
	for _, k := range []string{"busy", "other", "recent", "late"} {
		if _, ok := b.t.m[k]; !ok {
			t.Errorf("%s dropped", k)
		}
	}
	if !b.allow("recent", at) || !b.allow("recent", at) || b.allow("recent", at) {
		t.Error("recent: want the 2 tokens refilled in 40 s, then refused")
	}
}

func TestCountersWindowAndBlock(t *testing.T) {
	t.Parallel()
	c := newCounters("max_auth_failures_per_source", nil)
	k := netip.MustParsePrefix("192.0.2.1/32")
	other := netip.MustParsePrefix("192.0.2.2/32")
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	const window = 10 * time.Minute
	c.add(k, t0, window, 3)
	c.add(k, t0.Add(9*time.Minute), window, 3)
	// The fixed window closed at +10m: the count starts again.
	if n, tripped := c.add(k, t0.Add(11*time.Minute), window, 3); n != 1 || tripped {
		t.Fatalf("new window: n=%d tripped=%v", n, tripped)
	}
	c.add(k, t0.Add(12*time.Minute), window, 3)
	if n, tripped := c.add(k, t0.Add(13*time.Minute), window, 3); n != 3 || !tripped {
		t.Fatalf("third failure: n=%d tripped=%v", n, tripped)
	}
	// Blocked for a whole window from the tripping failure (to +23m), even
	// though its counting window ends at +21m.
	for _, at := range []time.Duration{13 * time.Minute, 22 * time.Minute} {
		if !c.blocked(k, t0.Add(at)) {
			t.Errorf("not blocked at +%v", at)
		}
	}
	if c.blocked(k, t0.Add(23*time.Minute)) || c.blocked(other, t0.Add(13*time.Minute)) {
		t.Error("blocked after the window, or another key blocked")
	}
	c.add(netip.MustParsePrefix("192.0.2.3/32"), t0.Add(40*time.Minute), window, 3) // drops k
	if _, ok := c.t.m[k]; ok {
		t.Error("expired entry kept")
	}
}

func TestSourceKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, source, network, name string }{
		{"192.0.2.77", "192.0.2.77/32", "192.0.2.0/24", "192.0.2.77"},
		{"::ffff:192.0.2.77", "192.0.2.77/32", "192.0.2.0/24", "192.0.2.77"}, // IPv4-mapped is IPv4
		{"2001:db8:1:2:3::4", "2001:db8:1:2::/64", "2001:db8:1::/48", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::", "2001:db8:1:2::/64", "2001:db8:1::/48", "2001:db8:1:2::/64"},
		{"2001:db8:1:ffff::1", "2001:db8:1:ffff::/64", "2001:db8:1::/48", "2001:db8:1:ffff::/64"},
		{"fe80::1%eth0", "fe80::/64", "fe80::/48", "fe80::/64"}, // the zone is dropped
		{"::1", "::/64", "::/48", "::/64"},
	} {
		a := netip.MustParseAddr(tc.in)
		if got := sourceKey(a).String(); got != tc.source {
			t.Errorf("sourceKey(%s) = %s, want %s", tc.in, got, tc.source)
		}
		if got := networkKey(a).String(); got != tc.network {
			t.Errorf("networkKey(%s) = %s, want %s", tc.in, got, tc.network)
		}
		if got := sourceName(sourceKey(a)); got != tc.name {
			t.Errorf("sourceName(sourceKey(%s)) = %s, want %s", tc.in, got, tc.name)
		}
	}
	if p := sourceKey(netip.Addr{}); p.IsValid() {
		t.Errorf("sourceKey of the zero Addr = %v, want the zero Prefix", p)
	}
}
