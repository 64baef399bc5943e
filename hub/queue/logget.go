package queue

// LogStore.Get and LogStore.Open: one message, or its body, read back by
// its ID (LogStore; log.go).

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
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
	e, _, ok := s.idx.lookup(id)
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

// Open returns message id's body, read with pread from its segment's
// shared file (logfiles.go) or from its blob; the reader fails at EOF if
// the body does not match its checksum. The index keeps only where the
// MSG record is, so Open reads the record's head first: for an inline
// body, the record's framing, up to where the body starts, and the
// reader checks the record's CRC (which covers the body) at EOF; for a
// blob, the whole record (it has no inline body), whose JSON gives the
// body's size and CRC-32C.
func (s *LogStore) Open(id hub.QueueID) (io.ReadCloser, error) {
	if !id.Valid() {
		return nil, fmt.Errorf("queue: invalid id %q", id)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errClosed
	}
	e, blob, ok := s.idx.lookup(id)
	if !ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("queue: open %s: no such message", id)
	}
	sf, err := s.acquireSeg(e.msg.seg)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if blob {
		defer sf.release()
		var lm logMsg
		if err := readRecordAt(sf, e.msg, recMsg, id, &lm); err != nil {
			return nil, err
		}
		f, err := os.Open(s.blobPath(id))
		if err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
		return newBodyReader(f, 0, lm.Size, lm.BodyCRC, f.Close), nil
	}
	br, err := openInline(sf, e.msg, id)
	if err != nil {
		sf.release()
		return nil, err
	}
	return br, nil
}

// msgHeadRead is how much of a MSG record Open reads at first: the
// framing and the JSON of a message with a few dozen recipients, and the
// first octets of its body.
const msgHeadRead = 4096

// openInline checks the framing of id's MSG record at l in sf and returns
// a reader of its inline body that checks the record's CRC at EOF and
// releases sf when closed.
func openInline(sf *segFile, l loc, id hub.QueueID) (*bodyReader, error) {
	where := func() string { return fmt.Sprintf("%s at %d", sf.f.Name(), l.off) }
	read := func(b []byte, off int64) error {
		if n, err := sf.f.ReadAt(b, off); n < len(b) {
			if err == nil || errors.Is(err, io.EOF) {
				return fmt.Errorf("queue: %s: %w: the segment ends inside the record", where(), ErrCorrupt)
			}
			return fmt.Errorf("queue: reading %s: %w", where(), err)
		}
		return nil
	}
	if l.len < recHeader+recFixed {
		return nil, fmt.Errorf("queue: %s: %w: the index names a record of %d bytes", where(), ErrCorrupt, l.len)
	}
	head := make([]byte, min(l.len, msgHeadRead))
	if err := read(head, int64(l.off)); err != nil {
		return nil, err
	}
	jl := binary.BigEndian.Uint32(head[1+idLen+recHeader : recHeader+recFixed])
	switch {
	case head[0] != recMagic0 || head[1] != recMagic1 || binary.BigEndian.Uint32(head[2:6]) != l.len-recHeader:
		return nil, fmt.Errorf("queue: %s: %w: bad framing", where(), ErrCorrupt)
	case head[recHeader] != recMsg || string(head[recHeader+1:recHeader+1+idLen]) != string(id):
		return nil, fmt.Errorf("queue: %s: %w: not the MSG record of %s", where(), ErrCorrupt, id)
	case uint64(jl) > uint64(l.len-recHeader-recFixed):
		return nil, fmt.Errorf("queue: %s: %w: bad record fields", where(), ErrCorrupt)
	}
	bodyOff := recHeader + recFixed + jl
	if bodyOff > uint32(len(head)) {
		more := make([]byte, bodyOff)
		copy(more, head)
		if err := read(more[len(head):], int64(l.off)+int64(len(head))); err != nil {
			return nil, err
		}
		head = more
	}
	// What the first read got of the body is handed out first, not read
	// again.
	read0 := uint32(len(head))
	br := newBodyReader(sf.f, int64(l.off)+int64(read0), int64(l.len-read0), binary.BigEndian.Uint32(head[6:10]), sf.release)
	br.sum.Write(head[recHeader:bodyOff]) // the CRC covers the record from its type on
	br.prefix = head[bodyOff:]
	return br, nil
}
