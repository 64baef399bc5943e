package queue

// The log spool's open segment files (LogStore; log.go).
//
// Open and Get read records with pread(2) from one file descriptor per
// segment, opened by the first reader and kept while the segment exists:
// no open(2) and close(2) per delivery. The number of segments is bounded
// by the spool's size (256 MiB each), so is the number of descriptors.
//
// A segment's file is reference-counted: the cache holds one reference
// while the segment is in the index, and each reader (an Open's body
// reader, a Get in progress) holds one more, taken under LogStore.mu in
// the same critical section as the index lookup that named the segment.
// Reclaiming unlinks a segment under mu too, and drops the cache's
// reference there, so a reader that looked the segment up earlier still
// holds the file: POSIX keeps an unlinked file's data while a descriptor
// is open, and a sealed segment's records never change, so the reader
// reads what the index told it. The last reference closes the
// descriptor. Close drops the cache's references; readers still open
// keep theirs until they are closed.
//
// Blob bodies are opened by each Open on its own: there is one reader
// per blob at a time in practice, and a blob is unlinked by the Remove
// that settles its message.

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// segFile is a segment opened for reading, shared by Open and Get.
type segFile struct {
	f    *os.File
	refs atomic.Int32 // the cache's while the segment exists, plus one per reader
}

// release drops one reference; the last closes the file.
func (sf *segFile) release() error {
	if sf.refs.Add(-1) == 0 {
		return sf.f.Close()
	}
	return nil
}

var errClosed = errors.New("queue: store closed")

// acquireSeg returns segment n's shared file with a reference taken for
// the caller, opening the segment if no reader has yet; mu held, and the
// index names a record in n (so reclaiming cannot have unlinked it).
func (s *LogStore) acquireSeg(n uint32) (*segFile, error) {
	if s.closed {
		return nil, errClosed
	}
	sf := s.files[n]
	if sf == nil {
		f, err := os.Open(s.segPath(uint64(n)))
		if err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
		sf = &segFile{f: f}
		sf.refs.Store(1)
		s.files[n] = sf
	}
	sf.refs.Add(1)
	return sf, nil
}

// dropSeg forgets segment n's file, unlinked or the store closing: the
// cache's reference goes, readers keep theirs; mu held.
func (s *LogStore) dropSeg(n uint32) {
	if sf := s.files[n]; sf != nil {
		delete(s.files, n)
		sf.release()
	}
}

// closeFiles drops every cached file and makes later Opens and Gets fail;
// part of Close.
func (s *LogStore) closeFiles() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for n := range s.files {
		s.dropSeg(n)
	}
}
