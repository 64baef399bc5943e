package tracking_test

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"hubd/hub/tracking"
)

// searchFixture writes the life of three messages over two days into small,
// rotating files.
func searchFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	clk := newClock(time.Date(2020, 3, 1, 23, 0, 0, 0, time.UTC))
	l := open(t, tracking.Options{Dir: dir, Clock: clk.Now, MaxFileSize: 400})
	step := func(e tracking.Event) {
		clk.Add(10 * time.Minute)
		l.Record(e)
	}
	step(tracking.Event{Event: tracking.Receive, QueueID: "q1", MessageID: "<m1@example.org>", Sender: "Alice@Example.org", Recipient: "list@example.com", Size: 100})
	step(tracking.Event{Event: tracking.Expand, QueueID: "q1", Recipient: "bob@example.com", RelatedRecipient: "list@example.com"})
	step(tracking.Event{Event: tracking.Expand, QueueID: "q1", Recipient: "carol@example.net", RelatedRecipient: "list@example.com"})
	step(tracking.Event{Event: tracking.Deliver, QueueID: "q1", Recipient: "bob@example.com"})
	step(tracking.Event{Event: tracking.Receive, QueueID: "q2", MessageID: "<m2@example.org>", Sender: "dave@example.org", Recipient: "bob@example.com"})
	step(tracking.Event{Event: tracking.Defer, QueueID: "q1", Recipient: "carol@example.net", Reply: "451 4.4.1 try later"}) // past midnight
	step(tracking.Event{Event: tracking.Deliver, QueueID: "q2", Recipient: "bob@example.com"})
	clk.Add(24 * time.Hour)
	step(tracking.Event{Event: tracking.Fail, QueueID: "q1", Recipient: "carol@example.net", Reply: "550 5.1.1 unknown"})
	step(tracking.Event{Event: tracking.DSN, QueueID: "q1", Recipient: "carol@example.net", Reference: "q3"})
	step(tracking.Event{Event: tracking.Receive, QueueID: "q3", Source: "DSN", Recipient: "alice@example.org"})
	l.Close()
	if n := len(trackingFiles(t, dir)); n < 4 {
		t.Fatalf("fixture spans only %d files", n)
	}
	return dir
}

func search(t *testing.T, dir string, f tracking.Filter) []string {
	t.Helper()
	var got []string
	err := tracking.Search(dir, f, func(e tracking.Event) bool {
		got = append(got, e.QueueID+" "+string(e.Event)+" "+e.Recipient)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestSearch(t *testing.T) {
	dir := searchFixture(t)
	at := func(day, h, m int) time.Time { return time.Date(2020, 3, day, h, m, 0, 0, time.UTC) }
	for _, tc := range []struct {
		name string
		f    tracking.Filter
		want []string
	}{
		{"queue id", tracking.Filter{QueueID: "q2"}, []string{
			"q2 RECEIVE bob@example.com", "q2 DELIVER bob@example.com"}},
		{"recipient, also as related recipient", tracking.Filter{Recipient: "LIST@example.com"}, []string{
			"q1 RECEIVE list@example.com", "q1 EXPAND bob@example.com", "q1 EXPAND carol@example.net"}},
		{"recipient across days", tracking.Filter{Recipient: "carol@example.net"}, []string{
			"q1 EXPAND carol@example.net", "q1 DEFER carol@example.net", "q1 FAIL carol@example.net",
			"q1 DSN carol@example.net"}},
		{"event", tracking.Filter{Event: tracking.Receive}, []string{
			"q1 RECEIVE list@example.com", "q2 RECEIVE bob@example.com", "q3 RECEIVE alice@example.org"}},
		{"sender ignores case", tracking.Filter{Sender: "alice@example.org"}, []string{
			"q1 RECEIVE list@example.com"}},
		{"message id without brackets", tracking.Filter{MessageID: "m2@example.org"}, []string{
			"q2 RECEIVE bob@example.com"}},
		{"time range", tracking.Filter{Since: at(1, 23, 40), Until: at(2, 0, 10)}, []string{
			"q1 DELIVER bob@example.com", "q2 RECEIVE bob@example.com", "q1 DEFER carol@example.net"}},
		{"since, third day only", tracking.Filter{Since: at(2, 12, 0)}, []string{
			"q1 FAIL carol@example.net", "q1 DSN carol@example.net", "q3 RECEIVE alice@example.org"}},
		{"until, first day only", tracking.Filter{Until: at(1, 23, 35), Event: tracking.Expand}, []string{
			"q1 EXPAND bob@example.com", "q1 EXPAND carol@example.net"}},
		{"all fields", tracking.Filter{QueueID: "q1", Recipient: "carol@example.net", Event: tracking.Fail,
			Since: at(1, 0, 0), Until: at(4, 0, 0)}, []string{"q1 FAIL carol@example.net"}},
		{"nothing", tracking.Filter{QueueID: "q9"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := search(t, dir, tc.f); !slices.Equal(got, tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestSearchStopsWhenToldTo(t *testing.T) {
	dir := searchFixture(t)
	n := 0
	err := tracking.Search(dir, tracking.Filter{}, func(tracking.Event) bool {
		n++
		return n < 3
	})
	if err != nil || n != 3 {
		t.Fatalf("n = %d, err = %v; want 3, nil", n, err)
	}
}

func TestSearchMissingDir(t *testing.T) {
	err := tracking.Search(filepath.Join(t.TempDir(), "nope"), tracking.Filter{}, func(tracking.Event) bool { return true })
	if err == nil {
		t.Fatal("Search of a missing directory succeeded")
	}
}
