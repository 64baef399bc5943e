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
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

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

	// syncEach disables group commit (each Put renames and fsyncs the
	// directory itself); only the benchmark sets it, to show the difference.
	syncEach bool
}

// DiskStore is the local-disk Store. See the package comment for the layout
// and why it is crash-safe.
type DiskStore struct {
	dir, tmpDir, queueDir, quarantineDir string
	log                                  *slog.Logger
	crashDelay                           time.Duration
	clock                                func() time.Time
	syncEach                             bool

	lock    *os.File // holds the spool's exclusive flock while the store is open
	ids     idGen
	tmpSeq  atomic.Uint64
	commits chan *commit
	stop    chan struct{}
	done    chan struct{}
	closing sync.Once
}

// commit is a change to queue/ waiting for the batch's directory fsync:
// a fsynced temp file to rename from → to, or (remove) the message file
// from and its state file to to unlink.
type commit struct {
	from, to string
	remove   bool
	err      chan error
}

// maxBatch bounds one group commit so that waiters are not held up behind an
// endless stream of newcomers.
const maxBatch = 512

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
		commits:       make(chan *commit, maxBatch),
		stop:          make(chan struct{}),
		done:          make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.crashDelay <= 0 {
		s.crashDelay = time.Minute
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if err := makeDurableDirs(s.dir, s.tmpDir, s.queueDir, s.quarantineDir); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	// One process per spool: a second hubd on the same spool would deliver
	// every message twice and delete the first one's temp files below.
	lock, err := lockSpool(s.dir)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	// Whatever is in tmp/ was never renamed into place, so no caller was told
	// it was durable: it is safe, and necessary, to drop it.
	torn, err := os.ReadDir(s.tmpDir)
	if err != nil {
		lock.Close()
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
	s.lock.Close() // releases the flock
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

// MarkActive writes queue/<id>.active holding notBefore; see Store. It is
// deliberately not fsynced: it must survive the process, not the machine.
// The time is written as fixed-width Unix nanoseconds over the old value
// (no truncation), so a process killed mid-write leaves the old value or
// the new one, never a torn one; only a mark killed between its creation
// and its first write is empty (Load then uses CrashDelay).
func (s *DiskStore) MarkActive(id hub.QueueID, notBefore time.Time) error {
	if !validID(string(id)) {
		return fmt.Errorf("queue: invalid id %q", id)
	}
	f, err := os.OpenFile(s.activePath(id), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%020d", notBefore.UnixNano())
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
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		// From here on the caller waits for the commit even if ctx ends:
		// the rename may already have happened, and reporting failure for a
		// message that then gets delivered would invite a duplicate.
		err = s.commit(tmp, s.msgPath(m.ID))
	}
	if err != nil {
		os.Remove(tmp)
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
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return storageError(err)
	}
	err = writeTrailer(f, stateRecord{ID: id, State: st})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.commit(tmp, s.statePath(id))
	}
	if err != nil {
		os.Remove(tmp)
		return storageError(err)
	}
	return nil
}

// Remove deletes message id. The .msg goes first: a crash between the two
// unlinks leaves a .state without a message, which Load deletes, never a
// message without its latest state (that would redeliver).
func (s *DiskStore) Remove(id hub.QueueID) error {
	if !validID(string(id)) {
		return fmt.Errorf("queue: invalid id %q", id)
	}
	// The .msg file goes first: a crash between the two unlinks leaves an
	// orphan .state, which Load removes, never a message without its state.
	if s.syncEach {
		if err := removeFiles(s.msgPath(id), s.statePath(id)); err != nil {
			return err
		}
		return durable.SyncDir(s.queueDir)
	}
	return s.submit(&commit{from: s.msgPath(id), to: s.statePath(id), remove: true, err: make(chan error, 1)})
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

// removeFiles unlinks paths in order; a file already gone is not an error.
func removeFiles(paths ...string) error {
	for _, p := range paths {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("queue: %w", err)
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
	return &bodyReader{f: f, r: io.NewSectionReader(f, 0, bodyLen), sum: crc32.New(castagnoli), want: rec.BodyCRC}, nil
}

// Load reads every message in the spool, oldest first, quarantining what it
// cannot read.
func (s *DiskStore) Load(ctx context.Context) ([]*Message, error) {
	entries, err := os.ReadDir(s.queueDir)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	msgs := map[string]bool{}
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".msg"); ok && validID(id) {
			msgs[id] = true
		}
	}
	var out []*Message
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		name := e.Name()
		id, kind, _ := strings.Cut(name, ".")
		switch {
		case !validID(id) || (kind != "msg" && kind != "state" && kind != "active"):
			s.quarantine(name, errors.New("not a queue file"))
		case (kind == "state" || kind == "active") && !msgs[id]:
			// Left by a Remove interrupted between its unlinks.
			os.Remove(filepath.Join(s.queueDir, name))
		case kind == "msg":
			m, err := s.loadOne(hub.QueueID(id))
			if err != nil {
				s.quarantine(name, err)
				s.quarantine(id+".state", err)
				continue
			}
			if err := s.recoverActive(ctx, m); err != nil {
				return nil, err
			}
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// recoverActive handles a message the previous process died processing:
// one more crash, and no attempt before the time MarkActive recorded. The
// count is made durable before the mark goes, so a crash loop counts up.
func (s *DiskStore) recoverActive(ctx context.Context, m *Message) error {
	raw, err := os.ReadFile(s.activePath(m.ID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	ns, perr := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	notBefore := time.Unix(0, ns)
	if err != nil || perr != nil {
		notBefore = s.clock().Add(s.crashDelay) // unreadable: still a crash, and still no storm
	}
	m.Crashes++
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if !r.Status.Settled() && r.NextAttempt.Before(notBefore) {
			r.NextAttempt = notBefore
		}
	}
	s.log.Warn("message was being processed when the hub stopped", "id", m.ID, "crashes", m.Crashes)
	if err := s.Update(ctx, m.ID, m.State); err != nil {
		return err
	}
	s.ClearActive(m.ID)
	return nil
}

func (s *DiskStore) loadOne(id hub.QueueID) (*Message, error) {
	f, err := os.Open(s.msgPath(id))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var rec msgRecord
	bodyLen, err := readTrailer(f, fi.Size(), &rec)
	if err != nil {
		return nil, err
	}
	if rec.ID != id || rec.Size != bodyLen {
		return nil, fmt.Errorf("%w: record names %s, size %d, body is %d bytes", errCorrupt, rec.ID, rec.Size, bodyLen)
	}
	m := &Message{ID: id, Envelope: rec.Envelope, Arrived: rec.Arrived, Size: rec.Size, State: rec.State}
	sf, err := os.Open(s.statePath(id))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return m, nil
	case err != nil:
		return nil, err
	}
	defer sf.Close()
	sfi, err := sf.Stat()
	if err != nil {
		return nil, err
	}
	var st stateRecord
	if _, err := readTrailer(sf, sfi.Size(), &st); err != nil {
		// Without the latest state we cannot tell delivered recipients from
		// pending ones; guessing would either lose mail or duplicate it.
		return nil, fmt.Errorf("state file: %w", err)
	}
	if st.ID != id {
		return nil, fmt.Errorf("%w: state file names %s", errCorrupt, st.ID)
	}
	m.State = st.State
	return m, nil
}

// quarantine moves a file out of queue/ so that the operator can look at it.
func (s *DiskStore) quarantine(name string, why error) {
	from := filepath.Join(s.queueDir, name)
	if _, err := os.Stat(from); err != nil {
		return
	}
	to := filepath.Join(s.quarantineDir, name)
	if _, err := os.Lstat(to); err == nil {
		// Keep what an earlier start quarantined under the same name.
		to += "." + strconv.FormatInt(s.clock().UnixNano(), 10)
	}
	if err := os.Rename(from, to); err != nil {
		s.log.Error("queue: cannot quarantine", "file", name, "err", err)
		return
	}
	s.log.Error("queue: quarantined unreadable file", "file", name, "to", to, "err", why)
}

// commit hands a fsynced temp file to the committer and waits until it is
// renamed into place and the directory entry is durable.
func (s *DiskStore) commit(from, to string) error {
	if s.syncEach {
		if err := os.Rename(from, to); err != nil {
			return err
		}
		return durable.SyncDir(s.queueDir)
	}
	return s.submit(&commit{from: from, to: to, err: make(chan error, 1)})
}

// submit hands c to the committer and waits for the batch it joins to be
// durable.
func (s *DiskStore) submit(c *commit) error {
	select {
	case s.commits <- c:
	case <-s.stop:
		return errors.New("queue: store closed")
	}
	select {
	case err := <-c.err:
		return err
	case <-s.done:
		// The committer is gone; it answered c if it saw it.
		select {
		case err := <-c.err:
			return err
		default:
			return errors.New("queue: store closed")
		}
	}
}

// committer is the single goroutine that makes directory entries durable, a
// batch at a time (see the package comment).
func (s *DiskStore) committer() {
	defer close(s.done)
	batch := make([]*commit, 0, maxBatch)
	for {
		select {
		case c := <-s.commits:
			batch = append(batch[:0], c)
		case <-s.stop:
			s.drain()
			return
		}
	more:
		for len(batch) < maxBatch {
			select {
			case c := <-s.commits:
				batch = append(batch, c)
			default:
				break more
			}
		}
		s.commitBatch(batch)
	}
}

func (s *DiskStore) commitBatch(batch []*commit) {
	var renamed []*commit
	for _, c := range batch {
		var err error
		if c.remove {
			err = removeFiles(c.from, c.to)
		} else {
			err = os.Rename(c.from, c.to)
		}
		if err != nil {
			c.err <- err
			continue
		}
		renamed = append(renamed, c)
	}
	if len(renamed) == 0 {
		return
	}
	err := durable.SyncDir(s.queueDir)
	for _, c := range renamed {
		c.err <- err
	}
}

// drain fails commits that raced with Close.
func (s *DiskStore) drain() {
	for {
		select {
		case c := <-s.commits:
			c.err <- errors.New("queue: store closed")
		default:
			return
		}
	}
}

// storageError turns a full disk into the reply Submit promises for it.
func storageError(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return &policy.Reply{Code: 452, Enhanced: "4.3.1", Text: "Insufficient system storage"}
	}
	return err
}
