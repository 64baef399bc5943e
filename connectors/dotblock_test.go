package connectors

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"testing"
)

// TestDotReaderBlockSizes: a transaction's network reads go into a
// firstBlock block, and into a dataBlock one only after a read has filled
// the first; a message that fits in the first never takes a dataBlock. The
// content and what follows the end marker are those of the byte-wise
// reference, however the stream is cut around the switch.
func TestDotReaderBlockSizes(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	var large bytes.Buffer
	large.WriteString("Subject: l\r\n\r\n")
	for large.Len() < 100<<10 {
		// Lines of random length, some stuffed.
		if rng.IntN(5) == 0 {
			large.WriteString("..")
		}
		large.Write(bytes.Repeat([]byte{'x'}, rng.IntN(200)))
		large.WriteString("\r\n")
	}
	small := []byte("Subject: s\r\n\r\n..stuffed\r\nline\r\n.\r\nQUIT\r\n")
	large.WriteString("\r\n.\r\nQUIT\r\n")
	for _, c := range []struct {
		name   string
		in     []byte
		chunks []int
		want   map[int]bool // block sizes seen
	}{
		{"small", small, []int{4096}, map[int]bool{firstBlock: true}},
		{"large in large pieces", large.Bytes(), []int{64 << 10}, map[int]bool{firstBlock: true, dataBlock: true}},
		{"large, the first block filled exactly", large.Bytes(), []int{firstBlock, 1, firstBlock - 1, 5000}, map[int]bool{firstBlock: true, dataBlock: true}},
		{"large in small pieces", large.Bytes(), []int{1000, 3}, map[int]bool{firstBlock: true}},
	} {
		want := readDot(c.in, 16, 0, c.chunks, []int{1 << 20}, 0, false)
		src := &clientStream{r: &chunkedReader{src: c.in, sizes: c.chunks}}
		br := bufio.NewReaderSize(src, 16)
		d := newDotReader(br, src, 0, nil)
		var got []byte
		seen := map[int]bool{}
		p := make([]byte, 10)
		for {
			n, err := d.Read(p)
			got = append(got, p[:n]...)
			if d.block != nil {
				seen[len(d.block)] = true
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
		}
		rest, _ := io.ReadAll(br)
		if string(got) != want.content || string(rest) != want.rest {
			t.Errorf("%s: content or rest differ from the reference (rest %q, want %q)", c.name, rest, want.rest)
		}
		if len(seen) != len(c.want) || !seen[firstBlock] || seen[dataBlock] != c.want[dataBlock] {
			t.Errorf("%s: blocks of %v bytes, want %v", c.name, seen, c.want)
		}
	}
}
