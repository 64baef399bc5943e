package connectors

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// byteDotReader is the reference the dotReader must match: go-smtp
// v0.25.1's DATA reader (net/textproto's dot-unstuffing machine with CRLF
// kept), one ReadByte per octet, with its MaxMessageBytes limit.
type byteDotReader struct {
	r       *bufio.Reader
	state   dotState
	limited bool
	left    int64
}

func (r *byteDotReader) Read(b []byte) (n int, err error) {
	if r.limited {
		if r.left <= 0 {
			return 0, smtp.ErrDataTooLarge
		}
		if int64(len(b)) > r.left {
			b = b[:r.left]
		}
	}
	for n < len(b) && r.state != dotEOF {
		var c byte
		c, err = r.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			break
		}
		switch r.state {
		case dotBeginLine:
			if c == '.' {
				r.state = dotDot
				continue
			}
			if c == '\r' {
				r.state = dotCR
				break
			}
			r.state = dotData
		case dotDot:
			if c == '\r' {
				r.state = dotDotCR
				continue
			}
			r.state = dotData
		case dotDotCR:
			if c == '\n' {
				r.state = dotEOF
				continue
			}
			r.state = dotData
		case dotCR:
			if c == '\n' {
				r.state = dotBeginLine
				break
			}
			r.state = dotData
		case dotData:
			if c == '\r' {
				r.state = dotCR
			}
		}
		b[n] = c
		n++
	}
	if err == nil && r.state == dotEOF {
		err = io.EOF
	}
	if r.limited {
		r.left -= int64(n)
	}
	return n, err
}

// chunkedReader returns src in reads of the given sizes (cycled), as a
// network delivers a stream in arbitrary segments.
type chunkedReader struct {
	src   []byte
	sizes []int
	i     int
}

func (c *chunkedReader) Read(p []byte) (int, error) {
	if len(c.src) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.src), c.sizes[c.i%len(c.sizes)])
	c.i++
	copy(p, c.src[:n])
	c.src = c.src[n:]
	return n, nil
}

// dotOutcome is what a reader made of a stream: the content it yielded,
// its first error other than io.EOF (nil: it reached the end marker), and
// what was left of the stream after a drain to the end marker (the next
// commands: it must be the same, or the session is out of step).
type dotOutcome struct {
	content string
	err     error
	rest    string
}

// readDot reads in through a reader (fast: the dotReader, with its own
// reads in blocks of block octets, 0 for its pooled block; else the
// byte-wise reference) over a bufio.Reader of bufSize fed in chunks of the
// given sizes, with reads of readSizes.
func readDot(in []byte, bufSize, block int, chunks, readSizes []int, limit int64, fast bool) dotOutcome {
	src := &clientStream{r: &chunkedReader{src: in, sizes: chunks}}
	br := bufio.NewReaderSize(src, bufSize)
	var r io.Reader
	var drain func() error
	if fast {
		d := newDotReader(br, src, limit, nil)
		if block > 0 {
			d.block = make([]byte, block)
		}
		r, drain = d, d.drain
	} else {
		d := &byteDotReader{r: br, limited: limit > 0, left: limit}
		r = d
		drain = func() error {
			d.limited = false
			_, err := io.Copy(io.Discard, d)
			return err
		}
	}
	var out dotOutcome
	var content bytes.Buffer
	for i := 0; ; i++ {
		p := make([]byte, readSizes[i%len(readSizes)])
		n, err := r.Read(p)
		content.Write(p[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			out.err = err
			drain()
			break
		}
	}
	out.content = content.String()
	rest, _ := io.ReadAll(br)
	out.rest = string(rest)
	return out
}

func sameOutcome(a, b dotOutcome) bool {
	return a.content == b.content && a.rest == b.rest && errors.Is(a.err, b.err) && errors.Is(b.err, a.err)
}

// dotPieces are the fragments random contents are made of: ordinary text,
// every line end and its broken forms, dots at line starts (stuffed and
// not), lone dots after bare line ends, end markers and their near misses.
var dotPieces = []string{
	"text", "x", " ", "\r\n", "\r\n", "\r\n", "\r", "\n", "\r\r\n", "\n\r",
	".", "..", "...", ".\r", ".\n", ".x", "\r\n.", "\r\n..", "\r\n.\r\n", "\r\n..\r\n",
	"\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r\n.\r", ".\r\r\n", "\r\n.\r\r\n.\r\n",
	strings.Repeat("L", 700), strings.Repeat("y", 2100),
}

func randomDotStream(rng *rand.Rand) []byte {
	var b bytes.Buffer
	for range rng.IntN(40) {
		b.WriteString(dotPieces[rng.IntN(len(dotPieces))])
	}
	if rng.IntN(8) != 0 {
		b.WriteString("\r\n.\r\n") // usually ended; sometimes cut short
	}
	if rng.IntN(2) == 0 {
		b.WriteString("QUIT\r\n") // pipelined after the end
	}
	return b.Bytes()
}

// TestDotReaderMatchesByteReader compares the dotReader with go-smtp's
// byte-wise reader on random streams, fed and read in random pieces, with
// and without a size limit: the same content, the same error, and the same
// octets left for the next command.
func TestDotReaderMatchesByteReader(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		in := randomDotStream(rng)
		bufSize := 16 << rng.IntN(9) // 16 octets (bufio's least) to 4 KiB
		chunks := []int{1 + rng.IntN(3), 1 + rng.IntN(100), 1 + rng.IntN(5000)}
		reads := []int{1 + rng.IntN(7), 1 + rng.IntN(500), 1 + rng.IntN(40000)}
		var limit int64
		if rng.IntN(3) == 0 {
			limit = int64(rng.IntN(len(in) + 2))
		}
		// go-smtp's reader refuses content of exactly its limit; ours
		// accepts it (RFC 1870), so the reference runs one octet higher
		// and, when it refuses, has yielded one octet more than ours.
		refLimit := limit
		if limit > 0 {
			refLimit = limit + 1
		}
		block := []int{0, 1 + rng.IntN(5), 1 + rng.IntN(300), 1 + rng.IntN(6000)}[rng.IntN(4)]
		want := readDot(in, bufSize, 0, chunks, reads, refLimit, false)
		if want.err != nil && limit > 0 && int64(len(want.content)) > limit {
			want.content = want.content[:limit]
		}
		got := readDot(in, bufSize, block, chunks, reads, limit, true)
		if !sameOutcome(got, want) {
			t.Fatalf("case %d: stream %q (buffer %d, block %d, chunks %v, reads %v, limit %d):\ngot  %+v\nwant %+v",
				i, in, bufSize, block, chunks, reads, limit, got, want)
		}
	}
}

// TestDotReaderEndAtEveryOffset splits "\r\n.\r\n" (and a stuffed line before
// it) at every offset, between network reads and between the caller's reads.
func TestDotReaderEndAtEveryOffset(t *testing.T) {
	t.Parallel()
	in := []byte("Subject: x\r\n\r\n..dot\r\nline\r\n.\r\nMAIL FROM:<a@b>\r\n")
	for split := 1; split < len(in); split++ {
		for _, reads := range [][]int{{split, 4096}, {1}, {4096}} {
			for _, limit := range []int64{0, 16, 27, 28, 29} {
				want := readDot(in, 16, 0, []int{split, len(in)}, reads, limit, false)
				for _, block := range []int{0, 1, 3, 16} {
					got := readDot(in, 16, block, []int{split, len(in)}, reads, limit, true)
					if !sameOutcome(got, want) {
						t.Fatalf("split %d, reads %v, limit %d, block %d:\ngot  %+v\nwant %+v", split, reads, limit, block, got, want)
					}
				}
				if limit == 0 && (want.content != "Subject: x\r\n\r\n.dot\r\nline\r\n" || want.rest != "MAIL FROM:<a@b>\r\n") {
					t.Fatalf("split %d: %+v", split, want)
				}
			}
		}
	}
}

// TestDotReaderNewLine: the deadline hook runs before each wait for the
// network that follows a line end, and not while one line trickles in.
func TestDotReaderNewLine(t *testing.T) {
	t.Parallel()
	in := []byte("ab\r\ncd" + "ef" + "gh\r\n" + ".\r\n")
	src := &clientStream{r: &chunkedReader{src: in, sizes: []int{6, 2, 4, 3}}}
	br := bufio.NewReaderSize(src, 16)
	calls := 0
	d := newDotReader(br, src, 0, func() { calls++ })
	got, err := io.ReadAll(d)
	if err != nil || string(got) != "ab\r\ncdefgh\r\n" {
		t.Fatalf("got %q, %v", got, err)
	}
	// Waits: before "ab\r\ncd" (the DATA line ended), before "ef" (a line
	// ended in "ab\r\n"), before "gh\r\n" (no line end since: none), before
	// ".\r\n" (one ended): three.
	if calls != 3 {
		t.Errorf("newLine called %d times, want 3", calls)
	}
}

// FuzzDotReader compares the dotReader with the byte-wise reader on
// arbitrary streams.
func FuzzDotReader(f *testing.F) {
	for _, s := range dotPieces {
		f.Add([]byte(s+"\r\n.\r\nQUIT\r\n"), uint8(3), uint16(7), uint16(0))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8, read uint16, limit uint16) {
		chunks := []int{int(chunk%64) + 1, 4096}
		reads := []int{int(read%8192) + 1}
		want := readDot(in, 16, 0, chunks, reads, int64(limit), false)
		got := readDot(in, 16, int(chunk%32), chunks, reads, int64(limit), true)
		if !sameOutcome(got, want) {
			t.Fatalf("got %+v, want %+v", got, want)
		}
	})
}

// TestDATAContentInStep drives DATA over a connection: content around
// go-smtp's size limit, an empty message, and a message whose end marker
// reaches the server in two writes split at every offset, each followed by
// a pipelined NOOP. The replies are those of go-smtp's own DATA reader, and
// the session stays in step.
func TestDATAContentInStep(t *testing.T) {
	t.Parallel()
	h := start(t, internetHCL) // max_message_size = "1KB": go-smtp's limit is 1024
	c, _ := h.dial("127.0.0.1:0", "")
	c.expect("EHLO client.test", "250")
	send := func(wire ...string) string {
		t.Helper()
		c.expect("MAIL FROM:<s@remote.test>", "250 ")
		c.expect("RCPT TO:<alice@example.com>", "250 ")
		c.expect("DATA", "354 ")
		for _, w := range wire {
			c.raw(w)
		}
		r := c.reply()
		if n := c.reply(); n != "250 2.0.0 OK" { // the NOOP pipelined after the end
			t.Fatalf("NOOP after the content: %q", n)
		}
		return r
	}
	// Unstuffed content of n octets, with a stuffed line ("..x" on the wire).
	sized := func(n int) string {
		head := "Subject: size\r\n\r\n..x\r\n"
		return head + strings.Repeat("z", n-len(head)+1-2) + "\r\n"
	}
	queued := "250 2.0.0 Ok: queued as "
	for _, tc := range []struct {
		n    int
		want string
	}{
		{1023, queued},
		{1024, queued}, // RFC 1870: SIZE is the largest message accepted
		{1025, "552 5.3.4 Message size exceeds fixed maximum message size"},
		{4000, "552 5.3.4 Message size exceeds fixed maximum message size"},
	} {
		if r := send(sized(tc.n) + ".\r\nNOOP\r\n"); !strings.HasPrefix(r, tc.want) {
			t.Errorf("content of %d octets: %q, want %q", tc.n, r, tc.want)
		}
	}
	if r := send(".\r\nNOOP\r\n"); !strings.HasPrefix(r, queued) {
		t.Errorf("empty message: %q", r) // RFC 5321 §4.1.1.4 does not forbid one
	}
	wire := "Subject: split\r\n\r\n..dot\r\nline\r\n.\r\nNOOP\r\n"
	for i := 1; i < len(wire); i++ {
		if r := send(wire[:i], wire[i:]); !strings.HasPrefix(r, queued) {
			t.Fatalf("split at %d: %q", i, r)
		}
		if _, body := h.sub.last(t); !strings.HasSuffix(body, "\r\n\r\n.dot\r\nline\r\n") {
			t.Fatalf("split at %d: body %q", i, body)
		}
	}
}
