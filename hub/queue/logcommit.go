package queue

// The log spool's committer: group commit into the current segment, and
// reclaiming segments no longer needed (LogStore; log.go).
//
// Group commit (DESIGN.md invariant 2). Callers hand the committer a
// logReq (one or more encoded records) and wait. The committer takes every
// request queued while its previous batch was being made durable (up to
// maxBatch requests, about maxBatchBytes), writes their records with one
// pwritev(2) at the end of the segment, from the buffers the callers
// encoded them in (a 100 KB body is not copied again on its way to the
// kernel), and covers them with one fdatasync; a segment it has just
// created is made durable by a directory fsync of log/ first, and blob/
// is fsynced first when a Put of the batch renamed a blob into it. Only
// then are the waiters answered, so a Put, Update or Remove returns nil
// only for records on stable storage.
//
// A batch without a Put waits up to a millisecond for one when Puts are
// arriving, so that a delivery's Remove and the next message's Put share
// an fdatasync (awaitPut).
//
// A batch whose requests all say noSync (HOP records only) is written
// with its pwritev and answered without an fdatasync; the segment is
// marked unsynced, and the next fdatasync of it (any later batch), the
// rotation that seals it, or Close makes it durable. Records that follow
// it in the segment are never durable without it.
//
// A failure of the write or the fdatasync fails every request of the
// batch, and the segment is truncated back to where the batch began: a
// later Load sees none of it (after a failed fdatasync the kernel may
// have dropped the dirty pages, so nothing of the batch is trusted), and
// the next batch is written at the same offset. ENOSPC and EDQUOT reach
// the caller as 452 4.3.1 (storageError; RFC 3463).

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"hubd/hub"
)

// logReq is one caller's change: its records, written contiguously.
type logReq struct {
	op       commitOp
	recs     []pendingRec
	blobSync bool // a blob was renamed into blob/ for it: fsync blob/ first
	// noSync: the records need no fdatasync of their own (HOP records;
	// loghop.go). A batch of such requests only is written, not synced:
	// the next batch's fdatasync, a rotation or Close makes it durable.
	noSync bool
	err    chan error
	batch  int // how many requests shared the batch; set before err is answered
}

// pendingRec is one encoded record (head, then the pieces of body) and
// what the index needs to know of it once it is durable.
type pendingRec struct {
	kind byte
	id   hub.QueueID
	head []byte
	body [][]byte  // a MSG's inline body, in the pieces Put read it in
	blob bool      // a MSG record whose body is a blob
	hop  *HopState // a HOP record's content
	// settleFor: a SETTLE copied forward by compaction, cancelling the
	// MSG record in this segment (0: a Remove's SETTLE); settleAt: 1 + its
	// place in that segment's settles (logindex.go; 0: look it up).
	settleFor uint32
	settleAt  int
}

const maxBatchBytes = 16 << 20

func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			if err != nil {
				return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
			}
			return nil
		}
	}
}

// submit hands req to the committer and waits for its batch's outcome.
func (s *LogStore) submit(req *logReq) error {
	req.err = make(chan error, 1)
	select {
	case s.reqs <- req:
	case <-s.stop:
		return errors.New("queue: store closed")
	}
	select {
	case err := <-req.err:
		return err
	case <-s.done:
		select {
		case err := <-req.err:
			return err
		default:
			return errors.New("queue: store closed")
		}
	}
}

func (s *LogStore) committer() {
	defer close(s.done)
	batch := make([]*logReq, 0, maxBatch)
	wait := time.NewTimer(0)
	<-wait.C
	var lastPut time.Time // when a batch last carried a Put
	for {
		r := s.nextReq()
		if r == nil {
			for {
				select {
				case r := <-s.reqs:
					r.err <- errors.New("queue: store closed")
				default:
					return
				}
			}
		}
		batch = append(batch[:0], r)
		size := s.gather(&batch, reqBytes(batch[0]))
		if !carriesPut(batch) && needsSync(batch) && time.Since(lastPut) < s.putsRecent {
			size = s.awaitPut(&batch, size, wait)
		}
		if carriesPut(batch) {
			lastPut = time.Now()
		}
		s.loadMu.Lock()
		s.commitBatch(batch)
		s.reclaim()
		s.compactAfterBatch(len(s.reqs) == 0) // logcompact.go
		s.loadMu.Unlock()
	}
}

// nextReq waits for the next request; while none comes, a compaction in
// progress takes its steps. nil: the store is closing.
func (s *LogStore) nextReq() *logReq {
	for {
		select {
		case r := <-s.reqs:
			return r
		case <-s.stop:
			return nil
		default:
		}
		s.loadMu.Lock()
		busy := s.compacting()
		if busy {
			s.compactStep()
		}
		s.loadMu.Unlock()
		if busy {
			continue
		}
		select {
		case r := <-s.reqs:
			return r
		case <-s.stop:
			return nil
		}
	}
}

// gather adds every request queued now to batch, up to maxBatch requests
// and about maxBatchBytes, and returns the batch's size in bytes.
func (s *LogStore) gather(batch *[]*logReq, size int) int {
	for len(*batch) < maxBatch && size < maxBatchBytes {
		select {
		case r := <-s.reqs:
			*batch = append(*batch, r)
			size += reqBytes(r)
		default:
			return size
		}
	}
	return size
}

// Removes and Updates wait for a Put to share their fdatasync. A delivery
// that ends Removes its message (a SETTLE record) and waits for it to be
// durable; while messages are also arriving, a batch of such records only
// would cost an fdatasync of its own (at 100 KB messages, 4 in 10
// fdatasyncs were that), and a Put arriving meanwhile would wait behind
// it. So a batch without a Put, when Puts arrived within putsRecent,
// waits up to putWait for one, and goes as soon as one comes: the Put
// waits less than it would behind that fdatasync, the Removes at most
// putWait longer, and one fdatasync covers both. Without recent Puts (a
// queue draining, a next hop's retry) nothing waits. A Remove still
// returns only once its record is durable; only its fdatasync is shared.
const (
	defaultPutWait    = time.Millisecond
	defaultPutsRecent = 10 * time.Millisecond
)

// awaitPut adds requests to batch as they come until one is a Put, putWait
// has passed, the batch is full or the store closes; it returns the
// batch's size.
func (s *LogStore) awaitPut(batch *[]*logReq, size int, wait *time.Timer) int {
	wait.Reset(s.putWait)
	s.awaitingPut.Store(true)
	defer s.awaitingPut.Store(false)
	defer func() {
		if !wait.Stop() {
			select {
			case <-wait.C:
			default:
			}
		}
	}()
	for len(*batch) < maxBatch && size < maxBatchBytes {
		select {
		case r := <-s.reqs:
			*batch = append(*batch, r)
			size += reqBytes(r)
			if r.op == opPut {
				return s.gather(batch, size)
			}
		case <-wait.C:
			return size
		case <-s.stop:
			return size
		}
	}
	return size
}

// carriesPut reports whether a request of batch is a Put.
func carriesPut(batch []*logReq) bool {
	for _, r := range batch {
		if r.op == opPut {
			return true
		}
	}
	return false
}

// needsSync reports whether batch will be covered by an fdatasync (a
// batch of noSync requests only is not: there is nothing to share).
func needsSync(batch []*logReq) bool {
	for _, r := range batch {
		if !r.noSync {
			return true
		}
	}
	return false
}

func reqBytes(r *logReq) int {
	n := 0
	for _, rec := range r.recs {
		n += len(rec.head) + piecesLen(rec.body)
	}
	return n
}

// commitBatch writes batch, makes it durable and answers its waiters;
// loadMu held. It returns the error every waiter got.
func (s *LogStore) commitBatch(batch []*logReq) error {
	err := s.writeBatch(batch)
	for _, r := range batch {
		r.batch = len(batch)
		r.err <- err
	}
	return err
}

func (s *LogStore) writeBatch(batch []*logReq) error {
	total, blobSync, sync := 0, false, false
	for _, r := range batch {
		total += reqBytes(r)
		blobSync = blobSync || r.blobSync
		sync = sync || !r.noSync
	}
	if s.dirtyTail {
		if err := s.cur.Truncate(s.curOff); err != nil {
			return fmt.Errorf("queue: truncating %s after a failed write: %w", s.cur.Name(), err)
		}
		s.dirtyTail = false
	}
	if s.cur == nil || (s.curOff > 0 && s.curOff+int64(total) > s.segSize) {
		if err := s.cutTailEarly(); err != nil {
			return err
		}
		if err := s.rotate(); err != nil {
			return err
		}
	}
	if blobSync {
		s.fsyncs.Add(1)
		if err := s.meters.syncDir(s.syncDir, s.blobDir); err != nil {
			return err
		}
	}
	iov := s.iov[:0]
	for _, r := range batch {
		for _, rec := range r.recs {
			iov = append(iov, rec.head)
			for _, b := range rec.body {
				if len(b) > 0 {
					iov = append(iov, b)
				}
			}
		}
	}
	n, err := s.writev(s.cur, iov, s.curOff)
	clear(iov) // keep no caller's buffer alive
	s.iov = iov[:0]
	if err == nil && n < total {
		err = io.ErrShortWrite
	}
	if err == nil && sync {
		s.fsyncs.Add(1)
		err = s.meters.syncSegment(s.datasync, s.cur)
	}
	s.meters.batchCommitted(len(batch))
	if err != nil {
		if terr := s.cur.Truncate(s.curOff); terr != nil {
			s.dirtyTail = true
			s.log.Error("queue: cannot truncate a segment after a failed write; retrying before the next batch",
				"segment", s.cur.Name(), "offset", s.curOff, "err", terr)
		}
		s.log.Error("queue: group commit failed", "segment", s.cur.Name(), "offset", s.curOff, "records", len(batch), "err", err)
		return err
	}
	var blobs []hub.QueueID
	off := s.curOff
	s.mu.Lock()
	for _, r := range batch {
		for i := range r.recs {
			rec := &r.recs[i]
			l := loc{seg: uint32(s.curSeq), off: uint32(off), len: uint32(len(rec.head) + piecesLen(rec.body))}
			if s.idx.apply(rec, l) {
				blobs = append(blobs, rec.id)
			}
			off += int64(l.len)
		}
	}
	s.curOff = off
	s.idx.seg(uint32(s.curSeq)).size = off
	s.mu.Unlock()
	s.unsynced = !sync
	for _, id := range blobs {
		os.Remove(s.blobPath(id)) // its SETTLE is durable
	}
	return nil
}

// iovMax is the most buffers one pwritev(2) takes (IOV_MAX on Linux).
const iovMax = 1024

// pwritev writes bufs one after another at off in f: one pwritev(2) when
// they are at most iovMax, and again for whatever a call left unwritten.
// It returns how many bytes were written.
func pwritev(f *os.File, bufs [][]byte, off int64) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	total := 0
	for {
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
		if len(bufs) == 0 {
			return total, nil
		}
		var n int
		var werr error
		if err := rc.Write(func(fd uintptr) bool {
			n, werr = unix.Pwritev(int(fd), bufs[:min(len(bufs), iovMax)], off)
			return true
		}); err != nil {
			return total, err
		}
		if werr == unix.EINTR {
			continue
		}
		if werr != nil {
			return total, &os.PathError{Op: "pwritev", Path: f.Name(), Err: werr}
		}
		if n <= 0 {
			return total, io.ErrShortWrite
		}
		total += n
		off += int64(n)
		for n > 0 {
			if n < len(bufs[0]) {
				bufs[0] = bufs[0][n:]
				break
			}
			n -= len(bufs[0])
			bufs = bufs[1:]
		}
	}
}

// rotate seals the current segment and creates the next one, durable
// (directory fsync of log/) before any record is written to it.
func (s *LogStore) rotate() error {
	if err := s.syncUnsynced(); err != nil {
		return err
	}
	seq := s.curSeq + 1
	path := s.segPath(seq)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	s.fsyncs.Add(1)
	if err := s.meters.syncDir(s.syncDir, s.logDir); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if s.cur != nil {
		s.cur.Close()
	}
	s.cur, s.curSeq, s.curOff = f, seq, 0
	s.mu.Lock()
	s.idx.seg(uint32(seq))
	s.mu.Unlock()
	return nil
}

// syncUnsynced makes the current segment durable if its last batch was
// written without an fdatasync (noSync): before it is sealed (a torn
// record in a sealed segment would look like damage to a later Load) and
// at Close. loadMu held.
func (s *LogStore) syncUnsynced() error {
	if !s.unsynced || s.cur == nil {
		return nil
	}
	s.fsyncs.Add(1)
	if err := s.meters.syncSegment(s.datasync, s.cur); err != nil {
		return err
	}
	s.unsynced = false
	return nil
}

// reclaim unlinks every sealed segment no record of which is needed any
// more (logindex.go), oldest first, each made durable by a directory
// fsync before the next: a SETTLE is needed until the segment of the MSG
// it cancels is gone, so this order never lets a crash resurrect a
// message. loadMu held; nothing is done before the first Load built the
// index.
func (s *LogStore) reclaim() {
	if !s.loaded {
		return
	}
	for {
		s.mu.Lock()
		var victim uint32
		for n, si := range s.idx.segs {
			if si.live == 0 && uint64(n) != s.curSeq && (victim == 0 || n < victim) {
				victim = n
			}
		}
		if victim == 0 {
			s.mu.Unlock()
			return
		}
		err := os.Remove(s.segPath(uint64(victim)))
		if err == nil || errors.Is(err, os.ErrNotExist) {
			s.idx.removeSegment(victim)
			s.dropSeg(victim) // readers that hold it keep the unlinked file
		}
		s.mu.Unlock()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("queue: cannot unlink a reclaimed segment", "segment", s.segPath(uint64(victim)), "err", err)
			return
		}
		s.fsyncs.Add(1)
		if err := s.meters.syncDir(s.syncDir, s.logDir); err != nil {
			s.log.Error("queue: fsync after reclaiming a segment", "dir", s.logDir, "err", err)
			return
		}
		s.log.Debug("queue: reclaimed segment", "segment", victim)
	}
}
