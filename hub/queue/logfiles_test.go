package queue

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

// TestLogReaderOutlivesItsSegment: a body reader of the shared segment
// file reads its body whole after the segment was reclaimed under it and
// after the store was closed; the cache keeps no file of a reclaimed
// segment; closing one reader twice does not take the
// file from another.
func TestLogReaderOutlivesItsSegment(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir, SegmentSize: 1024})
	mustLoad(t, s)
	body := strings.Repeat("x", 700)
	m := putBody(t, s, body)
	first := s.segPath(1)
	a, err := s.Open(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Open(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 100)
	if _, err := io.ReadFull(a, head); err != nil {
		t.Fatal(err)
	}
	// A second Close must not release a's reference (nor the cache's).
	c, err := s.Open(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	c.Close()
	if _, err := c.Read(head); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
	if err := s.Remove(m.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first segment to be reclaimed", func() bool {
		s.Remove(putBody(t, s, strings.Repeat("y", 700)).ID) // rotates, and reclaims after the batch
		_, err := os.Stat(first)
		return os.IsNotExist(err)
	})
	rest, err := io.ReadAll(a)
	if err != nil || string(head)+string(rest) != body {
		t.Fatalf("after reclaim: %d bytes, %v", 100+len(rest), err)
	}
	a.Close()
	s.mu.Lock()
	for n := range s.files {
		if _, err := os.Stat(s.segPath(uint64(n))); err != nil {
			t.Errorf("segment %d is cached but: %v", n, err)
		}
	}
	s.mu.Unlock()
	s.Close()
	if _, err := s.Open(m.ID); err == nil {
		t.Fatal("Open after Close succeeded")
	}
	all, err := io.ReadAll(b)
	if err != nil || string(all) != body {
		t.Fatalf("after Close: %d bytes, %v", len(all), err)
	}
	b.Close()
}
