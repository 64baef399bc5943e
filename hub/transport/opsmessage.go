package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"hubd/hub"
	"hubd/hub/ops"
	"hubd/hub/queue"
	"hubd/hub/tracking"
)

// Messages: the operator's view of single messages (listing, showing,
// exporting) and the actions on them (hold, release, retry, delete).
//
// Hold is persisted (queue.State.Held), as Postfix's hold queue is: a held
// message has no work waiting in any delivery queue and is never scheduled,
// expired or sent a delay DSN; a delivery already running when the hold
// comes finishes, and its outcome is settled (and notified) normally.
//
// Delete follows the order every final state follows (notify.go): first
// every pending recipient is failed and persisted with Notified false when
// a DSN is owed, then the DSN is queued, then the message is removed. A
// kill -9 at any point leaves either the message as it was (held; the
// delete did not answer), or a message whose recipients are all settled —
// never delivered again — whose DSN the next start queues.

// deletedReply is what each pending recipient of a message deleted with
// an NDR fails with. RFC 3463 X.3.0 ("other or undefined mail system
// status") names the reporting system itself as the cause, which is the
// truth: no remote server refused the message, the hub's administrator
// removed it (Exchange's Remove-Message -WithNDR and Postfix's postsuper
// -e likewise return the message to its sender as undeliverable). The
// class is permanent (5): the message will not be tried again.
var deletedReply = queue.Reply{Code: 550, Enhanced: "5.3.0", Text: "Message deleted from the queue by the administrator"}

// deleteWait bounds how long Delete waits for a delivery of the message
// that is running now to end.
const deleteWait = time.Minute

// Message returns everything about one message: its envelope, its header
// section as stored, every recipient with its state, and every attempt
// with its reply from the tracking log (the store keeps only the last
// reply of each recipient).
func (t *Transport) Message(ctx context.Context, id string) (ops.MessageDetail, error) {
	mv, ok := t.viewOf(hub.QueueID(id), t.opsState())
	if !ok {
		return ops.MessageDetail{}, fmt.Errorf("%w: no message %q in the queue", ops.ErrNotFound, id)
	}
	m := mv.m
	d := ops.MessageDetail{MessageSummary: mv.summary(), Envelope: opsEnvelope(m.Envelope), Crashes: mv.st.Crashes,
		TraceID: traceID(m.Envelope.TraceParent), Headers: []ops.Header{}}
	hdrs, err := t.readHeaders(m.ID)
	if errors.Is(err, fs.ErrNotExist) {
		return ops.MessageDetail{}, fmt.Errorf("%w: message %q left the queue", ops.ErrNotFound, id)
	}
	if err != nil {
		return ops.MessageDetail{}, err
	}
	d.Headers = hdrs
	attempts, err := t.attempts(m)
	if err != nil {
		t.log.Warn("cannot read the tracking log for message show", "id", id, "err", err)
	}
	for i, r := range mv.st.Recipients {
		q, _ := mv.where(i)
		rd := ops.RecipientDetail{Address: r.Address, ResolvedFrom: r.ResolvedFrom, Status: string(r.Status), Queue: q,
			Attempts: attempts[strings.ToLower(r.Address)]}
		if rd.Attempts == nil {
			rd.Attempts = []ops.Attempt{}
		}
		if r.Status == queue.Deferred && mv.waiting(i) {
			rd.NextAttempt = r.NextAttempt.UTC()
		}
		d.Recipients = append(d.Recipients, rd)
	}
	return d, nil
}

func opsEnvelope(e hub.Envelope) ops.Envelope {
	out := ops.Envelope{From: e.From, Connector: e.Connector, ClientAddr: e.ClientAddr, ClientHelo: e.ClientHelo,
		AuthUser: e.AuthUser, ReceivedAt: e.ReceivedAt.UTC(), SMTPUTF8: e.SMTPUTF8, Body: e.Body,
		RequireTLS: e.RequireTLS, DSNRet: e.DSNRet, DSNEnvID: e.DSNEnvID, Recipients: []string{}}
	for _, r := range e.Recipients {
		out.Recipients = append(out.Recipients, r.Address)
	}
	return out
}

// traceID is the trace id of a W3C traceparent ("00-<trace>-<span>-<flags>").
func traceID(tp string) string {
	// version-traceid-parentid-flags (W3C Trace Context §3.2)
	_, rest, _ := strings.Cut(tp, "-")
	id, rest, _ := strings.Cut(rest, "-")
	if len(id) != 32 || strings.Count(rest, "-") != 1 {
		return ""
	}
	return id
}

// maxHeaderRead bounds how much of a body is read for its header section.
const maxHeaderRead = 1 << 20

// readHeaders reads the header section of a stored message, unfolded
// (RFC 5322 §2.2.3: a CRLF followed by white space is removed), in order.
// Only the header section is read, never the body.
func (t *Transport) readHeaders(id hub.QueueID) ([]ops.Header, error) {
	rc, err := t.store.Open(id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	br := bufio.NewReader(io.LimitReader(rc, maxHeaderRead))
	out := []ops.Header{}
	for {
		line, err := br.ReadString('\n')
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return out, nil // the blank line ending the header section, or EOF
		}
		if (line[0] == ' ' || line[0] == '\t') && len(out) > 0 {
			out[len(out)-1].Value += line
		} else if name, value, ok := strings.Cut(line, ":"); ok {
			out = append(out, ops.Header{Name: name, Value: strings.TrimLeft(value, " \t")})
		}
		if err != nil {
			return out, nil
		}
	}
}

// attempts reads m's delivery attempts from the tracking log, by
// recipient (lower-cased).
func (t *Transport) attempts(m *queue.Message) (map[string][]ops.Attempt, error) {
	out := map[string][]ops.Attempt{}
	dir := t.track.Dir()
	if dir == "" {
		return out, nil
	}
	f := tracking.Filter{QueueID: string(m.ID), Since: m.Arrived.Add(-time.Minute)}
	err := tracking.Search(dir, f, func(ev tracking.Event) bool {
		switch ev.Event {
		case tracking.Defer, tracking.Send, tracking.Deliver, tracking.Fail:
			k := strings.ToLower(ev.Recipient)
			out[k] = append(out[k], ops.Attempt{Time: ev.Time.UTC(), Event: string(ev.Event), NextHop: ev.NextHop,
				RemoteMTA: ev.RemoteMTA, Reply: ev.Reply})
		}
		return true
	})
	return out, err
}

// OpenMessage returns the message as queued.
func (t *Transport) OpenMessage(ctx context.Context, id string) (io.ReadCloser, error) {
	if !t.Queued(hub.QueueID(id)) {
		return nil, fmt.Errorf("%w: no message %q in the queue", ops.ErrNotFound, id)
	}
	rc, err := t.store.Open(hub.QueueID(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: message %q left the queue", ops.ErrNotFound, id)
	}
	return rc, err
}

// lockedEntry is the queued message id with its e.mu held and its
// Message in RAM (lockLoaded), or ops.ErrNotFound.
func (t *Transport) lockedEntry(id string) (*entry, error) {
	for {
		e, err := t.entryOf(id)
		if err != nil {
			return nil, err
		}
		if err := t.lockLoaded(e); !errors.Is(err, errAsleep) {
			return e, err
		}
	}
}

// entryOf is the queued message id, or ops.ErrNotFound.
func (t *Transport) entryOf(id string) (*entry, error) {
	if e := t.lookup(hub.QueueID(id)); e != nil {
		return e, nil
	}
	return nil, fmt.Errorf("%w: no message %q in the queue", ops.ErrNotFound, id)
}

// Hold parks a message until Release; see the comment at the top.
func (t *Transport) Hold(ctx context.Context, id string) error {
	e, err := t.lockedEntry(id)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	if e.msg.Held {
		return nil
	}
	st := cloneState(e.msg.State)
	st.Held = true
	if err := t.store.Update(ctx, e.msg.ID, st); err != nil {
		return fmt.Errorf("cannot persist the hold: %w", err)
	}
	e.msg.State = st
	// Take its waiting work out of the delivery queues (e.mu before t.mu,
	// the usual order), and forget its schedule.
	t.mu.Lock()
	pulled := t.takeWaitingLocked(func(it *workItem) bool { return it.e == e })
	t.scheduleLocked(e, time.Time{})
	t.mu.Unlock()
	for _, it := range pulled {
		e.landed(it.indexes)
	}
	t.depth.update(e)
	t.log.Warn("message held by operator", "id", id)
	return nil
}

// Release ends a hold, or moves a poisoned message back into the queue
// with its crash counts cleared. Its pending recipients are due now.
func (t *Transport) Release(ctx context.Context, id string) error {
	e, err := t.lockedEntry(id)
	if err != nil {
		return err
	}
	st := cloneState(e.msg.State)
	poisoned := st.Poisoned
	if !st.Held && !poisoned {
		e.mu.Unlock()
		return fmt.Errorf("%w: message %q is neither held nor poisoned", ops.ErrConflict, id)
	}
	st.Held, st.Poisoned = false, false
	if poisoned {
		st.Crashes, st.Deaths, st.Interrupted = 0, 0, 0
	}
	now := t.clock()
	for i := range st.Recipients {
		if r := &st.Recipients[i]; !r.Status.Settled() && !e.inflight[i] {
			r.NextAttempt = now
		}
	}
	if err := t.store.Update(ctx, e.msg.ID, st); err != nil {
		e.mu.Unlock()
		return fmt.Errorf("cannot persist the release: %w", err)
	}
	e.msg.State = st
	t.depth.update(e)
	e.mu.Unlock()
	if poisoned {
		t.mu.Lock()
		e.suspect = false
		t.mu.Unlock()
		t.log.Warn("message released from the poison queue by operator; crash counts cleared", "id", id)
		ev := t.event(e.msg, queue.RecipientState{})
		ev.Event, ev.Source, ev.Reply = tracking.Poison, "ADMIN", "released by operator"
		t.track.Record(ev)
	} else {
		t.log.Warn("message released by operator", "id", id)
	}
	t.reschedule(e)
	return nil
}

// Retry makes a message's deferred recipients due now (Postfix's postqueue
// -i), and lets the next hops they wait for, if in Retry, be probed now.
func (t *Transport) Retry(ctx context.Context, id string) error {
	e, err := t.lockedEntry(id)
	if err != nil {
		return err
	}
	held, poisoned := e.msg.Held, e.msg.Poisoned
	var hops []string
	for _, r := range e.msg.Recipients {
		if r.Status == queue.Deferred && r.NextHop != "" {
			hops = append(hops, r.NextHop)
		}
	}
	e.mu.Unlock()
	switch {
	case poisoned:
		return fmt.Errorf("%w: message %q is in the poison queue; release it instead", ops.ErrConflict, id)
	case held:
		return fmt.Errorf("%w: message %q is held; release it instead", ops.ErrConflict, id)
	}
	for _, h := range hops {
		t.probeNow(h)
	}
	t.makeDue(e, true, func(queue.RecipientState) bool { return true })
	return nil
}

// Delete removes a message; with ndr its sender hears of every recipient
// still pending. See the comment at the top for the order of steps.
func (t *Transport) Delete(ctx context.Context, id string, ndr bool) error {
	// Held first, durably: nothing new starts; then wait for what runs.
	// (A held message never falls asleep: dormant.go.)
	if err := t.Hold(ctx, id); err != nil {
		return err
	}
	e, err := t.entryOf(id)
	if err != nil {
		return err
	}
	if err := t.waitNotInFlight(ctx, e); err != nil {
		return err
	}
	cfg := t.cfg.Load()
	if err := t.lockLoaded(e); err != nil {
		return err
	}
	st := cloneState(e.msg.State)
	// Expanded: the recipient list is final as it is (a later pass must not
	// categorize the envelope again and revive failed recipients).
	st.Held, st.Poisoned, st.Expanded = false, false, true
	var failed []int
	for i := range st.Recipients {
		r := &st.Recipients[i]
		if r.Status.Settled() {
			continue
		}
		r.Status, r.LastReply, r.NextAttempt = queue.Failed, deletedReply, time.Time{}
		r.Notified = !ndr || !t.owesDSN(e.msg, *r)
		failed = append(failed, i)
	}
	if err := t.store.Update(ctx, e.msg.ID, st); err != nil {
		e.mu.Unlock()
		return fmt.Errorf("cannot persist the deletion (the message stays held): %w", err)
	}
	e.msg.State = st
	t.depth.update(e)
	for _, i := range failed {
		ev := t.event(e.msg, st.Recipients[i])
		ev.Event, ev.Source = tracking.Fail, "ADMIN"
		t.track.Record(ev)
	}
	e.mu.Unlock()
	t.log.Warn("message deleted by operator", "id", id, "ndr", ndr, "recipients", len(failed))
	t.notify(cfg, e)
	t.reschedule(e) // removes it once every DSN owed is queued
	return nil
}

// waitNotInFlight waits until no delivery of e runs (its waiting work was
// taken out by Hold; a running one ends on its own).
func (t *Transport) waitNotInFlight(ctx context.Context, e *entry) error {
	ctx, cancel := context.WithTimeout(ctx, deleteWait)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		e.mu.Lock()
		n := len(e.inflight)
		e.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("a delivery of message %s is still running; the message stays held: %w", e.id, ctx.Err())
		case <-tick.C:
		}
	}
}
