// Package mime7bit makes a message fit for an SMTP next hop: 7-bit content
// for a server without 8BITMIME (RFC 6152 §3 allows the client to convert),
// and no line longer than 998 octets plus CRLF for any server (RFC 5321
// §4.5.3.1.6, RFC 5322 §2.1.1). The SMTP deliverer (hub/delivery/smtpout)
// runs every outgoing message through it; local stores (Maildir, LMTP) get
// the message as received.
//
// # What it changes, and what it never changes
//
// Only what does not fit is touched; every other byte goes out as it came,
// boundaries, preambles and header fields included. The message is walked
// as a MIME tree (RFC 2045, RFC 2046): multipart bodies part by part,
// message/rfc822 bodies as messages of their own. A leaf part that does not
// fit is re-encoded, losslessly:
//
//   - a text/* part (the default type, RFC 2045 §5.2) with 8-bit octets
//     that the next hop cannot take, or with a line over 998 octets (even
//     for a server with 8BITMIME), becomes quoted-printable (RFC 2045 §6.7),
//     as Postfix converts; a text part holding a bare CR or LF, which
//     quoted-printable cannot carry exactly, becomes base64 instead;
//   - any other part in the same state becomes base64 (RFC 2045 §6.8);
//   - a message that is not MIME at all (no MIME-Version, no Content-Type)
//     is declared "text/plain; charset=unknown-8bit" (RFC 1428; us-ascii
//     when only its line length is at fault) and encoded the same way;
//   - the Content-Transfer-Encoding field is replaced where it stood, or
//     added at the end of the part's header, and MIME-Version: 1.0 is added
//     to a message header that lacks it when one of its parts changed.
//
// Decoding a converted part gives back the original octets exactly.
//
// Some content may not be re-encoded, and is left alone:
//
//   - a signed message: everything under a multipart/signed (RFC 1847: the
//     signature covers the signed part's bytes, header included), and the
//     whole body of a message whose header has DKIM-Signature or
//     ARC-Message-Signature (RFC 6376: the body hash covers the encoded
//     bytes);
//   - the body of a message/* part other than message/rfc822 (which is
//     walked) and message/global* (RFC 6532 §3.5 and RFC 6533 allow base64
//     for those): RFC 2046 §5.2 allows them no encoding;
//   - header fields of any level: 8-bit octets in the top-level header are
//     SMTPUTF8's business (RFC 6532; the deliverer fails such a message
//     with 5.6.7 when the next hop lacks SMTPUTF8), and header fields are
//     never converted;
//   - parts already encoded quoted-printable or base64, and parts with a
//     Content-Transfer-Encoding this package does not know.
//
// When the next hop lacks 8BITMIME and 8-bit octets sit in content that
// may not be converted (or in a MIME part header, or an attached message's
// header), the Plan refuses the message (Plan.Refusal) and the deliverer
// fails it with 554 5.6.3, "conversion required but not supported" (RFC
// 3463). A multipart preamble or epilogue, which MIME readers ignore (RFC
// 2046 §5.1.1), has its 8-bit octets replaced by "?", except in a signed
// message.
//
// A line over 998 octets where re-encoding is not allowed is folded, as
// Postfix does for smtp_line_length_limit: in a header section at the last
// white space that leaves at most 998 octets (a fold RFC 5322 §2.2.3 undoes
// when unfolding), else by inserting CRLF SP; in a body by inserting CRLF
// SP (the reader sees one extra space per fold). In a quoted-printable part
// the fold is a soft line break "=" CRLF and in a base64 part a bare CRLF,
// both lossless. A fold never splits a UTF-8 sequence. Plan.Folded counts
// the folded lines, for the deliverer's log.
//
// # Memory and determinism
//
// Analyze reads the message once and keeps only a plan: a few dozen octets
// per MIME entity, for at most 10,000 entities (a message with more is
// treated as one body: folded where needed, refused if it needs
// converting). Plan.WriteTo (or Plan.Reader) reads it a second time and
// streams the result; buffers are fixed (64 KB of input, 32 KB of output),
// so a 36 MB message needs no more memory than a small one. MIME nesting
// deeper than 32 levels is not walked further (the deeper part is content
// that may not be re-encoded). The output depends only on the input octets
// and Options, so every retry sends the same bytes.
package mime7bit

import (
	"bufio"
	"errors"
	"io"
)

// MaxLine is the longest line, in octets without CRLF, that the output
// holds (RFC 5321 §4.5.3.1.6, RFC 5322 §2.1.1).
const MaxLine = 998

const (
	maxEntities = 10000    // entities a plan describes; beyond, the body is one flat region
	maxDepth    = 32       // multipart and message/rfc822 nesting walked
	readBuffer  = 64 << 10 // longest line piece handled at once
)

// Options describe the next hop.
type Options struct {
	// EightBit: the next hop has 8BITMIME, so 8-bit content may stay 8-bit
	// and only over-long lines are dealt with.
	EightBit bool
}

// Plan is what Analyze found and what WriteTo will do.
type Plan struct {
	opts Options
	ents []*entity
	flat bool   // too many entities: one body region
	body entity // flat: the body after the top-level header

	// Refusal, when not "", says why the message cannot be made fit for the
	// next hop: 8-bit octets where they may not be converted. The deliverer
	// fails it with 554 5.6.3.
	Refusal string
	// Header8bit: the top-level header section has octets above 127 (a
	// matter for SMTPUTF8; never converted).
	Header8bit bool
	// Body8bit: the message after its top-level header has octets above 127.
	Body8bit bool
	// Output8bit: the converted message still has octets above 127 (its
	// header, or content left 8-bit for a next hop with 8BITMIME).
	Output8bit bool
	// Converted is the number of parts re-encoded (quoted-printable or
	// base64); Folded the number of lines folded because they were longer
	// than MaxLine.
	Converted int
	Folded    int
}

// Changes reports whether WriteTo writes anything else than the input.
func (p *Plan) Changes() bool { return p.Converted > 0 || p.Folded > 0 || p.sanitized() }

func (p *Plan) sanitized() bool {
	if p.flat {
		return p.body.bodyAct == actSanitize
	}
	for i := range p.ents {
		if p.ents[i].preAct == actSanitize || p.ents[i].epiAct == actSanitize {
			return true
		}
	}
	return false
}

// Analyze reads a message (CRLF line endings, as queued) and plans what
// must change for a next hop described by opts. The error is src's.
func Analyze(src io.Reader, opts Options) (*Plan, error) {
	p := &Plan{opts: opts}
	w := newWalker(src, p, nil)
	if err := w.run(); err != nil {
		return nil, err
	}
	p.decide(w)
	return p, nil
}

// WriteTo reads the same message again from src and writes it to dst as
// the plan says, returning the octets written. Calling it on a plan with a
// Refusal is an error.
func (p *Plan) WriteTo(dst io.Writer, src io.Reader) (int64, error) {
	if p.Refusal != "" {
		return 0, errors.New("mime7bit: " + p.Refusal)
	}
	cw := &countWriter{w: dst}
	out := bufio.NewWriterSize(cw, 32<<10)
	w := newWalker(src, p, out)
	if err := w.run(); err != nil {
		return cw.n, err
	}
	err := out.Flush()
	return cw.n, err
}

// Reader returns the converted message as a stream. Close stops the
// conversion (if the reader stopped early) and waits for it; a read error
// of src is returned by Read.
func (p *Plan) Reader(src io.Reader) io.ReadCloser {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := p.WriteTo(pw, src)
		pw.CloseWithError(err)
	}()
	return &convReader{pr: pr, done: done}
}

type convReader struct {
	pr   *io.PipeReader
	done chan struct{}
}

func (r *convReader) Read(b []byte) (int, error) { return r.pr.Read(b) }

func (r *convReader) Close() error {
	r.pr.Close() // a conversion still writing fails and ends
	<-r.done
	return nil
}

type countWriter struct {
	w    io.Writer
	n    int64
	last byte
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	if n > 0 {
		c.last = b[n-1]
	}
	return n, err
}
