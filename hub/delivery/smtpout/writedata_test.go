package smtpout

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// referenceData is the rule of writeData a byte at a time (RFC 5321
// §4.5.2 transparency, bare LF to CRLF, §4.1.1.4 end of data), the
// obvious form writeData must agree with.
func referenceData(body []byte) []byte {
	var out bytes.Buffer
	lineStart, lastCR := true, false
	for _, b := range body {
		if lineStart && b == '.' {
			out.WriteByte('.')
		}
		if b == '\n' && !lastCR {
			out.WriteByte('\r')
		}
		out.WriteByte(b)
		lineStart, lastCR = b == '\n', b == '\r'
	}
	if !lineStart {
		out.WriteString("\r\n")
	}
	out.WriteString(".\r\n")
	return out.Bytes()
}

// sendData writes body with its size known (small bodies: through
// smallBlock buffers), unknown, and wrongly guessed small: the same octets
// every time.
func sendData(t *testing.T, body []byte) []byte {
	t.Helper()
	got := sendDataSized(t, bytes.NewReader(body), int64(len(body)))
	for _, size := range []int64{-1, 0} {
		if other := sendDataSized(t, bytes.NewReader(body), size); !bytes.Equal(other, got) {
			t.Fatalf("%d bytes: size %d sends other octets than size %d", len(body), size, len(body))
		}
	}
	return got
}

func sendDataFrom(t *testing.T, body io.Reader) []byte {
	t.Helper()
	return sendDataSized(t, body, -1)
}

func sendDataSized(t *testing.T, body io.Reader, size int64) []byte {
	t.Helper()
	c, got := pipeConn()
	if err := c.writeData(body, size, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c.nc.Close()
	return <-got
}

// pipeConn is a conn over an in-memory pipe; got has every octet written
// to it once it is closed.
func pipeConn() (*conn, <-chan []byte) {
	client, server := net.Pipe()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(server)
		got <- b
	}()
	return &conn{raw: client, nc: client}, got
}

// TestWriteDataMatchesReference: dots at line starts, bare LFs, CRs,
// lines longer than a block (a dot or an LF right at its edge), and bodies
// without a final line end, against the byte-wise rule.
func TestWriteDataMatchesReference(t *testing.T) {
	cases := []string{
		"", "x", ".", "\n", "\r\n", ".\r\n", "..\n", "a\n.b\n", "a\r\r\n.\r", "\r", "a\rb\n.",
		strings.Repeat("x", 32<<10-1) + "\n.dot\n",
		strings.Repeat("x", 32<<10) + ".\n",
		strings.Repeat("x", 32<<10-1) + "\r\n.",
		strings.Repeat("y", 100<<10) + "\n." + strings.Repeat("z", 70<<10),
		strings.Repeat("x", dataBlock-1) + "\n.dot\n",
		strings.Repeat("x", dataBlock) + ".\n",
		strings.Repeat("x", dataBlock-1) + "\r\n.",
		strings.Repeat("x", dataBlock-1) + "\r\n",
		strings.Repeat("x", dataBlock-2) + "\r\n",
		strings.Repeat("x", 2*dataBlock-1) + "\r\n",
		strings.Repeat(".\n", dataBlock),
		strings.Repeat("ab\r\n", dataBlock/4) + ".",
		strings.Repeat("x", smallBlock-1) + "\n.dot\n",
		strings.Repeat("x", smallBlock) + ".\n",
		strings.Repeat("x", smallBlock-2) + "\r\n",
		strings.Repeat(".\n", smallBlock),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(".\r\nab")
	for range 300 {
		b := make([]byte, rng.IntN(200))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	for i, body := range cases {
		want := referenceData([]byte(body))
		if got := sendData(t, []byte(body)); !bytes.Equal(got, want) {
			t.Fatalf("case %d (%d bytes, %q...): got %q..., want %q...", i, len(body), first(body), first(string(got)), first(string(want)))
		}
	}
}

func first(s string) string { return s[:min(len(s), 60)] }

// chunkReader hands out its content in pieces of random sizes (1 to max
// octets), so that the reads writeData sees, and the blocks it writes,
// start and end anywhere.
type chunkReader struct {
	b   []byte
	rng *rand.Rand
	max int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.b), 1+r.rng.IntN(r.max))
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

// TestWriteDataInPieces: the same rule when the body arrives in pieces of
// any size (the header firewall yields a header line at a time), so a
// CRLF, a dot or a bare LF can fall on either side of a read and of a
// block.
func TestWriteDataInPieces(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte(".\r\nab")
	for i := range 200 {
		size := rng.IntN(3 * dataBlock)
		if i%4 == 0 {
			size = rng.IntN(300)
		}
		b := make([]byte, size)
		for j := range b {
			if rng.IntN(10) == 0 {
				b[j] = alphabet[rng.IntN(len(alphabet))]
			} else {
				b[j] = 'x'
			}
		}
		want := referenceData(b)
		got := sendDataFrom(t, &chunkReader{b: b, rng: rng, max: 1 + rng.IntN(2*dataBlock)})
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d (%d bytes): got %d octets, want %d", i, len(b), len(got), len(want))
		}
	}
}

// TestWriteDataReadError: a spool read that fails mid-message ends
// writeData with a readError, and the end-of-data marker is never sent,
// so the server discards what it got (transaction.data drops the
// connection).
func TestWriteDataReadError(t *testing.T) {
	c, got := pipeConn()
	body := io.MultiReader(strings.NewReader(strings.Repeat("line\r\n", 20000)), iotest.ErrReader(io.ErrUnexpectedEOF))
	err := c.writeData(body, -1, 10*time.Second)
	var re *readError
	if !errors.As(err, &re) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("writeData: %v, want a readError wrapping the read's error", err)
	}
	c.nc.Close()
	if b := <-got; bytes.HasSuffix(b, []byte("\r\n.\r\n")) {
		t.Fatalf("the end-of-data marker went out after a read error (%d octets sent)", len(b))
	}
}
