package mime7bit

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/textproto"
	"strings"
	"testing"

	"hubd/internal/mimetest"
)

// convert analyses and writes msg for opts, checks what every output must
// hold, and returns the plan and the output ("" when refused).
func convert(t *testing.T, msg string, opts Options) (*Plan, string) {
	t.Helper()
	p, err := Analyze(strings.NewReader(msg), opts)
	if err != nil {
		t.Fatal(err)
	}
	if p.Refusal != "" {
		if _, err := p.WriteTo(io.Discard, strings.NewReader(msg)); err == nil {
			t.Error("WriteTo of a refused plan succeeded")
		}
		return p, ""
	}
	var out bytes.Buffer
	n, err := p.WriteTo(&out, strings.NewReader(msg))
	if err != nil || n != int64(out.Len()) {
		t.Fatalf("WriteTo = %d, %v (wrote %d)", n, err, out.Len())
	}
	got := out.String()
	if !p.Changes() && got != msg {
		t.Errorf("no change planned, but the output differs:\n%q\n%q", msg, got)
	}
	checkLines(t, got)
	if !opts.EightBit && !p.Header8bit && !isASCII(out.Bytes()) {
		t.Errorf("8-bit octets left for a 7-bit next hop:\n%s", got)
	}
	// The output is a fixed point: nothing more to do.
	again, err := Analyze(strings.NewReader(got), opts)
	if err != nil || again.Refusal != "" || again.Changes() {
		t.Errorf("converted message needs more work: %+v", again)
	}
	// Deterministic: the same bytes on every retry.
	var second bytes.Buffer
	p.WriteTo(&second, strings.NewReader(msg))
	if second.String() != got {
		t.Error("a second conversion wrote other bytes")
	}
	return p, got
}

func checkLines(t *testing.T, s string) {
	t.Helper()
	for i, line := range strings.SplitAfter(s, "\n") {
		if n := len(strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")); n > MaxLine {
			t.Errorf("line %d has %d octets", i+1, n)
		}
	}
}

func sameLeaves(t *testing.T, orig, conv string) {
	t.Helper()
	a, b := mimetest.Leaves(t, orig), mimetest.Leaves(t, conv)
	if fmt.Sprintf("%q", a) != fmt.Sprintf("%q", b) {
		t.Errorf("decoded parts differ:\noriginal  %q\nconverted %q", a, b)
	}
}

var seven = Options{}
var eight = Options{EightBit: true}

// RFC 1428: a message that is not MIME is declared text/plain with the
// unknown-8bit charset and encoded quoted-printable.
func TestNonMIME(t *testing.T) {
	msg := "From: a@example.org\r\nSubject: caf\xe9\r\n\r\nCaf\xe9 cr\xe8me\r\n.dot line\r\n-- \r\nsig\r\n"
	msg = strings.Replace(msg, "Subject: caf\xe9", "Subject: cafe", 1)
	p, out := convert(t, msg, seven)
	if p.Converted != 1 || !p.Body8bit || p.Output8bit {
		t.Errorf("plan %+v", p)
	}
	want := "From: a@example.org\r\nSubject: cafe\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=unknown-8bit\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"Caf=E9 cr=E8me\r\n.dot line\r\n--=20\r\nsig\r\n"
	if out != want {
		t.Errorf("got\n%q\nwant\n%q", out, want)
	}
	sameLeaves(t, msg, out)
	// With 8BITMIME nothing changes.
	if p, out := convert(t, msg, eight); p.Changes() || out != msg || !p.Output8bit {
		t.Errorf("8BITMIME next hop: %+v", p)
	}
}

const mixed = "From: a@example.org\r\nMIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n" +
	"This is a multi-part message in MIME format.\r\n" +
	"--XX\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
	"Gr\xfc\xdfe, caf\xe9 = 3 \r\ntrailing space \r\n\r\n" +
	"--XX\r\nContent-Type: text/html\r\n\r\n<p>plain</p>\r\n" +
	"--XX\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment\r\n\r\n" +
	"\x00\x01\xff\xfe binary\r\n\xc3" +
	"\r\n--XX--\r\nepilogue\r\n"

// Each part is judged alone: 8-bit text becomes quoted-printable, 8-bit
// binary base64, a 7-bit part keeps its bytes, and so do the boundaries,
// the preamble and the epilogue.
func TestMultipartParts(t *testing.T) {
	p, out := convert(t, mixed, seven)
	if p.Converted != 2 || p.Folded != 0 {
		t.Errorf("plan %+v", p)
	}
	for _, want := range []string{
		"--XX\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe, caf=E9 =3D 3=20\r\n",
		"--XX\r\nContent-Type: text/html\r\n\r\n<p>plain</p>\r\n--XX\r\n",
		"Content-Disposition: attachment\r\nContent-Transfer-Encoding: base64\r\n\r\n",
		"This is a multi-part message in MIME format.\r\n--XX\r\n",
		"\r\n--XX--\r\nepilogue\r\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "8bit") {
		t.Errorf("the old Content-Transfer-Encoding is still there:\n%s", out)
	}
	sameLeaves(t, mixed, out)
}

// A soft line break never puts a boundary-like "--" at the start of a line.
func TestSoftBreakBeforeDashes(t *testing.T) {
	msg := "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n\r\n" +
		strings.Repeat("a", 75) + "--XX--\xe9\r\n--XX--\r\n"
	_, out := convert(t, msg, seven)
	if !strings.Contains(out, "=\r\n=2D-XX--=E9\r\n--XX--") {
		t.Errorf("output:\n%s", out)
	}
	sameLeaves(t, msg, out)
}

// RFC 1847: a multipart/signed part is never converted; 8-bit content in
// it fails the message (the deliverer's 5.6.3). So does a DKIM-signed
// message with 8-bit content.
func TestSignedIsNotConverted(t *testing.T) {
	signed := "From: a@example.org\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; micalg=pgp-sha256; boundary=\"S\"\r\n\r\n" +
		"--S\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n" +
		"--S\r\nContent-Type: application/pgp-signature\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\nxyz\r\n-----END PGP SIGNATURE-----\r\n--S--\r\n"
	p, _ := convert(t, signed, seven)
	if !strings.Contains(p.Refusal, "multipart/signed") {
		t.Errorf("refusal %q", p.Refusal)
	}
	// Nested inside a multipart/mixed, the signed part is still protected.
	nested := "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=M\r\n\r\n--M\r\n" +
		strings.SplitN(signed, "MIME-Version: 1.0\r\n", 2)[1] + "--M--\r\n"
	if p, _ := convert(t, nested, seven); !strings.Contains(p.Refusal, "multipart/signed") {
		t.Errorf("nested: refusal %q", p.Refusal)
	}
	// 8BITMIME: nothing to convert, nothing refused.
	if p, out := convert(t, signed, eight); p.Refusal != "" || out != signed {
		t.Errorf("8BITMIME: %+v", p)
	}

	dkim := "DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=s; bh=x; b=y\r\nFrom: a@example.org\r\n\r\ncaf\xe9\r\n"
	if p, _ := convert(t, dkim, seven); !strings.Contains(p.Refusal, "DKIM-Signature") {
		t.Errorf("DKIM: refusal %q", p.Refusal)
	}
}

// A line over 998 octets in a text part is re-encoded quoted-printable,
// also for a next hop with 8BITMIME; the 8-bit octets elsewhere stay.
func TestLongLineReencoded(t *testing.T) {
	long := strings.Repeat("word ", 300) + "end"
	msg := "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n" +
		"Content-Type: text/plain\r\n\r\n" + long + "\r\n--B\r\nContent-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n--B--\r\n"
	p, out := convert(t, msg, eight)
	if p.Converted != 1 || p.Folded != 0 || !p.Output8bit {
		t.Errorf("plan %+v", p)
	}
	if !strings.Contains(out, "Gr\xc3\xbc\xc3\x9fe") || !strings.Contains(out, "Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n") {
		t.Errorf("output:\n%s", out)
	}
	sameLeaves(t, msg, out)
}

// Where re-encoding is not allowed, long lines are folded: CRLF SP in a
// signed message's body, a soft line break in quoted-printable, a CRLF in
// base64; header fields at white space.
func TestFolding(t *testing.T) {
	long := strings.Repeat("x", 2500)
	t.Run("signed body", func(t *testing.T) {
		msg := "DKIM-Signature: v=1\r\nFrom: a@example.org\r\n\r\n" + long + "\r\n"
		p, out := convert(t, msg, seven)
		if p.Folded != 1 || p.Converted != 0 {
			t.Errorf("plan %+v", p)
		}
		if want := "\r\n\r\n" + long[:998] + "\r\n " + long[998:1995] + "\r\n " + long[1995:] + "\r\n"; !strings.HasSuffix(out, want) {
			t.Errorf("folded body:\n%q", out)
		}
	})
	t.Run("quoted-printable", func(t *testing.T) {
		qp := strings.Repeat("ab=3Dcd", 400) // one 2800-octet line, already encoded
		msg := "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qp + "\r\n"
		p, out := convert(t, msg, seven)
		if p.Folded != 1 {
			t.Errorf("plan %+v", p)
		}
		sameLeaves(t, msg, out)
	})
	t.Run("base64", func(t *testing.T) {
		b64 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xff, 0x00, 0x80}, 1000))
		msg := "MIME-Version: 1.0\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64 + "\r\n"
		p, out := convert(t, msg, seven)
		if p.Folded != 1 || strings.Contains(out, "\r\n ") {
			t.Errorf("plan %+v\n%s", p, out)
		}
		sameLeaves(t, msg, out)
	})
	t.Run("header", func(t *testing.T) {
		to := "To: " + strings.Repeat("someone@example.org, ", 100) + "last@example.org"
		ref := "X-Long: " + strings.Repeat("y", 1500)
		msg := to + "\r\n" + ref + "\r\nSubject: s\r\n\r\nbody\r\n"
		p, out := convert(t, msg, seven)
		if p.Folded != 2 {
			t.Errorf("plan %+v", p)
		}
		hdr, err := textproto.NewReader(bufio.NewReader(strings.NewReader(out))).ReadMIMEHeader()
		if err != nil {
			t.Fatal(err)
		}
		// Folded at white space, unfolding gives the field back.
		if got := "To: " + hdr.Get("To"); got != to {
			t.Errorf("To unfolds to\n%q", got)
		}
		// No white space: CRLF SP inserted (Postfix's way), one extra space.
		if got := hdr.Get("X-Long"); got != strings.Repeat("y", 997)+" "+strings.Repeat("y", 503) {
			t.Errorf("X-Long unfolds to %q", got)
		}
	})
	t.Run("utf-8 kept whole", func(t *testing.T) {
		msg := "DKIM-Signature: v=1\r\n\r\n" + strings.Repeat("\xc3\xa9", 600) + "\r\n"
		_, out := convert(t, msg, eight)
		for _, line := range strings.Split(out, "\r\n") {
			if line != "" && !utf8Valid(strings.TrimPrefix(line, " ")) {
				t.Errorf("a fold split a UTF-8 sequence: %q...", line[:10])
			}
		}
	})
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "\x00") == s }

// An attached message (message/rfc822) is walked: its 8-bit text part is
// converted, the attachment's own part header is left alone. 8-bit octets
// in a MIME part header cannot be converted.
func TestAttachedMessage(t *testing.T) {
	inner := "From: b@example.org\r\nSubject: inner\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=latin1\r\n\r\nna\xefve\r\n"
	msg := "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=O\r\n\r\n--O\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" +
		"--O\r\nContent-Type: message/rfc822\r\n\r\n" + inner + "--O--\r\n"
	p, out := convert(t, msg, seven)
	if p.Converted != 1 || !strings.Contains(out, "Content-Type: message/rfc822\r\n\r\nFrom: b@example.org") {
		t.Errorf("plan %+v\n%s", p, out)
	}
	sameLeaves(t, msg, out)

	badHeader := "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=O\r\n\r\n--O\r\n" +
		"Content-Type: text/plain; name=\"r\xe9sum\xe9.txt\"\r\n\r\nx\r\n--O--\r\n"
	if p, _ := convert(t, badHeader, seven); !strings.Contains(p.Refusal, "header") {
		t.Errorf("refusal %q", p.Refusal)
	}
}

// 8-bit octets in a preamble, which readers ignore, become "?"; a text
// part with a bare LF goes base64, which carries it exactly.
func TestPreambleAndBareLF(t *testing.T) {
	msg := "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=P\r\n\r\npr\xe9ambule\r\n--P\r\n\r\nline\nbare caf\xe9\r\n--P--\r\n"
	p, out := convert(t, msg, seven)
	if !strings.Contains(out, "\r\n\r\npr?ambule\r\n--P\r\n") || !strings.Contains(out, "Content-Transfer-Encoding: base64") {
		t.Errorf("plan %+v\n%s", p, out)
	}
	sameLeaves(t, msg, out)
}

// A 7-bit message with short lines is left alone, byte for byte.
func TestNothingToDo(t *testing.T) {
	for _, opts := range []Options{seven, eight} {
		p, out := convert(t, mixedASCII, opts)
		if p.Changes() || out != mixedASCII || p.Output8bit {
			t.Errorf("%+v: %+v", opts, p)
		}
	}
}

const mixedASCII = "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"=_b\"\r\n\r\n" +
	"--=_b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--=_b\r\nContent-Type: text/html\r\n\r\n<p>hello</p>\r\n--=_b--\r\n"
