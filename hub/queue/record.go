package queue

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"sync/atomic"
	"time"

	"hubd/hub"
)

// trailerMagic ends every .msg and .state file; its last byte is a version.
var trailerMagic = [8]byte{'h', 'u', 'b', 'd', 'q', 0, 0, 1}

const trailerFixed = 4 + 4 + len(trailerMagic) // length, CRC, magic

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// msgRecord is the trailer of a .msg file.
type msgRecord struct {
	ID       hub.QueueID  `json:"id"`
	Envelope hub.Envelope `json:"envelope"`
	Arrived  time.Time    `json:"arrived"`
	Size     int64        `json:"size"`
	BodyCRC  uint32       `json:"body_crc"`
	State    State        `json:"state"`
}

// stateRecord is the content of a .state file.
type stateRecord struct {
	ID    hub.QueueID `json:"id"`
	State State       `json:"state"`
}

// ErrCorrupt marks a record that cannot be trusted: bad framing, a
// checksum mismatch, or contents that do not make sense. Load quarantines
// such records; Get and a body reader return errors wrapping it.
var ErrCorrupt = errors.New("corrupt queue record")

// writeTrailer appends v as a checksummed trailer to w.
func writeTrailer(w io.Writer, v any) error {
	js, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var fixed [trailerFixed]byte
	binary.BigEndian.PutUint32(fixed[0:4], uint32(len(js)))
	binary.BigEndian.PutUint32(fixed[4:8], crc32.Checksum(js, castagnoli))
	copy(fixed[8:], trailerMagic[:])
	if _, err := w.Write(js); err != nil {
		return err
	}
	_, err = w.Write(fixed[:])
	return err
}

// readTrailer decodes the trailer of a file of the given size into v and
// returns the length of what precedes it (the body).
func readTrailer(r io.ReaderAt, size int64, v any) (int64, error) {
	if size < int64(trailerFixed) {
		return 0, fmt.Errorf("%w: %d bytes is too short", ErrCorrupt, size)
	}
	var fixed [trailerFixed]byte
	if _, err := r.ReadAt(fixed[:], size-int64(trailerFixed)); err != nil {
		return 0, err
	}
	if [8]byte(fixed[8:]) != trailerMagic {
		return 0, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	n := int64(binary.BigEndian.Uint32(fixed[0:4]))
	start := size - int64(trailerFixed) - n
	if start < 0 {
		return 0, fmt.Errorf("%w: record length %d exceeds file", ErrCorrupt, n)
	}
	js := make([]byte, n)
	if _, err := r.ReadAt(js, start); err != nil {
		return 0, err
	}
	if crc32.Checksum(js, castagnoli) != binary.BigEndian.Uint32(fixed[4:8]) {
		return 0, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	if err := json.Unmarshal(js, v); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return start, nil
}

// bodyReader reads a message body and checks its CRC-32C at EOF, so a body
// damaged on disk is never delivered as if it were whole. It reads with
// pread from a file it may share with other readers (a LogStore segment):
// closing it calls release once, and it reads nothing after that.
type bodyReader struct {
	name    string // the file, for errors
	prefix  []byte // the body's first octets, read already (openInline)
	r       *io.SectionReader
	sum     hash.Hash32
	want    uint32
	release func() error
	closed  atomic.Bool
}

func newBodyReader(f *os.File, off, n int64, want uint32, release func() error) *bodyReader {
	return &bodyReader{name: f.Name(), r: io.NewSectionReader(f, off, n), sum: crc32.New(castagnoli), want: want, release: release}
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, os.ErrClosed
	}
	if len(b.prefix) > 0 {
		n := copy(p, b.prefix)
		b.sum.Write(p[:n])
		b.prefix = b.prefix[n:]
		return n, nil
	}
	n, err := b.r.Read(p)
	b.sum.Write(p[:n])
	if err == io.EOF && b.sum.Sum32() != b.want {
		return n, fmt.Errorf("%w: body checksum mismatch in %s", ErrCorrupt, b.name)
	}
	return n, err
}

func (b *bodyReader) Close() error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	return b.release()
}

// idGen hands out queue IDs (hub.NewQueueID) for messages put without one.
type idGen struct{}

func (idGen) next(now time.Time) hub.QueueID { return hub.NewQueueID(now) }

// validID reports whether s looks like a queue ID (hub.QueueID.Valid).
func validID(s string) bool { return hub.QueueID(s).Valid() }
