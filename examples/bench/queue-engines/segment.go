package main

// The own segment log (engine "segment"): every change is a record appended
// to the current segment file; a single committer goroutine writes every
// record that arrived while the previous fdatasync ran and covers them all
// with one fdatasync (group commit). Segments roll over at segSize.
//
// Record: length (uint32 BE, of type+id+payload) | CRC-32C (Castagnoli,
// of type+id+payload) | type (1 byte) | id (uint64 BE) | payload.
// Types: 'M' message (payload: envelope length uint32 | envelope | body),
// 'D' deferred-until, 'S' delivered, 'X' settled, 'H' next hop deferred
// (payload: hop name | until). A torn tail fails its length or CRC and is
// cut at start-up (not built here: this spike only writes).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const recHeader = 4 + 4 + 1 + 8

// location is the in-RAM index entry of one queued message: where its
// 'M' record is. A real index adds next attempt (8 B) and next hop (4 B,
// an interned id): ~40 B of payload, ~100 B with Go map overhead.
type location struct {
	seg uint32
	off uint32 // < 256 MiB segments fit in 32 bits
	len uint32
}

type appendReq struct {
	rec  []byte
	loc  location
	done chan error
}

type segmentLog struct {
	dir     string
	segSize int64
	reqs    chan *appendReq
	fsyncs  atomic.Int64
	closed  chan struct{}

	// owned by the committer
	f   *os.File
	seg uint32
	off int64
	buf []byte

	mu    sync.Mutex
	index map[uint64]location
	live  map[uint32]int // live messages per segment, for reclaiming
}

func openSegment(dir string, segSize int64) (*segmentLog, error) {
	s := &segmentLog{
		dir: dir, segSize: segSize,
		reqs:   make(chan *appendReq, 4096),
		closed: make(chan struct{}),
		index:  make(map[uint64]location),
		live:   make(map[uint32]int),
	}
	if err := s.roll(); err != nil {
		return nil, err
	}
	go s.committer()
	return s, nil
}

func (s *segmentLog) segPath(n uint32) string {
	return filepath.Join(s.dir, fmt.Sprintf("%08d.seg", n))
}

// roll closes the current segment and starts the next one. The directory
// is fsynced so the new file's name survives a crash.
func (s *segmentLog) roll() error {
	if s.f != nil {
		if err := s.f.Close(); err != nil {
			return err
		}
	}
	s.seg++
	f, err := os.OpenFile(s.segPath(s.seg), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	s.f, s.off = f, 0
	if *segPrealloc {
		// Allocate the whole segment up front (KEEP_SIZE: the file size
		// still grows with the appends), so that an append only has to
		// convert already allocated blocks.
		const keepSize = 0x01 // FALLOC_FL_KEEP_SIZE
		if err := syscall.Fallocate(int(f.Fd()), keepSize, 0, s.segSize); err != nil {
			return err
		}
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return err
	}
	defer d.Close()
	s.fsyncs.Add(1)
	return d.Sync()
}

func encode(kind byte, id uint64, parts ...[]byte) []byte {
	n := 1 + 8
	for _, p := range parts {
		n += len(p)
	}
	rec := make([]byte, 8, 8+n)
	binary.BigEndian.PutUint32(rec[0:], uint32(n))
	rec = append(rec, kind)
	rec = binary.BigEndian.AppendUint64(rec, id)
	for _, p := range parts {
		rec = append(rec, p...)
	}
	binary.BigEndian.PutUint32(rec[4:], crc32.Checksum(rec[8:], castagnoli))
	return rec
}

// committer is the only writer: it takes every request queued so far,
// writes them in one write(2) and covers them with one fdatasync.
func (s *segmentLog) committer() {
	defer close(s.closed)
	batch := make([]*appendReq, 0, 1024)
	for first := range s.reqs {
		batch = append(batch[:0], first)
	drain:
		for len(batch) < cap(batch) {
			select {
			case r, ok := <-s.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, r)
			default:
				break drain
			}
		}
		err := s.writeBatch(batch)
		for _, r := range batch {
			r.done <- err
		}
	}
}

func (s *segmentLog) writeBatch(batch []*appendReq) error {
	total := 0
	for _, r := range batch {
		total += len(r.rec)
	}
	if s.off > 0 && s.off+int64(total) > s.segSize {
		if err := s.roll(); err != nil {
			return err
		}
	}
	s.buf = s.buf[:0]
	for _, r := range batch {
		r.loc = location{seg: s.seg, off: uint32(s.off) + uint32(len(s.buf)), len: uint32(len(r.rec))}
		s.buf = append(s.buf, r.rec...)
	}
	if _, err := s.f.Write(s.buf); err != nil {
		return err
	}
	s.off += int64(len(s.buf))
	s.fsyncs.Add(1)
	return syscall.Fdatasync(int(s.f.Fd()))
}

func (s *segmentLog) append(rec []byte) (location, error) {
	r := &appendReq{rec: rec, done: make(chan error, 1)}
	s.reqs <- r
	err := <-r.done
	return r.loc, err
}

func (s *segmentLog) Submit(id uint64, env, body []byte) error {
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(env)))
	loc, err := s.append(encode('M', id, l[:], env, body))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.index[id] = loc
	s.live[loc.seg]++
	s.mu.Unlock()
	return nil
}

func (s *segmentLog) State(id uint64, kind byte, payload []byte) error {
	_, err := s.append(encode(kind, id, payload))
	return err
}

// Settle appends an 'X' record; when the last live message of a closed
// segment settles, the segment is deleted (no compaction needed in this
// workload: a real engine copies the few long-lived messages forward).
func (s *segmentLog) Settle(id uint64) error {
	if _, err := s.append(encode('X', id)); err != nil {
		return err
	}
	s.mu.Lock()
	loc, ok := s.index[id]
	delete(s.index, id)
	reclaim := false
	if ok {
		s.live[loc.seg]--
		reclaim = s.live[loc.seg] == 0 && loc.seg != s.currentSeg()
	}
	s.mu.Unlock()
	if reclaim {
		return os.Remove(s.segPath(loc.seg))
	}
	return nil
}

func (s *segmentLog) currentSeg() uint32 { return s.seg } // racy read is fine for a spike: seg only grows

func (s *segmentLog) HopRetry(hop string, until time.Time) (bool, error) {
	_, err := s.append(encode('H', 0, []byte(hop), []byte(until.UTC().Format(time.RFC3339Nano))))
	return true, err
}

func (s *segmentLog) Fsyncs() int64 { return s.fsyncs.Load() }

func (s *segmentLog) Close() error {
	close(s.reqs)
	<-s.closed
	if s.f == nil {
		return errors.New("segment: not open")
	}
	return s.f.Close()
}
