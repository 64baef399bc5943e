package clusterops

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"hubd/hub/ops"
)

// The hub's own queues, listed after the delivery queues in this order
// (hub/transport).
var specialQueues = []string{"submission", "unreachable", "poison"}

// stateRank orders the states of one queue on several hubs: the merged
// state is the highest any hub has. Suspended on any hub (work enters,
// none leaves there) and Retry on any (that hub cannot reach the next
// hop) are what an operator must see; then Active (deliveries run), then
// Ready.
var stateRank = map[string]int{"Ready": 0, "Active": 1, "Retry": 2, "Suspended": 3}

// mergeQueues merges the hubs' queue lists by name, field by field:
//
//   - Kind: the first hub's (they agree: it follows from the name).
//   - State: the highest by stateRank: Suspended, else Retry, else Active,
//     else Ready.
//   - Override: any hub's (a suspension is asked of every hub).
//   - Messages, Recipients, Active: summed (a message has one owner, so
//     none is counted twice).
//   - Oldest: the earliest.
//   - NextRetry, LastError: of a queue in Retry, those of the hubs where
//     it is in Retry (the next hop's probe: the earliest, and the error of
//     the hub probing first); of another queue, the earliest retry of its
//     deferred recipients on any hub, and the reply of the hub with the
//     oldest message that has one (a single hub's rule).
//
// Delivery queues come sorted by name, then submission, unreachable and
// poison.
func mergeQueues(lists [][]ops.QueueInfo) []ops.QueueInfo {
	byName := map[string][]ops.QueueInfo{}
	for _, l := range lists {
		for _, qi := range l {
			byName[qi.Name] = append(byName[qi.Name], qi)
		}
	}
	var hops []string
	for name := range byName {
		if !slices.Contains(specialQueues, name) {
			hops = append(hops, name)
		}
	}
	slices.Sort(hops)
	out := make([]ops.QueueInfo, 0, len(byName))
	for _, name := range append(hops, specialQueues...) {
		if qs := byName[name]; qs != nil {
			out = append(out, mergeQueue(qs))
		}
	}
	return out
}

// mergeQueue merges one queue as several hubs see it (see mergeQueues).
func mergeQueue(qs []ops.QueueInfo) ops.QueueInfo {
	m := ops.QueueInfo{Name: qs[0].Name, Kind: qs[0].Kind, State: qs[0].State}
	for _, q := range qs {
		if stateRank[q.State] > stateRank[m.State] {
			m.State = q.State
		}
		m.Override = cmp.Or(m.Override, q.Override)
		m.Messages += q.Messages
		m.Recipients += q.Recipients
		m.Active += q.Active
		m.Oldest = earliest(m.Oldest, q.Oldest)
	}
	var errorAt time.Time // the time LastError was chosen by
	for _, q := range qs {
		if m.State == "Retry" {
			if q.State != "Retry" {
				continue
			}
			if first := earliest(m.NextRetry, q.NextRetry); m.LastError == "" || !first.Equal(m.NextRetry) {
				m.LastError = cmp.Or(q.LastError, m.LastError) // the hub that probes first
			}
			m.NextRetry = earliest(m.NextRetry, q.NextRetry)
			continue
		}
		m.NextRetry = earliest(m.NextRetry, q.NextRetry)
		if q.LastError != "" && (m.LastError == "" || !q.Oldest.IsZero() && q.Oldest.Before(errorAt)) {
			m.LastError, errorAt = q.LastError, q.Oldest
		}
	}
	return m
}

// earliest is the earlier of a and b, the zero time standing for none.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// comparePos orders messages as a listing does: by arrival (the wall
// clock, as a position read back has no monotonic reading), then by queue
// id.
func comparePos(a, b ops.MessageSummary) int {
	return cmp.Or(cmp.Compare(a.Arrived.UnixNano(), b.Arrived.UnixNano()), strings.Compare(a.ID, b.ID))
}

// mergeMessages merges the hubs' pages, each asked with the same filter
// and limit, into the cluster's page: the first limit of them in the
// listing order. A message listed by two hubs (taken over between their
// answers) is listed once.
func mergeMessages(pages []ops.MessageList, limit int) ops.MessageList {
	out := ops.MessageList{Messages: []ops.MessageSummary{}}
	for _, p := range pages {
		out.Messages = append(out.Messages, p.Messages...)
		out.Truncated = out.Truncated || p.Truncated
	}
	slices.SortStableFunc(out.Messages, comparePos)
	out.Messages = slices.CompactFunc(out.Messages, func(a, b ops.MessageSummary) bool { return a.ID == b.ID })
	if len(out.Messages) > limit {
		out.Messages = out.Messages[:limit:limit]
		out.Truncated = true
	}
	if out.Truncated && len(out.Messages) > 0 {
		out.Next = ops.PositionOf(out.Messages[len(out.Messages)-1]).String()
	}
	return out
}
