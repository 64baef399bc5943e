package transport

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/hub/queue"
)

// TestWaitingWorkIsNotMarkedActive: a message whose work item only waits
// in a busy next-hop queue is not being processed, so it must not carry
// the store's active mark. Otherwise a clean shutdown with a backlog (or
// any process death) counts a "crash" for every waiting message, and two
// ordinary restarts park healthy mail in the poison queue.
func TestWaitingWorkIsNotMarkedActive(t *testing.T) {
	spool := t.TempDir()
	release := make(chan struct{})
	sm := &fake{result: ok, block: release}
	h := start(t, config(t, spool, `max_per_domain_outbound_connections = 1`), &fake{result: ok}, sm, nil)
	first := h.submit("x\r\n", "a@partner.example")
	eventually(t, "first delivery running", func() bool {
		for _, q := range h.tr.DeliveryQueues() {
			if q.Active == 1 {
				return true
			}
		}
		return false
	})
	second := h.submit("x\r\n", "b@partner.example")
	eventually(t, "second waiting in the queue", func() bool {
		for _, q := range h.tr.DeliveryQueues() {
			if q.Active == 1 && q.Items == 1 {
				return true
			}
		}
		return false
	})
	eventually(t, "marks settled", func() bool {
		marks := activeMarks(t, spool)
		_, firstMarked := marks[first]
		_, secondMarked := marks[second]
		return firstMarked && !secondMarked
	})

	// A clean Close while the second still waits (the first finishes
	// during Close; the second is never started).
	closed := make(chan error, 1)
	go func() { closed <- h.tr.Close(context.Background()) }()
	eventually(t, "closing", func() bool { h.tr.mu.Lock(); defer h.tr.mu.Unlock(); return h.tr.closed })
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	s, err := queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msgs, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].ID != second {
		t.Fatalf("after Close the spool holds %d messages", len(msgs))
	}
	if msgs[0].Crashes != 0 || !msgs[0].Recipients[0].NextAttempt.IsZero() {
		t.Errorf("a clean shutdown counted a crash: crashes %d, next attempt %v", msgs[0].Crashes, msgs[0].Recipients[0].NextAttempt)
	}
}

// TestFinishedMessageOnDiskIsRemovedAtStart: a message whose final state
// reached the disk but whose Remove did not (a crash in between, or a
// failed Remove, which remove() answers by persisting the final state) is
// removed at the next start instead of staying in the queue for ever.
func TestFinishedMessageOnDiskIsRemovedAtStart(t *testing.T) {
	spool := t.TempDir()
	s, err := queue.OpenLog(queue.LogOptions{Dir: spool})
	if err != nil {
		t.Fatal(err)
	}
	m := &queue.Message{Envelope: hub.Envelope{From: "sender@example.com",
		Recipients: []hub.Recipient{{Address: "alice@example.com"}}}}
	m.State = queue.State{Expanded: true, Recipients: []queue.RecipientState{{Address: "alice@example.com",
		DSN: hub.Recipient{Address: "alice@example.com"}, Status: queue.Delivered, Notified: true, Attempts: 1}}}
	if err := s.Put(context.Background(), m, strings.NewReader("x\r\n")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	md := &fake{result: ok}
	h := start(t, config(t, spool, ""), md, &fake{result: ok}, nil)
	eventually(t, "the settled message removed", func() bool { return h.tr.Stats().Messages == 0 })
	if left := spoolIDs(t, spool); len(left) != 0 {
		t.Errorf("spool not empty: %v", left)
	}
	if len(md.seen()) != 0 {
		t.Errorf("settled recipient delivered again: %+v", md.seen())
	}
}

// TestDelayDSNForUnreachable: a recipient parked in the unreachable queue
// (next attempt at its expiry) still gets its delay DSN once
// delay_dsn_after has passed, not only the failure at expiry.
func TestDelayDSNForUnreachable(t *testing.T) {
	spool := t.TempDir()
	clock := newFakeClock()
	md := &fake{result: ok}
	h := start(t, config(t, spool, `delay_dsn_after = "4h"
  message_expiration = "48h"`), md, &fake{result: ok}, clock.Now)
	id := h.submit("Subject: nowhere\r\n\r\nx\r\n", "dave@nowhere.example")
	eventually(t, "parked in the unreachable queue", func() bool {
		r, _ := h.recipient(id, 0)
		return r.Status == queue.Deferred && r.NextHop == unreachableQueue
	})
	clock.set(h, clock.Now().Add(4*time.Hour+time.Minute))
	eventually(t, "delay DSN", func() bool { return len(md.seen()) == 1 })
	d := md.seen()[0]
	if d.from != "" || !slices.Equal(d.addrs, []string{"sender@example.com"}) {
		t.Fatalf("delay DSN %+v", d)
	}
	checkDSN(t, d.body, "delayed", "4.4.4", "dave@nowhere.example")
	// The DSN may be delivered before the notify that queued it has
	// marked the recipient.
	eventually(t, "recipient marked delay-notified", func() bool {
		r, _ := h.recipient(id, 0)
		return r.DelayNotified
	})
	if r, _ := h.recipient(id, 0); r.Status != queue.Deferred {
		t.Errorf("recipient after the delay DSN: %+v", r)
	}
}

// TestDropIdleKeepsNewerQueue: a stale completion on a queue that was
// already dropped must not delete the live queue of the same next hop
// (that would let two queues run the hop at once, past its limit, and hide
// the live one from Queues).
func TestDropIdleKeepsNewerQueue(t *testing.T) {
	tr := &Transport{queues: map[delivery.NextHop]*hopQueue{}}
	hop := delivery.NextHop{Kind: delivery.KindSMTP, Connector: "partner", SmartHosts: "[192.0.2.5]:25"}
	old := &hopQueue{hop: hop}
	live := &hopQueue{hop: hop, active: 1}
	tr.queues[hop] = live
	tr.dropIdleLocked(old)
	if tr.queues[hop] != live {
		t.Fatal("dropping a stale queue deleted the live one")
	}
}

// TestListOwnerGetsMemberBounces: a remote list member's copy goes out
// with the list owner as envelope sender (RFC 5321 §3.10), so the failure
// DSN the hub itself generates for that member goes to the owner too, not
// to the original author; a direct recipient's failure still goes to the
// author, in a DSN of its own.
func TestListOwnerGetsMemberBounces(t *testing.T) {
	spool := t.TempDir()
	src := strings.Replace(configSource(spool), "#LISTS", `distribution_list "team-list@example.com" {
  members = ["carol@partner.example"]
  owner   = "owner@example.com"
}`, 1)
	cfg := loadConfig(t, src)
	fail := func(int, delivery.Recipient) delivery.Result {
		return delivery.Result{Status: delivery.Failed, Code: 550, Enhanced: "5.1.1", Text: "no such user"}
	}
	md, sm := &fake{result: ok}, &fake{result: fail}
	h := start(t, cfg, md, sm, nil)
	h.submit("Subject: to the list\r\n\r\nhello\r\n", "team-list@example.com", "dan@partner.example")
	h.waitIdle()
	var toOwner, toAuthor []call
	for _, c := range md.seen() {
		switch {
		case slices.Equal(c.addrs, []string{"owner@example.com"}):
			toOwner = append(toOwner, c)
		case slices.Equal(c.addrs, []string{"sender@example.com"}):
			toAuthor = append(toAuthor, c)
		default:
			t.Errorf("unexpected local delivery %+v", c)
		}
	}
	if len(toOwner) != 1 || len(toAuthor) != 1 {
		t.Fatalf("DSNs: %d to the owner, %d to the author (want 1 each)", len(toOwner), len(toAuthor))
	}
	checkDSN(t, toOwner[0].body, "failed", "5.1.1", "carol@partner.example")
	checkDSN(t, toAuthor[0].body, "failed", "5.1.1", "dan@partner.example")
	if strings.Contains(toAuthor[0].body, "carol@") || strings.Contains(toOwner[0].body, "dan@") {
		t.Error("a DSN names the other sender's recipient")
	}
}

// TestDelayNotifiedIsPersisted: once the delay DSN is queued, its
// DelayNotified flag reaches the disk; otherwise a recipient that sees no
// other Update before its expiry (the unreachable queue) gets the delay
// DSN again after every restart, clean ones included.
func TestDelayNotifiedIsPersisted(t *testing.T) {
	spool := t.TempDir()
	clock := newFakeClock()
	md := &fake{result: ok}
	h := start(t, config(t, spool, `delay_dsn_after = "4h"
  message_expiration = "48h"`), md, &fake{result: ok}, clock.Now)
	id := h.submit("Subject: nowhere\r\n\r\nx\r\n", "dave@nowhere.example")
	eventually(t, "parked in the unreachable queue", func() bool {
		r, _ := h.recipient(id, 0)
		return r.Status == queue.Deferred && r.NextHop == unreachableQueue
	})
	clock.set(h, clock.Now().Add(4*time.Hour+time.Minute))
	eventually(t, "delay DSN", func() bool { r, _ := h.recipient(id, 0); return r.DelayNotified })
	h.close()
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
		if m.ID == id && !m.Recipients[0].DelayNotified {
			t.Error("delay DSN queued but not recorded on disk: a restart sends it again")
		}
	}
}

// TestPoisonedWorkNotDialled: when a message is parked in the poison queue
// (here: the Maildir deliverer crashes on it), its work still waiting in
// another next hop's queue is not dialled: a poisoned message is never
// attempted again automatically.
func TestPoisonedWorkNotDialled(t *testing.T) {
	spool := t.TempDir()
	release := make(chan struct{})
	sm := &fake{result: ok, block: release}
	md := &fake{result: func(int, delivery.Recipient) delivery.Result { panic("boom") }}
	h := start(t, config(t, spool, `poison_threshold = 1
  max_per_domain_outbound_connections = 1`), md, sm, nil)
	h.submit("x\r\n", "blocker@partner.example") // holds the partner queue's one connection
	eventually(t, "blocker running", func() bool {
		for _, q := range h.tr.DeliveryQueues() {
			if q.Active == 1 {
				return true
			}
		}
		return false
	})
	h.submit("x\r\n", "alice@example.com", "carol@partner.example")
	eventually(t, "message poisoned", func() bool { return h.tr.Stats().Poisoned == 1 })
	close(release)
	eventually(t, "partner queue drained", func() bool {
		for _, q := range h.tr.DeliveryQueues() {
			if strings.HasPrefix(q.Name, "smtp:") && (q.Active > 0 || q.Items > 0) {
				return false
			}
		}
		return len(sm.seen()) >= 1
	})
	if got := sm.addrsDelivered(); !slices.Equal(got, []string{"blocker@partner.example"}) {
		t.Errorf("smtp deliveries %v: the poisoned message was dialled", got)
	}
	if s := h.tr.Stats(); s.Poisoned != 1 || s.PendingRecipients != 2 {
		t.Errorf("Stats %+v", s)
	}
}
