package tracking

import (
	"bytes"
	"encoding/json"
	"hubd/internal/logbuf"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWriteErrorsAreReportedOncePerMinute(t *testing.T) {
	var logs logbuf.Buffer
	now := time.Date(2020, 3, 1, 12, 0, 0, 0, time.UTC)
	l, err := Open(Options{
		Dir:    t.TempDir(),
		Clock:  func() time.Time { return now }, // only this goroutine moves it
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	l.f.Close() // every write now fails
	for range 100 {
		l.Record(Event{Event: Receive})
	}
	if n := strings.Count(logs.String(), "write failed"); n != 1 {
		t.Fatalf("%d reports of 100 failures in one instant, want 1:\n%s", n, logs.String())
	}
	now = now.Add(61 * time.Second)
	l.Record(Event{Event: Receive})
	out := logs.String()
	if n := strings.Count(out, "write failed"); n != 2 {
		t.Fatalf("%d reports after a minute, want 2:\n%s", n, out)
	}
	if !strings.Contains(out, "suppressed=99") {
		t.Errorf("second report does not count the 99 suppressed errors:\n%s", out)
	}
	l.Close()
}

// When the next file cannot be created, the log keeps writing to the
// current one rather than losing events.
func TestRotationFailureKeepsTheCurrentFile(t *testing.T) {
	var logs logbuf.Buffer
	dir := filepath.Join(t.TempDir(), "tracking")
	l, err := Open(Options{Dir: dir, MaxFileSize: 10, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Record(Event{Event: Receive, QueueID: "q1"})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	l.Record(Event{Event: Receive, QueueID: "q2"}) // wants to rotate: cannot
	if !strings.Contains(logs.String(), "cannot start a new file") {
		t.Errorf("rotation failure not reported:\n%s", logs.String())
	}
	l.mu.Lock()
	size, f := l.size, l.f
	l.mu.Unlock()
	if f == nil || size < 2*int64(len(`{"time":"2020-03-01T12:00:00.000Z","event":"RECEIVE","queue_id":"q1"}`)) {
		t.Errorf("second event not written to the current file (size %d)", size)
	}
}

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
		seq  int
	}{
		{"MSGTRK20200301-1.jsonl", true, 1},
		{"MSGTRK20200301-12.jsonl", true, 12},
		{"MSGTRK20200301-0.jsonl", false, 0},
		{"MSGTRK20200301-01.jsonl", false, 0},
		{"MSGTRK20200301-1.log", false, 0},
		{"MSGTRK2020031-1.jsonl", false, 0},
		{"MSGTRK20201301-1.jsonl", false, 0},
		{"MSGTRK20200301.jsonl", false, 0},
		{"notes.txt", false, 0},
	} {
		n, ok := parseName(tc.name)
		if ok != tc.ok || ok && (n.seq != tc.seq || n.String() != tc.name) {
			t.Errorf("parseName(%q) = %v, %v", tc.name, n, ok)
		}
	}
}

// FuzzAppendEvent checks the hand-written encoder against encoding/json:
// every line is one line, and decodes to what encoding/json itself would
// make of the same strings.
func FuzzAppendEvent(f *testing.F) {
	f.Add("bob@example.com", "250 2.0.0 OK", int64(42))
	f.Add("a\r\nb\"\\", "\x00\x1f\x7f\xff\xfe", int64(-1))
	f.Add("é\u2028\U0001F600", "\xed\xa0\x80", int64(0))
	f.Fuzz(func(t *testing.T, rcpt, reply string, size int64) {
		e := Event{Time: time.Unix(1e9, 0).UTC(), Event: Deliver, Recipient: rcpt, Reply: reply, Size: size}
		line := appendEvent(nil, &e)
		if bytes.IndexByte(line, '\n') != len(line)-1 {
			t.Fatalf("not one line: %q", line)
		}
		var got Event
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		ref, _ := json.Marshal(e)
		var want Event
		if err := json.Unmarshal(ref, &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("line %q decodes to %+v, want %+v", line, got, want)
		}
	})
}

func BenchmarkRecord(b *testing.B) {
	l, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	e := Event{
		Event: Send, QueueID: "1a2b3c4d5e6f", MessageID: "<20260102150405.1234@example.org>",
		Connector: "internet", Sender: "alice@example.org", Recipient: "bob@example.com",
		NextHop: "mx1.example.com", RemoteMTA: "mx1.example.com [192.0.2.25]",
		Reply: "250 2.0.0 Ok: queued as 4ABC", Size: 48213,
	}
	b.ReportAllocs()
	for b.Loop() {
		l.Record(e)
	}
}

func BenchmarkRecordParallel(b *testing.B) {
	l, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	e := Event{Event: Deliver, QueueID: "1a2b3c4d5e6f", Sender: "alice@example.org", Recipient: "bob@example.com", Size: 48213}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Record(e)
		}
	})
}
