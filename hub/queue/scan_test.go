package queue

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"hubd/hub"
)

// TestScan: Scan hands out what Load returns (latest states, removed
// messages gone, a death recorded and persisted) one message at a time,
// and an error from fn ends it with nothing changed for the messages not
// handed out.
func TestScan(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		dir := t.TempDir()
		s := openEngine(t, e, dir)
		mustLoad(t, s)
		var ids []hub.QueueID
		for i := range 6 {
			m := putBody(t, s, "body\r\n")
			ids = append(ids, m.ID)
			if i%2 == 0 {
				st := m.State
				st.Recipients[0].Status, st.Recipients[0].Attempts = Deferred, i
				if err := s.Update(context.Background(), m.ID, st); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := s.Remove(ids[5]); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkActive(ids[1], Mark{NotBefore: time.Now().Add(time.Hour), Isolated: true}); err != nil {
			t.Fatal(err)
		}
		s.Close() // the mark stays, as after SIGKILL

		s = openEngine(t, e, dir)
		var got []*Message
		if err := s.Scan(context.Background(), func(m *Message) error {
			got = append(got, m)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		sort.Slice(got, func(i, j int) bool { return got[i].ID < got[j].ID })
		if len(got) != 5 {
			t.Fatalf("Scan handed out %d messages, want 5", len(got))
		}
		for i, m := range got {
			if m.ID != ids[i] {
				t.Fatalf("message %d is %s, want %s", i, m.ID, ids[i])
			}
			want := Queued
			if i%2 == 0 {
				want = Deferred
			}
			if r := m.Recipients[0]; r.Status != want || (want == Deferred && r.Attempts != i) {
				t.Errorf("%s: recipient %+v, want %s", m.ID, r, want)
			}
			if (m.Crashes == 1) != (i == 1) {
				t.Errorf("%s: crashes %d", m.ID, m.Crashes)
			}
		}
		s.Close()

		// The death was persisted; fn's error stops the scan.
		s = openEngine(t, e, dir)
		stop := errors.New("enough")
		calls := 0
		err := s.Scan(context.Background(), func(m *Message) error {
			calls++
			if calls == 2 {
				return stop
			}
			return nil
		})
		if err != stop || calls != 2 {
			t.Fatalf("Scan: %v after %d calls, want %v after 2", err, calls, stop)
		}
		loaded := mustLoad(t, s)
		if len(loaded) != 5 || loaded[1].Crashes != 1 || loaded[1].Interrupted != 1 {
			t.Fatalf("Load after a stopped Scan: %d messages, %+v", len(loaded), loaded[1].State)
		}
	})
}

// TestLogScanOrder: LogStore.Scan hands out the messages in the order of
// their MSG records, and reads a message's body and state as Get does
// after compaction moved it.
func TestLogScanOrder(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir, SegmentSize: 4096})
	mustLoad(t, s)
	var ids []hub.QueueID
	for range 20 {
		ids = append(ids, putBody(t, s, "0123456789abcdef0123456789abcdef\r\n").ID)
	}
	s.Close()
	s = openLogTest(t, LogOptions{Dir: dir, SegmentSize: 4096})
	var order []hub.QueueID
	if err := s.Scan(context.Background(), func(m *Message) error {
		order = append(order, m.ID)
		if got := mustGet(t, s, m.ID); !sameMessage(got, m) {
			t.Errorf("Scan: %+v; Get: %+v", m, got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(order) != len(ids) {
		t.Fatalf("%d messages, want %d", len(order), len(ids))
	}
	for i := range ids {
		if order[i] != ids[i] { // one submitter: written in Put order
			t.Fatalf("Scan order %v, want %v", order, ids)
		}
	}
}

// TestLogScanQuarantinesUndecodable: a MSG record whose CRC checks and
// whose JSON is well-formed but is not a message (a bug that wrote it,
// not the disk) passes the index scan and is caught when Scan reads the
// message back: quarantined, not handed out, unknown to Get; the others
// are handed out.
func TestLogScanQuarantinesUndecodable(t *testing.T) {
	dir := t.TempDir()
	good, bad := hub.NewQueueID(time.Now()), hub.NewQueueID(time.Now())
	writeSegment(t, dir, 1, [2]string{string(good), "good"})
	var data []byte
	js := []byte(`{"envelope": 5, "size": 3, "body_crc": 0}`)
	data = append(data, encodeHead(recMsg, bad, js, []byte("bad"))...)
	data = append(data, "bad"...)
	f, err := os.OpenFile(filepath.Join(dir, "log", "0000000000000001.seg"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
	writeSegment(t, dir, 2) // segment 1 is sealed: damage there is quarantined, not cut

	s := openLogTest(t, LogOptions{Dir: dir})
	var got []hub.QueueID
	if err := s.Scan(context.Background(), func(m *Message) error {
		got = append(got, m.ID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != good {
		t.Fatalf("Scan handed out %v, want only %s", got, good)
	}
	if _, err := s.Get(context.Background(), bad); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of the quarantined message: %v, want ErrNotFound", err)
	}
	if q := dirNames(t, filepath.Join(dir, "quarantine")); len(q) != 1 {
		t.Fatalf("quarantine holds %v, want the record", q)
	}
	checkBodies(t, s, map[hub.QueueID]string{good: "good"})
}
