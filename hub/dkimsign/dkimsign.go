// Package dkimsign computes the DKIM-Signature header fields (RFC 6376;
// Ed25519 per RFC 8463) of one queued message, streaming it once through
// github.com/emersion/go-msgauth's signer, one signer per key of the
// domain's dkim block (dual signing).
//
// What is signed: exactly the bytes every delivery sends (the transport's
// queue.State.Prepend followed by the stored content). The caller puts the
// returned fields above them; they are not part of what they sign.
//
// The signing domain: the domain of the first address of the first From:
// field (RFC 5322 §3.6.2; fromDomain), handed to the caller's choice
// (policy.Config.DKIMFor, nearest parent) — a message without a usable
// From: is not signed. Signed header fields: the dkim block's list,
// filtered to the fields the message has, each as often as it occurs; a
// name the list holds twice is oversigned, listed once more than it
// occurs (RFC 6376 §5.4.2), so that a field of that name added later
// breaks the signature. Canonicalization relaxed/relaxed (§3.4.2, §3.4.4):
// it survives the re-folding and whitespace changes of ordinary relays.
// Algorithms rsa-sha256 and ed25519-sha256; never rsa-sha1 (RFC 8301
// §3.1). No l= (a body length limit lets anyone append content, §8.2) and
// no x=.
//
// Bounded cost: the header section is read into memory up to
// MaxHeaderBytes (a message with a larger one is not signed); the body is
// streamed through the signers in small writes, so memory does not grow
// with the message size, and CPU is linear in it (a SHA-256 per key). One
// case needs care: go-msgauth's relaxed body canonicalizer keeps a run of
// empty or blank lines in memory until a line with content follows (it
// cannot know yet whether the run is the trailing whitespace that §3.4.4
// drops), so a body of 100 MB of blank lines would be held whole. The
// signer refuses (ErrBlankRun) a run of more than MaxBlankRun bytes of
// whitespace and line breaks instead; no real message has one.
package dkimsign

import (
	"bufio"
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-msgauth/dkim"

	"hubd/policy"
)

// Limits on what is signed (see the package doc).
const (
	MaxHeaderBytes = 1 << 20
	MaxBlankRun    = 1 << 20
)

// Errors that leave a message unsigned.
var (
	ErrHeaderTooLarge = fmt.Errorf("dkimsign: header section larger than %d bytes", MaxHeaderBytes)
	ErrBlankRun       = fmt.Errorf("dkimsign: a run of more than %d bytes of blank lines in the body", MaxBlankRun)
	// ErrLeadingFold: the content starts with a continuation line, which
	// would fold into the DKIM-Signature field put above it.
	ErrLeadingFold = errors.New("dkimsign: the message starts with a continuation line")
)

// Signature describes one signature made, for logs and spans.
type Signature struct {
	Domain    string // d=
	Selector  string // s=
	Algorithm string // a=: "rsa-sha256" or "ed25519-sha256"
}

// Result is what Sign made.
type Result struct {
	// FromDomain is the From: domain found ("" when none).
	FromDomain string
	// Fields are the DKIM-Signature header fields, each ending in CRLF,
	// in the order of the block's keys; "" when the message is not signed.
	Fields     string
	Signatures []Signature
}

// Choose picks the dkim block for a From: domain, or nil: not signed.
type Choose func(fromDomain string) *policy.DKIMDomain

// Sign reads the message r to its end and signs it with the keys of the
// block choose picks for its From: domain. A message choose declines is
// not an error: Result.Fields is "". Errors: reading r, the limits of the
// package doc, a key's signing.
func Sign(r io.Reader, choose Choose) (Result, error) {
	br := bufio.NewReaderSize(r, 32<<10)
	head, ended, err := readHeader(br)
	if err != nil {
		return Result{}, err
	}
	if len(head) > 0 && (head[0] == ' ' || head[0] == '\t') {
		return Result{}, ErrLeadingFold
	}
	fields := splitFields(head)
	var res Result
	for _, f := range fields {
		if strings.EqualFold(f.name, "From") {
			res.FromDomain, _ = fromDomain(f.value)
			break
		}
	}
	if res.FromDomain == "" {
		return res, nil
	}
	d := choose(res.FromDomain)
	if d == nil || len(d.Keys) == 0 {
		return res, nil
	}
	keys := headerKeys(d.Headers, fields)
	signers := make([]*dkim.Signer, 0, len(d.Keys))
	closeAll := func() {
		for _, s := range signers {
			s.Close()
		}
	}
	writers := make([]io.Writer, 0, len(d.Keys))
	for _, k := range d.Keys {
		s, err := dkim.NewSigner(&dkim.SignOptions{
			Domain: d.Domain, Selector: k.Selector, Signer: k.Signer, Hash: crypto.SHA256,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
			HeaderKeys: keys,
		})
		if err != nil {
			closeAll()
			return res, fmt.Errorf("dkimsign: key %s: %w", k.Selector, err)
		}
		signers = append(signers, s)
		writers = append(writers, s)
		res.Signatures = append(res.Signatures, Signature{Domain: d.Domain, Selector: k.Selector, Algorithm: k.Algorithm})
	}
	w := io.MultiWriter(writers...)
	if err := feed(w, head, ended, br); err != nil {
		closeAll()
		res.Signatures = nil
		return res, err
	}
	var b strings.Builder
	for i, s := range signers {
		if err := s.Close(); err != nil {
			closeAll()
			res.Signatures = nil
			return res, fmt.Errorf("dkimsign: key %s: %w", d.Keys[i].Selector, err)
		}
		b.WriteString(s.Signature())
	}
	res.Fields = b.String()
	return res, nil
}

// feed writes the header section and then the rest of br to w. A message
// that ends inside its header section (no empty line: header fields and
// no body, which RFC 5322 §3.5 allows) is signed as header fields with an
// empty body, which is what a verifier reads it as.
func feed(w io.Writer, head []byte, ended bool, br *bufio.Reader) error {
	if _, err := w.Write(head); err != nil {
		return err
	}
	if !ended {
		tail := "\r\n"
		if len(head) > 0 && head[len(head)-1] != '\n' {
			tail = "\r\n\r\n"
		}
		_, err := io.WriteString(w, tail)
		return err
	}
	g := &blankGuard{w: w}
	buf := make([]byte, 4096) // small writes: go-msgauth allocates per write
	_, err := io.CopyBuffer(g, onlyReader{br}, buf)
	return err
}

// onlyReader hides bufio.Reader's WriteTo, so that io.CopyBuffer writes
// in buf-sized pieces.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// blankGuard passes writes on and fails once MaxBlankRun bytes of spaces,
// tabs, CRs and LFs follow each other (the package doc says why).
type blankGuard struct {
	w   io.Writer
	run int
}

func (g *blankGuard) Write(p []byte) (int, error) {
	for _, c := range p {
		switch c {
		case ' ', '\t', '\r', '\n':
			g.run++
		default:
			g.run = 0
		}
	}
	if g.run > MaxBlankRun {
		return 0, ErrBlankRun
	}
	return g.w.Write(p)
}

// readHeader reads the header section up to and including the empty line
// that ends it (ended), or to EOF. Lines end in LF (normally CRLF).
func readHeader(br *bufio.Reader) (head []byte, ended bool, err error) {
	var b bytes.Buffer
	atLineStart := true
	for {
		line, err := br.ReadSlice('\n')
		if b.Len()+len(line) > MaxHeaderBytes {
			return nil, false, ErrHeaderTooLarge
		}
		b.Write(line)
		complete := err == nil
		if atLineStart && complete && (len(line) == 1 || len(line) == 2 && line[0] == '\r') {
			return b.Bytes(), true, nil
		}
		atLineStart = complete
		switch {
		case err == nil || errors.Is(err, bufio.ErrBufferFull):
		case err == io.EOF:
			return b.Bytes(), false, nil
		default:
			return nil, false, err
		}
	}
}
