package message

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// addSeeds adds every testdata/*.eml file as a seed.
func addSeeds(f *testing.F, add func([]byte)) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.eml"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds in testdata: %v", err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		add(data)
	}
}

// FuzzReader checks, for any content and limits, that the Reader never
// panics, never yields a bare CR or LF, reads exactly the source, and, when it
// adds nothing, yields the content back (with at most one inserted blank line).
func FuzzReader(f *testing.F) {
	addSeeds(f, func(b []byte) {
		f.Add(b, uint16(0), uint16(0), uint8(0), false, uint8(0))
		f.Add(b, uint16(len(b)), uint16(40), uint8(1), true, uint8(3))
	})
	f.Add([]byte("a: b\r\n\r\n\r"), uint16(0), uint16(0), uint8(0), true, uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, maxSize, maxHeader uint16, hops uint8, add bool, chunk uint8) {
		opts := Options{MaxMessageSize: int64(maxSize), MaxHeaderSize: int64(maxHeader), MaxHopCount: int(hops)}
		if add {
			opts.Received = ReceivedHeader(Trace{FromHelo: "h", FromIP: "192.0.2.1", By: "mx", With: "ESMTP", Time: time.Unix(0, 0)})
			opts.AddMessageID = "<id@mx>"
			opts.AddDate = true
			opts.Clock = func() time.Time { return time.Unix(0, 0) }
		}
		src := &strictSource{t: t, r: &chunkReader{r: bytes.NewReader(data), n: int(chunk) + 1}}
		r := NewReader(src, opts)
		out, err := io.ReadAll(r)
		if hasBareNewline(string(out)) && !(err == nil && !add && bytes.Equal(out, data)) {
			t.Fatalf("output holds a bare CR or LF (err %v): %q", err, out)
		}
		if err != nil {
			if replyOf(err) == nil {
				t.Fatalf("error is not a *policy.Reply: %v", err)
			}
			return
		}
		if r.Size() != int64(len(data)) {
			t.Fatalf("Size = %d, want %d", r.Size(), len(data))
		}
		if opts.MaxMessageSize > 0 && r.Size() > opts.MaxMessageSize {
			t.Fatalf("accepted %d bytes over a limit of %d", r.Size(), opts.MaxMessageSize)
		}
		if !add && !bytes.Equal(out, data) {
			// The only change allowed: one blank line ending the header.
			i := 0
			for i < len(data) && out[i] == data[i] {
				i++
			}
			if len(out) != len(data)+2 || string(out[i:i+2]) != "\r\n" || !bytes.Equal(out[i+2:], data[i:]) {
				t.Fatalf("content changed:\n in %q\nout %q", data, out)
			}
		}
	})
}

// FuzzCountReceived checks that CountReceived never panics and never counts
// more fields than there are lines.
func FuzzCountReceived(f *testing.F) {
	addSeeds(f, func(b []byte) { f.Add(b) })
	f.Add([]byte("Received: a\r\n b\r\nRECEIVED:c\nReceived-SPF: x\r\n"))
	f.Fuzz(func(t *testing.T, header []byte) {
		n := CountReceived(header)
		if lines := bytes.Count(header, []byte("\n")) + 1; n < 0 || n > lines {
			t.Fatalf("CountReceived = %d for %d lines", n, lines)
		}
	})
}

// FuzzStripOrgHeaders checks the header firewall for any content and any
// chunking: the header section of the output has no line that starts with
// the hub-internal prefix, the body comes out byte for byte, the fields kept
// are the input's other fields in order, and filtering again strips nothing.
func FuzzStripOrgHeaders(f *testing.F) {
	addSeeds(f, func(b []byte) { f.Add(b, uint8(0)) })
	f.Add([]byte("X-Hubd-A: 1\r\n x\r\nB: 2\r\n\r\nX-Hubd-C: 3\r\n"), uint8(2))
	f.Add([]byte("x-hubd-a : 1\r\nbody\r\n"), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		fl := StripOrgHeaders(&chunkReader{r: bytes.NewReader(data), n: int(chunk) + 1})
		out, err := io.ReadAll(fl)
		if err != nil {
			t.Fatal(err)
		}
		inHdr, err := ReadHeader(bytes.NewReader(data), len(data)+1)
		if err != nil {
			t.Fatal(err)
		}
		body := data[len(inHdr):]
		if !bytes.HasSuffix(out, body) {
			t.Fatalf("body changed:\n in %q\nout %q", data, out)
		}
		outHdr, _ := ReadHeader(bytes.NewReader(out), len(out)+1)
		for line := range bytes.Lines(outHdr) {
			if len(line) >= len(OrgHeaderPrefix) && isOrgName(line[:len(OrgHeaderPrefix)]) {
				t.Fatalf("hub-internal line left in the header: %q\n in %q\nout %q", line, data, out)
			}
		}
		var kept, all []string
		eachField(inHdr, func(n, v []byte) bool {
			if !isOrgName(n) {
				kept = append(kept, string(n)+":"+string(v))
			}
			all = append(all, string(n))
			return true
		})
		var got []string
		eachField(out, func(n, v []byte) bool { got = append(got, string(n)+":"+string(v)); return true })
		if strings.Join(got, "\x00") != strings.Join(kept, "\x00") {
			t.Fatalf("fields kept %q, want %q (in %q)", got, kept, data)
		}
		if fl.Stripped() != len(all)-len(kept) {
			t.Fatalf("Stripped() = %d, want %d", fl.Stripped(), len(all)-len(kept))
		}
		again := StripOrgHeaders(bytes.NewReader(out))
		if out2, _ := io.ReadAll(again); again.Stripped() != 0 || !bytes.Equal(out2, out) {
			t.Fatalf("second pass changed %q into %q", out, out2)
		}
	})
}
