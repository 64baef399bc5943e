package message

import (
	"io"
	"strings"
	"testing"
)

// TestReaderBufferSize: a message that fits in firstChunk is read through a
// firstChunk buffer only (no chunkSize buffer held by a small message's
// transaction); a larger one moves to a chunkSize buffer once a read has
// filled the small one, and yields the same octets either way.
func TestReaderBufferSize(t *testing.T) {
	small := "Subject: s\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcde\r\n", 150)  // ~5 KB
	large := "Subject: l\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcde\r\n", 3000) // ~100 KB
	for _, c := range []struct {
		name, msg string
		wantCap   int
	}{{"small", small, firstChunk}, {"large", large, chunkSize}} {
		r := NewReader(strings.NewReader(c.msg), Options{})
		var out []byte
		caps := map[int]bool{}
		p := make([]byte, 4096)
		for {
			n, err := r.Read(p)
			out = append(out, p[:n]...)
			if r.buf != nil {
				caps[cap(r.buf)] = true
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if string(out) != c.msg {
			t.Errorf("%s: output differs from the input", c.name)
		}
		if !caps[c.wantCap] || len(caps) > 2 || (c.wantCap == firstChunk && len(caps) != 1) {
			t.Errorf("%s: buffers of %v bytes, want %d (after %d)", c.name, caps, c.wantCap, firstChunk)
		}
	}
}
