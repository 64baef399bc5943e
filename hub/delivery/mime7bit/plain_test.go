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
