package smtpout

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"
)

// byteConn is a net.Conn that reads from a fixed buffer and discards
// writes: the remote server's replies, as a fuzzer invents them.
type byteConn struct {
	r *bytes.Reader
	net.Conn
}

func (c *byteConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *byteConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *byteConn) SetReadDeadline(time.Time) error  { return nil }
func (c *byteConn) SetWriteDeadline(time.Time) error { return nil }
func (c *byteConn) SetDeadline(time.Time) error      { return nil }
func (c *byteConn) Close() error                     { return nil }
func (c *byteConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *byteConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }

// FuzzReadReply: whatever a remote server sends, reading its replies and
// its EHLO extensions never panics, never loops, and every reply accepted
// has a valid code whose class its enhanced status code (if any) matches.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{
		"220 mx.example.net ESMTP\r\n",
		"250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250 STARTTLS\r\n",
		"550 5.1.1 <x@y>: Recipient address rejected\r\n",
		"451-4.3.0 try\r\n451-4.3.0 again\r\n451 4.3.0 later\r\n",
		"250-a\r\n251 b\r\n", "2\r\n", "999 x\r\n", "250 2.0.0\r\n", "421 5.0.0 class mismatch\r\n",
		"250-SIZE -5\r\n250 SIZE 99999999999999999999\r\n", strings.Repeat("250-x\r\n", 300),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newConn(&byteConn{r: bytes.NewReader(data)}, "mx.example.net", "192.0.2.1:25")
		if _, err := c.hello("hub.example.com", time.Second); err == nil {
			c.has("PIPELINING")
			if n := c.maxSize(); n < 0 {
				t.Fatalf("negative SIZE limit %d from %q", n, data)
			}
		}
		for i := 0; i <= len(data); i++ { // each reply consumes at least one byte
			r, err := c.readReply(time.Second)
			if err != nil {
				return
			}
			if r.Code < 200 || r.Code > 599 {
				t.Fatalf("reply code %d accepted", r.Code)
			}
			if r.Enhanced != "" && r.Enhanced[0] != byte('0'+r.Code/100) {
				t.Fatalf("enhanced %q kept on a %d reply", r.Enhanced, r.Code)
			}
		}
		t.Fatal("readReply kept returning replies from a finite input")
	})
}

// TestSplitEnhanced: an enhanced status code (RFC 3463 §2) is taken from
// the text only when it has three numeric parts and its class matches the
// reply code's first digit.
func TestSplitEnhanced(t *testing.T) {
	for _, c := range []struct {
		code            int
		text, enh, rest string
	}{
		{250, "2.0.0 Ok", "2.0.0", "Ok"},
		{550, "5.1.1 no such user", "5.1.1", "no such user"},
		{451, "4.7.1", "4.7.1", ""},
		{450, "5.1.1 wrong class", "", "5.1.1 wrong class"},
		{550, "5.1 two parts", "", "5.1 two parts"},
		{550, "5.1.1.1 four parts", "", "5.1.1.1 four parts"},
		{550, "5..1 empty part", "", "5..1 empty part"},
		{550, "5.1.1000 too large", "", "5.1.1000 too large"},
		{550, "5.x.1 not a number", "", "5.x.1 not a number"},
		{550, "no code at all", "", "no code at all"},
	} {
		enh, rest := splitEnhanced(c.code, c.text)
		if enh != c.enh || rest != c.rest {
			t.Errorf("splitEnhanced(%d, %q) = %q, %q; want %q, %q", c.code, c.text, enh, rest, c.enh, c.rest)
		}
	}
}
