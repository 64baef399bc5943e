package queue

// Next-hop state kept in the log spool: HOP records (LogStore; log.go).
//
// A next hop going into Retry is one HOP record, not one STATE record
// per message waiting for it, and it survives a restart: after one,
// the transport learns from Hops that the hop is still in Retry instead
// of trying it once per waiting message.
//
// Each SetHop appends a HOP record (logrecord.go) through the group
// commit, like an Update, but costs no fdatasync of its own (noSync,
// logcommit.go): the next batch's fdatasync makes it durable, and in a
// retry cycle that is the failed probe's own Update a moment later, so a
// cycle costs one fdatasync, not two. A record lost to a machine crash
// costs little: a lost Retry gives the start-up of a store without
// next-hop state (one pass per waiting message), a lost clear one early
// probe (the recorded retry time has passed when a probe succeeds). The
// latest record of a hop wins (the log is read in order, and compaction
// copies only the latest forward). A record with a zero Until clears the
// hop.
//
// Which HOP records are needed (logindex.go):
//
//   - the latest record of a hop in Retry;
//   - the latest record of a cleared hop, while a segment that holds an
//     older record of the hop exists (were it to go first, a crash and a
//     Load would bring the Retry back) — the rule of SETTLE records;
//   - no other: superseded records, and a clear with nothing older left,
//     are dead, and the hop is forgotten.
//
// Compaction copies a needed HOP record forward, as it copies a live MSG
// record; a segment holding none is reclaimed as usual.

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"hubd/hub"
)

// HopStore is implemented by stores that keep next-hop state durably
// (LogStore). The transport discovers it by type assertion.
type HopStore interface {
	// SetHop records (written like an Update, but made durable only by
	// the store's next fdatasync; see above) that next hop
	// h.Hop is in Retry until h.Until, at retry-ladder rung h.Attempts,
	// since h.Since, for h.Reason (the last error). A zero h.Until: the
	// hop is no longer in Retry, and the store forgets it.
	SetHop(ctx context.Context, h HopState) error
	// Hops returns the latest HopState of every hop in Retry, sorted by
	// Hop: what the last Load or Scan read (Scan: from the first call of
	// its fn on), plus the SetHop calls that returned nil since. Before
	// the first Load or Scan, only the latter.
	Hops() []HopState
}

// HopState is where one next hop stands.
type HopState struct {
	Hop      string    `json:"hop"`              // the next hop's name, as the transport names it
	Until    time.Time `json:"until"`            // in Retry until then; zero: not in Retry
	Since    time.Time `json:"since,omitzero"`   // in Retry since then
	Attempts int       `json:"attempts"`         // the retry-ladder rung
	Reason   string    `json:"reason,omitempty"` // the last error
}

// hopRecordID fills the ID field of a HOP record: the hop's name is in
// its JSON. A valid ID (all zero) that no message has: hub.NewQueueID's
// time part is never zero.
const hopRecordID hub.QueueID = "000000000000000000000"

// maxHopName bounds a hop's name (a domain, or a host and port, with a
// prefix).
const maxHopName = 1024

var _ HopStore = (*LogStore)(nil)

// SetHop appends a HOP record of h; see HopStore.
func (s *LogStore) SetHop(ctx context.Context, h HopState) error {
	if h.Hop == "" || len(h.Hop) > maxHopName {
		return fmt.Errorf("queue: invalid next hop %q", h.Hop)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	head, err := encodeRecord(recHop, hopRecordID, &h)
	if err != nil {
		return err
	}
	return storageError(s.submit(&logReq{op: opUpdate, noSync: true,
		recs: []pendingRec{{kind: recHop, id: hopRecordID, head: head, hop: &h}}}))
}

// Hops returns the hops in Retry; see HopStore.
func (s *LogStore) Hops() []HopState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]HopState, 0, len(s.idx.hops))
	for _, e := range s.idx.hops {
		if !e.state.Until.IsZero() {
			out = append(out, e.state)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Hop < out[j].Hop })
	return out
}

// hopEntry is the index entry of one hop.
type hopEntry struct {
	state HopState
	at    loc // its latest HOP record
	// segs are the segments holding records of the hop, the latest
	// included.
	segs map[uint32]struct{}
}

// older reports whether a segment other than the latest record's holds a
// record of the hop.
func (e *hopEntry) older() bool {
	for n := range e.segs {
		if n != e.at.seg {
			return true
		}
	}
	return false
}

// applyHop takes the HOP record of h, durable at l, into the index.
func (x *logIndex) applyHop(h *HopState, l loc) {
	e := x.hops[h.Hop]
	if e == nil {
		if h.Until.IsZero() {
			return // clears a hop no record of which is left: not needed
		}
		e = &hopEntry{segs: map[uint32]struct{}{}}
		x.hops[h.Hop] = e
	} else {
		x.release(e.at)
	}
	e.state, e.at = *h, l
	e.segs[l.seg] = struct{}{}
	x.need(l)
	x.settleHop(h.Hop, e)
}

// settleHop forgets hop, cleared, once no older record of it is left.
func (x *logIndex) settleHop(hop string, e *hopEntry) {
	if e.state.Until.IsZero() && !e.older() {
		x.release(e.at)
		delete(x.hops, hop)
	}
}

// removeHopSegment forgets segment n, unlinked, in the hops' records.
func (x *logIndex) removeHopSegment(n uint32) {
	for hop, e := range x.hops {
		if _, ok := e.segs[n]; ok {
			delete(e.segs, n)
			x.settleHop(hop, e)
		}
	}
}

// hopCopies are the HOP records compaction copies forward from segment
// victim: the needed ones there. mu held.
func (x *logIndex) hopCopies(victim uint32) []pendingRec {
	var recs []pendingRec
	for _, e := range x.hops {
		if e.at.seg != victim {
			continue
		}
		h := e.state
		head, err := encodeRecord(recHop, hopRecordID, &h)
		if err != nil {
			continue // it was encoded once: cannot fail
		}
		recs = append(recs, pendingRec{kind: recHop, id: hopRecordID, head: head, hop: &h})
	}
	return recs
}

// decodeHop decodes the JSON of a HOP record; one that does not make
// sense is ErrCorrupt.
func decodeHop(js []byte) (*HopState, error) {
	var h HopState
	if err := json.Unmarshal(js, &h); err != nil {
		return nil, fmt.Errorf("%w: HOP record: %v", ErrCorrupt, err)
	}
	if h.Hop == "" || len(h.Hop) > maxHopName {
		return nil, fmt.Errorf("%w: HOP record: next hop %q", ErrCorrupt, h.Hop)
	}
	return &h, nil
}
