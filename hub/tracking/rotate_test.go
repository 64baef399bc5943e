package tracking_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"hubd/hub/tracking"
)

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestRotateBySize(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	const maxFile = 600
	l := open(t, tracking.Options{Dir: dir, Clock: clk.Now, MaxFileSize: maxFile})
	for i := range 30 {
		l.Record(tracking.Event{Event: tracking.Send, QueueID: fmt.Sprintf("q%02d", i), Recipient: "bob@example.com"})
	}
	// A line longer than MaxFileSize goes, alone, into a file of its own.
	l.Record(tracking.Event{Event: tracking.Fail, QueueID: "big", Reply: strings.Repeat("x", 2*maxFile)})
	l.Record(tracking.Event{Event: tracking.Send, QueueID: "last"})
	l.Close()

	files := trackingFiles(t, dir)
	if len(files) < 5 {
		t.Fatalf("only %d files: %v", len(files), files)
	}
	for i, f := range files {
		if want := fmt.Sprintf("MSGTRK20200301-%d.jsonl", i+1); f != want {
			t.Fatalf("file %d = %s, want %s", i, f, want)
		}
		ls := lines(t, filepath.Join(dir, f))
		if size := fileSize(t, filepath.Join(dir, f)); size > maxFile && len(ls) != 1 {
			t.Errorf("%s: %d bytes in %d lines, over %d", f, size, len(ls), maxFile)
		}
	}
	evs := allEvents(t, dir)
	if len(evs) != 32 {
		t.Fatalf("got %d events, want 32", len(evs))
	}
	for i := range 30 {
		if want := fmt.Sprintf("q%02d", i); evs[i].QueueID != want {
			t.Errorf("event %d = %s, want %s", i, evs[i].QueueID, want)
		}
	}
	big := lines(t, filepath.Join(dir, files[len(files)-2]))
	if len(big) != 1 || !strings.Contains(big[0], `"queue_id":"big"`) {
		t.Errorf("the oversized line is not alone in its file: %d lines", len(big))
	}
}

func TestRotateAtUTCMidnight(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(time.Date(2020, 3, 1, 23, 59, 59, 900e6, time.UTC))
	l := open(t, tracking.Options{Dir: dir, Clock: clk.Now})
	l.Record(tracking.Event{Event: tracking.Receive, QueueID: "late"})
	clk.Add(200 * time.Millisecond)
	l.Record(tracking.Event{Event: tracking.Deliver, QueueID: "early"})
	// A clock that goes back never makes the current file older than the
	// one before it.
	clk.Add(-time.Hour)
	l.Record(tracking.Event{Event: tracking.Deliver, QueueID: "skewed"})
	l.Close()
	want := []string{"MSGTRK20200301-1.jsonl", "MSGTRK20200302-1.jsonl"}
	if got := trackingFiles(t, dir); !slices.Equal(got, want) {
		t.Fatalf("files = %v, want %v", got, want)
	}
	if ls := lines(t, filepath.Join(dir, want[1])); len(ls) != 2 {
		t.Errorf("second file has %d lines, want 2", len(ls))
	}
}

func TestDeleteByAge(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0) // 2020-03-01 12:00 UTC, long before the files' real mtimes
	o := tracking.Options{Dir: dir, Clock: clk.Now, MaxAge: 30 * 24 * time.Hour}
	l := open(t, o)
	l.Record(tracking.Event{Event: tracking.Receive, QueueID: "march-1"})
	clk.Set(time.Date(2020, 3, 10, 8, 0, 0, 0, time.UTC)) // the day change rotates
	l.Record(tracking.Event{Event: tracking.Receive, QueueID: "march-10"})
	if got := len(trackingFiles(t, dir)); got != 2 {
		t.Fatalf("%d files after 9 days, want 2", got)
	}

	// The March 1 file's last event was before March 2 00:00, so it
	// expires 30 days later, on April 1 00:00; cleanup runs at rotation.
	clk.Set(time.Date(2020, 3, 31, 23, 59, 0, 0, time.UTC))
	l.Record(tracking.Event{Event: tracking.Receive, QueueID: "march-31"})
	if got := trackingFiles(t, dir); got[0] != "MSGTRK20200301-1.jsonl" {
		t.Fatalf("files = %v: March 1 deleted before 30 days", got)
	}
	clk.Set(time.Date(2020, 4, 1, 0, 0, 1, 0, time.UTC))
	l.Record(tracking.Event{Event: tracking.Receive, QueueID: "april-1"})
	want := []string{"MSGTRK20200310-1.jsonl", "MSGTRK20200331-1.jsonl", "MSGTRK20200401-1.jsonl"}
	if got := trackingFiles(t, dir); !slices.Equal(got, want) {
		t.Fatalf("files = %v, want %v", got, want)
	}
	l.Close()

	// Open deletes too: reopening in May leaves only the new file.
	clk.Set(time.Date(2020, 5, 15, 0, 0, 0, 0, time.UTC))
	l = open(t, o)
	l.Close()
	if got := trackingFiles(t, dir); !slices.Equal(got, []string{"MSGTRK20200515-1.jsonl"}) {
		t.Fatalf("after reopening in May: files = %v", got)
	}
}

// A file's modification time also bounds its last event, so a short MaxAge
// works within one day.
func TestDeleteByAgeUsesModTime(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	day := now.UTC().Format("20060102")
	old := filepath.Join(dir, "MSGTRK"+day+"-1.jsonl")
	recent := filepath.Join(dir, "MSGTRK"+day+"-2.jsonl")
	other := filepath.Join(dir, "notes.txt")
	for _, f := range []struct {
		path string
		age  time.Duration
	}{{old, 2 * time.Hour}, {recent, 30 * time.Minute}, {other, 1000 * time.Hour}} {
		if err := os.WriteFile(f.path, []byte("{}\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		mt := now.Add(-f.age)
		if err := os.Chtimes(f.path, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	l := open(t, tracking.Options{Dir: dir, MaxAge: time.Hour})
	l.Close()
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("2h-old file kept with MaxAge 1h (stat: %v)", err)
	}
	for _, keep := range []string{recent, other} {
		if _, err := os.Stat(keep); err != nil {
			t.Errorf("%s deleted: %v", filepath.Base(keep), err)
		}
	}
	if got := trackingFiles(t, dir); len(got) != 2 || got[1] != "MSGTRK"+day+"-3.jsonl" {
		t.Errorf("files = %v, want the recent file and a new -3", got)
	}
}

func TestDeleteByDirectorySize(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	const maxFile, maxDir = 1000, 3000
	l := open(t, tracking.Options{Dir: dir, Clock: clk.Now, MaxFileSize: maxFile, MaxDirectorySize: maxDir})
	const n = 300
	for i := range n {
		l.Record(tracking.Event{Event: tracking.Deliver, QueueID: fmt.Sprintf("q%03d", i), Recipient: "bob@example.com"})
	}
	l.Close()

	files := trackingFiles(t, dir)
	// Cleanup ran when the last file was started (empty); only that file
	// has grown since.
	var total int64
	for _, f := range files[:len(files)-1] {
		total += fileSize(t, filepath.Join(dir, f))
	}
	if total > maxDir {
		t.Errorf("older files total %d bytes, over %d", total, maxDir)
	}
	if len(files) < 3 || files[0] == "MSGTRK20200301-1.jsonl" {
		t.Fatalf("files = %v: want the oldest deleted and a few kept", files)
	}
	// What is left is the newest events, contiguous up to the last one.
	evs := allEvents(t, dir)
	first := n - len(evs)
	for i, e := range evs {
		if want := fmt.Sprintf("q%03d", first+i); e.QueueID != want {
			t.Fatalf("event %d = %s, want %s", i, e.QueueID, want)
		}
	}
}

func TestCurrentFileIsNeverDeleted(t *testing.T) {
	dir := t.TempDir()
	clk := newClock(t0)
	l := open(t, tracking.Options{Dir: dir, Clock: clk.Now, MaxFileSize: 100, MaxDirectorySize: 1, MaxAge: time.Nanosecond})
	for i := range 5 {
		clk.Add(time.Minute)
		l.Record(tracking.Event{Event: tracking.Deliver, QueueID: fmt.Sprintf("q%d", i), Reply: strings.Repeat("x", 100)})
	}
	l.Close()
	files := trackingFiles(t, dir)
	if len(files) != 1 || files[0] != "MSGTRK20200301-5.jsonl" {
		t.Fatalf("files = %v, want only the current MSGTRK20200301-5.jsonl", files)
	}
	if evs := allEvents(t, dir); len(evs) != 1 || evs[0].QueueID != "q4" {
		t.Fatalf("events = %+v, want q4", evs)
	}
}
