package queue

import (
	"errors"
	"io/fs"
	"os"
)

// commit is one change to queue/ waiting for its batch's directory fsync:
// renames that make fsynced temp files visible (Put, Update, and the many
// states of a start-up recovery), or that take a message's files out of
// queue/ into tmp/ (Remove).
type commit struct {
	op      commitOp
	moves   []move
	applied []move // the moves done, in order, for finish or undo
	err     chan error
	batch   int // how many changes shared the batch's directory fsync; set before err is answered
}

type commitOp int

const (
	opPut    commitOp = iota // moves: temp file → queue/<id>.msg
	opUpdate                 // moves: temp file → queue/<id>.state (one or many)
	opRemove                 // moves: queue/<id>.msg and .state → tmp/; a missing file is skipped
)

type move struct{ from, to string }

// maxBatch bounds one group commit so that waiters are not held up behind an
// endless stream of newcomers.
const maxBatch = 512

// commit hands c to the committer and waits until its batch is durable, or
// failed and was undone (see the package comment).
func (s *DiskStore) commit(c *commit) error {
	c.err = make(chan error, 1)
	if s.syncEach {
		s.commitBatch([]*commit{c})
		return <-c.err
	}
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

// commitBatch applies every change of batch, fsyncs queue/ once, and
// answers each waiter. When that fsync fails, every change of the batch
// has failed: each is undone where it can be (Put, Remove), queue/ is
// fsynced again so that the undoing is durable too, and every waiter gets
// the error.
func (s *DiskStore) commitBatch(batch []*commit) {
	var applied []*commit
	for _, c := range batch {
		if err := c.apply(); err != nil {
			c.err <- err
			continue
		}
		applied = append(applied, c)
	}
	if len(applied) == 0 {
		return
	}
	for _, c := range applied {
		c.batch = len(applied)
	}
	err := s.meters.syncDir(s.syncDir, s.queueDir)
	s.meters.batchCommitted(len(applied))
	if err == nil {
		for _, c := range applied {
			c.finish()
			c.err <- nil
		}
		return
	}
	undone := false
	for _, c := range applied {
		if c.undo(s) {
			undone = true
		}
	}
	if undone {
		if err2 := s.syncDir(s.queueDir); err2 != nil {
			s.log.Error("queue: fsync after undoing a failed commit failed too; after a power loss the spool may hold changes that were reported as failed",
				"dir", s.queueDir, "err", err2)
		}
	}
	for _, c := range applied {
		c.err <- err
	}
}

// apply does c's renames in order. If one fails, the ones done are put
// back, so that a failed change leaves nothing behind.
func (c *commit) apply() error {
	for _, m := range c.moves {
		err := os.Rename(m.from, m.to)
		if c.op == opRemove && errors.Is(err, fs.ErrNotExist) {
			continue // a message without a .state, or removed already
		}
		if err != nil {
			for i := len(c.applied) - 1; i >= 0; i-- {
				os.Rename(c.applied[i].to, c.applied[i].from)
			}
			c.applied = nil
			return err
		}
		c.applied = append(c.applied, m)
	}
	return nil
}

// finish completes a change whose directory entry is durable: a Remove's
// files, now out of queue/, are unlinked.
func (c *commit) finish() {
	if c.op == opRemove {
		for _, m := range c.applied {
			os.Remove(m.to)
		}
	}
}

// undo reverts a change whose directory fsync failed and reports whether
// it changed anything. A Put's message leaves queue/: its client is told
// the message was not accepted and will send it again. A Remove's files
// come back. An Update is kept: the rename replaced the old state, and the
// caller keeps the new one in memory anyway (see the package comment).
func (c *commit) undo(s *DiskStore) bool {
	switch c.op {
	case opPut:
		for _, m := range c.applied {
			if err := os.Remove(m.to); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Error("queue: cannot withdraw a message whose commit failed", "file", m.to, "err", err)
			}
		}
	case opRemove:
		for i := len(c.applied) - 1; i >= 0; i-- {
			m := c.applied[i]
			if err := os.Rename(m.to, m.from); err != nil {
				s.log.Error("queue: cannot restore a message whose removal failed", "file", m.from, "err", err)
			}
		}
	default:
		return false
	}
	return len(c.applied) > 0
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
