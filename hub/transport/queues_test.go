package transport

import (
	"context"
	"fmt"
	"mime"
	"mime/multipart"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/queue"
)

// fakeClock is a clock the test steps; step wakes the scheduler so that
// nothing waits in real time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) set(h *harness, t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
	h.tr.sched.poke()
}

// recipient returns a copy of recipient i of message id, or false when the
// message has left the queue.
func (h *harness) recipient(id hub.QueueID, i int) (queue.RecipientState, bool) {
	mv, ok := h.tr.viewOf(id, h.tr.opsState()) // with an entry or asleep (dormant.go)
	if !ok || i >= len(mv.st.Recipients) {
		return queue.RecipientState{}, false
	}
	return mv.st.Recipients[i], true
}

func (h *harness) submitEnv(env hub.Envelope, body string) hub.QueueID {
	h.t.Helper()
	if env.Connector == "" {
		env.Connector = "in"
	}
	id, err := h.tr.Submit(context.Background(), env, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	return id
}

func deferAll(int, delivery.Recipient) delivery.Result {
	return delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.3.0", Text: "try later", RemoteMTA: "192.0.2.5"}
}

// TestRetryLadder: with an injected clock, a recipient that keeps being
// deferred is retried after 1m four times, 5m six times, then every 10m
// (each with at most 10% jitter), and fails with 4.4.7 at expiry, when its
// sender gets a failure DSN. Nothing waits in real time.
func TestRetryLadder(t *testing.T) {
	spool := t.TempDir()
	clock := newFakeClock()
	sm := &fake{result: deferAll}
	md := &fake{result: ok}
	h := start(t, config(t, spool, `quick_retry_interval = "1m"
  transient_retry_interval = "5m"
  retry_interval = "10m"
  message_expiration = "2h"
  delay_dsn_after = "0s"`), md, sm, clock.Now)
	arrived := clock.Now()
	id := h.submit("Subject: ladder\r\n\r\nx\r\n", "carol@partner.example")
	var gaps []time.Duration
	var nexts []time.Time
	for attempt := 1; ; attempt++ {
		eventually(t, fmt.Sprintf("attempt %d", attempt), func() bool {
			r, ok := h.recipient(id, 0)
			return !ok || r.Attempts == attempt
		})
		r, ok := h.recipient(id, 0)
		if !ok || r.Status != queue.Deferred {
			break
		}
		gaps = append(gaps, r.NextAttempt.Sub(clock.Now()))
		nexts = append(nexts, r.NextAttempt)
		clock.set(h, r.NextAttempt)
	}
	h.waitIdle()
	want := []time.Duration{time.Minute, time.Minute, time.Minute, time.Minute,
		5 * time.Minute, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute, 5 * time.Minute}
	for i, g := range gaps {
		w := 10 * time.Minute
		if i < len(want) {
			w = want[i]
		}
		if nexts[i].Equal(arrived.Add(2 * time.Hour)) {
			continue // the last attempt is pulled in to the expiry time
		}
		if g < w || g >= w+w/10 {
			t.Errorf("gap after attempt %d = %v, want %v plus less than 10%%", i+1, g, w)
		}
	}
	if len(gaps) < 14 {
		t.Errorf("only %d retries before expiry: %v", len(gaps), gaps)
	}
	if !strings.Contains(h.logs.String(), "4.4.7") {
		t.Errorf("no expiry:\n%s", h.logs)
	}
	dsns := md.seen()
	if len(dsns) != 1 || dsns[0].from != "" || !slices.Equal(dsns[0].addrs, []string{"sender@example.com"}) {
		t.Fatalf("failure DSN not delivered to the sender: %+v", dsns)
	}
	checkDSN(t, dsns[0].body, "failed", "4.4.7", "carol@partner.example")
}

// checkDSN parses a DSN and checks its structure (RFC 3464, RFC 6522): a
// multipart/report of report-type delivery-status whose second part has a
// recipient block with the wanted action, status and final recipient.
func checkDSN(t *testing.T, body, action, status, rcpt string) {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(body))
	if err != nil {
		t.Fatalf("DSN does not parse: %v\n%s", err, body)
	}
	if msg.Header.Get("Auto-Submitted") != "auto-replied" {
		t.Errorf("Auto-Submitted = %q", msg.Header.Get("Auto-Submitted"))
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type %q (%v)", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var parts []string
	var status2 string
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		parts = append(parts, ct)
		if ct == "message/delivery-status" {
			b := new(strings.Builder)
			if _, err := fmt.Fprint(b, readAll(t, p)); err != nil {
				t.Fatal(err)
			}
			status2 = b.String()
		}
	}
	if len(parts) != 3 || parts[0] != "text/plain" || parts[1] != "message/delivery-status" {
		t.Fatalf("parts %v", parts)
	}
	for _, want := range []string{"Action: " + action, "Status: " + status, "Final-Recipient: rfc822;" + rcpt} {
		if !strings.Contains(status2, want) {
			t.Errorf("delivery-status lacks %q:\n%s", want, status2)
		}
	}
}

func readAll(t *testing.T, p *multipart.Part) string {
	t.Helper()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := p.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}

// TestPartialSuccess: in one transaction one recipient is accepted, one
// deferred and one refused. The accepted one is never attempted again, the
// refused one gets a failure DSN at once, and only the deferred one is
// retried.
func TestPartialSuccess(t *testing.T) {
	spool := t.TempDir()
	sm := &fake{result: func(n int, r delivery.Recipient) delivery.Result {
		switch {
		case strings.HasPrefix(r.Address, "ok"):
			return ok(n, r)
		case strings.HasPrefix(r.Address, "bad"):
			return delivery.Result{Status: delivery.Failed, Code: 550, Enhanced: "5.1.1", Text: "no such user", RemoteMTA: "192.0.2.5"}
		case n == 1:
			return deferAll(n, r)
		default:
			return ok(n, r)
		}
	}}
	md := &fake{result: ok}
	h := start(t, config(t, spool, ""), md, sm, nil)
	h.submit("Subject: partial\r\n\r\nx\r\n", "ok@partner.example", "later@partner.example", "bad@partner.example")
	h.waitIdle()
	calls := sm.seen()
	if len(calls) != 2 || len(calls[0].addrs) != 3 || !slices.Equal(calls[1].addrs, []string{"later@partner.example"}) {
		t.Fatalf("smtp calls %+v", calls)
	}
	dsns := md.seen()
	if len(dsns) != 1 {
		t.Fatalf("want one failure DSN, got %+v", dsns)
	}
	checkDSN(t, dsns[0].body, "failed", "5.1.1", "bad@partner.example")
	if strings.Contains(dsns[0].body, "Final-Recipient: rfc822;ok@") || strings.Contains(dsns[0].body, "Final-Recipient: rfc822;later@") {
		t.Errorf("DSN names recipients that did not fail:\n%s", dsns[0].body)
	}
}

// TestDSNKinds: delay DSN once after delay_dsn_after, success DSN only for
// NOTIFY=SUCCESS, nothing for NOTIFY=NEVER, and never a DSN to the null
// sender — also when a DSN itself fails.
func TestDSNKinds(t *testing.T) {
	t.Run("delay once then success", func(t *testing.T) {
		spool := t.TempDir()
		clock := newFakeClock()
		var mu sync.Mutex
		deliverNow := false
		sm := &fake{result: func(n int, r delivery.Recipient) delivery.Result {
			mu.Lock()
			defer mu.Unlock()
			if deliverNow {
				return ok(n, r)
			}
			return deferAll(n, r)
		}}
		md := &fake{result: ok}
		h := start(t, config(t, spool, `quick_retry_interval = "1h"
  transient_retry_interval = "1h"
  retry_interval = "1h"
  delay_dsn_after = "4h"`), md, sm, clock.Now)
		env := hub.Envelope{From: "sender@example.com", ReceivedAt: clock.Now(), MessageID: "<m1@example.com>",
			Recipients: []hub.Recipient{{Address: "carol@partner.example", Notify: []string{"SUCCESS", "DELAY", "FAILURE"},
				ORCPT: "rfc822;carol@partner.example"}}}
		id := h.submitEnv(env, "Subject: slow\r\nMessage-ID: <m1@example.com>\r\n\r\nx\r\n")
		for hour := 1; hour <= 6; hour++ {
			eventually(t, fmt.Sprintf("attempt %d", hour), func() bool { r, _ := h.recipient(id, 0); return r.Attempts == hour })
			clock.set(h, clock.Now().Add(time.Hour+10*time.Minute))
		}
		eventually(t, "delay DSN", func() bool { return len(md.seen()) == 1 })
		mu.Lock()
		deliverNow = true
		mu.Unlock()
		clock.set(h, clock.Now().Add(2*time.Hour))
		h.waitIdle()
		dsns := md.seen()
		if len(dsns) != 2 {
			t.Fatalf("want a delay and a relayed DSN, got %d", len(dsns))
		}
		checkDSN(t, dsns[0].body, "delayed", "4.3.0", "carol@partner.example")
		if !strings.Contains(dsns[0].body, "Will-Retry-Until:") {
			t.Errorf("delay DSN lacks Will-Retry-Until:\n%s", dsns[0].body)
		}
		checkDSN(t, dsns[1].body, "relayed", "2.0.0", "carol@partner.example")
	})
	t.Run("notify never and null sender", func(t *testing.T) {
		spool := t.TempDir()
		fail := func(int, delivery.Recipient) delivery.Result {
			return delivery.Result{Status: delivery.Failed, Code: 550, Enhanced: "5.7.1", Text: "refused"}
		}
		sm, md := &fake{result: fail}, &fake{result: ok}
		h := start(t, config(t, spool, ""), md, sm, nil)
		h.submitEnv(hub.Envelope{From: "sender@example.com",
			Recipients: []hub.Recipient{{Address: "a@partner.example", Notify: []string{"NEVER"}}}}, "x\r\n")
		h.submitEnv(hub.Envelope{From: "", Recipients: []hub.Recipient{{Address: "b@partner.example"}}}, "x\r\n")
		// A bounce to a remote sender whose server refuses it: the DSN fails
		// and is dropped, not bounced again.
		h.submitEnv(hub.Envelope{From: "someone@partner.example", Recipients: []hub.Recipient{{Address: "c@partner.example"}}}, "x\r\n")
		h.waitIdle()
		if got := md.seen(); len(got) != 0 {
			t.Errorf("DSNs delivered locally: %+v", got)
		}
		var toSomeone, fromNull int
		for _, c := range sm.seen() {
			if slices.Contains(c.addrs, "someone@partner.example") {
				toSomeone++
				if c.from != "" {
					t.Errorf("DSN sent with sender %q", c.from)
				}
			}
			if c.from == "" && !slices.Contains(c.addrs, "someone@partner.example") && !slices.Contains(c.addrs, "b@partner.example") {
				fromNull++
			}
		}
		if toSomeone != 1 || fromNull != 0 {
			t.Errorf("%d DSNs to the remote sender (want 1), %d DSNs of DSNs (want 0): %+v", toSomeone, fromNull, sm.seen())
		}
	})
}

// TestNextHopRetryState: when a next hop cannot be reached (every result
// has Connection set) its queue goes into Retry; work routed to it before
// the retry time is deferred without dialling, and after it one probe goes
// first; once it succeeds the rest follow.
func TestNextHopRetryState(t *testing.T) {
	spool := t.TempDir()
	clock := newFakeClock()
	var mu sync.Mutex
	down := true
	sm := &fake{result: func(n int, r delivery.Recipient) delivery.Result {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.4.1", Text: "connection refused", Connection: true}
		}
		return ok(n, r)
	}}
	h := start(t, config(t, spool, `quick_retry_interval = "1m"
  max_per_domain_outbound_connections = 1`), &fake{result: ok}, sm, clock.Now)
	first := h.submit("x\r\n", "a@partner.example")
	eventually(t, "first attempt", func() bool { return len(sm.seen()) == 1 })
	eventually(t, "queue in retry", func() bool {
		for _, q := range h.tr.DeliveryQueues() {
			if q.State == StateRetry && strings.Contains(q.LastError, "connection refused") {
				return true
			}
		}
		return false
	})
	var ids []hub.QueueID
	for i := range 3 {
		ids = append(ids, h.submit("x\r\n", fmt.Sprintf("u%d@partner.example", i)))
	}
	for _, id := range ids {
		eventually(t, "deferral without dialling", func() bool {
			r, _ := h.recipient(id, 0)
			return r.Status == queue.Deferred && strings.Contains(r.LastReply.Text, "Next hop in retry")
		})
	}
	if n := len(sm.seen()); n != 1 {
		t.Fatalf("next hop in retry dialled %d times", n)
	}
	r, _ := h.recipient(first, 0)
	mu.Lock()
	down = false
	mu.Unlock()
	clock.set(h, r.NextAttempt.Add(time.Minute))
	h.waitIdle()
	if got := sm.addrsDelivered(); len(got) != 5 { // 1 failed attempt + 4 deliveries
		t.Errorf("calls %v", got)
	}
	for _, q := range h.tr.DeliveryQueues() {
		if q.State == StateRetry {
			t.Errorf("queue still in retry: %+v", q)
		}
	}
}

// TestPoisonQueue: a message whose deliverer panics poison_threshold times
// is parked: not retried, not expired, counted in Stats and Queues, and the
// hub keeps delivering other mail.
func TestPoisonQueue(t *testing.T) {
	spool := t.TempDir()
	var mu sync.Mutex
	panics := 0
	sm := &fake{result: func(n int, r delivery.Recipient) delivery.Result {
		if r.Address == "crash@partner.example" {
			mu.Lock()
			panics++
			mu.Unlock()
			panic("boom")
		}
		return ok(n, r)
	}}
	h := start(t, config(t, spool, `poison_threshold = 2`), &fake{result: ok}, sm, nil)
	h.submit("x\r\n", "crash@partner.example")
	h.submit("x\r\n", "fine@partner.example")
	h.waitIdle() // poisoned messages do not count as waiting
	if s := h.tr.Stats(); s.Poisoned != 1 || s.Messages != 1 {
		t.Fatalf("Stats %+v", s)
	}
	mu.Lock()
	n := panics
	mu.Unlock()
	if n != 2 {
		t.Errorf("deliverer crashed %d times, want 2 (then parked)", n)
	}
	qs := h.tr.DeliveryQueues()
	if p := qs[len(qs)-1]; p.Name != "poison" || p.Items != 1 {
		t.Errorf("poison queue %+v", p)
	}
	if !strings.Contains(h.logs.String(), "poison queue") {
		t.Errorf("no poison log line:\n%s", h.logs)
	}
	if got := sm.addrsDelivered(); !slices.Contains(got, "fine@partner.example") {
		t.Errorf("other mail not delivered: %v", got)
	}
}

// TestProcessCrashesPoison: a message the process died processing is
// parked at the next start once poison_threshold of those deaths could be
// pinned on it (it was the isolated suspect in flight), and not before:
// deaths it was merely in flight at (here the first, with its delivery
// hanging, and two more) only make it a suspect.
func TestProcessCrashesPoison(t *testing.T) {
	spool := t.TempDir()
	cfg := config(t, spool, "")
	block := make(chan struct{})
	h := start(t, cfg, &fake{result: ok}, &fake{result: ok, block: block}, nil)
	id := h.submit("x\r\n", "a@partner.example")
	// The message is marked active while its delivery hangs; a "crash"
	// keeps the mark: close the store underneath, then count the deaths.
	eventually(t, "delivery running, marked", func() bool {
		_, ok := activeMarks(t, spool)[id]
		return ok
	})
	if m := activeMarks(t, spool)[id]; m != '-' {
		t.Fatalf("active mark %q; want one not isolated", m)
	}
	h.tr.store.Close() // a crash: nothing more reaches the spool, the mark stays...
	close(block)
	h.close() // ...as SIGKILL would have left it (the transport's clearActive finds the store closed)
	if m := activeMarks(t, spool)[id]; m != '-' {
		t.Fatalf("after the crash: active mark %q; want it kept", m)
	}
	die(t, spool, id, false)
	die(t, spool, id, false)
	if st := loadState(t, spool, id); st.Interrupted != suspectAfter || st.Crashes != 0 || !suspect(st) {
		t.Fatalf("after %d deaths in flight, not isolated: %+v", suspectAfter, st)
	}
	die(t, spool, id, true)
	die(t, spool, id, true)
	h2 := start(t, cfg, &fake{result: ok}, &fake{result: ok}, nil)
	if s := h2.tr.Stats(); s.Poisoned != 1 {
		t.Fatalf("Stats %+v\n%s", s, h2.logs)
	}
}

// die plays one process death with message id in flight: the store is
// opened (recording the previous deaths), id marked active (isolated or
// not), and the store closed with the mark left behind.
func die(t *testing.T, spool string, id hub.QueueID, isolated bool) {
	t.Helper()
	s, err := queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkActive(id, queue.Mark{NotBefore: time.Now(), Isolated: isolated}); err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// loadState opens the spool (recording any death left in it) and returns
// message id's state.
func loadState(t *testing.T, spool string, id hub.QueueID) queue.State {
	t.Helper()
	s, err := queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msgs, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.ID == id {
			return m.State
		}
	}
	t.Fatalf("message %s not in the spool", id)
	return queue.State{}
}

// TestListExpansion: a distribution list with an owner sends its remote
// members' copy with the owner as envelope sender and the trace header
// naming the list and this hub; local members get the original sender. A
// message that already carries the trace for the list is not expanded
// again (the loop between expansion servers).
func TestListExpansion(t *testing.T) {
	spool := t.TempDir()
	src := strings.Replace(configSource(spool), "#LISTS", `distribution_list "team-list@example.com" {
  members = ["alice@example.com", "carol@partner.example", "team-list@example.com"]
  owner   = "owner@example.com"
}`, 1)
	cfg := loadConfig(t, src)
	md, sm := &fake{result: ok}, &fake{result: ok}
	h := start(t, cfg, md, sm, nil)
	h.submit("Subject: to the list\r\n\r\nhello\r\n", "team-list@example.com")
	h.waitIdle()
	if got := md.seen(); len(got) != 1 || got[0].from != "sender@example.com" || !slices.Equal(got[0].addrs, []string{"alice@example.com"}) {
		t.Fatalf("local copy %+v", got)
	}
	sc := sm.seen()
	if len(sc) != 1 || sc[0].from != "owner@example.com" || !slices.Equal(sc[0].addrs, []string{"carol@partner.example"}) {
		t.Fatalf("remote copy %+v", sc)
	}
	if !strings.HasPrefix(sc[0].body, "X-Hubd-Expanded: team-list@example.com; by=hub.example.com\r\n") {
		t.Errorf("remote copy lacks the trace header:\n%s", sc[0].body)
	}

	// The copy comes back (through another hub, or a member forwarding it).
	h.submit(sc[0].body, "team-list@example.com")
	h.waitIdle()
	if len(md.seen()) != 1 || len(sm.seen()) != 1 {
		t.Errorf("list expanded again: maildir %d, smtp %d calls", len(md.seen()), len(sm.seen()))
	}
}

// TestSuspendQueue: a suspended queue takes work but delivers none until
// resumed; other queues are unaffected.
func TestSuspendQueue(t *testing.T) {
	spool := t.TempDir()
	release := make(chan struct{})
	sm := &fake{result: ok, block: release}
	md := &fake{result: ok}
	h := start(t, config(t, spool, ""), md, sm, nil)
	h.submit("x\r\n", "a@partner.example")
	name := "smtp:partner[[192.0.2.5]:25]"
	eventually(t, "queue exists", func() bool { return h.tr.SuspendQueue(context.Background(), name) == nil })
	close(release)
	eventually(t, "first delivery", func() bool { return len(sm.seen()) == 1 })
	h.submit("x\r\n", "b@partner.example")
	h.submit("x\r\n", "alice@example.com")
	eventually(t, "local delivery while suspended", func() bool { return len(md.seen()) == 1 })
	eventually(t, "work waiting in the suspended queue", func() bool {
		for _, q := range h.tr.DeliveryQueues() {
			if q.Name == name && q.State == StateSuspended && q.Items == 1 {
				return true
			}
		}
		return false
	})
	if len(sm.seen()) != 1 {
		t.Fatal("suspended queue delivered")
	}
	if err := h.tr.ResumeQueue(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	h.waitIdle()
	if len(sm.seen()) != 2 {
		t.Errorf("smtp calls after resume: %d", len(sm.seen()))
	}
}

// TestDSNOfRequireTLSAndOrgHeaders: the DSN of a REQUIRETLS message returns
// headers only and travels with REQUIRETLS itself (RFC 8689 §5), and the
// original it returns has lost its hub-internal X-Hubd-* fields (the header
// firewall applies to DSNs too).
func TestDSNOfRequireTLSAndOrgHeaders(t *testing.T) {
	spool := t.TempDir()
	fail := func(int, delivery.Recipient) delivery.Result {
		return delivery.Result{Status: delivery.Failed, Code: 550, Enhanced: "5.7.30", Text: "REQUIRETLS support required"}
	}
	md := &fake{result: ok}
	h := start(t, config(t, spool, ""), md, &fake{result: fail}, nil)
	h.submitEnv(hub.Envelope{From: "sender@example.com", RequireTLS: true, DSNRet: "FULL",
		Recipients: []hub.Recipient{{Address: "carol@partner.example"}}},
		"X-Hubd-Expanded: secret@example.com; by=hub.example.com\r\nSubject: private\r\n\r\nsecret body\r\n")
	h.waitIdle()
	dsns := md.seen()
	if len(dsns) != 1 {
		t.Fatalf("want one DSN, got %d", len(dsns))
	}
	d := dsns[0]
	checkDSN(t, d.body, "failed", "5.7.30", "carol@partner.example")
	if !d.requireTLS {
		t.Error("the DSN of a REQUIRETLS message is not sent with REQUIRETLS")
	}
	if strings.Contains(d.body, "secret body") || !strings.Contains(d.body, "Subject: private") {
		t.Errorf("RET=FULL not reduced to headers:\n%s", d.body)
	}
	if strings.Contains(d.body, "X-Hubd-Expanded: secret") {
		t.Errorf("hub-internal field returned in the DSN:\n%s", d.body)
	}
}
