package message

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"hubd/policy"
)

func TestIsOrgHeader(t *testing.T) {
	for name, want := range map[string]bool{
		"X-Hubd-Expanded": true,
		"x-hubd-authas":   true,
		"X-HUBD-":         true,
		"X-Hubd":          false,
		"X-HubdExpanded":  false,
		"X-Other-X-Hubd-": false,
		"Received":        false,
		"":                false,
	} {
		if got := IsOrgHeader(name); got != want {
			t.Errorf("IsOrgHeader(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestStripOrgHeaders(t *testing.T) {
	long := strings.Repeat("x", 3*lineBuf)
	for _, tc := range []struct {
		name, in, want string
		stripped       int
	}{
		{"one field",
			"From: a@example.org\r\nX-Hubd-Expanded: team@example.com; by=hub\r\nSubject: s\r\n\r\nbody\r\n",
			"From: a@example.org\r\nSubject: s\r\n\r\nbody\r\n", 1},
		{"folded continuation lines go with their field",
			"X-Hubd-Expanded: a\r\n b\r\n\tc\r\nSubject: s\r\n folded too\r\n\r\nbody\r\n",
			"Subject: s\r\n folded too\r\n\r\nbody\r\n", 1},
		{"any letter case, WSP before the colon",
			"x-hubd-authas : Internal\r\nX-HUBD-SCL:5\r\nTo: b@example.com\r\n\r\n",
			"To: b@example.com\r\n\r\n", 2},
		{"similar names are kept",
			"X-Hubd: a\r\nX-HubdExpanded: b\r\nX-Other-X-Hubd-: c\r\n\r\n",
			"X-Hubd: a\r\nX-HubdExpanded: b\r\nX-Other-X-Hubd-: c\r\n\r\n", 0},
		{"body lines are never touched",
			"Subject: s\r\n\r\nX-Hubd-Expanded: forged in the body\r\n x\r\n",
			"Subject: s\r\n\r\nX-Hubd-Expanded: forged in the body\r\n x\r\n", 0},
		{"body text ends the header section",
			"Subject: s\r\nnot a field\r\nX-Hubd-Expanded: body\r\n",
			"Subject: s\r\nnot a field\r\nX-Hubd-Expanded: body\r\n", 0},
		{"header only, last field without CRLF",
			"From: a@example.org\r\nX-Hubd-Last: no line end",
			"From: a@example.org\r\n", 1},
		{"header only, all stripped",
			"X-Hubd-A: 1\r\nX-Hubd-B: 2\r\n",
			"", 2},
		{"all stripped, body with no blank line gets one",
			"X-Hubd-A: 1\r\nbody line\r\n",
			"\r\nbody line\r\n", 1},
		{"all stripped, blank line kept",
			"X-Hubd-A: 1\r\n\r\nbody\r\n",
			"\r\nbody\r\n", 1},
		{"no header at all",
			"just text\r\nX-Hubd-A: 1\r\n",
			"just text\r\nX-Hubd-A: 1\r\n", 0},
		{"empty", "", "", 0},
		{"a dropped line longer than the buffer",
			"X-Hubd-Long: " + long + "\r\n " + long + "\r\nSubject: s\r\n\r\nb",
			"Subject: s\r\n\r\nb", 1},
		{"a kept line longer than the buffer",
			"Subject: " + long + "\r\nX-Hubd-A: 1\r\n\r\nb",
			"Subject: " + long + "\r\n\r\nb", 1},
		{"a body line longer than the buffer",
			"X-Hubd-A: 1\r\n\r\n" + long + "X-Hubd-B: 2\r\n",
			"\r\n" + long + "X-Hubd-B: 2\r\n", 1},
	} {
		for _, rd := range readers {
			t.Run(tc.name+"/"+rd.name, func(t *testing.T) {
				f := StripOrgHeaders(rd.wrap(strings.NewReader(tc.in)))
				out, err := io.ReadAll(f)
				if err != nil {
					t.Fatal(err)
				}
				if string(out) != tc.want {
					t.Errorf("out\n%q\nwant\n%q", out, tc.want)
				}
				if f.Stripped() != tc.stripped {
					t.Errorf("Stripped() = %d, want %d", f.Stripped(), tc.stripped)
				}
			})
		}
	}
}

// errAfter yields data, then err.
type errAfter struct {
	data []byte
	err  error
}

func (e *errAfter) Read(p []byte) (int, error) {
	if len(e.data) == 0 {
		return 0, e.err
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}

// TestStripOrgHeadersPassesErrors: the strict reader's refusal reaches the
// caller unchanged, after the bytes that came before it.
func TestStripOrgHeadersPassesErrors(t *testing.T) {
	refusal := &policy.Reply{Code: 552, Enhanced: "5.3.4", Text: "too big"}
	f := StripOrgHeaders(&errAfter{data: []byte("X-Hubd-A: 1\r\nSubject: s\r\n\r\nbody"), err: refusal})
	out, err := io.ReadAll(f)
	if !errors.Is(err, refusal) {
		t.Fatalf("err = %v, want the source's", err)
	}
	if string(out) != "Subject: s\r\n\r\nbody" {
		t.Errorf("out = %q", out)
	}
	if _, err := f.Read(make([]byte, 10)); !errors.Is(err, refusal) {
		t.Errorf("later Read: %v", err)
	}
}

// TestStripAfterReader runs the filter on the strict reader's output, as the
// receive side does: the Received field added and the Message-ID added stay,
// the forged field goes, and MessageID is known after the first Read.
func TestStripAfterReader(t *testing.T) {
	in := "X-Hubd-Expanded: team@example.com; by=evil\r\n\tcontinued\r\nSubject: s\r\n\r\nX-Hubd-Expanded: body\r\n"
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) {
			r := NewReader(rd.wrap(strings.NewReader(in)), Options{
				Received:     "Received: from c by hub; Mon, 5 Jan 2026 10:00:00 +0000\r\n",
				AddMessageID: "<id@hub>", AddDate: true, Clock: func() time.Time { return time.Unix(0, 0).UTC() },
			})
			f := StripOrgHeaders(r)
			out, err := io.ReadAll(f)
			if err != nil {
				t.Fatal(err)
			}
			want := "Received: from c by hub; Mon, 5 Jan 2026 10:00:00 +0000\r\nSubject: s\r\n" +
				"Message-ID: <id@hub>\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\n\r\nX-Hubd-Expanded: body\r\n"
			if string(out) != want {
				t.Errorf("out\n%q\nwant\n%q", out, want)
			}
			if f.Stripped() != 1 || r.MessageID() != "<id@hub>" {
				t.Errorf("stripped %d, message id %q", f.Stripped(), r.MessageID())
			}
		})
	}
}

func TestReadHeaderAndField(t *testing.T) {
	in := "Subject: a\r\n b\r\nTLS-Required:  No \r\n\r\nTLS-Required: Yes\r\n"
	hdr, err := ReadHeader(strings.NewReader(in), 1<<10)
	if err != nil || string(hdr) != "Subject: a\r\n b\r\nTLS-Required:  No \r\n" {
		t.Fatalf("ReadHeader = %q, %v", hdr, err)
	}
	if v, ok := Field(hdr, "tls-required"); !ok || v != "No" {
		t.Errorf("Field = %q, %v", v, ok)
	}
	if v, ok := Field(hdr, "subject"); !ok || v != "a b" {
		t.Errorf("folded Field = %q, %v", v, ok)
	}
	if _, ok := Field(hdr, "From"); ok {
		t.Error("Field found a missing field")
	}
	if _, err := ReadHeader(strings.NewReader(in), 10); !errors.Is(err, ErrHeaderTooLong) {
		t.Errorf("over the limit: %v", err)
	}
	if hdr, err := ReadHeader(strings.NewReader("no header\r\n"), 100); err != nil || len(hdr) != 0 {
		t.Errorf("no header: %q, %v", hdr, err)
	}
	long := "X: " + strings.Repeat("y", 2*lineBuf) + "\r\n"
	if hdr, err := ReadHeader(strings.NewReader(long+"\r\nbody"), 1<<20); err != nil || string(hdr) != long {
		t.Errorf("long line: %d bytes, %v", len(hdr), err)
	}
}

// TestReaderLongLineDecidedAlike: a line whose colon comes after the 998th
// byte is body text however the bytes arrive (it used to depend on the
// chunking).
func TestReaderLongLineDecidedAlike(t *testing.T) {
	in := "Subject: s\r\n" + strings.Repeat("a", 1200) + ": v\r\nTo: b\r\n"
	want := "Subject: s\r\n\r\n" + strings.Repeat("a", 1200) + ": v\r\nTo: b\r\n"
	for _, rd := range readers {
		out, err := io.ReadAll(NewReader(rd.wrap(strings.NewReader(in)), Options{}))
		if err != nil || string(out) != want {
			t.Errorf("%s: %q, %v", rd.name, bytes.TrimPrefix(out, []byte("Subject: s\r\n")), err)
		}
	}
}
