package connectors

import (
	"context"
	"strings"
	"testing"
	"time"
)

// tarpitHCL is an Internet-style connector with AUTH (in clear, so the test
// reads every reply) and the given tarpit_interval.
func tarpitHCL(interval string) string {
	return `
receive_connector "in" {
  bind                = ["127.0.0.1:0"]
  auth                = ["plain"]
  allow_insecure_auth = true
  tarpit_interval     = "` + interval + `"
  permissions {
    anonymous     = ["submit"]
    authenticated = ["submit", "relay"]
  }
}
`
}

// TestTarpitUnknownRecipient: a RCPT for an unknown user is answered
// tarpit_interval late, in that session only; an authenticated session
// gets the same refusal at once.
func TestTarpitUnknownRecipient(t *testing.T) {
	t.Parallel()
	const interval = time.Second
	h := startLimits(t, tarpitHCL("1s"))

	harvester, _ := h.dial("127.0.0.1:0", "127.0.0.1")
	harvester.expect("EHLO harvest.test", "250")
	harvester.expect("MAIL FROM:<x@remote.test>", "250 ")
	start := time.Now()
	if err := harvester.tp.PrintfLine("RCPT TO:<nobody@example.com>"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the tarpit's log line", func() bool {
		return hasLine(h.logs, "msg=tarpit", "command=RCPT", "delay=1s", "remote=127.0.0.1:", "550 5.1.1")
	})

	// While the harvester waits, another client is served at once.
	other, _ := h.dial("127.0.0.1:0", "127.0.0.2")
	otherStart := time.Now()
	other.expect("EHLO good.test", "250")
	other.expect("MAIL FROM:<x@remote.test>", "250 ")
	other.expect("RCPT TO:<alice@example.com>", "250 ")
	if d := time.Since(otherStart); d >= interval/2 {
		t.Errorf("another session took %v while one was tarpitted", d)
	}

	if r := harvester.reply(); !strings.HasPrefix(r, "550 5.1.1 ") {
		t.Fatalf("RCPT: %q", r)
	}
	if d := time.Since(start); d < interval {
		t.Errorf("unknown recipient answered after %v, want ≥ %v", d, interval)
	}

	// Authenticated: never tarpitted.
	alice, _ := h.dial("127.0.0.1:0", "127.0.0.1")
	alice.expect("EHLO alice.test", "250")
	alice.expect(authPlain("alice@example.com", alicePassword), "235 ")
	alice.expect("MAIL FROM:<alice@example.com>", "250 ")
	if d := timed(alice, "RCPT TO:<nobody@example.com>", "550 5.1.1 "); d >= interval/2 {
		t.Errorf("authenticated session waited %v for its refusal", d)
	}
}

// TestTarpitRefusalsEarned: a refused relay and a command out of sequence
// are tarpitted too; accepted commands never are.
func TestTarpitRefusalsEarned(t *testing.T) {
	t.Parallel()
	const interval = 100 * time.Millisecond
	h := startLimits(t, tarpitHCL("100ms"))
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO relay.test", "250")
	if d := timed(c, "MAIL FROM:<x@remote.test>", "250 "); d >= interval {
		t.Errorf("accepted MAIL took %v", d)
	}
	if d := timed(c, "RCPT TO:<victim@elsewhere.test>", "550 5.7.1 "); d < interval {
		t.Errorf("refused relay answered after %v, want ≥ %v", d, interval)
	}
	if d := timed(c, "MAIL FROM:<x@remote.test>", "503 5.5.1 "); d < interval {
		t.Errorf("nested MAIL answered after %v, want ≥ %v", d, interval)
	}
	c.expect("RSET", "250 ")
	if d := timed(c, "AUTH CRAM-MD5", "504 5.5.4 "); d < interval {
		t.Errorf("unknown mechanism answered after %v, want ≥ %v", d, interval)
	}
}

// TestTarpitEndsAtShutdown: a long tarpit does not hold Shutdown up.
func TestTarpitEndsAtShutdown(t *testing.T) {
	t.Parallel()
	h := startLimits(t, tarpitHCL("1m"))
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO harvest.test", "250")
	c.expect("MAIL FROM:<x@remote.test>", "250 ")
	if err := c.tp.PrintfLine("RCPT TO:<nobody@example.com>"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the tarpit", func() bool { return hasLine(h.logs, "msg=tarpit", "command=RCPT") })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := h.svc.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Shutdown took %v behind a 1m tarpit", d)
	}
}
