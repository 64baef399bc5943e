package mime7bit

import "io"

// PlainReader passes a message through and watches it for what would make
// Analyze change anything: an octet above 0x7F, or a line longer than
// MaxLine octets. A message with neither goes out as it is to any server,
// with or without 8BITMIME (RFC 6152), so a deliverer told so may skip
// Analyze, which walks the MIME tree and reads the message once more. The
// check costs a comparison per octet as the message is queued.
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
	line := p.line
	for _, c := range b {
		switch {
		case c == '\n':
			line = 0
		case c >= 0x80:
			p.dirty = true
			return
		default:
			if line++; line > MaxLine {
				p.dirty = true
				return
			}
		}
	}
	p.line = line
}
