package transport

import (
	"bytes"
	"context"
	"strings"
	"time"

	"hubd/hub/dsn"
	"hubd/hub/queue"
	"hubd/hub/tracking"
	"hubd/internal/message"
	"hubd/policy"
)

// Delivery status notifications (RFC 3464). A recipient's final state is
// persisted first, with Notified false when it owes a DSN; the DSN is then
// queued through Submit (durably, with the null sender), and only then is
// the recipient marked Notified. A crash in between sends the DSN again
// after the restart rather than never: a duplicate notice is the lesser
// harm. A DSN that cannot be queued is tried again later; the message stays
// in the queue until it is.

// actionOf is the RFC 3464 action a settled recipient reports.
func actionOf(r queue.RecipientState) dsn.Action {
	switch {
	case r.Status == queue.Failed:
		return dsn.Failed
	case strings.HasPrefix(r.NextHop, "smtp:"):
		// Handed to another MTA: our part ends there (RFC 3464 §2.3.3).
		return dsn.Relayed
	default:
		return dsn.Delivered
	}
}

// owesDSN reports whether settled recipient r owes its sender a DSN:
// never to the null sender (RFC 5321 §6.1, RFC 3461 §6.2), and only as
// its NOTIFY asks (RFC 3461 §4.1).
func (t *Transport) owesDSN(m *queue.Message, r queue.RecipientState) bool {
	return dsnTo(m, r) != "" && dsn.Wanted(r.DSN.Notify, actionOf(r))
}

// dsnTo is where r's DSNs go: the envelope sender of the copy r received,
// which is a list owner's address for a list's remote members (RFC 5321
// §3.10: the owner, not the author, hears of their failures).
func dsnTo(m *queue.Message, r queue.RecipientState) string {
	if r.Sender != "" {
		return r.Sender
	}
	return m.Envelope.From
}

// notify queues the DSNs e owes: one per kind (failure, delay, success)
// and addressee (dsnTo) for all the recipients that owe one now.
func (t *Transport) notify(cfg *policy.Config, e *entry) {
	e.notifyMu.Lock()
	defer e.notifyMu.Unlock()
	now := t.clock()
	e.mu.Lock()
	if err := t.loadLocked(e); err != nil {
		e.mu.Unlock()
		t.log.Error("cannot read queued message", "id", e.id, "err", err)
		return
	}
	m := e.msg
	type dsnKey struct {
		a  dsn.Action
		to string
	}
	groups := map[dsnKey][]int{}
	var order []dsnKey
	add := func(a dsn.Action, i int) {
		k := dsnKey{a, dsnTo(m, m.Recipients[i])}
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], i)
	}
	delayDue := cfg.Hub.DelayDSNAfter > 0 && !now.Before(m.Arrived.Add(cfg.Hub.DelayDSNAfter))
	for i, r := range m.Recipients {
		switch {
		case e.inflight[i] || m.Poisoned:
		case r.Status.Settled() && !r.Notified:
			add(actionOf(r), i)
		case r.Status == queue.Deferred && delayDue && !r.DelayNotified && !m.Held:
			if dsnTo(m, r) != "" && dsn.Wanted(r.DSN.Notify, dsn.Delayed) {
				add(dsn.Delayed, i)
			} else {
				m.Recipients[i].DelayNotified = true // nothing owed; persisted with the next Update
				e.dirty = true
			}
		}
	}
	prepend := m.Prepend // read under e.mu: m.State changes under it
	reports := make([]dsn.Report, 0, len(order))
	for _, k := range order {
		reports = append(reports, t.report(cfg, m, k.a, k.to, groups[k], now))
	}
	e.mu.Unlock()

	queued := false
	for n, k := range order {
		a := k.a
		id, err := t.sendDSN(m, prepend, reports[n])
		e.mu.Lock()
		if err != nil {
			t.log.Error("cannot queue DSN; will try again", "id", m.ID, "action", a, "err", err)
			e.notifyRetry = now.Add(backoff(cfg.Hub, 1)).UnixNano()
			e.mu.Unlock()
			continue
		}
		for _, i := range groups[k] {
			if a == dsn.Delayed {
				m.Recipients[i].DelayNotified = true
			} else {
				m.Recipients[i].Notified = true
			}
		}
		e.dirty = true // persisted with the next Update, or before m is dropped (evict.go)
		e.notifyRetry = 0
		queued = true
		t.meters.dsnQueued(a, m, groups[k])
		e.mu.Unlock()
		t.log.Info("DSN queued", "id", m.ID, "action", a, "dsn_id", id, "to", k.to, "rcpts", len(groups[k]))
		ev := t.event(m, queue.RecipientState{})
		ev.Event, ev.Reference, ev.Reply, ev.Recipient = tracking.DSN, string(id), string(a), k.to
		t.track.Record(ev)
	}
	if queued {
		// Record the flags now unless the message is finished (its Remove
		// follows): a recipient may see no other Update for a long time (the
		// unreachable queue waits for its expiry), and every restart, clean
		// ones included, would queue its DSN again. DSNs are rare enough
		// for the extra fsync.
		e.mu.Lock()
		if !finished(m.State) {
			t.persist(e, cloneState(m.State))
		}
		e.mu.Unlock()
	}
}

// report builds the DSN report to to for recipients idx of m. e.mu is held.
func (t *Transport) report(cfg *policy.Config, m *queue.Message, a dsn.Action, to string, idx []int, now time.Time) dsn.Report {
	env := m.Envelope // dsn.Build addresses the DSN to Envelope.From
	env.From = to
	rep := dsn.Report{
		ReportingMTA: cfg.Hub.Hostname,
		Envelope:     &env,
		QueueID:      string(m.ID),
		Now:          now,
	}
	for _, i := range idx {
		r := m.Recipients[i]
		dr := dsn.Recipient{
			FinalRecipient:    r.Address,
			OriginalRecipient: r.DSN.ORCPT,
			EnvelopeRecipient: r.DSN.Address,
			Action:            a,
			Status:            r.LastReply.Enhanced,
			RemoteMTA:         r.LastReply.RemoteMTA,
			LastAttempt:       now,
		}
		if r.LastReply.Code != 0 {
			dr.DiagnosticCode = replyString(r.LastReply)
		}
		switch a {
		case dsn.Delayed:
			dr.WillRetryUntil = m.Arrived.Add(cfg.Hub.MessageExpiration)
		case dsn.Delivered, dsn.Relayed:
			if dr.Status == "" || dr.Status[0] != '2' {
				dr.Status = "2.0.0"
			}
		}
		if dr.Status == "" {
			dr.Status = map[dsn.Action]string{dsn.Failed: "5.0.0", dsn.Delayed: "4.0.0"}[a]
		}
		rep.Recipients = append(rep.Recipients, dr)
	}
	return rep
}

// sendDSN builds the notification and queues it through Submit, the one
// door into the hub.
func (t *Transport) sendDSN(m *queue.Message, prepend string, rep dsn.Report) (id string, err error) {
	rc, err := t.openContent(m.ID, prepend, nil)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	// The header firewall applies to the original a DSN returns: its
	// hub-internal X-Hubd-* fields stay inside (as Exchange's DSNs do).
	rep.Original = message.StripOrgHeaders(rc)
	if m.Envelope.RequireTLS {
		// RFC 8689 §5: a REQUIRETLS message's DSN returns headers only and
		// travels with REQUIRETLS itself.
		env := *rep.Envelope
		env.DSNRet = "HDRS"
		rep.Envelope = &env
	}
	env, body, err := dsn.Build(rep)
	if err != nil {
		return "", err
	}
	env.RequireTLS = m.Envelope.RequireTLS
	if env.ReceivedAt.IsZero() {
		env.ReceivedAt = rep.Now
	}
	qid, err := t.Submit(context.Background(), env, bytes.NewReader(body))
	return string(qid), err
}
