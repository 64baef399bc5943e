package queue

// LogStore.Get: one message read back by its ID (LogStore; log.go).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"hubd/hub"
)

// Get returns message id as its last durable Put or Update left it; see
// Store. It looks the message up in the index and takes a reference on
// the files of the segments holding its MSG record and its latest STATE
// record in one critical section (mu), then preads both records outside
// it and checks their CRCs (the inline body too: the CRC covers it). The
// references keep the files when compaction copies the records forward
// and reclaiming unlinks the segment meanwhile (logfiles.go), and sealed
// records never change, so Get reads the state the index named when it
// looked: the old one or the new one, never a mix.
//
// Before the first Load the index holds only the messages put since
// OpenLog: Get of another fails, and not with ErrNotFound, since the
// message may be in the spool.
func (s *LogStore) Get(ctx context.Context, id hub.QueueID) (*Message, error) {
	if !id.Valid() {
		return nil, fmt.Errorf("queue: invalid id %q", id)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	msgF, stF, e, err := s.acquireEntry(id)
	if err != nil {
		return nil, err
	}
	defer msgF.release()
	if stF != nil {
		defer stF.release()
	}
	var lm logMsg
	if err := readRecordAt(msgF, e.msg, recMsg, id, &lm); err != nil {
		return nil, err
	}
	m := &Message{ID: id, Envelope: lm.Envelope, Arrived: lm.Arrived, Size: lm.Size, State: lm.State}
	if stF != nil {
		m.State = State{}
		if err := readRecordAt(stF, e.st, recState, id, &m.State); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// acquireEntry looks id up and takes references on the files of its MSG
// and latest STATE records (stF nil: no STATE record).
func (s *LogStore) acquireEntry(id hub.QueueID) (msgF, stF *segFile, e logEntry, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, e, errClosed
	}
	e, ok := s.idx.entries[id]
	switch {
	case !ok && !s.indexed:
		return nil, nil, e, fmt.Errorf("queue: get %s: not put since the spool was opened, and it is not loaded yet", id)
	case !ok:
		return nil, nil, e, fmt.Errorf("queue: get %s: %w", id, ErrNotFound)
	}
	if msgF, err = s.acquireSeg(e.msg.seg); err != nil {
		return nil, nil, e, err
	}
	if e.st.len > 0 {
		if stF, err = s.acquireSeg(e.st.seg); err != nil {
			msgF.release()
			return nil, nil, e, err
		}
	}
	return msgF, stF, e, nil
}

// recBufs holds the buffers Get reads records into; a record with an
// inline body can be up to inlineMax and a bit.
var recBufs = sync.Pool{New: func() any { return new([]byte) }}

// readRecordAt reads the record the index places at l, checks its CRC and
// that it is the kind of record of id the index says, and decodes its
// JSON into v. A record that is not is ErrCorrupt; a failed read is
// returned as it is.
func readRecordAt(sf *segFile, l loc, kind byte, id hub.QueueID, v any) error {
	bp := recBufs.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 2*inlineMax {
			recBufs.Put(bp)
		}
	}()
	if cap(*bp) < int(l.len) {
		*bp = make([]byte, l.len)
	}
	b := (*bp)[:l.len]
	where := func() string { return fmt.Sprintf("%s at %d", sf.f.Name(), l.off) }
	if n, err := sf.f.ReadAt(b, int64(l.off)); n < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			return fmt.Errorf("queue: %s: %w: the segment ends inside the record", where(), ErrCorrupt)
		}
		return fmt.Errorf("queue: reading %s: %w", where(), err)
	}
	r, err := parseRecord(b, int64(len(b)))
	if errors.Is(err, errTorn) {
		err = fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err == nil && (r.kind != kind || r.id != id || r.size != l.len) {
		err = fmt.Errorf("%w: the record is %c of %s, %d bytes; the index says %c of %s, %d bytes",
			ErrCorrupt, r.kind, r.id, r.size, kind, id, l.len)
	}
	if err == nil {
		if jerr := json.Unmarshal(r.json, v); jerr != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, jerr)
		}
	}
	if err != nil {
		return fmt.Errorf("queue: %s: %w", where(), err)
	}
	return nil
}
