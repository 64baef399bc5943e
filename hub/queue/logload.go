package queue

// The log spool's Load (LogStore; log.go): rebuild the index from the
// segments, cut a torn tail, quarantine damaged records, record the
// deaths the active marks tell of.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"hubd/hub"
)

// logScan is what the first phase of Scan found.
type logScan struct {
	idx *logIndex
	cut *badRange  // the torn tail of segment tailSeq, to truncate
	bad []badRange // damaged byte ranges of other segments, to quarantine
}

type badRange struct {
	seq      uint64
	from, to int64
	why      error
}

// Load returns every queued message, oldest first; see Store. It is Scan
// with the messages collected and sorted by ID.
func (s *LogStore) Load(ctx context.Context) ([]*Message, error) {
	var out []*Message
	if err := s.Scan(ctx, func(m *Message) error {
		out = append(out, m)
		return nil
	}); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Scan calls fn with every queued message, in the order of the log (by
// the place of its MSG record: segment, then offset; roughly the order
// of Put, except for the messages compaction copied forward); see Store.
// It works in three steps, the first like DiskStore's Load.
//
// The index scan only reads, and keeps no message: every segment in
// order, every record's CRC checked, MSG records entering the index,
// STATE records replacing their place of the latest state, SETTLE
// records deleting them, and log/active. Any error that is not proven
// corruption ends Scan there, with the spool as it was. Then what the
// scan decided is done:
//
//   - In segment tailSeq (the last one when the store was opened), the
//     first record that runs past the end or fails its CRC is a torn
//     tail: the segment is truncated there (only unacknowledged records
//     can be there) and fdatasynced.
//   - In any other segment, a damaged record is copied to
//     quarantine/<segment>.<offset> with everything up to the next offset
//     where a record whose CRC checks starts, and the scan goes on there:
//     only the messages whose records were in that range are affected.
//   - The index is installed; blobs that no message names (a Put that
//     failed, a Remove whose unlink a crash prevented) are deleted, and
//     segments needing nothing are reclaimed.
//   - The deaths the marks in log/active tell of are recorded (recordDeath,
//     as DiskStore does, on the message read back with Get) and persisted
//     as STATE records in one group commit; only then is log/active
//     truncated.
//
// Last, the messages are read back in log order from the places the
// index gives (logscan.go) and handed to fn one at a time: the heap Scan
// needs is the index and a list of places, not the messages.
func (s *LogStore) Scan(ctx context.Context, fn func(*Message) error) error {
	s.loadMu.Lock()
	sc, err := s.scanLog(ctx)
	if err != nil {
		s.loadMu.Unlock()
		return err
	}
	marks, err := s.readMarks()
	if err != nil {
		s.loadMu.Unlock()
		return err
	}
	if c := sc.cut; c != nil {
		if err := s.cutTail(c); err != nil {
			s.loadMu.Unlock()
			return err
		}
	}
	for _, b := range sc.bad {
		s.quarantineRange(b)
	}
	s.tailCut = true
	s.dropCompaction() // it decided against the index being replaced
	clear(s.noCompact)
	s.mu.Lock()
	s.idx = sc.idx
	s.indexed = true
	if s.cur != nil {
		s.idx.seg(uint32(s.curSeq)).size = s.curOff
	}
	s.mu.Unlock()
	if !s.loaded {
		for _, name := range s.startBlobs {
			if id := hub.QueueID(name); !id.Valid() || !sc.idx.has(id) {
				s.log.Info("queue: removing a blob no message names", "file", name)
				os.Remove(filepath.Join(s.blobDir, name))
			}
		}
		s.startBlobs = nil
	}
	s.loaded = true
	s.reclaim()
	s.loadMu.Unlock()

	if err := s.recoverLogMarks(ctx, marks); err != nil {
		return err
	}
	return s.readLive(ctx, fn)
}

func (s *LogStore) scanLog(ctx context.Context) (*logScan, error) {
	seqs, err := s.segments()
	if err != nil {
		return nil, err
	}
	sc := &logScan{idx: newLogIndex()}
	buf := make([]byte, 0, scanChunk)
	for _, seq := range seqs {
		if err := s.scanSegment(ctx, sc, seq, &buf); err != nil {
			return nil, err
		}
	}
	return sc, nil
}

func (s *LogStore) scanSegment(ctx context.Context, sc *logScan, seq uint64, buf *[]byte) error {
	path := s.segPath(seq)
	f, err := s.openFile(path)
	if err != nil {
		return readError(path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return readError(path, err)
	}
	size := fi.Size()
	sc.idx.seg(uint32(seq)).size = size
	ss := newSegScanner(f, size, *buf)
	defer func() { *buf = ss.buf[:0] }()
	for n := 0; ; n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		r, err := ss.next()
		if err == nil {
			err = sc.apply(uint32(seq), r)
		}
		switch {
		case err == nil:
			continue
		case err == io.EOF:
			return nil
		case !errors.Is(err, errTorn) && !errors.Is(err, ErrCorrupt):
			return readError(path, err)
		case seq == s.tailSeq:
			sc.cut = &badRange{seq: seq, from: r.off, to: size, why: err}
			sc.idx.seg(uint32(seq)).size = r.off
			return nil
		}
		to, rerr := ss.resync(r.off)
		if rerr != nil {
			return readError(path, rerr)
		}
		sc.bad = append(sc.bad, badRange{seq: seq, from: r.off, to: to, why: err})
	}
}

// msgShape is the part of a MSG record's JSON the index scan checks.
type msgShape struct {
	Size int64 `json:"size"`
	Blob bool  `json:"blob,omitempty"`
}

// apply takes a record whose CRC checked into the index. Contents that do
// not make sense despite the CRC are ErrCorrupt too: a STATE whose JSON
// is not well-formed, a MSG without an inline body whose JSON does not
// say whether its body is a blob. The index needs no more of a MSG
// record with an inline body (a blob's record has none), so its JSON is
// decoded once, when readLive hands the message out, and checked there
// (decodeLive): such damage, which only a bug can write, costs that one
// message, not the previous state of a message.
func (sc *logScan) apply(seq uint32, r logRecord) error {
	rec := pendingRec{kind: r.kind, id: r.id}
	switch r.kind {
	case recMsg:
		if len(r.body) > 0 {
			break
		}
		var lm msgShape
		if err := json.Unmarshal(r.json, &lm); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if !lm.Blob && lm.Size != 0 {
			return fmt.Errorf("%w: MSG record of %s: size %d, no body inline", ErrCorrupt, r.id, lm.Size)
		}
		rec.blob = lm.Blob
	case recState:
		if !json.Valid(r.json) {
			return fmt.Errorf("%w: STATE record of %s: malformed JSON", ErrCorrupt, r.id)
		}
	case recHop:
		h, err := decodeHop(r.json)
		if err != nil {
			return err
		}
		rec.hop = h
	}
	sc.idx.apply(&rec, loc{seg: seq, off: uint32(r.off), len: r.size})
	return nil
}

// cutTail truncates the torn tail of the segment that was last when the
// store was opened, and makes that durable.
func (s *LogStore) cutTail(c *badRange) error {
	path := s.segPath(c.seq)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err == nil {
		err = f.Truncate(c.from)
		if err == nil {
			err = s.datasync(f)
		}
		f.Close()
	}
	if err != nil {
		return fmt.Errorf("queue: cutting the torn tail of %s at %d: %w", path, c.from, err)
	}
	s.log.Warn("queue: cut the torn tail of the last segment (records never acknowledged)",
		"segment", path, "offset", c.from, "bytes", c.to-c.from, "why", c.why)
	return nil
}

// cutTailEarly cuts the torn tail of segment tailSeq before this process
// first writes, when no Load has done so: once a newer segment exists, a
// torn record there would look like damage in a sealed segment to a later
// Load. It reads the segment with every CRC checked, as Load does; loadMu
// held.
func (s *LogStore) cutTailEarly() error {
	if s.tailCut || s.tailSeq == 0 {
		return nil
	}
	path := s.segPath(s.tailSeq)
	f, err := s.openFile(path)
	if err != nil {
		return readError(path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return readError(path, err)
	}
	ss := newSegScanner(f, fi.Size(), nil)
	for {
		r, err := ss.next()
		switch {
		case err == nil:
			continue
		case err == io.EOF:
			s.tailCut = true
			return nil
		case errors.Is(err, errTorn) || errors.Is(err, ErrCorrupt):
			if err := s.cutTail(&badRange{seq: s.tailSeq, from: r.off, to: fi.Size(), why: err}); err != nil {
				return err
			}
			s.tailCut = true
			return nil
		default:
			return readError(path, err)
		}
	}
}

// quarantineRange copies a damaged range of a segment to quarantine/ for
// the operator. The segment keeps it until compaction or reclaiming drops
// the segment; a later Load finds it again and keeps the copy it made.
func (s *LogStore) quarantineRange(b badRange) {
	path := s.segPath(b.seq)
	to := filepath.Join(s.quarantineDir, fmt.Sprintf("%016d.seg.%d", b.seq, b.from))
	if _, err := os.Lstat(to); err == nil {
		s.log.Error("queue: corrupt records in a segment skipped (quarantined earlier)",
			"segment", path, "offset", b.from, "bytes", b.to-b.from, "to", to, "err", b.why)
		return
	}
	data := make([]byte, b.to-b.from)
	f, err := os.Open(path)
	if err == nil {
		_, err = f.ReadAt(data, b.from)
		f.Close()
	}
	if err == nil {
		err = os.WriteFile(to, data, 0o600)
	}
	if err != nil {
		s.log.Error("queue: cannot quarantine corrupt records", "segment", path, "offset", b.from, "err", err)
		return
	}
	s.log.Error("queue: quarantined corrupt records of a segment", "segment", path, "offset", b.from,
		"bytes", b.to-b.from, "to", to, "err", b.why)
}

// readMarks replays log/active: the last record for an ID wins ("<id>
// clear" deletes the mark). A last line without its newline is a mark torn
// while it was written: its content cannot be read, so it counts as
// DiskStore's torn mark does (a death, not isolated, held back for
// CrashDelay). Marks this process wrote itself are not deaths.
func (s *LogStore) readMarks() (map[hub.QueueID]activeMark, error) {
	data, err := os.ReadFile(s.activePath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, readError(s.activePath, err)
	}
	torn := s.clock().Add(s.crashDelay)
	marks := map[hub.QueueID]activeMark{}
	for text := string(data); len(text) > 0; {
		line, rest, complete := strings.Cut(text, "\n")
		text = rest
		if len(line) < idLen || !hub.QueueID(line[:idLen]).Valid() {
			continue
		}
		id := hub.QueueID(line[:idLen])
		content := strings.TrimPrefix(line[idLen:], " ")
		switch {
		case !complete:
			marks[id] = activeMark{notBefore: torn}
		case content == "clear":
			delete(marks, id)
		default:
			marks[id] = parseMark(content, torn)
		}
	}
	for id, mk := range marks {
		if mk.incarnation == s.incarnation {
			delete(marks, id)
		}
	}
	return marks, nil
}

// recoverLogMarks records the deaths the marks tell of in the messages
// (read back with Get) and persists the new states in one group commit,
// then truncates log/active (keeping the marks of this process).
func (s *LogStore) recoverLogMarks(ctx context.Context, marks map[hub.QueueID]activeMark) error {
	if len(marks) == 0 {
		return nil
	}
	start := time.Now()
	req := &logReq{op: opUpdate}
	counted := 0
	for id, mk := range marks {
		m, err := s.Get(ctx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			continue
		case errors.Is(err, ErrCorrupt):
			s.log.Error("queue: cannot record a death: the message's record is damaged", "id", id, "err", err)
			continue
		case err != nil:
			return fmt.Errorf("queue: recording the death of the previous process: %w", err)
		}
		if !recordDeath(s.log, m, mk) {
			continue
		}
		if mk.isolated {
			counted++
		}
		head, err := encodeRecord(recState, id, m.State)
		if err != nil {
			return err
		}
		req.recs = append(req.recs, pendingRec{kind: recState, id: id, head: head})
	}
	if len(req.recs) > 0 {
		if err := s.submit(req); err != nil {
			return fmt.Errorf("queue: recording the death of the previous process: %w", storageError(err))
		}
	}
	s.marksMu.Lock()
	err := s.rewriteMarks()
	s.marksMu.Unlock()
	if err != nil {
		return fmt.Errorf("queue: truncating %s: %w", s.activePath, err)
	}
	s.log.Warn("queue: messages were in flight when the previous process died", "messages", len(req.recs),
		"counted_against", counted, "recorded_in", time.Since(start).Round(time.Millisecond))
	return nil
}
