package smtpout

import (
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
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

func sendData(t *testing.T, body []byte) []byte {
	t.Helper()
	client, server := net.Pipe()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(server)
		got <- b
	}()
	c := &conn{raw: client, nc: client}
	if err := c.writeData(bytes.NewReader(body), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	client.Close()
	return <-got
}

// TestWriteDataMatchesReference: dots at line starts, bare LFs, CRs,
// lines longer than the 32 KiB buffer (a dot or an LF right at its edge),
// and bodies without a final line end, against the byte-wise rule.
func TestWriteDataMatchesReference(t *testing.T) {
	cases := []string{
		"", "x", ".", "\n", "\r\n", ".\r\n", "..\n", "a\n.b\n", "a\r\r\n.\r", "\r", "a\rb\n.",
		strings.Repeat("x", 32<<10-1) + "\n.dot\n",
		strings.Repeat("x", 32<<10) + ".\n",
		strings.Repeat("x", 32<<10-1) + "\r\n.",
		strings.Repeat("y", 100<<10) + "\n." + strings.Repeat("z", 70<<10),
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
