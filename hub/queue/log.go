package queue

// LogStore: the log-structured spool (docs/queue.md, "Design outline";
// issue 11). It keeps the Store contract of the package comment with
// every change appended as a record to a segment file, and one fdatasync
// per group commit instead of a file and a directory fsync per message.
//
// Layout under the spool directory:
//
//	lock                      the flock both stores take (one process per spool)
//	log/<16-digit seq>.seg    segments: records (logrecord.go), append-only
//	log/active                active marks, appended, never fsynced
//	blob/<id>                 bodies larger than inlineMax (1 MiB)
//	quarantine/               byte ranges of segments Load found corrupt
//
// Durability. One committer goroutine (logcommit.go) owns the segment
// being written. Put, Update and Remove encode their records and hand them
// to it; it takes every record queued while the previous fdatasync ran,
// writes them with one pwritev(2) from the buffers they were encoded in,
// covers them with one fdatasync (plus a directory fsync when it created
// the segment, and one of blob/ when a blob of the batch was renamed into
// it) and only then answers. A failed write or fdatasync (ENOSPC, EIO)
// fails every waiter of the batch and truncates the segment back to where
// the batch began, so that a later Load cannot see half of it; the next
// batch is written there again.
//
// Each process appends to a segment of its own: OpenLog never writes into
// the segment a previous process left, so a torn tail can only be in the
// segment that was last when the store was opened, and Load cuts it there
// (only unacknowledged records can be in it: acknowledgement follows the
// fdatasync).
//
// The index in RAM maps a queue ID (packed into 14 bytes) to where its
// MSG record and its latest STATE record are: 24 bytes, no pointers, about
// 60 bytes per message with the map's free slots (logindex.go).
// Envelopes, states and body checksums are not kept: Load returns the
// messages once and the caller keeps what it needs; Get and Open read the
// records back.
//
// Next hops. SetHop (HopStore) appends a HOP record of a next hop going
// into Retry or leaving it, so that a restart knows which hops are still
// in Retry without trying each (loghop.go).
//
// Reads. Open (a body) and Get (a message's MSG record and latest STATE
// record, at the places the index gives, CRC checked) pread through one
// descriptor per segment, shared by every reader and reference-counted:
// a reader takes its reference in the same critical section as the index
// lookup, so compaction and reclaiming cannot unlink the file under it
// (logfiles.go, logget.go).

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"

	"hubd/hub"
	"hubd/internal/durable"
)

// LogOptions configure a LogStore.
type LogOptions struct {
	Dir    string       // the spool directory; created if missing
	Logger *slog.Logger // nil: discard
	Clock  func() time.Time
	// CrashDelay holds back a message whose active mark cannot be read;
	// see DiskOptions. Default 1m.
	CrashDelay time.Duration
	// MeterProvider gives the group-commit and fsync histograms
	// (metrics.go); nil: no metrics.
	MeterProvider metric.MeterProvider

	// SegmentSize is the size at which the committer starts a new
	// segment. Default 256 MiB; tests set it small.
	SegmentSize int64

	// putWait: how long a batch without a Put waits for one, putsRecent:
	// how recent the last Put must be for it to wait (logcommit.go); 0: a
	// millisecond and 10 ms. Tests set them long to make the wait certain.
	putWait, putsRecent time.Duration
	// compactChunk: about how many bytes a step of a compaction copies
	// (logcompact.go); 0: 1 MiB. Tests set it small.
	compactChunk int

	// Test hooks (nil: the real ones): writev replaces the segment's
	// pwritev (the buffers written one after another at off), datasync its
	// fdatasync, syncDir durable.SyncDir, openFile
	// os.Open for Load's reads.
	writev   func(f *os.File, bufs [][]byte, off int64) (int, error)
	datasync func(f *os.File) error
	syncDir  func(dir string) error
	openFile func(name string) (*os.File, error)
}

const (
	defaultSegmentSize = 256 << 20
	// marksRewrite: log/active is rewritten with only the live marks when
	// it grows past this.
	marksRewrite = 4 << 20
)

// LogStore is the log-structured Store. See the comment at the top of
// this file for its layout and why it is crash-safe.
type LogStore struct {
	dir, logDir, blobDir, quarantineDir, activePath string
	log                                             *slog.Logger
	clock                                           func() time.Time
	crashDelay                                      time.Duration
	segSize                                         int64
	meters                                          *storeMetrics
	writev                                          func(f *os.File, bufs [][]byte, off int64) (int, error)
	putWait, putsRecent                             time.Duration
	awaitingPut                                     atomic.Bool // the committer waits for a Put (awaitPut; tests)
	datasync                                        func(f *os.File) error
	syncDir                                         func(dir string) error
	openFile                                        func(name string) (*os.File, error)
	incarnation                                     string
	lock                                            *os.File
	inspecting                                      bool // Inspect's reader: change nothing in the spool
	compactChunk                                    int

	// loadMu excludes Load's scan from the committer's batches: held by
	// the committer for each batch (and its reclaiming), by Load while it
	// reads the segments and installs the index it built.
	loadMu sync.Mutex
	// tailSeq is the segment that was last when the store was opened: the
	// only one that can end in a torn record. 0: none. tailCut: its torn
	// tail, if any, has been cut (by Load, or by the first batch when a
	// write comes before Load: see cutTailEarly).
	tailSeq uint64
	tailCut bool
	// startBlobs are the files in blob/ at OpenLog; the first Load deletes
	// those no message refers to.
	startBlobs []string
	loaded     bool

	// mu guards idx and files. Open and Get hold it while they look a
	// message up and take a reference on its segment's file, reclaiming
	// while it unlinks a segment, so a reader never finds a file gone
	// (logfiles.go).
	mu      sync.Mutex
	idx     *logIndex
	indexed bool // idx was built by a Load (loaded, readable under mu)
	files   map[uint32]*segFile
	closed  bool // Close has begun: Open and Get fail

	// The committer's (logcommit.go), changed under loadMu.
	cur       *os.File            // the segment being written; nil until the first batch
	curSeq    uint64              // its number; the next segment is curSeq+1
	curOff    int64               // where the next batch goes
	dirtyTail bool                // a failed batch could not be truncated away yet
	unsynced  bool                // the last batch was written without an fdatasync (noSync)
	iov       [][]byte            // the batch's records, head and body, for one pwritev
	compact   *compaction         // in progress (logcompact.go)
	noCompact map[uint32]struct{} // segments a compaction failed on, until a Load

	reqs    chan *logReq
	stop    chan struct{}
	done    chan struct{}
	closing sync.Once
	fsyncs  atomic.Int64 // fdatasyncs and directory fsyncs, for the benchmark

	marksMu   sync.Mutex
	activeF   *os.File
	marks     map[hub.QueueID]string // live marks of this process: the line written
	marksSize int64
}

// OpenLog opens (creating if needed) the log spool under opts.Dir, takes
// its flock, deletes blob temp files left by a crash, imports a disk
// spool (DiskStore) found there (logimport.go), and starts the committer.
func OpenLog(opts LogOptions) (*LogStore, error) {
	if opts.Dir == "" {
		return nil, errors.New("queue: no spool directory")
	}
	s := &LogStore{
		dir:           opts.Dir,
		logDir:        filepath.Join(opts.Dir, "log"),
		blobDir:       filepath.Join(opts.Dir, "blob"),
		quarantineDir: filepath.Join(opts.Dir, "quarantine"),
		log:           opts.Logger,
		clock:         opts.Clock,
		crashDelay:    opts.CrashDelay,
		segSize:       opts.SegmentSize,
		writev:        opts.writev,
		putWait:       opts.putWait,
		putsRecent:    opts.putsRecent,
		compactChunk:  opts.compactChunk,
		noCompact:     map[uint32]struct{}{},
		datasync:      opts.datasync,
		syncDir:       opts.syncDir,
		openFile:      opts.openFile,
		incarnation:   newIncarnation(),
		idx:           newLogIndex(),
		files:         map[uint32]*segFile{},
		reqs:          make(chan *logReq, maxBatch),
		stop:          make(chan struct{}),
		done:          make(chan struct{}),
		marks:         map[hub.QueueID]string{},
	}
	s.activePath = filepath.Join(s.logDir, "active")
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.crashDelay <= 0 {
		s.crashDelay = time.Minute
	}
	if s.segSize <= 0 || s.segSize > 1<<30 {
		s.segSize = defaultSegmentSize
	}
	if s.writev == nil {
		s.writev = pwritev
	}
	if s.putWait <= 0 {
		s.putWait = defaultPutWait
	}
	if s.putsRecent <= 0 {
		s.putsRecent = defaultPutsRecent
	}
	if s.compactChunk <= 0 {
		s.compactChunk = compactChunk
	}
	if s.datasync == nil {
		s.datasync = fdatasync
	}
	if s.syncDir == nil {
		s.syncDir = durable.SyncDir
	}
	if s.openFile == nil {
		s.openFile = os.Open
	}
	meters, err := newStoreMetrics(opts.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("queue: metrics: %w", err)
	}
	s.meters = meters
	if err := makeDurableDirs(s.dir, s.logDir, s.blobDir, s.quarantineDir); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if s.lock, err = lockSpool(s.dir); err != nil {
		return nil, err
	}
	fail := func(err error) (*LogStore, error) {
		if s.activeF != nil {
			s.activeF.Close()
		}
		s.lock.Close()
		return nil, err
	}
	seqs, err := s.segments()
	if err != nil {
		return fail(err)
	}
	if len(seqs) > 0 {
		s.tailSeq = seqs[len(seqs)-1]
		s.curSeq = s.tailSeq
	}
	blobs, err := os.ReadDir(s.blobDir)
	if err != nil {
		return fail(readError(s.blobDir, err))
	}
	for _, e := range blobs {
		if strings.HasSuffix(e.Name(), ".tmp") {
			// Never renamed into place: its Put did not return nil.
			os.Remove(filepath.Join(s.blobDir, e.Name()))
			continue
		}
		s.startBlobs = append(s.startBlobs, e.Name())
	}
	if s.activeF, err = os.OpenFile(s.activePath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
		return fail(fmt.Errorf("queue: %w", err))
	}
	go s.committer()
	if err := s.importDisk(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// segments lists the segment numbers under log/, in order.
func (s *LogStore) segments() ([]uint64, error) {
	entries, err := os.ReadDir(s.logDir)
	if err != nil {
		return nil, readError(s.logDir, err)
	}
	var seqs []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".seg")
		if !ok || len(name) != 16 {
			continue
		}
		if n, err := strconv.ParseUint(name, 10, 64); err == nil && n > 0 {
			seqs = append(seqs, n)
		}
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	return seqs, nil
}

func (s *LogStore) segPath(seq uint64) string {
	return filepath.Join(s.logDir, fmt.Sprintf("%016d.seg", seq))
}

func (s *LogStore) blobPath(id hub.QueueID) string { return filepath.Join(s.blobDir, string(id)) }

// Close stops the committer and releases the spool. Calls made after
// Close fail.
func (s *LogStore) Close() error {
	s.closing.Do(func() { close(s.stop) })
	<-s.done
	s.closeFiles()
	s.loadMu.Lock()
	s.dropCompaction()
	if err := s.syncUnsynced(); err != nil {
		s.log.Error("queue: cannot make the last records durable at close", "err", err)
	}
	if s.cur != nil {
		s.cur.Close()
		s.cur = nil
	}
	s.loadMu.Unlock()
	s.marksMu.Lock()
	if s.activeF != nil {
		s.activeF.Close()
		s.activeF = nil
	}
	s.marksMu.Unlock()
	if s.lock != nil {
		s.lock.Close()
		s.lock = nil
	}
	return nil
}

// Put stores m and its body durably; see Store. A body up to inlineMax
// is read into pooled pieces and goes inline in the MSG record; a
// larger one is streamed to blob/<id>.tmp, fsynced and renamed to
// blob/<id> before the MSG record is handed to the committer (which
// fsyncs blob/ before the record's fdatasync, so a durable MSG record
// never names a blob that a crash can take away).
func (s *LogStore) Put(ctx context.Context, m *Message, body io.Reader) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.clock()
	switch {
	case m.ID == "":
		m.ID = hub.NewQueueID(now)
	case !m.ID.Valid():
		return fmt.Errorf("queue: invalid id %q", m.ID)
	}
	if m.Arrived.IsZero() {
		m.Arrived = now
	}
	src := durable.Reader(ctx, body)
	// The committer writes from the pieces and keeps no reference to them
	// once the commit is answered (writeBatch clears its iovecs).
	inline, n, err := readPieces(src, inlineMax)
	defer func() { releasePieces(inline) }()
	if err != nil {
		return storageError(err)
	}
	var rec logMsg
	if n > inlineMax {
		size, sum, err := s.writeBlob(m.ID, inline, src)
		if err != nil {
			return storageError(err)
		}
		rec.Size, rec.BodyCRC, rec.Blob = size, sum, true
		releasePieces(inline)
		inline = nil // released
	} else {
		sum := uint32(0)
		for _, p := range inline {
			sum = crc32.Update(sum, castagnoli, p)
		}
		rec.Size, rec.BodyCRC = int64(n), sum
	}
	// Taken after the body's EOF: its reader may have set them (Store).
	rec.Envelope, rec.Arrived, rec.State = m.Envelope, m.Arrived, m.State
	m.Size = rec.Size
	// From here on the caller waits for the commit even if ctx ends: the
	// record may be durable already, and reporting failure for a message
	// that is then delivered would invite a duplicate.
	req, err := s.msgReq(m.ID, &rec, inline)
	if err == nil {
		err = s.submit(req)
	}
	if err != nil {
		if rec.Blob {
			os.Remove(s.blobPath(m.ID))
		}
		return storageError(err)
	}
	reportCommit(ctx, CommitInfo{BatchSize: req.batch})
	return nil
}

// msgReq is the commit request of one MSG record.
func (s *LogStore) msgReq(id hub.QueueID, rec *logMsg, inline [][]byte) (*logReq, error) {
	js, err := jsonMarshal(rec)
	if err != nil {
		return nil, err
	}
	head := encodeHead(recMsg, id, js, inline...)
	return &logReq{op: opPut, blobSync: rec.Blob, recs: []pendingRec{{
		kind: recMsg, id: id, head: head, body: inline, blob: rec.Blob,
	}}}, nil
}

// writeBlob streams a body too large to inline to blob/<id>: first what
// Put has read already, then the rest of src; fsynced, then renamed into
// place. It returns the body's size and CRC-32C.
func (s *LogStore) writeBlob(id hub.QueueID, head [][]byte, src io.Reader) (int64, uint32, error) {
	tmp := s.blobPath(id) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, 0, err
	}
	sum := crc32.New(castagnoli)
	w := io.MultiWriter(f, sum)
	var n int64
	for _, p := range head {
		if err == nil {
			_, err = w.Write(p)
			n += int64(len(p))
		}
	}
	if err == nil {
		var m int64
		m, err = io.Copy(w, src)
		n += m
	}
	if err == nil {
		err = s.meters.syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.blobPath(id))
	}
	if err != nil {
		os.Remove(tmp)
		return 0, 0, err
	}
	return n, sum.Sum32(), nil
}

// Update replaces the state of message id durably with a STATE record;
// see Store.
func (s *LogStore) Update(ctx context.Context, id hub.QueueID, st State) error {
	if !id.Valid() {
		return fmt.Errorf("queue: invalid id %q", id)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.isLoaded() && !s.has(id) {
		return fmt.Errorf("queue: update %s: no such message", id)
	}
	rec, err := encodeRecord(recState, id, st)
	if err != nil {
		return err
	}
	return storageError(s.submit(&logReq{op: opUpdate, recs: []pendingRec{{kind: recState, id: id, head: rec}}}))
}

// Remove appends a SETTLE record for id; see Store. Once it is durable
// the message's blob, if any, is unlinked (a crash before that leaves a
// blob no record names, which Load deletes).
func (s *LogStore) Remove(id hub.QueueID) error {
	if !id.Valid() {
		return fmt.Errorf("queue: invalid id %q", id)
	}
	if s.isLoaded() && !s.has(id) {
		return nil // removed already
	}
	rec, _ := encodeRecord(recSettle, id, nil)
	return storageError(s.submit(&logReq{op: opRemove, recs: []pendingRec{{kind: recSettle, id: id, head: rec}}}))
}

// isLoaded reports whether the index has been built by a Load: before
// that it knows only the messages put since OpenLog.
func (s *LogStore) isLoaded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.indexed
}

func (s *LogStore) has(id hub.QueueID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.idx.has(id)
}

// MarkActive appends "<id> <mark>\n" (formatMark) to log/active with one
// write(2): it survives the process, not the machine, and costs no fsync
// (see Store). log/active is rewritten with only the live marks (temp
// file and rename) when it grows past marksRewrite.
func (s *LogStore) MarkActive(id hub.QueueID, mark Mark) error {
	if !id.Valid() {
		return fmt.Errorf("queue: invalid id %q", id)
	}
	line := string(id) + " " + formatMark(mark, s.clock(), s.incarnation)
	s.marksMu.Lock()
	defer s.marksMu.Unlock()
	if err := s.appendMark(line); err != nil {
		return err
	}
	s.marks[id] = line
	return nil
}

// ClearActive appends "<id> clear\n"; a message not marked is not an error.
func (s *LogStore) ClearActive(id hub.QueueID) {
	s.marksMu.Lock()
	defer s.marksMu.Unlock()
	if _, ok := s.marks[id]; !ok {
		return
	}
	delete(s.marks, id)
	if err := s.appendMark(string(id) + " clear\n"); err != nil {
		s.log.Error("queue: cannot clear active mark", "id", id, "err", err)
	}
}

// appendMark writes line to log/active; marksMu held.
func (s *LogStore) appendMark(line string) error {
	if s.activeF == nil {
		return errors.New("queue: store closed")
	}
	if _, err := s.activeF.WriteString(line); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	s.marksSize += int64(len(line))
	if s.marksSize > marksRewrite {
		if err := s.rewriteMarks(); err != nil {
			s.log.Error("queue: cannot rewrite log/active", "err", err)
		}
	}
	return nil
}

// rewriteMarks replaces log/active with this process's live marks only;
// marksMu held. Not fsynced, like the marks themselves: a crash leaves
// the old file or the new one, both complete.
func (s *LogStore) rewriteMarks() error {
	var b strings.Builder
	for _, line := range s.marks {
		b.WriteString(line)
	}
	tmp := s.activePath + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.activePath); err != nil {
		return err
	}
	f, err := os.OpenFile(s.activePath, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.activeF.Close()
	s.activeF, s.marksSize = f, int64(b.Len())
	return nil
}
