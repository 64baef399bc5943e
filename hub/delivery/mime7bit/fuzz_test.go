package mime7bit

import (
	"strings"
	"testing"
)

// FuzzConvert: whatever the input, Analyze and WriteTo do not fail, and a
// message that is not refused comes out with no line over MaxLine, 7-bit
// after its top-level header for a next hop without 8BITMIME, the same on
// every run, and with nothing left to do (convert checks all that).
func FuzzConvert(f *testing.F) {
	for _, s := range []string{
		mixed, mixedASCII,
		"From: a\r\n\r\ncaf\xe9\r\n",
		"DKIM-Signature: v=1\r\n\r\n" + strings.Repeat("x", 1200) + "\r\n",
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\npre\xe9\r\n--B\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\n\xe9\r\n--B--\r\npost\r\n",
		"MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + strings.Repeat("a=3D", 300) + "\r\n",
		"Content-Type: multipart/signed; boundary=S\r\n\r\n--S\r\n\r\n\xe9\r\n--S--\r\n",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, msg []byte, eightBit bool) {
		convert(t, string(msg), Options{EightBit: eightBit})
	})
}
