package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"hubd/hub"
)

// Load reads every message in the spool, oldest first; see Store. It works
// in two steps. The scan only reads: any error that is not proven
// corruption (ErrCorrupt) ends Load there, with the spool as it was. Then
// what the scan decided is done: corrupt records quarantined, files left
// by an interrupted Remove deleted, and the deaths the active marks record
// persisted in one group commit before the marks are deleted.
func (s *DiskStore) Load(ctx context.Context) ([]*Message, error) {
	sc, err := s.scan(ctx)
	if err != nil {
		return nil, err
	}
	for _, q := range sc.corrupt {
		s.quarantine(q.name, q.why)
	}
	for _, name := range sc.orphans {
		os.Remove(filepath.Join(s.queueDir, name))
	}
	if err := s.recoverMarks(ctx, sc.marked); err != nil {
		return nil, err
	}
	sort.Slice(sc.msgs, func(i, j int) bool { return sc.msgs[i].ID < sc.msgs[j].ID })
	return sc.msgs, nil
}

// Scan calls fn with every message in the spool, oldest first; see Store.
// The disk spool keeps one file per message, and Scan is its Load: it
// holds every Message until the last is handed out.
func (s *DiskStore) Scan(ctx context.Context, fn func(*Message) error) error {
	msgs, err := s.Load(ctx)
	if err != nil {
		return err
	}
	for i, m := range msgs {
		msgs[i] = nil // the caller's from here on
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}

// scanResult is what Load's read-only scan found.
type scanResult struct {
	msgs    []*Message
	marked  []markedMessage // messages with an active mark
	corrupt []corruptFile   // to quarantine
	orphans []string        // .state and .active files without a .msg
}

type markedMessage struct {
	msg  *Message
	mark activeMark
}

type corruptFile struct {
	name string
	why  error
}

func (s *DiskStore) scan(ctx context.Context) (*scanResult, error) {
	entries, err := os.ReadDir(s.queueDir)
	if err != nil {
		return nil, readError(s.queueDir, err)
	}
	msgs := map[string]bool{}
	for _, e := range entries {
		if id, ok := strings.CutSuffix(e.Name(), ".msg"); ok && validID(id) {
			msgs[id] = true
		}
	}
	sc := &scanResult{}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		name := e.Name()
		id, kind, _ := strings.Cut(name, ".")
		switch {
		case !validID(id) || (kind != "msg" && kind != "state" && kind != "active"):
			sc.corrupt = append(sc.corrupt, corruptFile{name, errors.New("not a queue file")})
		case kind != "msg" && !msgs[id]:
			sc.orphans = append(sc.orphans, name) // left by a Remove interrupted between its renames
		case kind == "msg":
			m, err := s.loadOne(hub.QueueID(id))
			if errors.Is(err, ErrCorrupt) {
				sc.corrupt = append(sc.corrupt, corruptFile{name, err}, corruptFile{id + ".state", err})
				continue
			}
			if err != nil {
				return nil, err
			}
			sc.msgs = append(sc.msgs, m)
			mark, ok, err := s.readMark(m.ID)
			if err != nil {
				return nil, err
			}
			if ok {
				sc.marked = append(sc.marked, markedMessage{m, mark})
			}
		}
	}
	return sc, nil
}

// readError is the start-up error for a spool file that cannot be read for
// a reason other than corruption: it names the file and the errno, and says
// that nothing was changed.
func readError(path string, err error) error { return &spoolReadError{path, err} }

type spoolReadError struct {
	path string
	err  error
}

func (e *spoolReadError) Unwrap() error { return e.err }

func (e *spoolReadError) Error() string {
	what := e.err.Error()
	var pe *fs.PathError
	if errors.As(e.err, &pe) {
		what = pe.Op + ": " + pe.Err.Error() // the path is said once, first
	}
	errno := "no errno"
	var en syscall.Errno
	if errors.As(e.err, &en) {
		errno = unix.ErrnoName(en)
	}
	return fmt.Sprintf("queue: cannot read %s: %s (%s); start-up stopped, nothing in the spool was changed", e.path, what, errno)
}

func (s *DiskStore) loadOne(id hub.QueueID) (*Message, error) {
	var rec msgRecord
	bodyLen, err := s.readRecord(s.msgPath(id), &rec)
	if err != nil {
		return nil, err
	}
	if rec.ID != id || rec.Size != bodyLen {
		return nil, fmt.Errorf("%w: record names %s, size %d, body is %d bytes", ErrCorrupt, rec.ID, rec.Size, bodyLen)
	}
	m := &Message{ID: id, Envelope: rec.Envelope, Arrived: rec.Arrived, Size: rec.Size, State: rec.State}
	var st stateRecord
	_, err = s.readRecord(s.statePath(id), &st)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return m, nil
	case errors.Is(err, ErrCorrupt):
		// Without the latest state we cannot tell delivered recipients from
		// pending ones; guessing would either lose mail or duplicate it.
		return nil, fmt.Errorf("state file: %w", err)
	case err != nil:
		return nil, err
	}
	if st.ID != id {
		return nil, fmt.Errorf("%w: state file names %s", ErrCorrupt, st.ID)
	}
	m.State = st.State
	return m, nil
}

// readRecord reads the trailer of the file at path into v and returns the
// length of the body before it. A missing file is fs.ErrNotExist; a damaged
// one ErrCorrupt; anything else is a readError.
func (s *DiskStore) readRecord(path string, v any) (int64, error) {
	f, err := s.openFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	if err != nil {
		return 0, readError(path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, readError(path, err)
	}
	n, err := readTrailer(f, fi.Size(), v)
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return 0, readError(path, err)
	}
	return n, err
}

// quarantine moves a file out of queue/ so that the operator can look at it.
func (s *DiskStore) quarantine(name string, why error) {
	from := filepath.Join(s.queueDir, name)
	if _, err := os.Lstat(from); err != nil {
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
	s.log.Error("queue: quarantined corrupt file", "file", name, "to", to, "err", why)
}

// activeMark is a mark as Load reads it back.
type activeMark struct {
	notBefore   time.Time
	incarnation string // "" when unreadable, or written before incarnations existed
	isolated    bool
}

// newIncarnation names one OpenDisk of a spool: 64 random bits in hex.
func newIncarnation() string {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go ≥ 1.24)
	return hex.EncodeToString(b[:])
}

// formatMark is the content of an .active file: fixed width (40 bytes), so
// that each write replaces the whole of the previous one.
func (s *DiskStore) formatMark(mk Mark) string { return formatMark(mk, s.clock(), s.incarnation) }

// formatMark is a mark as both stores write it: "<NotBefore, Unix ns, 20
// digits> <incarnation, 16 hex> <i|->\n" (40 bytes). A zero NotBefore
// means now.
func formatMark(mk Mark, now time.Time, incarnation string) string {
	nb := mk.NotBefore
	if nb.IsZero() {
		nb = now
	}
	flag := '-'
	if mk.Isolated {
		flag = 'i'
	}
	return fmt.Sprintf("%020d %s %c\n", nb.UnixNano(), incarnation, flag)
}

// readMark reads message id's active mark, if it has one. An empty or torn
// mark (the process died creating it) still records a death, isolated or
// not unknown, so it counts as not isolated and holds the message back for
// CrashDelay.
func (s *DiskStore) readMark(id hub.QueueID) (activeMark, bool, error) {
	path := s.activePath(id)
	f, err := s.openFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return activeMark{}, false, nil
	}
	if err != nil {
		return activeMark{}, false, readError(path, err)
	}
	defer f.Close()
	var buf [64]byte
	n, err := f.Read(buf[:])
	if err != nil && n == 0 && !errors.Is(err, io.EOF) {
		return activeMark{}, false, readError(path, err)
	}
	return parseMark(string(buf[:n]), s.clock().Add(s.crashDelay)), true, nil
}

// parseMark reads a mark written by formatMark. One that cannot be read
// (torn: the process died writing it) still records a death; whether it was
// isolated is unknown, so it counts as not isolated, and the message is
// held back until crashDelayed.
func parseMark(content string, crashDelayed time.Time) activeMark {
	fields := strings.Fields(content)
	mk := activeMark{notBefore: crashDelayed}
	if len(fields) == 0 {
		return mk
	}
	ns, perr := strconv.ParseInt(fields[0], 10, 64)
	if perr != nil {
		return mk
	}
	mk.notBefore = time.Unix(0, ns)
	if len(fields) == 3 && len(fields[1]) == 16 {
		mk.incarnation = fields[1]
		mk.isolated = fields[2] == "i"
	}
	return mk
}

// recoverMarks records the death of the previous process in every message
// it had in flight (see Store): one more interruption, one more crash if
// the mark says the message was isolated, and no attempt before the mark's
// NotBefore. A mark whose death is recorded already (State.LastDeath: the
// Load that recorded it was itself interrupted) only goes. The new states
// are persisted in one group commit before any mark is deleted.
func (s *DiskStore) recoverMarks(ctx context.Context, marked []markedMessage) error {
	var recs []stateRecord
	counted := 0
	for _, mm := range marked {
		m := mm.msg
		if !recordDeath(s.log, m, mm.mark) {
			continue
		}
		if mm.mark.isolated {
			counted++
		}
		recs = append(recs, stateRecord{ID: m.ID, State: m.State})
	}
	if len(marked) == 0 {
		return nil
	}
	start := time.Now()
	if err := s.updateBatch(ctx, recs); err != nil {
		return fmt.Errorf("queue: recording the death of the previous process: %w", err)
	}
	for _, mm := range marked {
		s.ClearActive(mm.msg.ID)
	}
	s.log.Warn("queue: messages were in flight when the previous process died", "messages", len(marked),
		"counted_against", counted, "recorded_in", time.Since(start).Round(time.Millisecond))
	return nil
}

// recordDeath records in m's state the death of the process that left
// mark mk on it (see Store): one more interruption, one more crash if the
// mark says the message was isolated, and no attempt before the mark's
// NotBefore. It reports false, changing nothing, when that death is
// recorded already (State.LastDeath: the Load that recorded it was itself
// interrupted). Both stores' Loads use it.
func recordDeath(log *slog.Logger, m *Message, mk activeMark) bool {
	if mk.incarnation != "" && mk.incarnation == m.LastDeath {
		return false
	}
	m.Interrupted++
	m.LastDeath = mk.incarnation
	if mk.isolated {
		m.Crashes++
		m.Deaths++
		log.Warn("queue: process death counted against the message: it was the one suspect in flight",
			"id", m.ID, "crashes", m.Crashes, "interrupted", m.Interrupted)
	} else {
		log.Debug("queue: message was in flight when the process died", "id", m.ID, "interrupted", m.Interrupted)
	}
	for i := range m.Recipients {
		r := &m.Recipients[i]
		if !r.Status.Settled() && r.NextAttempt.Before(mk.notBefore) {
			r.NextAttempt = mk.notBefore
		}
	}
	return true
}

// syncWorkers bounds the concurrent fsyncs of updateBatch: enough for the
// filesystem to merge them into few journal commits.
const syncWorkers = 64

// updateBatch persists many states with one group commit: each state is
// written and fsynced to its own temp file, syncWorkers at a time, then
// all are renamed into queue/ as one commit (one directory fsync).
func (s *DiskStore) updateBatch(ctx context.Context, recs []stateRecord) error {
	if len(recs) == 0 {
		return nil
	}
	c := &commit{op: opUpdate, moves: make([]move, len(recs))}
	for i, r := range recs {
		c.moves[i] = move{s.tmpPath(r.ID, "state"), s.statePath(r.ID)}
	}
	next := make(chan int)
	errs := make(chan error, syncWorkers)
	var wg sync.WaitGroup
	for range min(syncWorkers, len(recs)) {
		wg.Go(func() {
			for i := range next {
				if err := s.writeState(c.moves[i].from, recs[i]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
feed:
	for i := range recs {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	if err == nil {
		err = s.commit(c)
	}
	if err != nil {
		for _, m := range c.moves {
			os.Remove(m.from)
		}
		return storageError(err)
	}
	return nil
}

// FormatMark is an active mark as the stores write it (see Store): for a
// store outside this package that keeps marks of its own
// (hub/queue/jsqueue).
func FormatMark(mk Mark, now time.Time, incarnation string) string {
	return formatMark(mk, now, incarnation)
}

// RecordMarkedDeath records in m's state the death of the process that
// left the active mark line (FormatMark's; empty or torn: a death, not
// isolated, not due before crashDelayed), as Load does (see Store). It
// reports false, changing nothing, when that death is recorded already.
func RecordMarkedDeath(log *slog.Logger, m *Message, line string, crashDelayed time.Time) bool {
	return recordDeath(log, m, parseMark(line, crashDelayed))
}
