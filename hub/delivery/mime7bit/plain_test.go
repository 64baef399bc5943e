package mime7bit

import (
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// TestPlainMeansUnchanged: whatever PlainReader calls plain, Analyze
// leaves as it is for a server with and without 8BITMIME — random
// messages built from MIME structure, dots, bare CRs and LFs, long and
// 8-bit lines; and what Analyze would change is never called plain.
func TestPlainMeansUnchanged(t *testing.T) {
	pieces := []string{
		"MIME-Version: 1.0\r\n", "Content-Type: multipart/mixed; boundary=b\r\n", "Content-Type: text/plain\r\n",
		"Content-Transfer-Encoding: 8bit\r\n", "Content-Type: message/rfc822\r\n", "DKIM-Signature: v=1\r\n",
		"\r\n", "--b\r\n", "--b--\r\n", "text line\r\n", ".\r\n", "bare\rcr\r\n", "bare lf\n", "\r",
		strings.Repeat("x", 998) + "\r\n", strings.Repeat("y", 999) + "\r\n", strings.Repeat("z", 997) + "\r\r\n",
		"caf\xc3\xa9\r\n", "Subject: \xe2\x82\xac\r\n", "\x00nul\r\n",
	}
	rng := rand.New(rand.NewPCG(7, 11))
	plainSeen, dirtySeen := 0, 0
	for n := range 3000 {
		var b strings.Builder
		b.WriteString("From: a@example.com\r\n")
		for range rng.IntN(12) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		msg := b.String()
		pr := &PlainReader{R: strings.NewReader(msg)}
		if _, err := io.Copy(io.Discard, pr); err != nil {
			t.Fatal(err)
		}
		for _, eight := range []bool{false, true} {
			plan, err := Analyze(strings.NewReader(msg), Options{EightBit: eight})
			if err != nil {
				t.Fatal(err)
			}
			unchanged := !plan.Changes() && !plan.Output8bit && !plan.Header8bit && plan.Refusal == ""
			if pr.Plain() && !unchanged {
				t.Fatalf("message %d called plain, but Analyze(EightBit=%v) plans %+v:\n%q", n, eight, plan, msg)
			}
		}
		if pr.Plain() {
			plainSeen++
		} else {
			dirtySeen++
		}
	}
	if plainSeen < 100 || dirtySeen < 100 {
		t.Fatalf("%d plain, %d not: the generator does not cover both", plainSeen, dirtySeen)
	}
}

// TestPlainNeedsTheWholeMessage: a message not read to its end is not
// known to be plain.
func TestPlainNeedsTheWholeMessage(t *testing.T) {
	pr := &PlainReader{R: bytes.NewReader([]byte("Subject: x\r\n\r\nbody\r\n"))}
	if _, err := pr.Read(make([]byte, 4)); err != nil || pr.Plain() {
		t.Fatalf("after a partial read: plain %v, err %v", pr.Plain(), err)
	}
}

// plainByOctet is the scan as it was, a comparison per octet: the
// reference for TestPlainScanMatchesOctetByOctet.
func plainByOctet(msg []byte) bool {
	line := 0
	for _, c := range msg {
		switch {
		case c == '\n':
			line = 0
		case c >= 0x80:
			return false
		default:
			if line++; line > MaxLine {
				return false
			}
		}
	}
	return true
}

// chunkedReader returns its input in reads of random sizes.
type chunkedReader struct {
	b   []byte
	rng *rand.Rand
}

func (r *chunkedReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.b), 1+r.rng.IntN(1200))
	copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

// TestPlainScanMatchesOctetByOctet: the word-at-a-time scan says what a
// comparison per octet says, for lines around MaxLine and 8-bit octets
// anywhere, read in chunks that split lines anywhere.
func TestPlainScanMatchesOctetByOctet(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	for n := range 4000 {
		var b []byte
		for range 1 + rng.IntN(6) {
			length := rng.IntN(40)
			if rng.IntN(3) == 0 {
				length = MaxLine - 2 + rng.IntN(5)
			}
			line := bytes.Repeat([]byte{'a' + byte(rng.IntN(26))}, length)
			if rng.IntN(20) == 0 && length > 0 {
				line[rng.IntN(length)] = 0x80 + byte(rng.IntN(0x80))
			}
			b = append(b, line...)
			if rng.IntN(2) == 0 {
				b = append(b, '\r')
			}
			b = append(b, '\n')
		}
		if rng.IntN(4) == 0 {
			b = b[:rng.IntN(len(b)+1)] // no final line end
		}
		pr := &PlainReader{R: &chunkedReader{b: b, rng: rng}}
		if _, err := io.Copy(io.Discard, pr); err != nil {
			t.Fatal(err)
		}
		if got, want := pr.Plain(), plainByOctet(b); got != want {
			t.Fatalf("message %d: Plain() = %v, octet by octet %v:\n%q", n, got, want, b)
		}
	}
}

// BenchmarkPlainReader: the scan over a 100 KB message of 76-octet lines.
func BenchmarkPlainReader(b *testing.B) {
	msg := bytes.Repeat([]byte(strings.Repeat("x", 74)+"\r\n"), 100_000/76)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		pr := &PlainReader{R: bytes.NewReader(msg)}
		for {
			if _, err := pr.Read(buf); err != nil {
				break
			}
		}
		if !pr.Plain() {
			b.Fatal("not plain")
		}
	}
}
