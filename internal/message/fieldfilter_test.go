package message

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// dropMine condemns values that mention "mine".
func dropMine(v []byte) bool { return bytes.Contains(v, []byte("mine")) }

func TestFilterFields(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"kept and dropped",
			"Received: x\r\nAuthentication-Results: mine; spf=pass\r\nauthentication-results: theirs;\r\n dkim=pass\r\nSubject: s\r\n\r\nAuthentication-Results: mine\r\n",
			"Received: x\r\nauthentication-results: theirs;\r\n dkim=pass\r\nSubject: s\r\n\r\nAuthentication-Results: mine\r\n"},
		{"folded id", "A: 1\r\nAuthentication-Results:\r\n\t(comment)\r\n mine; none\r\nB: 2\r\n\r\nbody\r\n",
			"A: 1\r\nB: 2\r\n\r\nbody\r\n"},
		{"last field, no body", "A: 1\r\nAuthentication-Results: mine\r\n", "A: 1\r\n"},
		{"last field, kept", "Authentication-Results: other\r\n", "Authentication-Results: other\r\n"},
		{"obsolete space before colon", "Authentication-Results : mine\r\nB: 2\r\n\r\n", "B: 2\r\n\r\n"},
		{"everything removed, body without blank line", "Authentication-Results: mine\r\nnot a field\r\n",
			"\r\nnot a field\r\n"},
		{"similar name kept", "Authentication-Results-X: mine\r\n\r\n", "Authentication-Results-X: mine\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, chunk := range []int{1, 3, 4096} {
				ff := FilterFields(&chunkReader{r: strings.NewReader(tc.in), n: chunk}, "Authentication-Results", dropMine)
				out, err := io.ReadAll(ff)
				if err != nil || string(out) != tc.want {
					t.Fatalf("chunk %d: %q, %v; want %q", chunk, out, err, tc.want)
				}
			}
		})
	}
}

// A field longer than MaxHeldField is judged on its start; memory stays
// bounded and the verdict holds for the rest.
func TestFilterFieldsLongField(t *testing.T) {
	long := "Authentication-Results: mine;" + strings.Repeat("\r\n x=y", MaxHeldField) + "\r\n"
	in := "A: 1\r\n" + long + "B: 2\r\n\r\nbody"
	out, err := io.ReadAll(FilterFields(strings.NewReader(in), "Authentication-Results", dropMine))
	if err != nil || string(out) != "A: 1\r\nB: 2\r\n\r\nbody" {
		t.Fatalf("%.80q, %v", out, err)
	}
	keep := strings.Replace(in, "mine", "them", 1)
	out, err = io.ReadAll(FilterFields(strings.NewReader(keep), "Authentication-Results", dropMine))
	if err != nil || string(out) != keep {
		t.Fatalf("kept field changed: %d bytes, %v", len(out), err)
	}
}

func TestFilterFieldsPassesErrors(t *testing.T) {
	boom := io.ErrUnexpectedEOF
	r := io.MultiReader(strings.NewReader("A: 1\r\nAuthentication-Results: x\r\n"), &errReader{boom})
	out, err := io.ReadAll(FilterFields(r, "Authentication-Results", func([]byte) bool { return false }))
	if err != boom || string(out) != "A: 1\r\nAuthentication-Results: x\r\n" {
		t.Fatalf("%q, %v", out, err)
	}
}

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }

// FuzzFilterFields: a filter that drops nothing is the identity; one that
// drops fields yields the input's other fields and the body unchanged, and
// filtering again removes nothing.
func FuzzFilterFields(f *testing.F) {
	addSeeds(f, func(b []byte) { f.Add(b, uint8(0)) })
	f.Add([]byte("Authentication-Results: mine\r\n x\r\nB: 2\r\n\r\nAuthentication-Results: mine\r\n"), uint8(2))
	f.Add([]byte("authentication-results : mine\r\nbody\r\n"), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		const name = "Authentication-Results"
		same, err := io.ReadAll(FilterFields(&chunkReader{r: bytes.NewReader(data), n: int(chunk) + 1}, name,
			func([]byte) bool { return false }))
		if err != nil || !bytes.Equal(same, data) {
			t.Fatalf("identity filter changed the message: %q -> %q (%v)", data, same, err)
		}
		ff := FilterFields(&chunkReader{r: bytes.NewReader(data), n: int(chunk) + 1}, name, dropMine)
		out, err := io.ReadAll(ff)
		if err != nil {
			t.Fatal(err)
		}
		inHdr, _ := ReadHeader(bytes.NewReader(data), len(data)+1)
		outHdr, _ := ReadHeader(bytes.NewReader(out), len(out)+1)
		if !bytes.HasSuffix(out, data[len(inHdr):]) {
			t.Fatalf("body changed: %q -> %q", data, out)
		}
		var kept int
		eachField(outHdr, func(n, v []byte) bool {
			if equalFold(n, name) && dropMine(v) && len(v) < MaxHeldField {
				t.Fatalf("condemned field kept: %q", v)
			}
			kept++
			return true
		})
		var all int
		eachField(inHdr, func([]byte, []byte) bool { all++; return true })
		if kept+ff.Removed() != all {
			t.Fatalf("kept %d + removed %d != %d fields", kept, ff.Removed(), all)
		}
		again := FilterFields(bytes.NewReader(out), name, dropMine)
		if _, err := io.ReadAll(again); err != nil || again.Removed() != 0 {
			t.Fatalf("second pass removed %d (%v)", again.Removed(), err)
		}
	})
}
