package transport

// The categorizer's part of a pass: the envelope recipients expanded once
// into the message's fixed recipient list (aliases, lists, routing
// decisions), the DKIM signature made then (dkim.go), and what a crash of
// the categorizer costs the message.

import (
	"bufio"
	"fmt"
	"io"
	"net/textproto"
	"time"

	"go.opentelemetry.io/otel/trace"

	"hubd/hub/categorizer"
	"hubd/hub/delivery"
	"hubd/hub/queue"
	"hubd/policy"
)

// expand resolves the envelope recipients once, through the categorizer,
// into the fixed recipient list, and persists it. It reports whether the
// pass may go on to routing, and whether the categorizer crashed.
func (t *Transport) expand(cfg *policy.Config, e *entry, span trace.Span) (proceed, crashed bool) {
	sig, signedOver := t.presign(cfg, e, span) // dkim.go, before e.mu
	e.mu.Lock()
	defer e.mu.Unlock()
	m := e.msg
	if m.Poisoned || m.Held {
		return false, false
	}
	if m.Expanded {
		return true, false
	}
	inputs := make([]categorizer.Input, len(m.Recipients))
	for i, r := range m.Recipients {
		inputs[i] = categorizer.Input{Address: r.Address, DSN: r.DSN}
	}
	info := categorizer.Message{Size: m.Size}
	hops := 0
	if len(cfg.DistributionLists) > 0 {
		// Only lists need the message's headers: the trace of lists already
		// expanded, and the hop count (DESIGN.md invariant 7).
		info.ExpandedLists, hops = t.readTrace(m)
	}
	outcomes, err := categorizeSafely(cfg, info, inputs)
	if err != nil {
		st := cloneState(m.State)
		t.crashed(cfg, e, &st, "categorizer: "+err.Error())
		now := t.clock()
		crashed := delivery.Result{Status: delivery.Deferred, Code: 451, Enhanced: "4.3.0", Text: "Categorizer failed"}
		for i := range st.Recipients {
			// Each crash counts as a failed attempt, so the message still
			// expires (4.4.7) if it is never poisoned.
			st.Recipients[i] = t.settle(cfg, m, st.Recipients[i], crashed, "", now, time.Time{})
		}
		t.persist(e, st)
		t.recordAll(m, st.Recipients)
		return false, true
	}
	prepend := m.Prepend
	switch {
	case sig == "":
	case prepend == signedOver:
		prepend = sig + prepend // once: only before Expanded (dkim.go)
	default:
		// Cannot happen while the pass owns the message (presign).
		t.log.Error("DKIM signature dropped: the message's stored fields changed while it was signed", "id", m.ID)
	}
	st := queue.State{Expanded: true, Crashes: m.Crashes, Deaths: m.Deaths, Interrupted: m.Interrupted, LastDeath: m.LastDeath,
		Prepend: prepend}
	identity := len(outcomes) == len(inputs)
	for k, o := range outcomes {
		rs := queue.RecipientState{Address: o.Address, ResolvedFrom: o.ResolvedFrom, DSN: inputs[o.Input].DSN,
			Status: queue.Queued, Sender: o.Sender, Lists: o.Lists}
		if len(o.Lists) > 0 && hops >= cfg.Hub.MaxHopCount {
			o.Disposition = categorizer.Fail
			o.Reply = &policy.Reply{Code: 554, Enhanced: "5.4.6", Text: fmt.Sprintf(
				"Hop count exceeded - possible mail loop (%d Received: headers, list not expanded)", hops)}
		}
		switch o.Disposition {
		case categorizer.Fail:
			rs.Status = queue.Failed
			rs.LastReply = replyOf(o.Reply)
			rs.Notified = !t.owesDSN(m, rs)
		case categorizer.AlreadyExpanded:
			rs.Status = queue.Delivered
			rs.LastReply = replyOf(o.Reply)
			rs.Notified = true
		}
		if o.Input != k || o.Address != inputs[k].Address || rs.Status != queue.Queued || len(o.Lists) > 0 {
			identity = false
		}
		st.Recipients = append(st.Recipients, rs)
		t.recordExpansion(m, o)
		t.expansionEvents(span, k, o)
	}
	if identity {
		// No alias expanded and nothing failed: the recipient list is the
		// envelope's own. Persisting it would cost an fsync per message for
		// nothing; the first Update after an attempt records it. If a crash
		// comes first, the restart expands again, perhaps differently after a
		// configuration change, which is harmless: delivery keys derive from
		// the final address, not from its position (deliveryKey).
		e.msg.State = st
	} else {
		t.persist(e, st)
	}
	for _, rs := range st.Recipients {
		if rs.Status.Settled() {
			t.record(m, rs)
		}
	}
	return true, false
}

// readTrace reads m's header section for the lists it was already
// expanded for (categorizer.TraceHeader) and its Received: count.
func (t *Transport) readTrace(m *queue.Message) (lists []string, hops int) {
	rc, err := t.store.Open(m.ID)
	if err != nil {
		t.log.Warn("cannot read message headers", "id", m.ID, "err", err)
		return nil, 0
	}
	defer rc.Close()
	hdr, err := textproto.NewReader(bufio.NewReader(io.LimitReader(rc, 1<<20))).ReadMIMEHeader()
	if err != nil && len(hdr) == 0 {
		return nil, 0
	}
	for _, v := range hdr.Values(categorizer.TraceHeader) {
		if list, _, ok := categorizer.ParseTrace(v); ok {
			lists = append(lists, list)
		}
	}
	return lists, len(hdr.Values("Received"))
}

func categorizeSafely(cfg *policy.Config, m categorizer.Message, in []categorizer.Input) (out []categorizer.Outcome, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return categorizer.CategorizeMessage(cfg, m, in), nil
}

// crashed counts a crash of e's processing in st and parks the message in
// the poison queue at the threshold. e.mu is held.
func (t *Transport) crashed(cfg *policy.Config, e *entry, st *queue.State, what string) {
	st.Crashes++
	t.log.Error("processing crashed", "id", e.msg.ID, "err", what, "crashes", st.Crashes,
		"poison_threshold", cfg.Hub.PoisonThreshold)
	if st.Crashes >= cfg.Hub.PoisonThreshold && !st.Poisoned {
		st.Poisoned = true
		t.recordPoison(e.msg, st.Crashes, what)
	}
}
