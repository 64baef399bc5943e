package mime7bit

import (
	"bytes"
	"io"
)

// PlainReader passes a message through and watches it for what would make
// Analyze change anything: an octet above 0x7F, or a line longer than
// MaxLine octets. A message with neither goes out as it is to any server,
// with or without 8BITMIME (RFC 6152), so a deliverer told so may skip
// Analyze, which walks the MIME tree and reads the message once more. The
// check runs as the message is queued, a word at a time for 8-bit octets
// and with bytes.IndexByte for line ends (it was a comparison per octet:
// 7.6 % of hubd's CPU with 100 KB messages).
type PlainReader struct {
	R     io.Reader
	line  int  // octets of the current line so far, CR included
	dirty bool // an 8-bit octet or a long line was seen
	eof   bool
}

func (p *PlainReader) Read(b []byte) (int, error) {
	n, err := p.R.Read(b)
	if !p.dirty {
		p.scan(b[:n])
	}
	if err == io.EOF {
		p.eof = true
	}
	return n, err
}

// Plain reports whether the whole message was read and is plain: 7-bit,
// no line over MaxLine octets (a CR before the LF counted, to be safe).
func (p *PlainReader) Plain() bool { return p.eof && !p.dirty }

func (p *PlainReader) scan(b []byte) {
	if !isASCII(b) {
		p.dirty = true
		return
	}
	line := p.line
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			line += len(b)
			break
		}
		if line+i > MaxLine {
			p.dirty = true
			return
		}
		line, b = 0, b[i+1:]
	}
	if line > MaxLine {
		p.dirty = true
		return
	}
	p.line = line
}
