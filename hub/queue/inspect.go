package queue

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"hubd/hub"
)

// Snapshot is what Inspect read from a log spool.
type Snapshot struct {
	Messages []*Message           // queued messages with their latest durable state, by ID (oldest first)
	Active   map[hub.QueueID]Mark // marks of passes and deliveries running now, or left by a process that died
}

// Inspect reads the log spool (LogStore) at dir without opening it: it
// takes no lock and changes nothing — a torn tail is where its reading
// stops, a damaged record is skipped, not quarantined, and the marks
// are read as they are, not recovered. It may run beside the hubd that
// owns the spool, and then sees what that process has made durable so far
// and the marks it has written. It is for diagnostics and tests; the hub
// itself reads its spool with Load.
func Inspect(ctx context.Context, dir string) (*Snapshot, error) {
	s := &LogStore{
		dir:        dir,
		logDir:     filepath.Join(dir, "log"),
		blobDir:    filepath.Join(dir, "blob"),
		clock:      time.Now,
		crashDelay: time.Minute,
		openFile:   os.Open,
		// Never a real incarnation (16 hex digits): every mark is reported.
		incarnation: "inspect",
		inspecting:  true,
	}
	s.activePath = filepath.Join(s.logDir, "active")
	var msgs []*Message
	for attempt := 0; ; attempt++ {
		seqs, err := s.segments()
		if err != nil {
			return nil, err
		}
		if len(seqs) > 0 {
			s.tailSeq = seqs[len(seqs)-1] // a record being written there is a torn tail: the end
		}
		msgs = nil
		sc, err := s.scanLog(ctx)
		if err == nil {
			s.idx, s.files, s.closed = sc.idx, map[uint32]*segFile{}, false
			err = s.readLive(ctx, func(m *Message) error {
				msgs = append(msgs, m)
				return nil
			})
			s.closeFiles()
		}
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || attempt == 10 {
			return nil, err
		}
		// The owner reclaimed a segment between the listing and the
		// reading: what it held is settled or copied forward; read again.
	}
	marks, err := s.readMarks()
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{Messages: msgs, Active: map[hub.QueueID]Mark{}}
	sort.Slice(snap.Messages, func(i, j int) bool { return snap.Messages[i].ID < snap.Messages[j].ID })
	for id, mk := range marks {
		snap.Active[id] = Mark{NotBefore: mk.notBefore, Isolated: mk.isolated}
	}
	return snap, nil
}
