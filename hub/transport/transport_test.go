package transport

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/queue"
	"hubd/internal/logbuf"
	"hubd/policy"
)

// config builds a Config the way hubd does; extraHub goes into the hub block.
func config(t testing.TB, spool, extraHub string) *policy.Config {
	t.Helper()
	if !strings.Contains(extraHub, "retry_interval") {
		extraHub += "\n  quick_retry_interval = \"20ms\"\n  transient_retry_interval = \"20ms\"\n  retry_interval = \"40ms\""
	}
	return loadConfig(t, strings.Replace(configSource(spool), "#HUB", extraHub, 1))
}

// configSource is the test configuration; #HUB and #LISTS are placeholders.
func configSource(spool string) string {
	return fmt.Sprintf(`
hub {
  hostname  = "hub.example.com"
  spool_dir = %q
  #HUB
}
receive_connector "in" { bind = ["127.0.0.1:2525"] }
accepted_domain "example.com" { type = "authoritative" }
mailbox "alice@example.com" { maildir = "mail/alice" }
mailbox "bob@example.com"   { maildir = "mail/bob" }
mailbox "sender@example.com" { maildir = "mail/sender" }
mailbox "owner@example.com" { maildir = "mail/owner" }
alias "team@example.com" { to = ["alice@example.com", "bob@example.com", "carol@partner.example"] }
send_connector "partner" {
  address_spaces = ["partner.example"]
  smart_hosts    = ["[192.0.2.5]:25"]
}
#LISTS
`, spool)
}

func loadConfig(t testing.TB, src string) *policy.Config {
	t.Helper()
	cfg, err := policy.LoadBytes("test.hcl", []byte(src), t.TempDir())
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// call is one Deliver call seen by a fake deliverer.
type call struct {
	from       string
	requireTLS bool
	hop        delivery.NextHop
	keys       []string
	addrs      []string
	body       string
	size       int64 // what the deliverer was told (SIZE=)
}

// fake is a Deliverer whose behaviour is a function; it records calls.
type fake struct {
	mu     sync.Mutex
	calls  []call
	result func(n int, r delivery.Recipient) delivery.Result // n: calls so far, this one included
	block  chan struct{}                                     // when set, Deliver waits for it (or ctx)
	// blockFrom: block applies from this Deliver call on (1: the first);
	// 0 means from the first too.
	blockFrom int64
	begun     atomic.Int64 // Deliver calls begun
}

func ok(int, delivery.Recipient) delivery.Result {
	return delivery.Result{Status: delivery.Delivered, Code: 250, Enhanced: "2.0.0", Text: "ok"}
}

func (f *fake) Deliver(ctx context.Context, hop delivery.NextHop, msg delivery.Message, rcpts []delivery.Recipient) []delivery.Result {
	nth := f.begun.Add(1)
	f.mu.Lock()
	block, from := f.block, f.blockFrom // set before a test's Start, or later under f.mu
	f.mu.Unlock()
	if block != nil && nth >= from {
		select {
		case <-block:
		case <-ctx.Done():
			res := make([]delivery.Result, len(rcpts))
			for i := range res {
				res[i] = delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.4.2", Text: "cancelled"}
			}
			return res
		}
	}
	rc, err := msg.Open()
	var body []byte
	if err == nil {
		body, err = io.ReadAll(rc)
		rc.Close()
	}
	c := call{from: msg.Envelope.From, requireTLS: msg.Envelope.RequireTLS, hop: hop, body: string(body), size: msg.Size}
	for _, r := range rcpts {
		c.keys = append(c.keys, r.Key)
		c.addrs = append(c.addrs, r.Address)
	}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	n := len(f.calls)
	f.mu.Unlock()
	res := make([]delivery.Result, len(rcpts))
	for i, r := range rcpts {
		if err != nil {
			res[i] = delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.3.0", Text: err.Error()}
			continue
		}
		res[i] = f.result(n, r)
	}
	return res
}

func (f *fake) seen() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// addrsDelivered lists every address in every call, sorted.
func (f *fake) addrsDelivered() []string {
	var out []string
	for _, c := range f.seen() {
		out = append(out, c.addrs...)
	}
	slices.Sort(out)
	return out
}

type harness struct {
	t       testing.TB
	tr      *Transport
	maildir *fake
	smtp    *fake
	logs    *logbuf.Buffer
}

func start(t *testing.T, cfg *policy.Config, maildir, smtp *fake, clock func() time.Time) *harness {
	t.Helper()
	return startStore(t, cfg, maildir, smtp, clock, nil)
}

// startStore is start with the store given (nil: the default one in the
// configured spool).
func startStore(t testing.TB, cfg *policy.Config, maildir, smtp *fake, clock func() time.Time, store queue.Store) *harness {
	t.Helper()
	return startWith(t, cfg, maildir, smtp, Options{Clock: clock, Store: store})
}

// startWith is start with opts (its Logger and Deliverers are the
// harness's).
func startWith(t testing.TB, cfg *policy.Config, maildir, smtp *fake, opts Options) *harness {
	t.Helper()
	h := &harness{t: t, maildir: maildir, smtp: smtp, logs: &logbuf.Buffer{}}
	opts.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Deliverers = map[delivery.Kind]delivery.Deliverer{delivery.KindMaildir: maildir, delivery.KindSMTP: smtp}
	tr, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.tr = tr
	t.Cleanup(func() { h.close() })
	return h
}

func (h *harness) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.tr.Close(ctx); err != nil {
		h.t.Errorf("Close: %v", err)
	}
}

func (h *harness) submit(body string, rcpts ...string) hub.QueueID {
	h.t.Helper()
	env := hub.Envelope{From: "sender@example.com", Connector: "in", ReceivedAt: time.Now(),
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	for _, r := range rcpts {
		env.Recipients = append(env.Recipients, hub.Recipient{Address: r})
	}
	id, err := h.tr.Submit(context.Background(), env, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

func (h *harness) waitIdle() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.tr.WaitIdle(ctx); err != nil {
		h.t.Fatalf("%v\nlogs:\n%s", err, h.logs)
	}
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, 10*time.Second, what, cond)
}

// eventuallyWithin is eventually with its own deadline, for waits on
// work that takes seconds under the race detector on a busy machine.
func eventuallyWithin(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// spoolIDs lists the messages in the spool, read beside the transport
// that owns it (queue.Inspect).
func spoolIDs(t *testing.T, spool string) []hub.QueueID {
	t.Helper()
	snap, err := queue.Inspect(context.Background(), spool)
	if err != nil {
		t.Fatal(err)
	}
	var ids []hub.QueueID
	for _, m := range snap.Messages {
		ids = append(ids, m.ID)
	}
	return ids
}

func TestSubmitDelivered(t *testing.T) {
	spool := t.TempDir()
	md, sm := &fake{result: ok}, &fake{result: ok}
	h := start(t, config(t, spool, ""), md, sm, nil)
	body := "Subject: hi\r\n\r\nhello\r\n"
	id := h.submit(body, "team@example.com", "alice@example.com")
	h.waitIdle()

	mc := md.seen()
	if len(mc) != 1 || !slices.Equal(mc[0].addrs, []string{"alice@example.com", "bob@example.com"}) || mc[0].body != body {
		t.Fatalf("maildir calls %+v", mc)
	}
	// Bifurcation: one maildir attempt, one SMTP attempt; keys are "<id>.<address hash>".
	if !slices.Equal(mc[0].keys, []string{deliveryKey(id, "alice@example.com"), deliveryKey(id, "bob@example.com")}) {
		t.Errorf("maildir keys %v", mc[0].keys)
	}
	sc := sm.seen()
	if len(sc) != 1 || !slices.Equal(sc[0].addrs, []string{"carol@partner.example"}) ||
		sc[0].hop.Connector != "partner" || sc[0].hop.SmartHosts != "[192.0.2.5]:25" {
		t.Fatalf("smtp calls %+v", sc)
	}
	if s := h.tr.Stats(); s != (Stats{}) {
		t.Errorf("Stats after idle = %+v", s)
	}
	if left := spoolIDs(t, spool); len(left) != 0 {
		t.Errorf("spool not empty: %v", left)
	}
	for _, want := range []string{"msg=queued", "msg=delivered", "rcpt=carol@partner.example"} {
		if !strings.Contains(h.logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, h.logs)
		}
	}
}

func TestTemporaryFailureThenSuccess(t *testing.T) {
	spool := t.TempDir()
	sm := &fake{result: func(n int, r delivery.Recipient) delivery.Result {
		if n < 3 {
			return delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.3.0", Text: "try later"}
		}
		return ok(n, r)
	}}
	h := start(t, config(t, spool, ""), &fake{result: ok}, sm, nil)
	id := h.submit("x\r\n", "carol@partner.example")
	h.waitIdle()
	calls := sm.seen()
	if len(calls) != 3 {
		t.Fatalf("%d attempts, want 3", len(calls))
	}
	for _, c := range calls {
		if c.keys[0] != deliveryKey(id, "carol@partner.example") {
			t.Errorf("key changed across attempts: %v", c.keys)
		}
	}
	if n := strings.Count(h.logs.String(), "msg=deferred"); n != 2 {
		t.Errorf("%d deferred log lines, want 2:\n%s", n, h.logs)
	}
}

func TestPermanentFailure(t *testing.T) {
	spool := t.TempDir()
	sm := &fake{result: func(int, delivery.Recipient) delivery.Result {
		return delivery.Result{Status: delivery.Failed, Code: 550, Enhanced: "5.1.1", Text: "no such user", RemoteMTA: "192.0.2.5"}
	}}
	h := start(t, config(t, spool, ""), &fake{result: ok}, sm, nil)
	h.submit("x\r\n", "carol@partner.example", "nobody@example.com", "alice@example.com")
	h.waitIdle()
	if len(sm.seen()) != 1 {
		t.Fatalf("failed recipient attempted %d times", len(sm.seen()))
	}
	logs := h.logs.String()
	for _, want := range []string{
		`msg="recipient failed"`, "rcpt=carol@partner.example", `reply="550 5.1.1 no such user"`,
		"rcpt=nobody@example.com", `reply="550 5.1.1 User unknown"`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
	// alice's copy, and one failure DSN for each moment recipients failed:
	// nobody@ at categorization, carol@ after the SMTP attempt.
	if got := h.maildir.addrsDelivered(); !slices.Equal(got, []string{"alice@example.com", "sender@example.com", "sender@example.com"}) {
		t.Errorf("maildir got %v", got)
	}
}

func TestNoRouteIsKeptThenExpires(t *testing.T) {
	spool := t.TempDir()
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h := start(t, config(t, spool, `message_expiration = "1h"`), &fake{result: ok}, &fake{result: ok}, clock)
	h.submit("x\r\n", "dave@nowhere.example")
	eventually(t, "a deferred attempt", func() bool { return strings.Contains(h.logs.String(), "msg=deferred") })
	if s := h.tr.Stats(); s.Messages != 1 || s.PendingRecipients != 1 {
		t.Fatalf("unreachable recipient not kept: %+v", s)
	}
	if !strings.Contains(h.logs.String(), "4.4.4") {
		t.Errorf("no 4.4.4 in logs:\n%s", h.logs)
	}
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	h.waitIdle()
	if !strings.Contains(h.logs.String(), "4.4.7") || !strings.Contains(h.logs.String(), `msg="recipient failed"`) {
		t.Errorf("no expiry in logs:\n%s", h.logs)
	}
}

// Restart: a recipient delivered before Close is not delivered again; a
// pending one is resumed by the new Transport on the same spool.
func TestRestartResumesPendingOnly(t *testing.T) {
	spool := t.TempDir()
	defer1h := func(int, delivery.Recipient) delivery.Result {
		return delivery.Result{Status: delivery.Deferred, Code: 421, Enhanced: "4.4.2", Text: "busy"}
	}
	cfg := config(t, spool, `retry_interval = "1h"
  quick_retry_interval = "1h"`)
	md1 := &fake{result: ok}
	h1 := start(t, cfg, md1, &fake{result: defer1h}, nil)
	id := h1.submit("x\r\n", "alice@example.com", "carol@partner.example")
	eventually(t, "first attempts", func() bool { return h1.tr.Stats().PendingRecipients == 1 && len(md1.seen()) == 1 })
	h1.close()

	md2, sm2 := &fake{result: ok}, &fake{result: ok}
	later := func() time.Time { return time.Now().Add(3 * time.Hour) } // past the retry time
	h2 := start(t, cfg, md2, sm2, later)
	h2.waitIdle()
	if len(md2.seen()) != 0 {
		t.Errorf("delivered recipient delivered again: %+v", md2.seen())
	}
	sc := sm2.seen()
	if len(sc) != 1 || sc[0].keys[0] != deliveryKey(id, "carol@partner.example") {
		t.Errorf("resumed smtp calls %+v", sc)
	}
}

// A next hop that hangs must not delay another: Maildir delivery goes on
// while every SMTP attempt is stuck.
func TestBlockedNextHopDoesNotDelayAnother(t *testing.T) {
	spool := t.TempDir()
	release := make(chan struct{})
	sm := &fake{result: ok, block: release}
	md := &fake{result: ok}
	h := start(t, config(t, spool, `max_outbound_connections = 4
  max_per_domain_outbound_connections = 2`), md, sm, nil)
	for i := range 6 { // more stuck messages than overall workers
		h.submit(fmt.Sprintf("stuck %d\r\n", i), fmt.Sprintf("u%d@partner.example", i))
	}
	h.submit("local\r\n", "bob@example.com")
	eventually(t, "maildir delivery while smtp is blocked", func() bool { return len(md.seen()) == 1 })
	if len(sm.seen()) != 0 {
		t.Fatal("smtp was not blocked")
	}
	close(release)
	h.waitIdle()
	if n := len(sm.addrsDelivered()); n != 6 {
		t.Errorf("smtp delivered %d, want 6", n)
	}
}

// Close with a deadline cancels stuck deliveries and leaves them queued.
func TestCloseCancelsStuckDelivery(t *testing.T) {
	spool := t.TempDir()
	sm := &fake{result: ok, block: make(chan struct{})}
	cfg := config(t, spool, "")
	h := start(t, cfg, &fake{result: ok}, sm, nil)
	h.submit("x\r\n", "carol@partner.example")
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := h.tr.Close(ctx); err == nil {
		t.Log("Close finished before its deadline (the attempt had not started)")
	}
	if _, err := h.tr.Submit(context.Background(), hub.Envelope{Recipients: []hub.Recipient{{Address: "a@example.com"}}},
		strings.NewReader("x")); err == nil {
		t.Error("Submit after Close succeeded")
	}
	sm2 := &fake{result: ok}
	h2 := start(t, cfg, &fake{result: ok}, sm2, func() time.Time { return time.Now().Add(time.Hour) })
	h2.waitIdle()
	if got := sm2.addrsDelivered(); !slices.Equal(got, []string{"carol@partner.example"}) {
		t.Fatalf("stuck recipient not delivered after restart: %v", got)
	}
}

func TestReloadChangesRouting(t *testing.T) {
	spool := t.TempDir()
	cfg := config(t, spool, `retry_interval = "1h"
  quick_retry_interval = "1h"`)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	sm := &fake{result: ok}
	h := start(t, cfg, &fake{result: ok}, sm, clock)
	h.submit("x\r\n", "eve@newpartner.example")
	eventually(t, "deferral for no route", func() bool { return strings.Contains(h.logs.String(), "msg=deferred") })

	src := fmt.Sprintf(`
hub {
  hostname  = "hub.example.com"
  spool_dir = %q
}
receive_connector "in" { bind = ["127.0.0.1:2525"] }
send_connector "new" {
  address_spaces = ["newpartner.example"]
  smart_hosts    = ["[192.0.2.9]:25"]
}
`, spool)
	cfg2, err := policy.LoadBytes("reload.hcl", []byte(src), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// The unreachable queue is resubmitted when routing changes: no waiting
	// for a retry time (the clock does not move).
	h.tr.Reload(cfg2)
	h.waitIdle()
	if c := sm.seen(); len(c) != 1 || c[0].hop.Connector != "new" {
		t.Fatalf("after reload smtp calls %+v", c)
	}
}

// TestBackoff: the retry ladder of DESIGN.md, 4 quick retries, 6 × 5m,
// then every 10m, each with at most 10% jitter.
func TestBackoff(t *testing.T) {
	h := policy.Hub{QuickRetryCount: 4, QuickRetryInterval: time.Minute, TransientRetryCount: 6,
		TransientRetryInterval: 5 * time.Minute, RetryInterval: 10 * time.Minute}
	for n := 1; n <= 40; n++ {
		want := 10 * time.Minute
		switch {
		case n <= 4:
			want = time.Minute
		case n <= 10:
			want = 5 * time.Minute
		}
		got := backoff(h, n)
		if got < want || got > want+want/10 {
			t.Errorf("backoff(%d) = %v, want %v plus at most 10%%", n, got, want)
		}
	}
}

// TestDeliveryKey: a key names the message and the final address, whatever
// its case or position, and differs between recipients and messages.
func TestDeliveryKey(t *testing.T) {
	a := deliveryKey("q1", "Alice@Example.com")
	if a != deliveryKey("q1", "alice@example.com") {
		t.Error("key depends on letter case")
	}
	if !strings.HasPrefix(a, "q1.") || len(a) != len("q1.")+16 {
		t.Errorf("key %q", a)
	}
	if a == deliveryKey("q1", "bob@example.com") || a == deliveryKey("q2", "alice@example.com") {
		t.Error("keys collide")
	}
}
