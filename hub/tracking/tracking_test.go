package tracking_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"hubd/hub/tracking"
	"hubd/policy"
)

// clock is an injectable clock that tests move by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var t0 = time.Date(2020, 3, 1, 12, 0, 0, 0, time.UTC)

func open(t *testing.T, o tracking.Options) *tracking.Log {
	t.Helper()
	l, err := tracking.Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// trackingFiles lists the tracking files in dir in rotation order (day,
// then sequence number as a number).
func trackingFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^MSGTRK(\d{8})-(\d+)\.jsonl$`)
	var names []string
	for _, e := range entries {
		if re.MatchString(e.Name()) {
			names = append(names, e.Name())
		}
	}
	key := func(name string) (string, int) {
		m := re.FindStringSubmatch(name)
		n, _ := strconv.Atoi(m[2])
		return m[1], n
	}
	slices.SortFunc(names, func(a, b string) int {
		da, na := key(a)
		db, nb := key(b)
		if c := strings.Compare(da, db); c != 0 {
			return c
		}
		return na - nb
	})
	return names
}

// lines returns the lines of one file, without their "\n", failing the
// test if the file does not end in "\n".
func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Fatalf("%s does not end in a newline", path)
	}
	return strings.Split(string(b[:len(b)-1]), "\n")
}

// allEvents decodes every line of every tracking file in dir, in order.
func allEvents(t *testing.T, dir string) []tracking.Event {
	t.Helper()
	var evs []tracking.Event
	for _, name := range trackingFiles(t, dir) {
		for _, line := range lines(t, filepath.Join(dir, name)) {
			var e tracking.Event
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("%s: line %q: %v", name, line, err)
			}
			evs = append(evs, e)
		}
	}
	return evs
}

func TestRecordLineFormat(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(time.Date(2026, 1, 2, 15, 4, 5, 123456789, time.UTC))
	l := open(t, tracking.Options{Dir: dir, Clock: clk.Now})

	full := tracking.Event{
		Time:             time.Date(2026, 1, 2, 16, 4, 5, 7_000_000, time.FixedZone("CET", 3600)),
		Event:            tracking.Receive,
		QueueID:          "q1",
		MessageID:        "<m1@example.org>",
		Source:           "SMTP",
		Connector:        "internet",
		ClientAddr:       "192.0.2.1:4567",
		Sender:           "alice@example.org",
		Recipient:        "bob@example.com",
		RelatedRecipient: "list@example.com",
		NextHop:          "mx.example.com",
		Reply:            "250 2.0.0 OK",
		RemoteMTA:        "mail.example.org [192.0.2.1]",
		Size:             1234,
		Reference:        "q0",
		TraceID:          "4bf92f3577b34da6a3ce929d0e0e4736",
	}
	l.Record(full)
	l.Record(tracking.Event{Event: tracking.Defer, QueueID: "q1"}) // Time from the clock
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	files := trackingFiles(t, dir)
	if len(files) != 1 || files[0] != "MSGTRK20260102-1.jsonl" {
		t.Fatalf("files = %v, want [MSGTRK20260102-1.jsonl]", files)
	}
	ls := lines(t, filepath.Join(dir, files[0]))
	if len(ls) != 2 {
		t.Fatalf("got %d lines, want 2: %q", len(ls), ls)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(ls[0]), &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"time": "2026-01-02T15:04:05.007Z", "event": "RECEIVE", "queue_id": "q1",
		"message_id": "<m1@example.org>", "source": "SMTP", "connector": "internet",
		"client_addr": "192.0.2.1:4567", "sender": "alice@example.org", "recipient": "bob@example.com",
		"related_recipient": "list@example.com", "next_hop": "mx.example.com", "reply": "250 2.0.0 OK",
		"remote_mta": "mail.example.org [192.0.2.1]", "size": float64(1234), "reference": "q0",
		"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
	}
	if len(m) != len(want) {
		t.Errorf("keys = %v, want %d keys", m, len(want))
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	// Empty fields are left out; the clock fills in Time, cut to milliseconds.
	if got, want := ls[1], `{"time":"2026-01-02T15:04:05.123Z","event":"DEFER","queue_id":"q1"}`; got != want {
		t.Errorf("line 2 = %s, want %s", got, want)
	}
	var back tracking.Event
	if err := json.Unmarshal([]byte(ls[0]), &back); err != nil {
		t.Fatal(err)
	}
	full.Time = full.Time.UTC()
	if back != full {
		t.Errorf("decoded %+v, want %+v", back, full)
	}
}

func TestRecordKeepsHostileValuesOnOneLine(t *testing.T) {
	dir := t.TempDir()
	l := open(t, tracking.Options{Dir: dir})
	hostile := "evil@example.org\r\n{\"event\":\"DELIVER\"}\x00\"\\\t\xff\u2028é"
	l.Record(tracking.Event{Event: tracking.Fail, Recipient: hostile, Reply: "550 5.1.1 \"no\"\n"})
	l.Close()
	evs := allEvents(t, dir) // fails if the value split the line
	if len(evs) != 1 {
		t.Fatalf("got %d events, want 1", len(evs))
	}
	if want := strings.ToValidUTF8(hostile, "\ufffd"); evs[0].Recipient != want {
		t.Errorf("recipient = %q, want %q", evs[0].Recipient, want)
	}
	if evs[0].Reply != "550 5.1.1 \"no\"\n" {
		t.Errorf("reply = %q", evs[0].Reply)
	}
}

func TestConcurrentRecordWritesWholeLines(t *testing.T) {
	for _, tc := range []struct {
		name    string
		maxFile int64
	}{{"one file", 0}, {"rotating", 8 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := open(t, tracking.Options{Dir: dir, MaxFileSize: tc.maxFile})
			const writers, each = 50, 200
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for i := range each {
						l.Record(tracking.Event{
							Event:     tracking.Deliver,
							QueueID:   fmt.Sprintf("w%d-%d", w, i),
							Recipient: strings.Repeat("x", 10+i%50) + "@example.com",
						})
					}
				})
			}
			wg.Wait()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, e := range allEvents(t, dir) {
				if seen[e.QueueID] {
					t.Fatalf("%s written twice", e.QueueID)
				}
				seen[e.QueueID] = true
			}
			if len(seen) != writers*each {
				t.Fatalf("got %d events, want %d", len(seen), writers*each)
			}
			files := trackingFiles(t, dir)
			if tc.maxFile > 0 {
				if len(files) < 2 {
					t.Fatalf("no rotation: %v", files)
				}
				for _, f := range files {
					if st, _ := os.Stat(filepath.Join(dir, f)); st.Size() > tc.maxFile {
						t.Errorf("%s is %d bytes, over %d", f, st.Size(), tc.maxFile)
					}
				}
			}
		})
	}
}

func TestNilLogIsANoOp(t *testing.T) {
	var l *tracking.Log
	l.Record(tracking.Event{Event: tracking.Receive})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenConfig(t *testing.T) {
	l, err := tracking.OpenConfig(policy.TrackingLog{Enabled: false, Dir: t.TempDir()}, "", nil)
	if err != nil || l != nil {
		t.Fatalf("disabled: got %v, %v; want nil, nil", l, err)
	}
	dir := filepath.Join(t.TempDir(), "log", "tracking")
	l, err = tracking.OpenConfig(policy.TrackingLog{Enabled: true, Dir: dir, MaxFileSize: 10 << 20,
		MaxAge: 30 * 24 * time.Hour, MaxDirectorySize: 1 << 30}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Record(tracking.Event{Event: tracking.Receive, QueueID: "q"})
	l.Close()
	if evs := allEvents(t, dir); len(evs) != 1 || evs[0].QueueID != "q" {
		t.Fatalf("events = %+v", evs)
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("dir mode = %v, %v; want 0750", st.Mode(), err)
	}
}

func TestRecordAfterCloseIsANoOp(t *testing.T) {
	dir := t.TempDir()
	l := open(t, tracking.Options{Dir: dir})
	l.Record(tracking.Event{Event: tracking.Receive, QueueID: "before"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.Record(tracking.Event{Event: tracking.Receive, QueueID: "after"})
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if evs := allEvents(t, dir); len(evs) != 1 || evs[0].QueueID != "before" {
		t.Fatalf("events = %+v", evs)
	}
}

func TestOpenFailsWhenDirCannotBeCreated(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if l, err := tracking.Open(tracking.Options{Dir: filepath.Join(file, "tracking")}); err == nil {
		l.Close()
		t.Fatal("Open under a regular file succeeded")
	}
	if _, err := tracking.Open(tracking.Options{}); err == nil {
		t.Fatal("Open without a directory succeeded")
	}
}

func TestOpenStartsANewFile(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	l := open(t, tracking.Options{Dir: dir, Clock: clk.Now})
	l.Record(tracking.Event{Event: tracking.Receive, QueueID: "a"})
	l.Close()
	before, _ := os.ReadFile(filepath.Join(dir, "MSGTRK20200301-1.jsonl"))

	l = open(t, tracking.Options{Dir: dir, Clock: clk.Now})
	l.Record(tracking.Event{Event: tracking.Receive, QueueID: "b"})
	l.Close()
	if got := trackingFiles(t, dir); !slices.Equal(got, []string{"MSGTRK20200301-1.jsonl", "MSGTRK20200301-2.jsonl"}) {
		t.Fatalf("files = %v", got)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "MSGTRK20200301-1.jsonl"))
	if !bytes.Equal(before, after) {
		t.Error("reopening appended to the old file")
	}
}
