package queue

// The log spool's record format and the segment scanner (LogStore; the
// design is docs/queue.md, "Design outline").
//
// A segment is a sequence of records, each
//
//	magic   u16   0x93 0x51
//	length  u32   big-endian: bytes after the CRC (type .. end of body)
//	crc     u32   CRC-32C (Castagnoli) of those length bytes
//	type    u8    'M' MSG, 'S' STATE, 'X' SETTLE, 'H' HOP
//	id      [21]  the queue ID (hub.QueueID, fixed width); HOP: 21 '0's
//	jsonlen u32   big-endian
//	json    jsonlen bytes: logMsg (MSG), State (STATE), nothing (SETTLE),
//	              HopState (HOP: the next hop's name is in it)
//	body    the rest: a MSG's body when it is inline (≤ inlineMax bytes)
//
// MSG, STATE and SETTLE records concern one message each; a HOP record
// concerns one next hop (loghop.go): the latest HOP record of a hop is
// its state, and one whose Until is zero clears it.
//
// The CRC covers everything a reader acts on, so a record whose CRC checks
// was written whole; one that does not was torn (at the tail of the
// segment that was being written when the process died) or damaged.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"
	"time"

	"hubd/hub"
)

const (
	recMagic0, recMagic1 = 0x93, 0x51
	recHeader            = 2 + 4 + 4              // magic, length, CRC
	recFixed             = 1 + idLen + 4          // type, id, jsonlen
	idLen                = 21                     // len(hub.NewQueueID(...))
	maxRecord            = inlineMax + (16 << 20) // a MSG with the largest inline body and 16 MiB of JSON

	recMsg    = 'M'
	recState  = 'S'
	recSettle = 'X'
	recHop    = 'H'

	// inlineMax is the largest body kept inside its MSG record; a larger
	// one is a file under blob/ (one copy, streamed, not held in memory).
	inlineMax = 1 << 20
)

// logMsg is the JSON of a MSG record.
type logMsg struct {
	Envelope hub.Envelope `json:"envelope"`
	Arrived  time.Time    `json:"arrived"`
	Size     int64        `json:"size"`
	BodyCRC  uint32       `json:"body_crc"`
	Blob     bool         `json:"blob,omitempty"` // the body is blob/<id>, not inline
	State    State        `json:"state"`
}

// encodeHead returns the record's header and fixed part up to the body,
// with the CRC computed over them and body, given in pieces. The record on
// disk is head followed by the pieces of body.
func encodeHead(kind byte, id hub.QueueID, js []byte, body ...[]byte) []byte {
	n := recFixed + len(js) + piecesLen(body)
	head := make([]byte, recHeader, recHeader+recFixed+len(js))
	head[0], head[1] = recMagic0, recMagic1
	binary.BigEndian.PutUint32(head[2:6], uint32(n))
	head = append(head, kind)
	head = append(head, id...)
	head = binary.BigEndian.AppendUint32(head, uint32(len(js)))
	head = append(head, js...)
	sum := crc32.Checksum(head[recHeader:], castagnoli)
	for _, b := range body {
		sum = crc32.Update(sum, castagnoli, b)
	}
	binary.BigEndian.PutUint32(head[6:10], sum)
	return head
}

// encodeRecord is encodeHead for records without a body, as one slice.
func encodeRecord(kind byte, id hub.QueueID, v any) ([]byte, error) {
	var js []byte
	if v != nil {
		var err error
		if js, err = json.Marshal(v); err != nil {
			return nil, err
		}
	}
	if len(js) > maxRecord-recFixed {
		return nil, fmt.Errorf("queue: a record of %d bytes is too large", len(js))
	}
	return encodeHead(kind, id, js), nil
}

// piecesLen is the length of the pieces together.
func piecesLen(pieces [][]byte) int {
	n := 0
	for _, b := range pieces {
		n += len(b)
	}
	return n
}

// logRecord is one record as the scanner decodes it. json and body alias
// the scanner's buffer: valid until the next record.
type logRecord struct {
	off  int64  // where the record starts in its segment
	size uint32 // recHeader + length
	kind byte
	id   hub.QueueID
	json []byte
	body []byte
	// bodyOff is where the body starts, relative to off.
	bodyOff uint32
}

// errTorn: the record runs past the end of the segment.
var errTorn = errors.New("record runs past the end of the segment")

// parseRecord decodes and checks the record at the start of b (b holds at
// least the whole record when it fits in the segment: avail is how many
// bytes the segment has from here). The error is errTorn or wraps
// ErrCorrupt.
func parseRecord(b []byte, avail int64) (logRecord, error) {
	var r logRecord
	if avail < recHeader {
		return r, errTorn
	}
	if b[0] != recMagic0 || b[1] != recMagic1 {
		return r, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	n := binary.BigEndian.Uint32(b[2:6])
	if n < recFixed || n > maxRecord {
		return r, fmt.Errorf("%w: record length %d", ErrCorrupt, n)
	}
	if int64(recHeader)+int64(n) > avail {
		return r, errTorn
	}
	rec := b[recHeader : recHeader+int(n)]
	if crc32.Checksum(rec, castagnoli) != binary.BigEndian.Uint32(b[6:10]) {
		return r, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	r.size = recHeader + n
	r.kind = rec[0]
	r.id = hub.QueueID(rec[1 : 1+idLen])
	jl := binary.BigEndian.Uint32(rec[1+idLen : recFixed])
	if uint64(jl) > uint64(n-recFixed) || !r.id.Valid() {
		return r, fmt.Errorf("%w: bad record fields", ErrCorrupt)
	}
	r.json = rec[recFixed : recFixed+jl]
	r.body = rec[recFixed+jl:]
	r.bodyOff = recHeader + recFixed + jl
	switch r.kind {
	case recMsg, recState:
	case recSettle:
		if len(r.json) != 0 || len(r.body) != 0 {
			return r, fmt.Errorf("%w: SETTLE with a payload", ErrCorrupt)
		}
	case recHop:
		if len(r.json) == 0 || len(r.body) != 0 || r.id != hopRecordID {
			return r, fmt.Errorf("%w: bad HOP record", ErrCorrupt)
		}
	default:
		return r, fmt.Errorf("%w: unknown record type %#x", ErrCorrupt, r.kind)
	}
	return r, nil
}

// segScanner reads the records of one segment in order through a large
// buffer. Every record's CRC is checked, body included: a sequential
// read of the whole spool is what recovery costs anyway (the page cache's
// readahead reads the bodies whether or not they are skipped), and CRC-32C
// runs at several GB/s, so verifying them all costs little and lets Load
// tell a damaged record from a good one in every segment, not only the
// last.
type segScanner struct {
	r    io.ReaderAt
	size int64
	off  int64  // of buf[0]
	buf  []byte // holds [off, off+len(buf)) of the segment
	pos  int    // the next record's position in buf
	// chunk is how much fill reads at least (scanChunk; compaction reads
	// less at a time).
	chunk int
}

const scanChunk = 4 << 20

func newSegScanner(r io.ReaderAt, size int64, buf []byte) *segScanner {
	return &segScanner{r: r, size: size, buf: buf[:0], chunk: scanChunk}
}

// withChunk makes fill read chunk bytes at least.
func (sc *segScanner) withChunk(chunk int) *segScanner {
	sc.chunk = chunk
	return sc
}

// at is where the next record starts in the segment.
func (sc *segScanner) at() int64 { return sc.off + int64(sc.pos) }

// fill makes buf hold at least want bytes from position pos on (or all
// that is left of the segment). A read error is returned as it is: it is
// not proof of corruption.
func (sc *segScanner) fill(want int) error {
	have := len(sc.buf) - sc.pos
	left := sc.size - (sc.off + int64(len(sc.buf)))
	if have >= want || left == 0 {
		return nil
	}
	need := max(want, sc.chunk)
	if cap(sc.buf) < need {
		nb := make([]byte, have, need)
		copy(nb, sc.buf[sc.pos:])
		sc.buf = nb
	} else {
		copy(sc.buf, sc.buf[sc.pos:])
		sc.buf = sc.buf[:have]
	}
	sc.off += int64(sc.pos)
	sc.pos = 0
	grow := min(int64(cap(sc.buf)-have), left)
	sc.buf = sc.buf[:have+int(grow)]
	n, err := sc.r.ReadAt(sc.buf[have:], sc.off+int64(have))
	if int64(n) == grow {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF // the file shrank under us
	}
	return err
}

// next returns the next record. At the end of the segment it returns
// io.EOF; a record that cannot be trusted, errTorn or ErrCorrupt with
// r.off set; any other error is a read error.
func (sc *segScanner) next() (logRecord, error) {
	if err := sc.fill(recHeader); err != nil {
		return logRecord{}, err
	}
	start := sc.off + int64(sc.pos)
	if start == sc.size {
		return logRecord{}, io.EOF
	}
	avail := sc.size - start
	if avail >= recHeader {
		n := int(binary.BigEndian.Uint32(sc.buf[sc.pos+2 : sc.pos+6]))
		if n <= maxRecord && int64(recHeader+n) <= avail {
			if err := sc.fill(recHeader + n); err != nil {
				return logRecord{}, err
			}
		}
	}
	r, err := parseRecord(sc.buf[sc.pos:], avail)
	r.off = start
	if err != nil {
		return r, err
	}
	sc.pos += int(r.size)
	return r, nil
}

// resync looks for the first offset after from where a record whose CRC
// checks starts, and continues the scan there. It returns the offset (the
// end of the segment when there is none).
func (sc *segScanner) resync(from int64) (int64, error) {
	for cand := from + 1; cand < sc.size; {
		// Position the buffer at cand.
		if cand < sc.off || cand > sc.off+int64(len(sc.buf)) {
			sc.off, sc.buf, sc.pos = cand, sc.buf[:0], 0
		} else {
			sc.pos = int(cand - sc.off)
		}
		if err := sc.fill(recHeader); err != nil {
			return 0, err
		}
		i := bytes.IndexByte(sc.buf[sc.pos:], recMagic0)
		if i < 0 {
			cand = sc.off + int64(len(sc.buf))
			continue
		}
		cand += int64(i)
		sc.pos += i
		if _, err := sc.peek(); err == nil {
			return cand, nil
		} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, errTorn) {
			return 0, err
		}
		cand++
	}
	sc.off, sc.buf, sc.pos = sc.size, sc.buf[:0], 0
	return sc.size, nil
}

// peek parses the record at pos without consuming it.
func (sc *segScanner) peek() (logRecord, error) {
	start := sc.off + int64(sc.pos)
	r, err := sc.next()
	sc.pos = int(start - sc.off) // next may have moved the buffer
	return r, err
}

// bodyPiece is the size of the pooled pieces an inline body is read into.
// The body stays in memory until its record is durable, so at 20 sessions
// of 100 KB messages the bodies being put are most of the live heap; in
// 8 KiB pieces a body holds at most 8 KiB it does not use, where a
// bytes.Buffer grown by appending held up to a quarter more than its body
// (and, pooled, the capacity of the largest body it had held).
const bodyPiece = 8 << 10

var piecePool = sync.Pool{New: func() any { return new([bodyPiece]byte) }}

// readPieces reads src into pooled pieces until it ends or more than max
// octets have come; release gives the pieces back.
func readPieces(src io.Reader, max int) (pieces [][]byte, n int, err error) {
	for n <= max {
		p := piecePool.Get().(*[bodyPiece]byte)
		k, err := io.ReadFull(src, p[:])
		if k == 0 {
			piecePool.Put(p)
		} else {
			pieces = append(pieces, p[:k])
			n += k
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return pieces, n, nil
		}
		if err != nil {
			return pieces, n, err
		}
	}
	return pieces, n, nil
}

func releasePieces(pieces [][]byte) {
	for _, p := range pieces {
		piecePool.Put((*[bodyPiece]byte)(p[:bodyPiece]))
	}
}
