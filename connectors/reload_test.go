package connectors

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	"hubd/internal/logbuf"
	"hubd/policy"
)

// reloadHCL is one connector with TLS and rate limits (so each generation
// has a Server, a certificate and limit tables); max_recipients tells the
// generations apart on the wire.
func reloadHCL(maxRecipients int) string {
	return fmt.Sprintf(`
receive_connector "in" {
  bind               = ["127.0.0.1:0"]
  tarpit_interval    = "0s"
  tls { self_signed = true }
  max_recipients     = %d
  message_rate_limit = 1000
  connection_rate_limit = 1000
}
`, maxRecipients)
}

// reloadHarness reloads many times: the base config (with its bcrypt
// hash) is made once, the connectors are parsed afresh each time.
type reloadHarness struct {
	*limitHarness
	base string
}

// startQuiet starts a Service whose log goes to a buffer only: a thousand
// reloads would otherwise be a thousand lines of test output.
func startQuiet(t *testing.T, hcl string) *reloadHarness {
	t.Helper()
	dir := t.TempDir()
	lh := &limitHarness{harness: &harness{t: t, sub: &capture{}, dir: dir}, clock: newFakeClock(), logs: &logbuf.Buffer{}}
	h := &reloadHarness{limitHarness: lh, base: baseHCL(t, dir)}
	logger := slog.New(slog.NewTextHandler(lh.logs, nil))
	svc, err := New(Options{Config: h.load(hcl), Submitter: lh.sub, Logger: logger, Clock: lh.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	lh.svc = svc
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := svc.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	lh.pool = x509.NewCertPool()
	pem, err := os.ReadFile(filepath.Join(dir, "spool", "tls", "in.crt"))
	if err != nil {
		t.Fatal(err)
	}
	lh.pool.AppendCertsFromPEM(pem)
	return h
}

// load parses the base config and connectors, as SIGHUP does.
func (h *reloadHarness) load(connectors string) *policy.Config {
	h.t.Helper()
	cfg, err := policy.LoadBytes(filepath.Join(h.dir, "hubd.hcl"), []byte(h.base+connectors), h.dir)
	if err != nil {
		h.t.Fatalf("config: %v", err)
	}
	return cfg
}

// reload swaps in cfg and returns a weak pointer to the connector it
// replaced, which must become garbage once its sessions are over.
func (h *reloadHarness) reload(cfg *policy.Config) weak.Pointer[connector] {
	h.t.Helper()
	old := weak.Make(h.svc.gen.Load().byName["in"])
	if err := h.svc.Reload(cfg); err != nil {
		h.t.Fatal(err)
	}
	return old
}

// TestReloadDropsOldGenerations: a thousand reloads, without and then with
// sessions open across them, leave one generation and one go-smtp Server
// once the sessions are over; each session finishes on the config it
// started with (STARTTLS included); goroutines return to the baseline and
// the old connectors and configs are garbage collected.
//
// Not parallel: it counts the process's goroutines.
func TestReloadDropsOldGenerations(t *testing.T) {
	h := startQuiet(t, reloadHCL(1))
	base := runtime.NumGoroutine()
	wantRetained := func(what string, gens, servers int) {
		t.Helper()
		eventually(t, what, func() bool {
			g, s := h.svc.retained()
			return g == gens && s == servers
		})
	}
	goroutinesBack := func(what string) {
		t.Helper()
		eventually(t, what, func() bool { return runtime.NumGoroutine() <= base })
	}

	// Parsing a config costs more than the reload itself under -race: most
	// reloads share a parsed config, and every tenth of phase 2 parses one
	// afresh, as SIGHUP does, so that configs too are seen collected.
	variants := map[int]*policy.Config{}
	for _, n := range []int{1, 2, 3} {
		variants[n] = h.load(reloadHCL(n))
	}

	// 1. No sessions: each reload drops the generation it replaces.
	for range 1000 {
		h.reload(variants[2])
	}
	if g, s := h.svc.retained(); g != 1 || s != 1 {
		t.Fatalf("after 1000 idle reloads: %d generations, %d servers retained, want 1 and 1", g, s)
	}
	goroutinesBack("goroutines back to the baseline after 1000 idle reloads")

	// 2. A session opened every 100 reloads, all of them still open at the
	// end: its generation stays, the 99 between are dropped.
	type open struct {
		c             *client
		maxRecipients int
	}
	var sessions []open
	var gone []weak.Pointer[connector]
	var goneCfgs []weak.Pointer[policy.Config]
	maxRecipients := 2
	for i := range 1000 {
		if i%100 == 0 {
			c, g := h.dial("127.0.0.1:0", "")
			if !strings.HasPrefix(g, "220 ") {
				t.Fatalf("greeting %q", g)
			}
			c.expect("EHLO client.test", "250")
			sessions = append(sessions, open{c, maxRecipients})
		}
		maxRecipients = 1 + (i/100)%3
		cfg := variants[maxRecipients]
		if i%10 == 5 {
			cfg = h.load(reloadHCL(maxRecipients))
			goneCfgs = append(goneCfgs, weak.Make(cfg))
		}
		gone = append(gone, h.reload(cfg))
	}
	h.reload(h.load(reloadHCL(5))) // new sessions get 5
	if g, s := h.svc.retained(); g != 11 || s != 11 {
		t.Fatalf("with 10 sessions on 10 old generations: %d generations, %d servers retained, want 11 and 11", g, s)
	}

	// Each session finishes on its own generation's config: max_recipients
	// RCPTs pass, the next is refused. The first goes through STARTTLS,
	// which hands it to its old Server again.
	sessions[0].c.startTLS(h.pool)
	sessions[0].c.expect("EHLO client.test", "250")
	for i, s := range sessions {
		s.c.expect("MAIL FROM:<x@remote.test>", "250 ")
		for range s.maxRecipients {
			s.c.expect("RCPT TO:<alice@example.com>", "250 ")
		}
		s.c.expect("RCPT TO:<bob@example.com>", "452 4.5.3 Too many recipients")
		s.c.expect("DATA", "354 ")
		s.c.raw(fmt.Sprintf("Subject: session %d\r\n\r\nhi\r\n.\r\n", i))
		if r := s.c.reply(); !strings.HasPrefix(r, "250 ") {
			t.Fatalf("session %d: DATA: %q", i, r)
		}
	}
	fresh, _ := h.dial("127.0.0.1:0", "")
	fresh.expect("EHLO client.test", "250")
	fresh.expect("MAIL FROM:<x@remote.test>", "250 ")
	for range 5 {
		fresh.expect("RCPT TO:<alice@example.com>", "250 ")
	}
	fresh.expect("QUIT", "221")
	for _, s := range sessions {
		s.c.expect("QUIT", "221")
	}
	wantRetained("one generation and one server once the sessions are over", 1, 1)
	goroutinesBack("goroutines back to the baseline after the sessions")

	// Nothing refers to the old generations any more: the collector takes
	// them (a weak pointer reads nil once its object has been collected).
	eventually(t, "the old connectors and configs collected", func() bool {
		runtime.GC()
		for _, c := range gone {
			if c.Value() != nil {
				return false
			}
		}
		for _, cfg := range goneCfgs {
			if cfg.Value() != nil {
				return false
			}
		}
		return true
	})

}

// TestShutdownReachesRetiredServers: Shutdown ends the idle sessions of an
// old generation and of the current one, and waits for a message in flight
// on the old generation's Server before it returns.
func TestShutdownReachesRetiredServers(t *testing.T) {
	t.Parallel()
	h := startQuiet(t, reloadHCL(3))
	inData, _ := h.dial("127.0.0.1:0", "")
	inData.expect("EHLO client.test", "250")
	idleOld, _ := h.dial("127.0.0.1:0", "")
	idleOld.expect("EHLO client.test", "250")
	inData.expect("MAIL FROM:<x@remote.test>", "250 ")
	inData.expect("RCPT TO:<alice@example.com>", "250 ")
	inData.expect("DATA", "354 ")
	inData.raw("Subject: in flight\r\n\r\n")
	h.reload(h.load(reloadHCL(4)))
	idleNew, _ := h.dial("127.0.0.1:0", "")
	idleNew.expect("EHLO client.test", "250")
	if g, s := h.svc.retained(); g != 2 || s != 2 {
		t.Fatalf("%d generations, %d servers retained, want 2 and 2", g, s)
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- h.svc.Shutdown(ctx)
	}()
	for _, c := range []*client{idleOld, idleNew} {
		if r := c.reply(); r != "421 4.3.2 Service shutting down" {
			t.Errorf("idle session: %q", r)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a message in flight on the old generation", err)
	default:
	}
	inData.raw("body\r\n.\r\n")
	if r := inData.reply(); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("message in flight: %q", r)
	}
	inData.raw("QUIT\r\n")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after the last session")
	}
	if _, body := h.sub.last(t); !strings.Contains(body, "Subject: in flight") {
		t.Errorf("queued %q", body)
	}
}

// TestReloadNeverRefusesAConnection: a client connecting while reloads
// replace its connector is served by the old generation or the new one,
// never refused (a connection picked for a connector that a reload
// retired before the hand-over used to get 421 4.3.2).
func TestReloadNeverRefusesAConnection(t *testing.T) {
	h := startQuiet(t, reloadHCL(1))
	variants := []*policy.Config{h.load(reloadHCL(1)), h.load(reloadHCL(2))}
	stop := make(chan struct{})
	reloaded := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				reloaded <- n
				return
			default:
			}
			h.reload(variants[n%2])
			n++
		}
	}()
	for i := range 200 {
		c, g := h.dial("127.0.0.1:0", "")
		if !strings.HasPrefix(g, "220 ") {
			t.Errorf("connection %d during reloads: greeting %q", i, g)
		}
		if r := c.cmd("QUIT"); !strings.HasPrefix(r, "221 ") {
			t.Errorf("connection %d: QUIT: %q", i, r)
		}
		c.tp.Close()
	}
	close(stop)
	if n := <-reloaded; n < 10 {
		t.Logf("only %d reloads raced the connections", n)
	}
}
