package queue

import (
	"bytes"
	"errors"
	"hubd/hub"
	"io"
	"os"
	"path/filepath"
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

// TestPwritev: more buffers than one pwritev(2) takes, empty ones among
// them, land one after another at the offset given.
func TestPwritev(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "seg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var bufs [][]byte
	var want []byte
	for i := range 3*iovMax + 7 {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, i%13)
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	const off = 4096
	n, err := pwritev(f, bufs, off)
	if err != nil || n != len(want) {
		t.Fatalf("pwritev: %d, %v; want %d, nil", n, err, len(want))
	}
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, off); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %v: the file does not hold the buffers in order", err)
	}
}

// TestLogInlineBodyDamaged: an inline body damaged on disk fails its
// reader with ErrCorrupt at EOF, whether the damage is in the octets that
// Open's first read got with the record's head or further on; an intact
// one reads back whole, in reads of any size.
func TestLogInlineBodyDamaged(t *testing.T) {
	for _, at := range []int{0, 100, msgHeadRead, 20000} {
		dir := t.TempDir()
		s := openLogTest(t, LogOptions{Dir: dir})
		mustLoad(t, s)
		body := "BODY" + strings.Repeat("0123456789abcdef", 30000/16)
		m := putBody(t, s, body)
		if got := readBodyIn(t, s, m.ID, 1+at%777); got != body {
			t.Fatalf("intact body read back as %d octets, want %d", len(got), len(body))
		}
		seg := segFiles(t, dir)[0]
		b, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(b, []byte("BODY"))
		b[i+at] ^= 1
		if err := os.WriteFile(seg, b, 0o600); err != nil {
			t.Fatal(err)
		}
		rc, err := s.Open(m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(rc); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("body damaged at %d: %v, want ErrCorrupt", at, err)
		}
		rc.Close()
		s.Close()
	}
}

// readBodyIn reads id's body in reads of n octets at most.
func readBodyIn(t *testing.T, s *LogStore, id hub.QueueID, n int) string {
	t.Helper()
	rc, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []byte
	buf := make([]byte, n)
	for {
		m, err := rc.Read(buf)
		out = append(out, buf[:m]...)
		if err == io.EOF {
			return string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
