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
	ip := netip.MustParseAddr("192.0.2.7")
	for _, tc := range []struct {
		src  policy.RateSource
		user string
		want string
	}{
		{policy.RateSourceIP, "", "ip:192.0.2.7"},
		{policy.RateSourceIP, "a@example.com", "ip:192.0.2.7"},
		{policy.RateSourceUser, "", ""},
		{policy.RateSourceUser, "a@example.com", "user:a@example.com"},
		{policy.RateSourceAll, "", "ip:192.0.2.7"},
		{policy.RateSourceAll, "a@example.com", "user:a@example.com"},
	} {
		if got := messageKey(tc.src, ip, tc.user); got != tc.want {
			t.Errorf("messageKey(%s, %q) = %q, want %q", tc.src, tc.user, got, tc.want)
		}
	}
}

// TestBucketsForgetIdleSources: a flood of one-message sources does not
// stay in memory once their buckets have refilled.
func TestBucketsForgetIdleSources(t *testing.T) {
	t.Parallel()
	b := newBuckets(3, "message_rate_limit", nil)
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
	if len(b.m) != 5001 {
		t.Fatalf("tracked %d, want 5001", len(b.m))
	}
	// Within the minute no sweep runs: everything is kept.
	b.allow("other", now.Add(40*time.Second))
	for range 3 {
		b.allow("recent", now.Add(40*time.Second))
	}
	if n := len(b.m); n != 5003 {
		t.Fatalf("at +40s: tracked %d, want 5003", n)
	}
	// At +90s every bucket has refilled (a token each 20 s) except
	// "recent", emptied at +40s: the sweep keeps only it and the new one.
	b.allow("late", now.Add(90*time.Second))
	if _, ok := b.m["recent"]; !ok || len(b.m) != 2 {
		t.Fatalf("after the sweep: tracked %d (recent kept: %v), want 2", len(b.m), ok)
	}
}

func TestCountersWindowAndBlock(t *testing.T) {
	t.Parallel()
	c := newCounters("max_auth_failures_per_source", nil)
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	const window = 10 * time.Minute
	c.add("k", t0, window, 3)
	c.add("k", t0.Add(9*time.Minute), window, 3)
	// The fixed window closed at +10m: the count starts again.
	if n, tripped := c.add("k", t0.Add(11*time.Minute), window, 3); n != 1 || tripped {
		t.Fatalf("new window: n=%d tripped=%v", n, tripped)
	}
	c.add("k", t0.Add(12*time.Minute), window, 3)
	if n, tripped := c.add("k", t0.Add(13*time.Minute), window, 3); n != 3 || !tripped {
		t.Fatalf("third failure: n=%d tripped=%v", n, tripped)
	}
	// Blocked for a whole window from the tripping failure (to +23m), even
	// though its counting window ends at +21m.
	for _, at := range []time.Duration{13 * time.Minute, 22 * time.Minute} {
		if !c.blocked("k", t0.Add(at)) {
			t.Errorf("not blocked at +%v", at)
		}
	}
	if c.blocked("k", t0.Add(23*time.Minute)) || c.blocked("other", t0.Add(13*time.Minute)) {
		t.Error("blocked after the window, or another key blocked")
	}
	c.add("z", t0.Add(40*time.Minute), window, 3) // sweeps
	if _, ok := c.m["k"]; ok {
		t.Error("expired entry kept")
	}
}

func TestNetworkOf(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"192.0.2.77":          "192.0.2.0/24",
		"2001:db8:1:2:3::4":   "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::": "2001:db8:1:2::/64",
	} {
		if got := networkOf(netip.MustParseAddr(in)).String(); got != want {
			t.Errorf("networkOf(%s) = %s, want %s", in, got, want)
		}
	}
}
