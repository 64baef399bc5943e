package message

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"hubd/policy"
)

// readers gives each test input through several source shapes: all at once,
// one byte at a time (every boundary case of the CR hold-back), and in
// chunks of 7 bytes.
var readers = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"whole", func(r io.Reader) io.Reader { return r }},
	{"bytewise", iotest.OneByteReader},
	{"chunks7", func(r io.Reader) io.Reader { return &chunkReader{r: r, n: 7} }},
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

// strictSource fails the test if it is read after it returned io.EOF, and
// counts reads.
type strictSource struct {
	t     testing.TB
	r     io.Reader
	eof   bool
	reads int
}

func (s *strictSource) Read(p []byte) (int, error) {
	if s.eof {
		s.t.Errorf("source read after io.EOF")
	}
	s.reads++
	n, err := s.r.Read(p)
	if err == io.EOF {
		s.eof = true
	}
	return n, err
}

func run(t testing.TB, wrap func(io.Reader) io.Reader, in string, opts Options) (string, *Reader, error) {
	t.Helper()
	src := &strictSource{t: t, r: wrap(strings.NewReader(in))}
	r := NewReader(src, opts)
	out, err := io.ReadAll(r)
	return string(out), r, err
}

// replyCode returns the reply code of err, or 0 if err is not a *policy.Reply.
func replyOf(err error) *policy.Reply {
	var rep *policy.Reply
	if errors.As(err, &rep) {
		return rep
	}
	return nil
}

func TestBareLineEndings(t *testing.T) {
	cases := []struct {
		name, in string
		bad      bool
	}{
		{"clean", "Subject: a\r\n\r\nbody\r\n", false},
		{"clean no final CRLF", "Subject: a\r\n\r\nbody", false},
		{"empty", "", false},
		{"bare LF in header", "Subject: a\nFrom: b\r\n\r\nbody\r\n", true},
		{"bare CR in header", "Subject: a\rFrom: b\r\n\r\nbody\r\n", true},
		{"bare LF in body", "Subject: a\r\n\r\nline\nline\r\n", true},
		{"bare CR in body", "Subject: a\r\n\r\nline\rline\r\n", true},
		{"LF first", "\nSubject: a\r\n", true},
		{"CR first", "\rSubject: a\r\n", true},
		{"CR CR LF", "Subject: a\r\n\r\nx\r\r\n", true},
		{"LF CR", "Subject: a\r\n\r\nx\n\r", true},
		{"CR last byte", "Subject: a\r\n\r\nbody\r", true},
		{"CR last byte of header", "Subject: a\r", true},
		{"bare LF deep in body", "S: a\r\n\r\n" + strings.Repeat("0123456789\r\n", 10000) + "x\ny\r\n", true},
	}
	for _, c := range cases {
		for _, rd := range readers {
			t.Run(c.name+"/"+rd.name, func(t *testing.T) {
				out, _, err := run(t, rd.wrap, c.in, Options{})
				if !c.bad {
					if err != nil || out != c.in {
						t.Fatalf("got %q, %v; want the input back", out, err)
					}
					return
				}
				rep := replyOf(err)
				if rep == nil || rep.Code != 550 || rep.Enhanced != "5.6.0" || rep.Text != "Message contains bare CR or LF" {
					t.Fatalf("err = %v, want 550 5.6.0", err)
				}
				if hasBareNewline(out) {
					t.Errorf("output before the error holds a bare CR or LF: %q", out)
				}
			})
		}
	}
}

// TestSmuggling feeds the end-of-data variants of SMTP smuggling as they
// reach Session.Data after go-smtp's strict <CRLF>.<CRLF> handling: all must
// be refused, and the smuggled second message never yielded.
func TestSmuggling(t *testing.T) {
	variants := []string{"\n.\n", "\n.\r\n", "\r.\r", "\r\n.\n", "\r\n.\r", "\r.\r\n", "\r\n.\r\r\n"}
	const smuggled = "MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: pay\r\n\r\nforged\r\n"
	for _, v := range variants {
		for _, rd := range readers {
			t.Run(fmt.Sprintf("%q/%s", v, rd.name), func(t *testing.T) {
				in := "From: a@example.com\r\nSubject: hi\r\n\r\nhello" + v + smuggled
				out, _, err := run(t, rd.wrap, in, Options{Received: "Received: by test\r\n"})
				if rep := replyOf(err); rep == nil || rep.Code != 550 {
					t.Fatalf("err = %v, want 550", err)
				}
				if strings.Contains(out, "forged") || strings.Contains(out, "MAIL FROM") {
					t.Errorf("smuggled content was yielded: %q", out)
				}
			})
		}
	}
}

func TestInsertionOrder(t *testing.T) {
	clock := func() time.Time { return time.Date(2026, 3, 4, 5, 6, 7, 0, time.FixedZone("", -5*3600)) }
	const received = "Received: from a (b [192.0.2.1])\r\n\tby mx with ESMTP; Wed, 04 Mar 2026 05:06:07 -0500\r\n"
	const date = "Date: Wed, 04 Mar 2026 05:06:07 -0500\r\n"
	const mid = "Message-ID: <q1@mx.example>\r\n"
	opts := Options{Received: received, AddMessageID: "<q1@mx.example>", AddDate: true, Clock: clock}
	cases := []struct {
		name string
		opts Options
		in   string
		want string
	}{
		{"both added", opts,
			"From: a\r\nSubject: s\r\n\r\nbody\r\n",
			received + "From: a\r\nSubject: s\r\n" + mid + date + "\r\nbody\r\n"},
		{"both present", opts,
			"Date: x\r\nMessage-Id: <o@x>\r\n\r\nbody\r\n",
			received + "Date: x\r\nMessage-Id: <o@x>\r\n\r\nbody\r\n"},
		{"date present", opts,
			"DATE: x\r\n\r\nb\r\n",
			received + "DATE: x\r\n" + mid + "\r\nb\r\n"},
		{"nothing asked", Options{},
			"From: a\r\n\r\nb\r\n",
			"From: a\r\n\r\nb\r\n"},
		{"all header", opts,
			"From: a\r\nSubject: s\r\n",
			received + "From: a\r\nSubject: s\r\n" + mid + date},
		{"all header, last line unterminated", opts,
			"From: a\r\nSubject: s",
			received + "From: a\r\nSubject: s\r\n" + mid + date},
		{"all header unterminated, nothing added", Options{Received: received},
			"From: a\r\nSubject: s",
			received + "From: a\r\nSubject: s"},
		{"empty message", opts,
			"",
			received + mid + date},
		{"first line not a field", opts,
			"hello world\r\nSubject: not a header\r\n",
			received + mid + date + "\r\nhello world\r\nSubject: not a header\r\n"},
		{"first line not a field, nothing added", Options{},
			"hello\r\n", "hello\r\n"},
		{"starts with blank line", opts,
			"\r\nbody\r\n",
			received + mid + date + "\r\nbody\r\n"},
		{"starts with WSP", Options{Received: received},
			" x: y\r\n",
			received + "\r\n x: y\r\n"},
		{"body line ends the header", Options{Received: received},
			"From: a\r\nthis is body\r\n",
			received + "From: a\r\n\r\nthis is body\r\n"},
		{"body text without line end", Options{Received: received},
			"From: a\r\nbody",
			received + "From: a\r\n\r\nbody"},
		{"folded fields", opts,
			"Subject: a\r\n b\r\n\tc\r\nX: y\r\n\r\n",
			received + "Subject: a\r\n b\r\n\tc\r\nX: y\r\n" + mid + date + "\r\n"},
		{"obsolete WSP before colon", opts,
			"Subject : a\r\nmessage-id\t: <m@x>\r\n\r\nb",
			received + "Subject : a\r\nmessage-id\t: <m@x>\r\n" + date + "\r\nb"},
		{"mbox From line is body", Options{Received: received},
			"From someone Mon Jan 1\r\nSubject: x\r\n",
			received + "\r\nFrom someone Mon Jan 1\r\nSubject: x\r\n"},
	}
	for _, c := range cases {
		for _, rd := range readers {
			t.Run(c.name+"/"+rd.name, func(t *testing.T) {
				out, r, err := run(t, rd.wrap, c.in, c.opts)
				if err != nil {
					t.Fatal(err)
				}
				if out != c.want {
					t.Errorf("got\n%q\nwant\n%q", out, c.want)
				}
				if r.Size() != int64(len(c.in)) {
					t.Errorf("Size = %d, want %d", r.Size(), len(c.in))
				}
			})
		}
	}
}

func TestMessageID(t *testing.T) {
	cases := []struct {
		name, in, add, want string
	}{
		{"found", "Message-ID: <a@b>\r\n\r\n", "<new@x>", "<a@b>"},
		{"found mixed case", "message-id:<a@b>\r\n\r\n", "<new@x>", "<a@b>"},
		{"found folded", "Message-ID:\r\n <a@b>\r\n\r\n", "<new@x>", "<a@b>"},
		{"first of two", "Message-ID: <a@b>\r\nMessage-ID: <c@d>\r\n\r\n", "", "<a@b>"},
		{"added", "Subject: x\r\n\r\n", "<new@x>", "<new@x>"},
		{"not added when not asked", "Subject: x\r\n\r\n", "", ""},
		{"in body only: added", "Subject: x\r\n\r\nMessage-ID: <a@b>\r\n", "<new@x>", "<new@x>"},
		{"Resent-Message-ID is another field", "Resent-Message-ID: <a@b>\r\n\r\n", "<new@x>", "<new@x>"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, r, err := run(t, iotest.OneByteReader, c.in, Options{AddMessageID: c.add})
			if err != nil {
				t.Fatal(err)
			}
			if r.MessageID() != c.want {
				t.Errorf("MessageID = %q, want %q", r.MessageID(), c.want)
			}
			added := 0
			if c.want == "<new@x>" {
				added = 1
			}
			if n := strings.Count(out, "Message-ID: <new@x>\r\n"); n != added {
				t.Errorf("output has %d added Message-ID fields, want %d: %q", n, added, out)
			}
		})
	}
	r := NewReader(strings.NewReader("Message-ID: <a@b>\r\n\r\n"), Options{})
	if r.MessageID() != "" {
		t.Errorf("MessageID before reading = %q", r.MessageID())
	}
}

func TestMessageSizeLimit(t *testing.T) {
	body := "Subject: s\r\n\r\n" + strings.Repeat("abcdefghi\r\n", 100)
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) {
			recv := "Received: by x\r\n"
			out, _, err := run(t, rd.wrap, body, Options{MaxMessageSize: int64(len(body)), Received: recv})
			if err != nil || out != recv+body {
				t.Fatalf("at the limit: err = %v", err)
			}
			src := &strictSource{t: t, r: rd.wrap(strings.NewReader(body + "x"))}
			r := NewReader(src, Options{MaxMessageSize: int64(len(body)), Received: recv})
			got, err := io.ReadAll(r)
			rep := replyOf(err)
			if rep == nil || rep.Code != 552 || rep.Enhanced != "5.3.4" || rep.Text != "Message size exceeds fixed maximum message size" {
				t.Fatalf("one over: err = %v", err)
			}
			if len(got) > len(recv)+len(body) {
				t.Errorf("yielded %d bytes, more than the limit allows", len(got))
			}
		})
	}
	// The limit breached inside the header section: nothing is yielded.
	out, _, err := run(t, iotest.OneByteReader, "Subject: "+strings.Repeat("x", 100)+"\r\n\r\n", Options{MaxMessageSize: 50})
	if rep := replyOf(err); rep == nil || rep.Code != 552 || out != "" {
		t.Errorf("in header: out %q, err %v", out, err)
	}
	// Zero means unlimited.
	if _, _, err := run(t, iotest.OneByteReader, body, Options{}); err != nil {
		t.Error(err)
	}
}

// TestLineLengthLimit: a line of MaxLineLength octets, CRLF included, is
// taken; one octet more is refused with 550 5.6.0 (in the header or the
// body, ended or not), and nothing past the breach is yielded (nothing at
// all when it is in the header).
func TestLineLengthLimit(t *testing.T) {
	const limit = 100
	line := func(n int) string { return strings.Repeat("y", n-2) + "\r\n" }
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) {
			ok := "Subject: s\r\n\r\n" + line(limit) + line(limit) + strings.Repeat("z", limit)
			if out, _, err := run(t, rd.wrap, ok, Options{MaxLineLength: limit}); err != nil || out != ok {
				t.Fatalf("at the limit: err = %v", err)
			}
			for name, in := range map[string]string{
				"body":            "Subject: s\r\n\r\n" + line(10) + line(limit+1) + line(10),
				"header":          "Subject: " + strings.Repeat("x", limit) + "\r\n\r\nbody\r\n",
				"last, unended":   "Subject: s\r\n\r\n" + strings.Repeat("z", limit+1),
				"after long ones": "Subject: s\r\n\r\n" + line(limit) + line(limit) + line(limit+1),
			} {
				out, _, err := run(t, rd.wrap, in, Options{MaxLineLength: limit})
				rep := replyOf(err)
				if rep == nil || rep.Code != 550 || rep.Enhanced != "5.6.0" ||
					rep.Text != "Message contains a line longer than 100 octets" {
					t.Errorf("%s: err = %v", name, err)
				}
				if strings.Contains(out, line(limit+1)) || strings.Contains(out, strings.Repeat("z", limit+1)) ||
					(name == "header" && out != "") {
					t.Errorf("%s: yielded past the breach: %q", name, out)
				}
			}
		})
	}
}

func TestHeaderSizeLimit(t *testing.T) {
	header := "Subject: " + strings.Repeat("x", 89) + "\r\n" // 100 bytes
	cases := []struct {
		name  string
		in    string
		limit int64
		bad   bool
	}{
		{"at the limit", header + "\r\nbody", 100, false},
		{"one over", header + "\r\nbody", 99, true},
		{"blank line not counted", header + "\r\n", 100, false},
		{"body not counted", header + "\r\n" + strings.Repeat("y", 5000), 100, false},
		{"all header one over", header + "X: y\r\n", 105, true},
		{"all header at the limit", header + "X: y\r\n", 106, false},
		{"unterminated field over", header + "X-Long: " + strings.Repeat("z", 200), 150, true},
		{"unterminated field at the limit", header + "X-Long: " + strings.Repeat("z", 42), 150, false},
		{"non-field line not counted", header + strings.Repeat("z z", 100), 100, false},
		{"long no-colon line is body", header + strings.Repeat("z", 3000) + "\r\n", 100, false},
		{"folded line counted", header + " " + strings.Repeat("w", 30) + "\r\n\r\n", 110, true},
	}
	for _, c := range cases {
		for _, rd := range readers {
			t.Run(c.name+"/"+rd.name, func(t *testing.T) {
				out, _, err := run(t, rd.wrap, c.in, Options{MaxHeaderSize: c.limit})
				rep := replyOf(err)
				if !c.bad {
					if err != nil {
						t.Fatal(err)
					}
					return
				}
				if rep == nil || rep.Code != 552 || rep.Enhanced != "5.3.4" || rep.Text != "Header size exceeds fixed maximum size" {
					t.Fatalf("err = %v", err)
				}
				if out != "" {
					t.Errorf("yielded %q before the error", out)
				}
			})
		}
	}
	// Unlimited still has the internal cap.
	huge := "X: " + strings.Repeat("a", headerCap) + "\r\n\r\n"
	if _, _, err := run(t, func(r io.Reader) io.Reader { return r }, huge, Options{}); replyOf(err) == nil {
		t.Errorf("header over the internal cap: err = %v", err)
	}
}

func TestHopCount(t *testing.T) {
	received := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i%2 == 0 {
				fmt.Fprintf(&b, "Received: from h%d\r\n\tby x; date\r\n", i)
			} else {
				fmt.Fprintf(&b, "RECEIVED : by h%d\r\n", i)
			}
		}
		return b.String()
	}
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) {
			in := received(30) + "Received-SPF: pass\r\nX-Received: x\r\n\r\nReceived: in body\r\n"
			if _, _, err := run(t, rd.wrap, in, Options{MaxHopCount: 30}); err != nil {
				t.Fatalf("30 hops, max 30: %v", err)
			}
			in = received(31) + "\r\nbody\r\n"
			out, _, err := run(t, rd.wrap, in, Options{MaxHopCount: 30, Received: "Received: by me\r\n"})
			rep := replyOf(err)
			if rep == nil || rep.Code != 554 || rep.Enhanced != "5.4.6" ||
				rep.Text != "Too many hops (31 Received: headers), possible mail loop" {
				t.Fatalf("31 hops, max 30: err = %v", err)
			}
			if out != "" {
				t.Errorf("yielded %q", out)
			}
			if _, _, err := run(t, rd.wrap, received(200), Options{}); err != nil {
				t.Errorf("0 = unlimited: %v", err)
			}
		})
	}
}

func TestStickyErrorAndNoReadAfter(t *testing.T) {
	src := &strictSource{t: t, r: strings.NewReader("Subject: a\r\n\r\nx\ny" + strings.Repeat("z", 100000))}
	r := NewReader(src, Options{})
	_, err := io.ReadAll(r)
	if replyOf(err) == nil {
		t.Fatalf("err = %v", err)
	}
	reads := src.reads
	for range 3 {
		n, err2 := r.Read(make([]byte, 10))
		if n != 0 || err2 != err {
			t.Fatalf("Read after error = %d, %v; want 0, the same error", n, err2)
		}
	}
	if src.reads != reads {
		t.Errorf("source read %d more times after the error", src.reads-reads)
	}
	// The caller can drain what is left.
	if rest, _ := io.ReadAll(src); len(rest) == 0 {
		t.Errorf("reader consumed the whole source after the error")
	}

	// A source error is passed on, and sticky too.
	boom := errors.New("connection reset")
	r = NewReader(io.MultiReader(strings.NewReader("Subject: a\r\n\r\nbody"), iotest.ErrReader(boom)), Options{})
	if _, err := io.ReadAll(r); err != boom {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	if _, err := r.Read(make([]byte, 1)); err != boom {
		t.Fatalf("second Read err = %v", err)
	}
}

func TestReadEmptyBuffer(t *testing.T) {
	r := NewReader(strings.NewReader("a: b\r\n"), Options{})
	if n, err := r.Read(nil); n != 0 || err != nil {
		t.Fatalf("Read(nil) = %d, %v", n, err)
	}
	if err := iotest.TestReader(NewReader(strings.NewReader("a: b\r\n\r\nbody\r\n"), Options{}), []byte("a: b\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
}

func TestCountReceived(t *testing.T) {
	cases := []struct {
		name, in string
		want     int
	}{
		{"none", "Subject: x\r\n", 0},
		{"empty", "", 0},
		{"one", "Received: from a by b; date\r\n", 1},
		{"mixed case", "received: x\r\nRECEIVED: y\r\nReCeIvEd: z\r\n", 3},
		{"folded", "Received: from a\r\n\tby b\r\n    with ESMTP; date\r\nReceived: x\r\n", 2},
		{"continuation that looks like a field", "Subject: a\r\n Received: x\r\n", 0},
		{"WSP before colon", "Received \t: x\r\n", 1},
		{"other fields", "Received-SPF: pass\r\nX-Received: x\r\nReceivedx: y\r\n", 0},
		{"stops at blank line", "Received: a\r\n\r\nReceived: b\r\n", 1},
		{"stops at body text", "Received: a\r\nbody text\r\nReceived: b\r\n", 1},
		{"LF endings", "Received: a\nReceived: b\n", 2},
		{"no final line end", "Received: a\r\nReceived: b", 2},
		{"no colon", "Received\r\n", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := CountReceived([]byte(c.in)); got != c.want {
				t.Errorf("CountReceived(%q) = %d, want %d", c.in, got, c.want)
			}
		})
	}
}

func hasBareNewline(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\r':
			if i+1 >= len(s) || s[i+1] != '\n' {
				return true
			}
			i++
		case '\n':
			return true
		}
	}
	return false
}

func BenchmarkReader(b *testing.B) {
	var msg bytes.Buffer
	msg.WriteString("Received: from a by b; Mon, 1 Jan 2026 00:00:00 +0000\r\nFrom: a@example.com\r\nSubject: bench\r\n\r\n")
	line := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 2)[:70] + "\r\n"
	for msg.Len() < 1<<20 {
		msg.WriteString(line)
	}
	data := msg.Bytes()
	opts := Options{MaxMessageSize: 36 << 20, MaxHeaderSize: 64 << 10, MaxHopCount: 100,
		Received: "Received: by mx; date\r\n", AddMessageID: "<x@y>", AddDate: true}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		n, err := io.Copy(io.Discard, NewReader(bytes.NewReader(data), opts))
		if err != nil || n < int64(len(data)) {
			b.Fatal(n, err)
		}
	}
}

// TestLargeHeaderStreams checks a header section far larger than the read
// buffer, followed by a body that streams through after it.
func TestLargeHeaderStreams(t *testing.T) {
	var in strings.Builder
	for i := range 3000 {
		fmt.Fprintf(&in, "X-Filler-%d: %s\r\n", i, strings.Repeat("f", 60))
	}
	in.WriteString("Message-ID: <late@x>\r\n\r\n")
	in.WriteString(strings.Repeat("body line\r\n", 20000))
	for _, rd := range readers[:2] {
		out, r, err := run(t, rd.wrap, in.String(), Options{MaxHeaderSize: 1 << 20, Received: "Received: by x\r\n"})
		if err != nil {
			t.Fatal(err)
		}
		if out != "Received: by x\r\n"+in.String() {
			t.Errorf("output differs from Received + input")
		}
		if r.MessageID() != "<late@x>" {
			t.Errorf("MessageID = %q", r.MessageID())
		}
	}
}

// TestPooledBuffersAfterEnd: a Reader and an OrgHeaderFilter give their
// buffers back to a pool once they have ended; reading them again still
// returns their sticky result, and the next message read through buffers
// from the pool yields its own octets only.
func TestPooledBuffersAfterEnd(t *testing.T) {
	msgs := []string{
		"X-Hubd-Secret: a\r\nSubject: one\r\n\r\n" + strings.Repeat("first body line\r\n", 3000),
		"Subject: two\r\n\r\nshort\r\n",
		"Subject: three\r\n\r\nbare\nLF\r\n",
	}
	for round := 0; round < 3; round++ {
		for i, m := range msgs {
			f := StripOrgHeaders(NewReader(strings.NewReader(m), Options{}))
			got, err := io.ReadAll(f)
			want := strings.TrimPrefix(m, "X-Hubd-Secret: a\r\n")
			if i == 2 {
				if err == nil {
					t.Fatalf("round %d, message %d: bare LF accepted", round, i)
				}
				want = "Subject: three\r\n\r\nbare"
			} else if err != nil {
				t.Fatalf("round %d, message %d: %v", round, i, err)
			}
			if string(got) != want {
				t.Fatalf("round %d, message %d: got %q…, want %q…", round, i, got[:min(len(got), 60)], want[:min(len(want), 60)])
			}
			for range 2 {
				if n, again := f.Read(make([]byte, 10)); n != 0 || (err == nil && again != io.EOF) || (err != nil && again == nil) {
					t.Fatalf("round %d, message %d: read after the end: %d, %v", round, i, n, again)
				}
			}
		}
	}
}
