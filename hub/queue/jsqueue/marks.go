package jsqueue

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"hubd/hub"
	"hubd/hub/queue"
)

// Active marks (queue.Store.MarkActive) are kept on this hub's own disk,
// one file per message in Options.MarksDir, written without fsync like the
// local spool's: a hub that dies and starts again finds them in its Scan
// and records the deaths in the messages' states (Interrupted, and a crash
// when the message was the one suspect in flight), so a message that
// kills its hub is poisoned after the threshold instead of killing it in
// a loop. A hub that takes a dead hub's messages over does not see that
// hub's marks: a death counts only where it happened (docs/cluster.md).

// newIncarnation names this process in its marks (16 hex digits).
func newIncarnation() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Store) markPath(id hub.QueueID) string {
	return filepath.Join(s.o.MarksDir, string(id)+".active")
}

// MarkActive writes id's mark; see queue.Store.
func (s *Store) MarkActive(id hub.QueueID, mark queue.Mark) error {
	if s.o.MarksDir == "" {
		return nil
	}
	if !id.Valid() {
		return fmt.Errorf("jsqueue: invalid id %q", id)
	}
	return os.WriteFile(s.markPath(id), []byte(queue.FormatMark(mark, s.o.Clock(), s.incarnation)), 0o600)
}

// ClearActive deletes id's mark; see queue.Store.
func (s *Store) ClearActive(id hub.QueueID) {
	if s.o.MarksDir == "" {
		return
	}
	if err := os.Remove(s.markPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Error("cannot clear active mark", "id", id, "err", err)
	}
}

// recordDeath records in m (owned by this hub, its revision known) the
// death its mark tells of, if it has one, and persists it before the mark
// goes. A write that fails keeps the mark for the next start.
func (s *Store) recordDeath(m *queue.Message) {
	if s.o.MarksDir == "" {
		return
	}
	line, err := os.ReadFile(s.markPath(m.ID))
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		s.log.Error("cannot read active mark", "id", m.ID, "err", err)
		return
	}
	if queue.RecordMarkedDeath(s.log, m, string(line), s.o.Clock().Add(s.o.CrashDelay)) {
		if err := s.Update(nil, m.ID, m.State); err != nil {
			s.log.Error("cannot record the death of the previous process", "id", m.ID, "err", err)
			return
		}
	}
	s.ClearActive(m.ID)
}

// dropStaleMarks deletes the marks of messages this hub no longer owns
// (taken over while it was down, or removed), after a Scan.
func (s *Store) dropStaleMarks() {
	if s.o.MarksDir == "" {
		return
	}
	entries, err := os.ReadDir(s.o.MarksDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".active")
		if !ok {
			continue
		}
		if s.owned(hub.QueueID(id)) != nil {
			os.Remove(filepath.Join(s.o.MarksDir, e.Name()))
		}
	}
}
