package queue

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"sync"
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

// errCorrupt marks a record that cannot be trusted.
var errCorrupt = errors.New("corrupt queue record")

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
		return 0, fmt.Errorf("%w: %d bytes is too short", errCorrupt, size)
	}
	var fixed [trailerFixed]byte
	if _, err := r.ReadAt(fixed[:], size-int64(trailerFixed)); err != nil {
		return 0, err
	}
	if [8]byte(fixed[8:]) != trailerMagic {
		return 0, fmt.Errorf("%w: bad magic", errCorrupt)
	}
	n := int64(binary.BigEndian.Uint32(fixed[0:4]))
	start := size - int64(trailerFixed) - n
	if start < 0 {
		return 0, fmt.Errorf("%w: record length %d exceeds file", errCorrupt, n)
	}
	js := make([]byte, n)
	if _, err := r.ReadAt(js, start); err != nil {
		return 0, err
	}
	if crc32.Checksum(js, castagnoli) != binary.BigEndian.Uint32(fixed[4:8]) {
		return 0, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	if err := json.Unmarshal(js, v); err != nil {
		return 0, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return start, nil
}

// bodyReader reads a message body and checks its CRC-32C at EOF, so a body
// damaged on disk is never delivered as if it were whole.
type bodyReader struct {
	f    *os.File
	r    *io.SectionReader
	sum  hash.Hash32
	want uint32
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.sum.Write(p[:n])
	if err == io.EOF && b.sum.Sum32() != b.want {
		return n, fmt.Errorf("%w: body checksum mismatch in %s", errCorrupt, b.f.Name())
	}
	return n, err
}

func (b *bodyReader) Close() error { return b.f.Close() }

// idGen makes queue IDs: 13 base32hex characters of Unix nanoseconds, kept
// strictly increasing within the process, then 8 random characters (40 bits)
// so that two hubs, or a clock stepped back across a restart, do not collide.
// Base32hex (lower case) keeps IDs sortable by time and safe as file names.
type idGen struct {
	mu   sync.Mutex
	last int64
}

var idEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

func (g *idGen) next(now time.Time) hub.QueueID {
	g.mu.Lock()
	n := now.UnixNano()
	if n <= g.last {
		n = g.last + 1
	}
	g.last = n
	g.mu.Unlock()
	var b [13]byte
	binary.BigEndian.PutUint64(b[:8], uint64(n))
	rand.Read(b[8:]) // never fails (crypto/rand, Go ≥ 1.24)
	// 13 bytes = 104 bits = 21 base32 characters after dropping padding; the
	// first 13 carry the 64-bit time (65 bits, top bit zero).
	s := idEncoding.EncodeToString(b[:])
	return hub.QueueID(toLower(s))
}

func toLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// validID reports whether s looks like an ID this package made, so that a
// stray file in the spool (or a hostile name from an admin request) is never
// treated as a message or joined into a path.
func validID(s string) bool {
	if len(s) != 21 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'v') {
			return false
		}
	}
	return true
}
