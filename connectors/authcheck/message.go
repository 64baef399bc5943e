package authcheck

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"

	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
)

const (
	// MaxSignatures is how many DKIM-Signature fields are verified; later
	// ones are ignored (RFC 6376 §6.1).
	MaxSignatures = 5
	// MaxHeaderSection bounds the header section the checks hold. The
	// connector's max_header_size (64 KB by default) refuses larger ones
	// before the end of DATA anyway.
	MaxHeaderSection = 1 << 20
	// MaxBlankRun bounds a run of CR, LF, SP and HTAB in the body: the
	// DKIM body canonicalization holds such a run until it ends, and
	// copies it on every write while it grows.
	MaxBlankRun = 256 << 10
	// writeChunk is the size of the writes into the verifier: the cost of
	// a blank run is quadratic in its length over this.
	writeChunk = 64 << 10
)

// DKIMResult is the verification of one DKIM-Signature field.
type DKIMResult struct {
	Result     Result
	Domain     string // d=, the signing domain (SDID)
	Identifier string // i=, "@" + d= when absent
	Selector   string // s=
	B          string // the first 8 characters of b= (RFC 6008)
	Reason     string // why it did not pass
}

func (d DKIMResult) format() string {
	p := map[string]string{"header.d": clean(d.Domain), "header.i": clean(d.Identifier),
		"header.s": clean(d.Selector), "header.b": clean(d.B)}
	if d.Result != Pass {
		p["reason"] = clean(d.Reason)
	}
	return formatResult(&authres.GenericResult{Method: "dkim", Value: authres.ResultValue(d.Result), Params: p}, "")
}

// MessageOptions say which checks a Message runs.
type MessageOptions struct {
	DKIM, DMARC bool
	// SPF is the transaction's SPF result (nil when SPF was not checked),
	// for DMARC and for the field.
	SPF *SPFResult
}

// A Message checks one message's content as it goes by: Write it the
// content as it is read (our Received: field on top changes nothing, RFC
// 6376 §5.4 signs fields from the bottom), then Finish. The checking runs
// in a goroutine of its own, fed through a pipe: Write returns once the
// verifier has taken the bytes, so memory stays what the verifier holds
// (see the package doc), whatever the message's size.
type Message struct {
	c    *Checker
	ctx  context.Context
	opts MessageOptions
	pw   *io.PipeWriter
	bw   *bufio.Writer // writeChunk bytes at a time into pw
	done chan struct{}
	res  Results
	end  bool
}

var errAborted = errors.New("authcheck: message aborted")

// NewMessage starts the checks of one message.
func (c *Checker) NewMessage(ctx context.Context, opts MessageOptions) *Message {
	pr, pw := io.Pipe()
	m := &Message{c: c, ctx: ctx, opts: opts, pw: pw, bw: bufio.NewWriterSize(pw, writeChunk), done: make(chan struct{})}
	m.res.SPF = opts.SPF
	go m.run(pr)
	return m
}

// Write gives the checks the next bytes of the content. It never fails:
// checks that need no more content discard the rest.
func (m *Message) Write(p []byte) (int, error) {
	if !m.end {
		m.bw.Write(p)
	}
	return len(p), nil
}

// Finish ends the content and returns the results of every check asked.
func (m *Message) Finish() Results {
	if !m.end {
		m.end = true
		m.bw.Flush()
		m.pw.Close()
	}
	<-m.done
	return m.res
}

// Abort ends the checks of a message that will not be taken.
func (m *Message) Abort() {
	if !m.end {
		m.end = true
		m.pw.CloseWithError(errAborted)
	}
	<-m.done
}

func (m *Message) run(pr *io.PipeReader) {
	defer close(m.done)
	// Whatever the checks leave unread is drained, so Write never blocks.
	defer io.Copy(io.Discard, pr)
	br := bufio.NewReaderSize(pr, 4096)
	hdr, err := readHeaderSection(br)
	if err != nil {
		if m.opts.DKIM {
			m.res.DKIMChecked = true
			m.res.DKIM = []DKIMResult{{Result: PermError, Reason: err.Error()}}
		}
		if m.opts.DMARC {
			m.res.DMARC = &DMARCResult{Result: PermError, Reason: err.Error()}
		}
		return
	}
	fields := headerFields(hdr)
	var from string
	var fromErr error
	var policy chan dmarcRecord
	if m.opts.DMARC {
		// The policy lookup runs while the body streams.
		if from, fromErr = fromDomain(fields); fromErr == nil {
			policy = make(chan dmarcRecord, 1)
			go func() { policy <- m.c.lookupDMARC(m.ctx, from) }()
		}
	}
	if m.opts.DKIM {
		m.res.DKIMChecked = true
		m.res.DKIM = m.verifyDKIM(hdr, fields, br)
	}
	io.Copy(io.Discard, br)
	if m.opts.DMARC {
		if fromErr != nil {
			m.res.DMARC = &DMARCResult{Result: PermError, Reason: fromErr.Error()}
			return
		}
		m.res.DMARC = evaluateDMARC(from, <-policy, m.opts.SPF, m.res.DKIM)
	}
}

// verifyDKIM verifies the first MaxSignatures signatures over hdr and the
// body that follows in br.
func (m *Message) verifyDKIM(hdr []byte, fields []field, br *bufio.Reader) []DKIMResult {
	var tags []sigTags
	for _, f := range fields {
		if strings.EqualFold(f.name, "DKIM-Signature") {
			tags = append(tags, parseSigTags(f.value))
		}
	}
	if len(tags) == 0 {
		return nil
	}
	tags = tags[:min(len(tags), MaxSignatures)]
	body := &bodyGuard{r: br}
	verifs, err := dkim.VerifyWithOptions(io.MultiReader(bytes.NewReader(hdr), body), &dkim.VerifyOptions{
		LookupTXT:        func(name string) ([]string, error) { return m.c.lookupTXT(m.ctx, name) },
		MaxVerifications: MaxSignatures,
	})
	if errors.Is(err, dkim.ErrTooManySignatures) {
		err = nil
	}
	out := make([]DKIMResult, len(tags))
	for i, t := range tags {
		r := DKIMResult{Domain: t.d, Identifier: t.i, Selector: t.s, B: t.b[:min(len(t.b), 8)]}
		if r.Identifier == "" && r.Domain != "" {
			r.Identifier = "@" + r.Domain
		}
		switch {
		case err != nil || i >= len(verifs):
			r.Result, r.Reason = TempError, "verification failed"
		default:
			r.Result, r.Reason = dkimResult(verifs[i].Err)
		}
		if body.tripped && (r.Result == Pass || r.Result == Fail) {
			// The body was cut short: no verdict on it.
			r.Result, r.Reason = Policy, "body not verified: a run of blank lines or spaces over 256 KiB"
		}
		out[i] = r
	}
	return out
}

// dkimResult maps a go-msgauth verification error to RFC 8601 §2.7.1.
func dkimResult(err error) (Result, string) {
	if err == nil {
		return Pass, ""
	}
	reason := strings.ReplaceAll(err.Error(), "dkim: ", "")
	// The resolver's error names the server asked; the reader needs the name.
	if i := strings.Index(reason, ": lookup "); i >= 0 {
		reason = reason[:i]
	}
	switch {
	case dkim.IsTempFail(err):
		return TempError, reason
	case dkim.IsPermFail(err):
		for _, p := range []string{"malformed", "incompatible signature version", "signature missing required tag", "unsupported"} {
			if strings.HasPrefix(reason, p) {
				return Neutral, reason
			}
		}
		return PermError, reason
	}
	return Fail, reason
}

// bodyGuard passes the body on until a run of CR, LF, SP and HTAB grows
// past MaxBlankRun, then ends it early (tripped). Errors of the source
// (an aborted message) end it too: the verifier sees an end either way,
// and never an error, on which go-msgauth would leave goroutines waiting.
type bodyGuard struct {
	r       io.Reader
	run     int
	tripped bool
	ended   bool
}

func (g *bodyGuard) Read(p []byte) (int, error) {
	if g.ended {
		return 0, io.EOF
	}
	n, err := g.r.Read(p)
	for i, c := range p[:n] {
		if c == '\r' || c == '\n' || c == ' ' || c == '\t' {
			g.run++
			if g.run > MaxBlankRun {
				g.tripped, g.ended = true, true
				return i, nil
			}
		} else {
			g.run = 0
		}
	}
	if err != nil {
		g.ended = true
		if n == 0 {
			return 0, io.EOF
		}
	}
	return n, nil
}

var errHeaderTooLong = errors.New("header section over 1 MiB")

// readHeaderSection reads the header section and the blank line after it
// (one is added when the message has no body).
func readHeaderSection(br *bufio.Reader) ([]byte, error) {
	var hdr []byte
	for {
		line, err := br.ReadSlice('\n')
		if len(hdr)+len(line) > MaxHeaderSection {
			return nil, errHeaderTooLong
		}
		hdr = append(hdr, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if bytes.Equal(line, []byte("\r\n")) || bytes.Equal(line, []byte("\n")) {
			return hdr, nil
		}
		if err == io.EOF {
			return append(hdr, "\r\n"...), nil
		}
		if err != nil {
			return nil, err
		}
	}
}

type field struct{ name, value string }

// headerFields splits a header section into fields: name without the
// white space before the colon, value with its folding.
func headerFields(hdr []byte) []field {
	var out []field
	for line := range strings.SplitAfterSeq(string(hdr), "\n") {
		switch {
		case line == "\r\n" || line == "\n" || line == "":
			return out
		case line[0] == ' ' || line[0] == '\t':
			if len(out) > 0 {
				out[len(out)-1].value += line
			}
		default:
			name, value, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			out = append(out, field{strings.TrimRight(name, " \t"), value})
		}
	}
	return out
}
