package transport

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"hubd/hub"
	"hubd/hub/ops"
)

// Listing: Messages, a page at a time (ops "Paging").
//
// The order of a listing is arrival, then queue id. The depth tracker
// keeps every queued message in a list in arrival order (depth.go,
// arrivals: time and key), so a page is found without sorting the queue:
// a binary search finds where the page starts, and the walk takes the
// records after it a chunk at a time under the tracker's lock (a leaf,
// held only to copy them), finds each one's depth share in its entry or,
// asleep, in its note (dormant.go) under t.mu, then reads each message
// (view: a store Get when it waits with its Message dropped or asleep)
// only when the walk reaches it and what RAM says of it lets it match the
// filter. The walk
// stops at the page's limit plus one, which says whether it is truncated.
// A page costs O(log queue + page) when the filter matches often; a
// filter on the queue, the held or poisoned state or the age skips what
// cannot match without reading it; one on the sender or a recipient reads
// every message it passes.
//
// The arrival list orders messages by arrival only; messages that share
// an arrival time (concurrent submissions, or a test's clock) are taken
// together and sorted by id within a chunk, so that a chunk never splits
// them. Messages that left stay in the list until it is compacted
// (depth.go, forget and oldest); the walk skips them.
//
// Times are compared on the wall clock (UnixNano): a position read back
// from a client has no monotonic reading. A wall clock stepped back
// while messages arrive breaks the arrival order the list is kept in, and
// a page boundary falling among those messages may then skip or repeat
// some of them.

// pagePos is a position in the listing order.
type pagePos struct {
	arrived int64 // wall clock, UnixNano
	id      hub.QueueID
}

// firstPos is before every message.
var firstPos = pagePos{arrived: math.MinInt64}

// afterRun is after every message that arrived at ns: no queue id has
// the byte 0xff.
func afterRun(ns int64) pagePos { return pagePos{arrived: ns, id: "\xff"} }

func (p pagePos) compare(q pagePos) int {
	return cmp.Or(cmp.Compare(p.arrived, q.arrived), strings.Compare(string(p.id), string(q.id)))
}

// arrival is one queued message as a walk sees it: its place, and a copy
// of its depth share (where its pending recipients wait), read without
// reading the message. e is its entry; nil when it is asleep (dormant.go),
// and parked is then the queue it is parked on, if any.
type arrival struct {
	e              *entry
	parked         *hopQueue
	pos            pagePos
	held, poisoned bool
	rcpts          []depthCount
}

// recipientsIn is the number of the entry's pending recipients in the
// queue named name.
func (a arrival) recipientsIn(name string) int {
	n := 0
	for _, c := range a.rcpts {
		if c.queue == name {
			n += int(c.n)
		}
	}
	return n
}

// walkChunk is how many entries a walk takes under the depth tracker's
// lock at a time.
const walkChunk = 256

// arrivalsAfter returns about n live messages that come after pos in the
// listing order, in that order, and the position up to which it looked:
// every live message between pos and there is returned. It reads no
// message: the arrival list under the tracker's lock, then each one's
// entry or, asleep, its note under t.mu.
func (t *Transport) arrivalsAfter(pos pagePos, n int) ([]arrival, pagePos) {
	d := t.depth
	var recs []arrivalRec
	d.mu.Lock()
	list := d.arrivals
	i := sort.Search(len(list), func(i int) bool { return list[i].at >= pos.arrived })
	seen, reached := 0, pos
	for ; i < len(list); i++ {
		r := list[i]
		// Stop between two arrival times, never inside a run of one (a
		// run is sorted by id below), once enough is taken or looked at.
		if (len(recs) >= n || seen >= 16*n) && r.at != reached.arrived {
			break
		}
		seen++
		reached = afterRun(r.at)
		if _, left := d.left[r.key]; !left {
			recs = append(recs, r)
		}
	}
	d.mu.Unlock()
	if i == len(list) {
		reached = afterRun(math.MaxInt64)
	}
	out := make([]arrival, 0, len(recs))
	var counts []depthCount
	t.mu.Lock()
	for _, r := range recs {
		a := arrival{pos: pagePos{arrived: r.at, id: r.key.ID()}}
		if a.pos.compare(pos) <= 0 {
			continue
		}
		var share depthShare
		if e := t.msgs[a.pos.id]; e != nil {
			d.mu.Lock()
			share = e.depth
			share.more = slices.Clone(share.more)
			d.mu.Unlock()
			if !share.counted || share.gone {
				continue // not queued yet (Submit), or left
			}
			a.e = e
		} else if note, asleep := t.asleepLocked(a.pos.id); asleep {
			d.mu.Lock()
			share = d.shareOf(note)
			d.mu.Unlock()
			a.parked = t.parkedQueueLocked(note)
		} else {
			continue // left the queue
		}
		start := len(counts)
		counts = share.counts(counts)
		a.held, a.poisoned, a.rcpts = share.held, share.poisoned, counts[start:len(counts):len(counts)]
		out = append(out, a)
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b arrival) int { return a.pos.compare(b.pos) })
	return out, reached
}

// walk calls visit with every live entry after from, in listing order,
// until visit returns false, the entries run out, or ctx ends. visit is
// called with no lock held.
func (t *Transport) walk(ctx context.Context, from pagePos, chunk int, visit func(arrival) bool) error {
	for pos := from; ; {
		if err := ctx.Err(); err != nil {
			return err
		}
		got, reached := t.arrivalsAfter(pos, chunk)
		for _, a := range got {
			if !visit(a) {
				return nil
			}
		}
		if reached.arrived == math.MaxInt64 {
			return nil
		}
		pos = reached
	}
}

// Messages lists the messages matching f, oldest first, a page at a time
// (see the comment at the top).
func (t *Transport) Messages(ctx context.Context, f ops.MessageFilter) (ops.MessageList, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = ops.DefaultLimit
	}
	from := firstPos
	if f.After != "" {
		var err error
		if from, err = t.positionOf(f.After); err != nil {
			return ops.MessageList{}, err
		}
	}
	st := t.opsState()
	out := ops.MessageList{Messages: []ops.MessageSummary{}}
	var cutoff int64 = math.MaxInt64 // arrived after it: younger than f.OlderThan
	if f.OlderThan > 0 {
		cutoff = st.now.Add(-f.OlderThan).UnixNano()
	}
	err := t.walk(ctx, from, min(limit+1, walkChunk), func(a arrival) bool {
		if a.pos.arrived > cutoff {
			return false // so is every message after it
		}
		if !a.mayMatch(f) {
			return true
		}
		mv, ok := t.arrivalView(a, st)
		if !ok {
			return true
		}
		s := mv.summary()
		if !mv.matches(s, f) {
			return true
		}
		if len(out.Messages) == limit {
			out.Truncated = true
			return false
		}
		out.Messages = append(out.Messages, s)
		return true
	})
	if err != nil {
		return ops.MessageList{}, err
	}
	if out.Truncated {
		out.Next = ops.PositionOf(out.Messages[len(out.Messages)-1]).String()
	}
	return out, nil
}

// positionOf reads a listing's After.
func (t *Transport) positionOf(after string) (pagePos, error) {
	p, err := ops.ParsePosition(after)
	if err != nil {
		return pagePos{}, err
	}
	if !p.Arrived.IsZero() {
		return pagePos{arrived: p.Arrived.UnixNano(), id: hub.QueueID(p.ID)}, nil
	}
	mv, ok := t.viewOf(hub.QueueID(p.ID), t.opsState())
	if !ok {
		return pagePos{}, fmt.Errorf("%w: no message %q in the queue to list after; give the position a listing returned as next (ID@ARRIVED)",
			ops.ErrNotFound, p.ID)
	}
	return pagePos{arrived: mv.m.Arrived.UnixNano(), id: mv.m.ID}, nil
}

// mayMatch reports whether the message may pass f, from what RAM says of
// it (its depth share), so that one that cannot is never read. It agrees
// with matches: where places a recipient where the depth share counts it,
// but for a poisoned message's recipients in flight.
func (a arrival) mayMatch(f ops.MessageFilter) bool {
	if f.Queue != "" && !a.poisoned && a.recipientsIn(f.Queue) == 0 {
		return false
	}
	switch f.State {
	case "":
		return true
	case ops.StatePoisoned:
		return a.poisoned
	case ops.StateHeld:
		return a.held && !a.poisoned
	default:
		return !a.held && !a.poisoned
	}
}

// matches reports whether message mv, summarised as s, passes f but for
// its age (the walk stops at the first message too young).
func (mv msgView) matches(s ops.MessageSummary, f ops.MessageFilter) bool {
	env := mv.m.Envelope
	from := f.From
	if from == "<>" {
		from = ""
	}
	switch {
	case f.From != "" && !strings.EqualFold(env.From, from),
		f.State != "" && s.State != f.State,
		f.Queue != "" && !slices.Contains(s.Queues, f.Queue):
		return false
	}
	if f.To == "" {
		return true
	}
	for _, r := range env.Recipients {
		if strings.EqualFold(r.Address, f.To) {
			return true
		}
	}
	for _, r := range mv.st.Recipients {
		if strings.EqualFold(r.Address, f.To) || strings.EqualFold(r.ResolvedFrom, f.To) {
			return true
		}
	}
	return false
}
