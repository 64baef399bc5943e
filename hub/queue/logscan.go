package queue

// The last step of LogStore.Scan: the queued messages read back in log
// order and handed out one at a time (LogStore; logload.go).
//
// The index is built by then, so each queued message is read at the
// places it gives: its MSG record and its latest STATE record, CRC
// checked again (the file is read anew). The places are taken in one
// critical section, with a reference on every segment file they name
// (logfiles.go): compaction and reclaiming may run meanwhile, and a file
// they unlink stays readable, with the same records, until Scan lets it
// go. So Scan hands out the messages as they were when it took the
// places; a change made after that (by fn itself, say) is not seen.
//
// The MSG records are read through one large buffer per segment, in
// increasing offsets (they were written in that order, so most of a
// segment is read sequentially, as the index scan read it); a STATE
// record, usually in a later segment, with one pread each.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"

	"hubd/hub"
)

// livePlace is where one queued message's records are.
type livePlace struct {
	key Key
	e   logEntry
}

// readLive calls fn with every queued message, in the order of their MSG
// records. A message whose records turn out damaged is quarantined and
// dropped from the index (dropDamaged); fn's error ends the scan and is
// returned.
func (s *LogStore) readLive(ctx context.Context, fn func(*Message) error) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errClosed
	}
	places := make([]livePlace, 0, len(s.idx.entries))
	for k, e := range s.idx.entries {
		places = append(places, livePlace{k, e})
	}
	files := map[uint32]*segFile{}
	var err error
acquire:
	for _, p := range places {
		for _, l := range []loc{p.e.msg, p.e.st} {
			if l.len == 0 || files[l.seg] != nil {
				continue
			}
			var sf *segFile
			if sf, err = s.acquireSeg(l.seg); err != nil {
				break acquire // not masked by the next segment's success
			}
			files[l.seg] = sf
		}
	}
	s.mu.Unlock()
	defer func() {
		for _, sf := range files {
			sf.release()
		}
	}()
	if err != nil {
		return err
	}
	slices.SortFunc(places, func(a, b livePlace) int {
		if a.e.msg.seg != b.e.msg.seg {
			return cmp.Compare(a.e.msg.seg, b.e.msg.seg)
		}
		return cmp.Compare(a.e.msg.off, b.e.msg.off)
	})
	var win window
	var stBuf []byte
	for i, p := range places {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		id := p.key.id()
		mb, err := win.read(files[p.e.msg.seg], p.e.msg)
		bad := p.e.msg
		var sb []byte
		if err == nil && p.e.st.len > 0 {
			stBuf = slices.Grow(stBuf[:0], int(p.e.st.len))[:p.e.st.len]
			err, bad, sb = readFull(files[p.e.st.seg], p.e.st, stBuf), p.e.st, stBuf
		}
		var m *Message
		if err == nil {
			m, bad, err = decodeLive(id, p.e, mb, sb)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			return err
		}
		if err != nil {
			s.dropDamaged(p.key, bad, err)
			continue
		}
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// decodeLive checks the MSG record mb and the STATE record sb (nil: none)
// of id and builds its Message. A record that is not what the index says
// it is, or does not decode, is an error wrapping ErrCorrupt, with its
// place.
func decodeLive(id hub.QueueID, e logEntry, mb, sb []byte) (*Message, loc, error) {
	var lm logMsg
	r, err := decodeAt(mb, recMsg, id, &lm)
	if err == nil && (lm.Blob && len(r.body) != 0 || !lm.Blob && int64(len(r.body)) != lm.Size) {
		err = fmt.Errorf("%w: MSG record of %s: size %d, %d bytes inline", ErrCorrupt, id, lm.Size, len(r.body))
	}
	if err != nil {
		return nil, e.msg, err
	}
	m := &Message{ID: id, Envelope: lm.Envelope, Arrived: lm.Arrived, Size: lm.Size, State: lm.State}
	if sb != nil {
		m.State = State{}
		if _, err := decodeAt(sb, recState, id, &m.State); err != nil {
			return nil, e.st, err
		}
	}
	return m, loc{}, nil
}

// decodeAt parses the record in b (all of it), checks that it is the
// record of kind of id, and decodes its JSON into v.
func decodeAt(b []byte, kind byte, id hub.QueueID, v any) (logRecord, error) {
	r, err := parseRecord(b, int64(len(b)))
	if errors.Is(err, errTorn) {
		err = fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err == nil && (r.kind != kind || r.id != id || int(r.size) != len(b)) {
		err = fmt.Errorf("%w: the record is %c of %s, %d bytes; the index says %c of %s, %d bytes",
			ErrCorrupt, r.kind, r.id, r.size, kind, id, len(b))
	}
	if err == nil {
		if jerr := json.Unmarshal(r.json, v); jerr != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, jerr)
		}
	}
	return r, err
}

// dropDamaged quarantines the record at l of the message k, which Scan
// found damaged when it read it back, and forgets the message: it is
// not handed out, and Get and Open fail for it from now on.
func (s *LogStore) dropDamaged(k Key, l loc, why error) {
	if s.inspecting {
		return // skipped, not quarantined
	}
	s.quarantineRange(badRange{seq: uint64(l.seg), from: int64(l.off), to: int64(l.off) + int64(l.len), why: why})
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.idx.entries[k]; ok {
		s.idx.release(e.msg)
		s.idx.release(e.st)
		delete(s.idx.entries, k)
		delete(s.idx.blobs, k)
	}
}

// readFull reads the record at l into b (len(b) == l.len).
func readFull(sf *segFile, l loc, b []byte) error {
	if n, err := sf.f.ReadAt(b, int64(l.off)); n < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			return fmt.Errorf("queue: %s at %d: %w: the segment ends inside the record", sf.f.Name(), l.off, ErrCorrupt)
		}
		return fmt.Errorf("queue: reading %s at %d: %w", sf.f.Name(), l.off, err)
	}
	return nil
}

// window is a read buffer over one segment for records read in
// increasing offsets: a record outside it is read with the scanChunk
// bytes that follow it.
type window struct {
	sf  *segFile
	off int64
	buf []byte
}

// read returns the bytes of the record at l in sf; valid until the next
// read.
func (w *window) read(sf *segFile, l loc) ([]byte, error) {
	from, to := int64(l.off), int64(l.off)+int64(l.len)
	if w.sf != sf || from < w.off || to > w.off+int64(len(w.buf)) {
		fi, err := sf.f.Stat()
		if err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
		n := max(int64(l.len), min(scanChunk, fi.Size()-from))
		w.buf = slices.Grow(w.buf[:0], int(n))[:n]
		w.sf, w.off = sf, from
		if err := readFull(sf, loc{seg: l.seg, off: l.off, len: uint32(n)}, w.buf); err != nil {
			w.sf = nil
			return nil, err
		}
	}
	return w.buf[from-w.off : to-w.off], nil
}
