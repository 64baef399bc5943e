package queue

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/metric"

	"hubd/hub"
	"hubd/internal/durable"
	"hubd/policy"
)

// DiskOptions configure a DiskStore.
type DiskOptions struct {
	Dir    string       // the spool directory; created if missing
	Logger *slog.Logger // nil: discard
	Clock  func() time.Time
	// CrashDelay holds back a message whose active mark cannot be read
	// (the process died while writing it): its pending recipients are not
	// due before this long after Load. Default 1m.
	CrashDelay time.Duration
	// MeterProvider gives the group-commit and fsync histograms
	// (metrics.go); nil: no metrics.
	MeterProvider metric.MeterProvider

	// syncEach disables group commit (each Put renames and fsyncs the
	// directory itself); only the benchmark sets it, to show the difference.
	syncEach bool
	// syncDir and openFile replace durable.SyncDir and os.Open (Load's
	// reads) in fault-injection tests; nil: the real ones.
	syncDir  func(dir string) error
	openFile func(name string) (*os.File, error)
	// lockHeld: the caller holds the spool's flock already (OpenLog
	// importing a disk spool into the log); OpenDisk does not take it.
	lockHeld bool
}

// DiskStore is the local-disk Store. See the package comment for the layout
// and why it is crash-safe.
type DiskStore struct {
	dir, tmpDir, queueDir, quarantineDir string
	log                                  *slog.Logger
	crashDelay                           time.Duration
	clock                                func() time.Time
	syncEach                             bool
	syncDir                              func(dir string) error
	openFile                             func(name string) (*os.File, error)
	meters                               *storeMetrics // nil: no metrics
	// incarnation names this process's use of the spool in the active
	// marks it writes, so that Load records each death once.
	incarnation string

	lock    *os.File // holds the spool's exclusive flock while the store is open
	ids     idGen
	tmpSeq  atomic.Uint64
	commits chan *commit
	stop    chan struct{}
	done    chan struct{}
	closing sync.Once
}

// OpenDisk opens (creating if needed) the spool under opts.Dir, deletes torn
// temp files left by a crash, and starts the committer.
func OpenDisk(opts DiskOptions) (*DiskStore, error) {
	if opts.Dir == "" {
		return nil, errors.New("queue: no spool directory")
	}
	s := &DiskStore{
		dir:           opts.Dir,
		tmpDir:        filepath.Join(opts.Dir, "tmp"),
		queueDir:      filepath.Join(opts.Dir, "queue"),
		quarantineDir: filepath.Join(opts.Dir, "quarantine"),
		log:           opts.Logger,
		clock:         opts.Clock,
		crashDelay:    opts.CrashDelay,
		syncEach:      opts.syncEach,
		syncDir:       opts.syncDir,
		openFile:      opts.openFile,
		incarnation:   newIncarnation(),
		commits:       make(chan *commit, maxBatch),
		stop:          make(chan struct{}),
		done:          make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	meters, err := newStoreMetrics(opts.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("queue: metrics: %w", err)
	}
	s.meters = meters
	if s.crashDelay <= 0 {
		s.crashDelay = time.Minute
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if s.syncDir == nil {
		s.syncDir = durable.SyncDir
	}
	if s.openFile == nil {
		s.openFile = os.Open
	}
	if err := makeDurableDirs(s.dir, s.tmpDir, s.queueDir, s.quarantineDir); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	// One process per spool: a second hubd on the same spool would deliver
	// every message twice and delete the first one's temp files below.
	var lock *os.File
	if !opts.lockHeld {
		lock, err = lockSpool(s.dir)
		if err != nil {
			return nil, err
		}
	}
	s.lock = lock
	// Whatever is in tmp/ was never renamed into place, so no caller was told
	// it was durable, or was renamed out of queue/ by a Remove: it is safe,
	// and necessary, to drop it.
	torn, err := os.ReadDir(s.tmpDir)
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return nil, fmt.Errorf("queue: %w", err)
	}
	for _, e := range torn {
		s.log.Info("queue: removing torn temp file", "file", e.Name())
		os.Remove(filepath.Join(s.tmpDir, e.Name()))
	}
	go s.committer()
	return s, nil
}

// Close stops the committer. Calls made after Close fail.
func (s *DiskStore) Close() error {
	s.closing.Do(func() { close(s.stop) })
	<-s.done
	if s.lock != nil {
		s.lock.Close() // releases the flock
	}
	return nil
}

// lockSpool takes an exclusive, non-blocking flock on <dir>/lock and writes
// our pid into it for the operator. The kernel drops the lock when the
// process dies, so a crash never leaves the spool locked.
func lockSpool(dir string) (*os.File, error) {
	path := filepath.Join(dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("queue: spool %s is in use by another process (pid %s)", dir, strings.TrimSpace(string(pid)))
		}
		return nil, fmt.Errorf("queue: locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

func (s *DiskStore) msgPath(id hub.QueueID) string {
	return filepath.Join(s.queueDir, string(id)+".msg")
}

func (s *DiskStore) statePath(id hub.QueueID) string {
	return filepath.Join(s.queueDir, string(id)+".state")
}

func (s *DiskStore) activePath(id hub.QueueID) string {
	return filepath.Join(s.queueDir, string(id)+".active")
}

// MarkActive writes queue/<id>.active; see Store and the package comment
// for its format. It is deliberately not fsynced: it must survive the
// process, not the machine. The mark is fixed-width and written in one
// write over the old value (no truncation), so a process killed mid-write
// leaves the old mark or the new one; only a mark killed between its
// creation and its first write is empty (Load then uses CrashDelay).
func (s *DiskStore) MarkActive(id hub.QueueID, mark Mark) error {
	if !validID(string(id)) {
		return fmt.Errorf("queue: invalid id %q", id)
	}
	f, err := os.OpenFile(s.activePath(id), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s.formatMark(mark))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ClearActive removes the mark; a missing mark is not an error.
func (s *DiskStore) ClearActive(id hub.QueueID) {
	if validID(string(id)) {
		os.Remove(s.activePath(id))
	}
}

func (s *DiskStore) tmpPath(id hub.QueueID, kind string) string {
	return filepath.Join(s.tmpDir, fmt.Sprintf("%s.%s.%d", id, kind, s.tmpSeq.Add(1)))
}

// Put stores m and its body durably; see Store. It sets m.ID (unless the
// caller reserved one with hub.NewQueueID), m.Arrived (if zero) and m.Size.
func (s *DiskStore) Put(ctx context.Context, m *Message, body io.Reader) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.clock()
	switch {
	case m.ID == "":
		m.ID = s.ids.next(now)
	case !m.ID.Valid():
		return fmt.Errorf("queue: invalid id %q", m.ID)
	}
	if m.Arrived.IsZero() {
		m.Arrived = now
	}
	tmp := s.tmpPath(m.ID, "msg")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return storageError(err)
	}
	err = s.writeMessage(ctx, f, m, body)
	if err == nil {
		err = s.meters.syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// From here on the caller waits for the commit even if ctx ends:
		// the rename may already have happened, and reporting failure for a
		// message that then gets delivered would invite a duplicate.
		c := &commit{op: opPut, moves: []move{{tmp, s.msgPath(m.ID)}}}
		err = s.commit(c)
		if err == nil {
			reportCommit(ctx, CommitInfo{BatchSize: c.batch})
		}
	}
	if err != nil {
		os.Remove(tmp) // gone already if the rename happened: the commit undid it
		return storageError(err)
	}
	return nil
}

func (s *DiskStore) writeMessage(ctx context.Context, f *os.File, m *Message, body io.Reader) error {
	sum := crc32.New(castagnoli)
	n, err := io.Copy(io.MultiWriter(f, sum), durable.Reader(ctx, body))
	if err != nil {
		return err
	}
	m.Size = n
	return writeTrailer(f, msgRecord{
		ID: m.ID, Envelope: m.Envelope, Arrived: m.Arrived, Size: n,
		BodyCRC: sum.Sum32(), State: m.State,
	})
}

// Update replaces the state of message id durably; see Store.
func (s *DiskStore) Update(ctx context.Context, id hub.QueueID, st State) error {
	if !validID(string(id)) {
		return fmt.Errorf("queue: invalid id %q", id)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := os.Stat(s.msgPath(id)); err != nil {
		return fmt.Errorf("queue: update %s: %w", id, err)
	}
	tmp := s.tmpPath(id, "state")
	err := s.writeState(tmp, stateRecord{ID: id, State: st})
	if err == nil {
		err = s.commit(&commit{op: opUpdate, moves: []move{{tmp, s.statePath(id)}}})
	}
	if err != nil {
		os.Remove(tmp)
		return storageError(err)
	}
	return nil
}

// writeState writes rec as a new .state file at path and fsyncs it.
func (s *DiskStore) writeState(path string, rec stateRecord) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = writeTrailer(f, rec)
	if err == nil {
		err = s.meters.syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Remove deletes message id; see Store. Its files are renamed into tmp/
// (where Open deletes anything left) and unlinked there once queue/ is
// durable, so that a failed directory fsync can put them back. The .msg
// goes first: a crash between the two renames leaves a .state without a
// message, which Load deletes, never a message without its latest state
// (that would redeliver).
func (s *DiskStore) Remove(id hub.QueueID) error {
	if !validID(string(id)) {
		return fmt.Errorf("queue: invalid id %q", id)
	}
	return s.commit(&commit{op: opRemove, moves: []move{
		{s.msgPath(id), s.tmpPath(id, "msg-removed")},
		{s.statePath(id), s.tmpPath(id, "state-removed")},
	}})
}

// makeDurableDirs creates each directory that is missing (0700), and fsyncs
// the parent of each one it created, so that the spool's own directories
// survive a crash as surely as the messages put into them.
func makeDurableDirs(dirs ...string) error {
	for _, d := range dirs {
		var created []string
		for p := filepath.Clean(d); ; p = filepath.Dir(p) {
			if _, err := os.Stat(p); err == nil || p == filepath.Dir(p) {
				break
			}
			created = append(created, p)
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		for _, p := range created {
			if err := durable.SyncDir(filepath.Dir(p)); err != nil {
				return err
			}
		}
	}
	return nil
}

// Open returns message id's body; the reader fails at EOF if the body does
// not match the checksum recorded at Put.
func (s *DiskStore) Open(id hub.QueueID) (io.ReadCloser, error) {
	if !validID(string(id)) {
		return nil, fmt.Errorf("queue: invalid id %q", id)
	}
	f, err := os.Open(s.msgPath(id))
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("queue: %w", err)
	}
	var rec msgRecord
	bodyLen, err := readTrailer(f, fi.Size(), &rec)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("queue: %s: %w", id, err)
	}
	return newBodyReader(f, 0, bodyLen, rec.BodyCRC, f.Close), nil
}

// Get returns message id without its body; see Store. It reads the
// trailer of queue/<id>.msg, then queue/<id>.state if there is one. Each
// file is read through one descriptor, and an Update replaces a .state by
// rename, so each record read is whole. A Remove renames the .msg away
// before the .state: when the .state is missing, Get checks that the .msg
// is still there, so that it never returns the initial state of a message
// whose later state a Remove took away under it (it returns ErrNotFound,
// the Remove's outcome, even if that Remove then fails and is undone).
func (s *DiskStore) Get(ctx context.Context, id hub.QueueID) (*Message, error) {
	if !validID(string(id)) {
		return nil, fmt.Errorf("queue: invalid id %q", id)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var rec msgRecord
	bodyLen, err := readFileTrailer(s.msgPath(id), &rec)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("queue: get %s: %w", id, ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("queue: get %s: %w", id, err)
	case rec.ID != id || rec.Size != bodyLen:
		return nil, fmt.Errorf("queue: get %s: %w: record names %s, size %d, body is %d bytes", id, ErrCorrupt, rec.ID, rec.Size, bodyLen)
	}
	m := &Message{ID: id, Envelope: rec.Envelope, Arrived: rec.Arrived, Size: rec.Size, State: rec.State}
	var st stateRecord
	_, err = readFileTrailer(s.statePath(id), &st)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, err := os.Lstat(s.msgPath(id)); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("queue: get %s: %w", id, ErrNotFound)
		}
		return m, nil
	case err != nil:
		return nil, fmt.Errorf("queue: get %s: state file: %w", id, err)
	case st.ID != id:
		return nil, fmt.Errorf("queue: get %s: %w: state file names %s", id, ErrCorrupt, st.ID)
	}
	m.State = st.State
	return m, nil
}

// readFileTrailer reads the trailer of the file at path into v (readTrailer)
// and returns the length of the body before it.
func readFileTrailer(path string, v any) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return readTrailer(f, fi.Size(), v)
}

// storageError turns a full disk into the reply Submit promises for it.
func storageError(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return &policy.Reply{Code: 452, Enhanced: "4.3.1", Text: "Insufficient system storage"}
	}
	return err
}
