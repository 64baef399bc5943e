package mime7bit

import (
	"io"
	"runtime"
	"strings"
	"testing"
)

// genReader streams a message: a header, then n copies of line, without
// holding the message in memory.
type genReader struct {
	head string
	line string
	n    int
	buf  string
}

func (g *genReader) Read(p []byte) (int, error) {
	for g.buf == "" {
		switch {
		case g.head != "":
			g.buf, g.head = g.head, ""
		case g.n > 0:
			g.buf = g.line
			g.n--
		default:
			return 0, io.EOF
		}
	}
	k := copy(p, g.buf)
	g.buf = g.buf[k:]
	return k, nil
}

// A 36 MB message (the default max_message_size) is converted in a fixed
// amount of memory: analysing and writing it allocates a few hundred
// kilobytes in all, not a copy of the message.
func TestBigMessageBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("36 MB")
	}
	line := strings.Repeat("Gr\xfc\xdfe aus K\xf6ln, ", 5) + "\r\n" // 8-bit, 82 octets
	n := 36 << 20 / len(line)
	msg := func() io.Reader {
		return &genReader{head: "From: a@example.org\r\nSubject: big\r\n\r\n", line: line, n: n}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p, err := Analyze(msg(), Options{})
	if err != nil || p.Converted != 1 {
		t.Fatalf("plan %+v, %v", p, err)
	}
	cw := &countWriter{w: io.Discard}
	if _, err := p.WriteTo(cw, msg()); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d MB in, %d MB out, %d KB allocated", (n*len(line))>>20, cw.n>>20, alloc>>10)
	if alloc > 4<<20 {
		t.Errorf("allocated %d KB for a %d MB message", alloc>>10, (n*len(line))>>20)
	}
	if cw.last != '\n' {
		t.Error("output does not end with a line break")
	}
}

// A message with more MIME parts than a plan describes is handled as one
// body: folded where needed, refused if it needs converting.
func TestTooManyParts(t *testing.T) {
	var b strings.Builder
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n")
	for range maxEntities + 5 {
		b.WriteString("--B\r\n\r\nx\r\n")
	}
	b.WriteString("--B\r\n\r\n" + strings.Repeat("y", 1200) + "\r\n--B--\r\n")
	msg := b.String()
	p, out := convert(t, msg, Options{})
	if !p.flat || p.Folded != 1 || p.Refusal != "" || !strings.Contains(out, strings.Repeat("y", 997)+"\r\n ") {
		t.Errorf("plan flat=%v folded=%d refusal=%q", p.flat, p.Folded, p.Refusal)
	}
	if p, _ := convert(t, strings.Replace(msg, "x\r\n", "\xe9\r\n", 1), Options{}); !strings.Contains(p.Refusal, "MIME parts") {
		t.Errorf("refusal %q", p.Refusal)
	}
}
