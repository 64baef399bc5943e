package queue

// Upgrading a disk spool (DiskStore, queue/*.msg) to the log spool
// (LogStore; log.go).

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"hubd/hub"
)

// importBatchBytes bounds the records of one import commit: the import is
// as many group commits as the spool's size needs, each its own fdatasync.
const importBatchBytes = 64 << 20

// importDisk imports the disk spool found under the spool directory, if
// any. It opens a DiskStore on the directory under the flock OpenLog
// holds and Loads it (which records the deaths its active marks tell of,
// durably, as its own Load does); Loads the log, to know what an import
// interrupted earlier wrote already; writes every other message as one
// MSG record with its current state and its body, keeping its ID and
// Arrived, through the group commit (fdatasync); and only then deletes
// queue/ and tmp/. A crash at any point leaves either the disk spool
// whole, or messages in both (the next OpenLog writes only those not in
// the log: the log wins), or the log alone: nothing lost, nothing twice.
func (s *LogStore) importDisk() error {
	queueDir := filepath.Join(s.dir, "queue")
	if _, err := os.Stat(queueDir); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return readError(queueDir, err)
	}
	ctx := context.Background()
	d, err := OpenDisk(DiskOptions{Dir: s.dir, Logger: s.log, Clock: s.clock, CrashDelay: s.crashDelay, lockHeld: true})
	if err != nil {
		return fmt.Errorf("queue: importing the disk spool: %w", err)
	}
	defer d.Close()
	msgs, err := d.Load(ctx)
	if err != nil {
		return fmt.Errorf("queue: importing the disk spool: %w", err)
	}
	inLog := map[hub.QueueID]bool{}
	if err := s.Scan(ctx, func(m *Message) error {
		inLog[m.ID] = true
		return nil
	}); err != nil {
		return fmt.Errorf("queue: importing the disk spool: %w", err)
	}
	imported := 0
	req, size := &logReq{op: opPut}, 0
	flush := func() error {
		if len(req.recs) == 0 {
			return nil
		}
		if err := s.submit(req); err != nil {
			return fmt.Errorf("queue: importing the disk spool: %w", storageError(err))
		}
		imported += len(req.recs)
		req, size = &logReq{op: opPut}, 0
		return nil
	}
	for _, m := range msgs {
		if inLog[m.ID] {
			continue
		}
		rec, err := s.importOne(d, m)
		if errors.Is(err, ErrCorrupt) {
			s.log.Error("queue: a message of the disk spool has a damaged body; quarantined, not imported", "id", m.ID, "err", err)
			d.quarantine(string(m.ID)+".msg", err)
			continue
		}
		if err != nil {
			return fmt.Errorf("queue: importing %s from the disk spool: %w", m.ID, err)
		}
		req.recs = append(req.recs, rec)
		req.blobSync = req.blobSync || rec.blob
		if size += len(rec.head) + piecesLen(rec.body); size >= importBatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	d.Close()
	for _, sub := range []string{"queue", "tmp"} {
		if err := os.RemoveAll(filepath.Join(s.dir, sub)); err != nil {
			return fmt.Errorf("queue: removing the imported disk spool: %w", err)
		}
	}
	if err := s.syncDir(s.dir); err != nil {
		return fmt.Errorf("queue: removing the imported disk spool: %w", err)
	}
	s.log.Info("queue: imported the disk spool into the log", "messages", imported, "already_in_log", len(msgs)-imported)
	return nil
}

// importOne reads m's body from the disk spool (checking its CRC) and
// encodes its MSG record, writing a blob for a large body.
func (s *LogStore) importOne(d *DiskStore, m *Message) (pendingRec, error) {
	rc, err := d.Open(m.ID)
	if err != nil {
		return pendingRec{}, err
	}
	defer rc.Close()
	rec := logMsg{Envelope: m.Envelope, Arrived: m.Arrived, State: m.State, Size: m.Size}
	var body []byte
	if m.Size > inlineMax {
		n, sum, err := s.writeBlob(m.ID, nil, rc)
		if err != nil {
			return pendingRec{}, err
		}
		rec.Size, rec.BodyCRC, rec.Blob = n, sum, true
	} else {
		if body, err = io.ReadAll(rc); err != nil {
			return pendingRec{}, err
		}
		rec.Size, rec.BodyCRC = int64(len(body)), crc32.Checksum(body, castagnoli)
	}
	req, err := s.msgReq(m.ID, &rec, [][]byte{body})
	if err != nil {
		return pendingRec{}, err
	}
	return req.recs[0], nil
}
