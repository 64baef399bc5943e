package queue

// The log spool's compaction, in steps (LogStore; log.go).
//
// A sealed segment whose needed bytes (logindex.go) are under a quarter of
// its size is compacted: the records in it that are still needed are
// copied to the current segment through the group commit, and once none
// is left it is reclaimed (logcommit.go). A segment holds up to 256 MiB,
// so its live quarter is up to 64 MiB: copied in one batch, that grew the
// heap by as much and held every commit behind it. So the copy is made in
// steps of about compactChunk bytes, each its own durable batch, and the
// committer runs ordinary batches between them: a compaction holds one
// step's records in memory, and a Put waits for at most one step.
//
// A compaction reads its segment in order (segScanner, every CRC checked)
// and decides, record by record and against the index as it is at that
// step, what is still needed:
//
//   - a MSG record that is its message's MSG record in the index: copied,
//     with the message's latest state folded in (wherever that STATE
//     record is), so that its STATE records are needed no more;
//   - a STATE record that is its message's latest, the MSG record being
//     in another segment: copied;
//   - anything else (a settled or superseded record, a damaged range,
//     which Load quarantined): skipped. SETTLE and HOP records are taken
//     from the index once the segment is read.
//
// The index cannot change between a step's decisions and its commit: the
// committer is the only writer, and runs both. The segment's needed
// records only ever decrease meanwhile (it is sealed: nothing new goes
// into it). Once it is read, the SETTLE records in it that are still
// needed (they cancel MSG records in segments that still exist) are
// copied, in steps too, and then its HOP records (one per next hop at
// most).
//
// Crashes: every step is durable before the next, and the segment is
// unlinked only after the last. A crash between two steps leaves both
// copies of what was copied; Load takes the later one, and the shadow
// rules of logindex.go keep a SETTLE for as long as an older copy exists.
//
// Pace: a compaction starts only when no request is waiting, as before. Its
// steps run after each batch while no request waits, and while the
// committer is idle; under constant load, one every compactEvery batches,
// so that a busy spool still gets its space back.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"
)

const (
	// compactChunk is about how many bytes one step of a compaction
	// copies (LogStore.compactChunk: tests set it small).
	compactChunk = 1 << 20
	// compactScan bounds the bytes of the segment one step reads, most of
	// them not needed any more, in chunks.
	compactScan = 4
	// compactEvery: under constant load, a step after this many batches.
	compactEvery = 8
	// compactSettleScan bounds the SETTLE references one step looks at.
	compactSettleScan = 1 << 16
)

// compaction is the committer's compaction in progress.
type compaction struct {
	victim uint32
	share  float64 // its needed share when it was chosen
	f      *os.File
	sc     *segScanner
	// settling: the segment is read; its SETTLE records are copied, found
	// in the settles of the segments listed in segs, from segs[segAt]'s
	// settles[refAt] on.
	settling     bool
	segs         []uint32
	segAt, refAt int
	steps        int  // steps committed
	inStep       bool // a step's batch is being written
	copied       int  // records copied
	sinceStep    int  // batches since the last step
	began        time.Time
}

func (c *compaction) close() {
	if c.f != nil {
		c.f.Close()
	}
}

// compactAfterBatch runs after each batch (loadMu held): it starts a
// compaction when idle and none runs, and takes its next step when idle
// or when compactEvery batches went by without one.
func (s *LogStore) compactAfterBatch(idle bool) {
	if s.compact == nil {
		if !idle || !s.startCompaction() {
			return
		}
	}
	c := s.compact
	if c.sinceStep++; !idle && c.sinceStep < compactEvery {
		return
	}
	s.compactStep()
}

// compacting reports whether a compaction has steps left (loadMu held).
func (s *LogStore) compacting() bool { return s.compact != nil }

// dropCompaction abandons the compaction in progress (loadMu held): Load
// installs a new index, the store closes.
func (s *LogStore) dropCompaction() {
	if s.compact != nil {
		s.compact.close()
		s.compact = nil
	}
}

// startCompaction chooses the sealed segment with the smallest share of
// needed bytes, when under a quarter, and opens it. loadMu held.
func (s *LogStore) startCompaction() bool {
	if !s.loaded {
		return false
	}
	s.mu.Lock()
	var victim uint32
	best := 0.25
	for n, si := range s.idx.segs {
		if uint64(n) == s.curSeq || si.size == 0 || si.live == 0 {
			continue
		}
		if _, failed := s.noCompact[n]; failed {
			continue
		}
		if r := float64(si.liveBytes) / float64(si.size); r < best {
			victim, best = n, r
		}
	}
	var size int64
	if victim != 0 {
		size = s.idx.segs[victim].size
	}
	s.mu.Unlock()
	if victim == 0 {
		return false
	}
	f, err := os.Open(s.segPath(uint64(victim)))
	if err != nil {
		s.compactionFailed(victim, err)
		return false
	}
	s.compact = &compaction{victim: victim, share: best, f: f, began: time.Now(),
		sc: newSegScanner(f, size, nil).withChunk(s.compactChunk)}
	return true
}

// compactionFailed gives up on the segment: it stays, and is not chosen
// again until a Load.
func (s *LogStore) compactionFailed(victim uint32, err error) {
	s.log.Error("queue: compaction failed; the segment stays", "segment", s.segPath(uint64(victim)), "err", err)
	s.noCompact[victim] = struct{}{}
	s.dropCompaction()
}

// compactStep copies the next step's needed records and commits them;
// after the last step, reclaim unlinks the segment. loadMu held.
func (s *LogStore) compactStep() {
	c := s.compact
	c.sinceStep = 0
	s.mu.Lock()
	gone := s.idx.segs[c.victim] == nil
	s.mu.Unlock()
	if gone { // reclaimed meanwhile: nothing in it was needed any more
		s.compactDone()
		return
	}
	var recs []pendingRec
	var err error
	switch {
	case !c.settling:
		recs, err = s.compactRead(c)
	default:
		recs = s.compactSettles(c)
	}
	if err != nil {
		s.compactionFailed(c.victim, err)
		return
	}
	if len(recs) > 0 {
		req := &logReq{op: opUpdate, err: make(chan error, 1), recs: recs}
		c.inStep = true
		err := s.commitBatch([]*logReq{req})
		c.inStep = false
		if err != nil {
			s.compactionFailed(c.victim, err)
			return
		}
		c.steps++
		c.copied += len(recs)
	}
	if c.settling && c.segAt == len(c.segs) {
		s.compactDone()
	}
}

// compactRead reads the segment on from where the last step stopped and
// returns the records to copy, about compactChunk bytes of them; at the
// end of the segment it turns the compaction to its SETTLE records.
func (s *LogStore) compactRead(c *compaction) ([]pendingRec, error) {
	var recs []pendingRec
	files := map[uint32]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	read := func(l loc) (logRecord, error) {
		f := files[l.seg]
		if f == nil {
			var err error
			if f, err = os.Open(s.segPath(uint64(l.seg))); err != nil {
				return logRecord{}, err
			}
			files[l.seg] = f
		}
		b := make([]byte, l.len)
		if _, err := f.ReadAt(b, int64(l.off)); err != nil {
			return logRecord{}, err
		}
		return parseRecord(b, int64(len(b)))
	}
	copied, start := 0, c.sc.at()
	for copied < s.compactChunk && c.sc.at()-start < int64(compactScan*s.compactChunk) {
		r, err := c.sc.next()
		switch {
		case err == io.EOF:
			c.settling = true
			s.mu.Lock()
			c.segs = c.segs[:0]
			for n := range s.idx.segs {
				c.segs = append(c.segs, n)
			}
			s.mu.Unlock()
			slices.Sort(c.segs)
			c.sc, c.f = nil, closeNil(c.f)
			return recs, nil
		case errors.Is(err, errTorn) || errors.Is(err, ErrCorrupt):
			// Damaged: Load quarantined the range and indexed nothing in
			// it. Go on at the next record whose CRC checks.
			if _, err := c.sc.resync(r.off); err != nil {
				return nil, err
			}
			continue
		case err != nil:
			return nil, err
		}
		if r.kind != recMsg && r.kind != recState {
			continue
		}
		l := loc{seg: c.victim, off: uint32(r.off), len: r.size}
		s.mu.Lock()
		e, ok := s.idx.entries[keyOf(r.id)]
		s.mu.Unlock()
		switch {
		case !ok:
		case r.kind == recMsg && e.msg == l:
			rec, err := s.copyMsg(r, e.st, read)
			if err != nil {
				return nil, fmt.Errorf("copying %s: %w", r.id, err)
			}
			recs = append(recs, rec)
			copied += len(rec.head) + piecesLen(rec.body)
		case r.kind == recState && e.st == l && e.msg.seg != c.victim:
			head, _ := encodeRecord(recState, r.id, json.RawMessage(r.json))
			recs = append(recs, pendingRec{kind: recState, id: r.id, head: head})
			copied += len(head)
		}
	}
	return recs, nil
}

func closeNil(f *os.File) *os.File {
	if f != nil {
		f.Close()
	}
	return nil
}

// compactSettles returns the next SETTLE records to copy: those in the
// segment still needed, about compactChunk bytes of them.
func (s *LogStore) compactSettles(c *compaction) []pendingRec {
	var recs []pendingRec
	s.mu.Lock()
	defer s.mu.Unlock()
	for looked := 0; c.segAt < len(c.segs) && looked < compactSettleScan && len(recs)*settleSize < s.compactChunk; {
		n := c.segs[c.segAt]
		si := s.idx.segs[n]
		if si == nil || c.refAt >= len(si.settles) {
			c.segAt, c.refAt = c.segAt+1, 0
			continue
		}
		ref := si.settles[c.refAt]
		looked++
		if ref.seg == c.victim {
			id := ref.id.id()
			head, _ := encodeRecord(recSettle, id, nil)
			recs = append(recs, pendingRec{kind: recSettle, id: id, head: head, settleFor: n, settleAt: c.refAt + 1})
		}
		c.refAt++
	}
	if c.segAt == len(c.segs) {
		recs = append(recs, s.idx.hopCopies(c.victim)...)
	}
	return recs
}

// compactDone ends the compaction: the segment, nothing in it needed any
// more, is reclaimed.
func (s *LogStore) compactDone() {
	c := s.compact
	s.dropCompaction()
	s.reclaim()
	s.mu.Lock()
	si := s.idx.segs[c.victim]
	s.mu.Unlock()
	if si != nil {
		s.log.Error("queue: compaction left records needed in a segment; it stays",
			"segment", s.segPath(uint64(c.victim)), "records", si.live, "bytes", si.liveBytes)
		s.noCompact[c.victim] = struct{}{}
		return
	}
	s.log.Info("queue: compacted segment", "segment", c.victim, "live_share", fmt.Sprintf("%.2f", c.share),
		"records_copied", c.copied, "steps", c.steps, "took", time.Since(c.began).Round(time.Millisecond))
}

// copyMsg returns the MSG record that replaces r, read from the segment,
// and its message's latest STATE record at st (st.len == 0: none): r's
// envelope and body (a copy; or the same blob) with that state.
func (s *LogStore) copyMsg(r logRecord, st loc, read func(loc) (logRecord, error)) (pendingRec, error) {
	var m logMsg
	if err := json.Unmarshal(r.json, &m); err != nil {
		return pendingRec{}, err
	}
	if st.len > 0 {
		sr, err := read(st)
		if err != nil {
			return pendingRec{}, err
		}
		m.State = State{}
		if err := json.Unmarshal(sr.json, &m.State); err != nil {
			return pendingRec{}, err
		}
	}
	js, err := json.Marshal(&m)
	if err != nil {
		return pendingRec{}, err
	}
	body := slices.Clone(r.body) // r aliases the scanner's buffer
	return pendingRec{kind: recMsg, id: r.id, head: encodeHead(recMsg, r.id, js, body),
		body: [][]byte{body}, blob: m.Blob}, nil
}
