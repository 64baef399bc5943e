package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"hubd/hub"
	"hubd/policy"
)

func openLogTest(t testing.TB, opts LogOptions) *LogStore {
	t.Helper()
	s, err := OpenLog(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustLoad(t testing.TB, s Store) []*Message {
	t.Helper()
	got, err := s.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func putBody(t testing.TB, s Store, body string) *Message {
	t.Helper()
	m := newMessage("a@example.com")
	if err := s.Put(context.Background(), m, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	return m
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "log", "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// checkBodies fails unless Load of s returns exactly the messages of want
// (id → body), each with its body.
func checkBodies(t *testing.T, s Store, want map[hub.QueueID]string) {
	t.Helper()
	got := mustLoad(t, s)
	if len(got) != len(want) {
		t.Fatalf("loaded %d messages, want %d", len(got), len(want))
	}
	for _, m := range got {
		body, ok := want[m.ID]
		if !ok {
			t.Fatalf("loaded %s, not expected", m.ID)
		}
		if b := readBody(t, s, m.ID); b != body {
			t.Fatalf("%s: body of %d bytes, want %d", m.ID, len(b), len(body))
		}
	}
}

// copyDir copies the regular files of a spool tree (test fixtures).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLogTornTailCut: the last segment cut anywhere inside its last
// record (as a crash during the write leaves it), or with that record's
// bytes damaged, loads every earlier message intact, and the segment is
// truncated where the torn record began.
func TestLogTornTailCut(t *testing.T) {
	base := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: base})
	want := map[hub.QueueID]string{}
	var last *Message
	for i := range 5 {
		body := strings.Repeat(fmt.Sprintf("line %d\r\n", i), 20)
		last = putBody(t, s, body)
		want[last.ID] = body
	}
	s.Close()
	delete(want, last.ID)
	segs := segFiles(t, base)
	if len(segs) != 1 {
		t.Fatalf("segments %v, want one", segs)
	}
	fi, _ := os.Stat(segs[0])
	size := fi.Size()
	// The last record is the only one with the last message's id.
	data, _ := os.ReadFile(segs[0])
	start := int64(bytes.LastIndex(data, []byte(last.ID))) - recHeader - 1
	cuts := []int64{start + 1, start + recHeader - 1, start + recHeader + 5, (start + size) / 2, size - 1}
	for i, cut := range append(cuts, -1) {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "spool")
			copyDir(t, base, dir)
			seg := filepath.Join(dir, "log", filepath.Base(segs[0]))
			if cut < 0 { // damaged, not short: flip a byte of the body
				b, _ := os.ReadFile(seg)
				b[size-3] ^= 0xff
				os.WriteFile(seg, b, 0o600)
			} else if err := os.Truncate(seg, cut); err != nil {
				t.Fatal(err)
			}
			s := openLogTest(t, LogOptions{Dir: dir})
			checkBodies(t, s, want)
			if fi, _ := os.Stat(seg); fi.Size() != start {
				t.Fatalf("case %d: segment is %d bytes after Load, want cut at %d", i, fi.Size(), start)
			}
			if q := dirNames(t, filepath.Join(dir, "quarantine")); len(q) != 0 {
				t.Fatalf("torn tail quarantined: %v", q)
			}
			// Later Puts go on, and all survive a reopen.
			m := putBody(t, s, "after\r\n")
			want := withBody(want, m.ID, "after\r\n")
			s.Close()
			checkBodies(t, openLogTest(t, LogOptions{Dir: dir}), want)
		})
	}
}

func withBody(m map[hub.QueueID]string, id hub.QueueID, body string) map[hub.QueueID]string {
	out := map[hub.QueueID]string{id: body}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestLogCorruptRecordQuarantined: a damaged record in a sealed segment is
// copied to quarantine/ and its message alone is lost; the scan resyncs
// at the next record and every other message loads. A second Load keeps
// the one quarantined copy.
func TestLogCorruptRecordQuarantined(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir, SegmentSize: 2048})
	want := map[hub.QueueID]string{}
	var ids []hub.QueueID
	for i := range 12 {
		body := strings.Repeat(fmt.Sprintf("message %d\r\n", i), 30)
		m := putBody(t, s, body)
		want[m.ID] = body
		ids = append(ids, m.ID)
	}
	s.Close()
	segs := segFiles(t, dir)
	if len(segs) < 3 {
		t.Fatalf("segments %v, want several", segs)
	}
	// Damage the second record of the first segment, inside its body.
	b, _ := os.ReadFile(segs[0])
	i := bytes.Index(b, []byte(ids[1]))
	if i < 0 {
		t.Fatalf("%s not in the first segment", ids[1])
	}
	b[i+200] ^= 0xff
	os.WriteFile(segs[0], b, 0o600)
	delete(want, ids[1])

	s = openLogTest(t, LogOptions{Dir: dir, SegmentSize: 2048})
	checkBodies(t, s, want)
	q := dirNames(t, filepath.Join(dir, "quarantine"))
	if len(q) != 1 || !strings.HasPrefix(q[0], strings.TrimSuffix(filepath.Base(segs[0]), ".seg")) {
		t.Fatalf("quarantine holds %v, want one range of %s", q, segs[0])
	}
	s.Close()
	checkBodies(t, openLogTest(t, LogOptions{Dir: dir, SegmentSize: 2048}), want)
	if q := dirNames(t, filepath.Join(dir, "quarantine")); len(q) != 1 {
		t.Fatalf("quarantine holds %v after a second Load, want the one copy", q)
	}
}

// TestLogDiskFull: a write that fails with ENOSPC after writing half the
// batch fails the Put with 452 4.3.1, leaves nothing of it in the
// segment, and later Puts succeed; a reopen loads exactly those.
func TestLogDiskFull(t *testing.T) {
	dir := t.TempDir()
	var full atomic.Bool
	opts := LogOptions{Dir: dir, writev: func(f *os.File, bufs [][]byte, off int64) (int, error) {
		b := bytes.Join(bufs, nil)
		if full.Load() {
			n, _ := f.WriteAt(b[:len(b)/2], off)
			return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
		}
		return f.WriteAt(b, off)
	}}
	s := openLogTest(t, opts)
	want := map[hub.QueueID]string{}
	m := putBody(t, s, "before\r\n")
	want[m.ID] = "before\r\n"
	seg := segFiles(t, dir)[0]
	before, _ := os.Stat(seg)

	full.Store(true)
	err := s.Put(context.Background(), newMessage("a@example.com"), strings.NewReader(strings.Repeat("x", 5000)))
	var reply *policy.Reply
	if !errors.As(err, &reply) || reply.Code != 452 || reply.Enhanced != "4.3.1" {
		t.Fatalf("Put on a full disk: %v, want 452 4.3.1", err)
	}
	if after, _ := os.Stat(seg); after.Size() != before.Size() {
		t.Fatalf("segment grew from %d to %d bytes by a failed batch", before.Size(), after.Size())
	}
	full.Store(false)
	for i := range 3 {
		body := fmt.Sprintf("after %d\r\n", i)
		m := putBody(t, s, body)
		want[m.ID] = body
	}
	s.Close()
	checkBodies(t, openLogTest(t, LogOptions{Dir: dir}), want)
	if q := dirNames(t, filepath.Join(dir, "quarantine")); len(q) != 0 {
		t.Fatalf("quarantine holds %v", q)
	}
}

// TestLogFailedFdatasync: an fdatasync failure (EIO) fails the whole
// batch, which is truncated away; the store keeps working.
func TestLogFailedFdatasync(t *testing.T) {
	dir := t.TempDir()
	var fail atomic.Bool
	s := openLogTest(t, LogOptions{Dir: dir, datasync: func(f *os.File) error {
		if fail.Load() {
			return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: syscall.EIO}
		}
		return fdatasync(f)
	}})
	m := putBody(t, s, "kept\r\n")
	fail.Store(true)
	if err := s.Put(context.Background(), newMessage("a@example.com"), strings.NewReader("lost\r\n")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("Put with a failing fdatasync: %v", err)
	}
	if err := s.Remove(m.ID); err == nil {
		t.Fatal("Remove with a failing fdatasync succeeded")
	}
	fail.Store(false)
	m2 := putBody(t, s, "later\r\n")
	s.Close()
	checkBodies(t, openLogTest(t, LogOptions{Dir: dir}), map[hub.QueueID]string{m.ID: "kept\r\n", m2.ID: "later\r\n"})
}

// TestLogBlobBodies: a body over 1 MiB goes to blob/<id>, reads back
// whole before and after a reopen, is checked against its CRC, and is
// unlinked with its message.
func TestLogBlobBodies(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir})
	big := strings.Repeat("0123456789abcdef", 3<<16) // 3 MiB
	m := putBody(t, s, big)
	small := putBody(t, s, "small\r\n")
	if m.Size != int64(len(big)) {
		t.Fatalf("Size %d, want %d", m.Size, len(big))
	}
	if blobs := dirNames(t, filepath.Join(dir, "blob")); len(blobs) != 1 || blobs[0] != string(m.ID) {
		t.Fatalf("blob/ holds %v", blobs)
	}
	if readBody(t, s, m.ID) != big {
		t.Fatal("blob body differs")
	}
	s.Close()
	s = openLogTest(t, LogOptions{Dir: dir})
	checkBodies(t, s, map[hub.QueueID]string{m.ID: big, small.ID: "small\r\n"})

	// Damage the blob: the reader fails at EOF.
	p := filepath.Join(dir, "blob", string(m.ID))
	b, _ := os.ReadFile(p)
	b[12345] ^= 1
	os.WriteFile(p, b, 0o600)
	rc, err := s.Open(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("damaged blob read: %v", err)
	}
	rc.Close()

	if err := s.Remove(m.ID); err != nil {
		t.Fatal(err)
	}
	if blobs := dirNames(t, filepath.Join(dir, "blob")); len(blobs) != 0 {
		t.Fatalf("blob/ holds %v after Remove", blobs)
	}
	// A blob no record names (a Put that died before its commit) is
	// deleted by the next Load.
	s.Close()
	os.WriteFile(filepath.Join(dir, "blob", "00000000000000000000a"), []byte("orphan"), 0o600)
	os.WriteFile(filepath.Join(dir, "blob", "00000000000000000000b.tmp"), []byte("torn"), 0o600)
	checkBodies(t, openLogTest(t, LogOptions{Dir: dir}), map[hub.QueueID]string{small.ID: "small\r\n"})
	if blobs := dirNames(t, filepath.Join(dir, "blob")); len(blobs) != 0 {
		t.Fatalf("blob/ holds %v after Load", blobs)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// TestLogReclaim: with small segments, once every message is settled
// every sealed segment is unlinked, and a reopen loads nothing.
func TestLogReclaim(t *testing.T) {
	dir := t.TempDir()
	opts := LogOptions{Dir: dir, SegmentSize: 1024}
	s := openLogTest(t, opts)
	mustLoad(t, s) // reclaiming starts once the index is built
	var ids []hub.QueueID
	for i := range 20 {
		ids = append(ids, putBody(t, s, strings.Repeat(fmt.Sprint(i), 300)).ID)
	}
	if n := len(segFiles(t, dir)); n < 5 {
		t.Fatalf("%d segments, want several", n)
	}
	for _, id := range ids {
		if err := s.Update(context.Background(), id, State{Recipients: []RecipientState{{Address: "a@example.com", Status: Delivered}}}); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(id); err != nil {
			t.Fatal(err)
		}
	}
	// One more batch, so that the committer reclaims after the last Remove.
	m := putBody(t, s, "x")
	s.Remove(m.ID)
	waitFor(t, "sealed segments to be reclaimed", func() bool { return len(segFiles(t, dir)) <= 2 })
	s.Close()
	if got := mustLoad(t, openLogTest(t, opts)); len(got) != 0 {
		t.Fatalf("loaded %d settled messages", len(got))
	}
}

// TestLogCompaction: messages kept in mostly settled segments are copied
// forward with their latest state, the old segments go, and everything
// live loads intact, also after a reopen.
func TestLogCompaction(t *testing.T) {
	dir := t.TempDir()
	opts := LogOptions{Dir: dir, SegmentSize: 8192}
	s := openLogTest(t, opts)
	mustLoad(t, s)
	ctx := context.Background()
	want := map[hub.QueueID]string{}
	var keep []hub.QueueID
	st := State{Recipients: []RecipientState{{Address: "a@example.com", Status: Deferred, Attempts: 3}}, Crashes: 1}
	for i := range 100 {
		body := strings.Repeat(fmt.Sprintf("body %d ", i), 60)
		m := putBody(t, s, body)
		if i%20 == 0 {
			want[m.ID] = body
			keep = append(keep, m.ID)
			if i == 0 {
				if err := s.Update(ctx, m.ID, st); err != nil {
					t.Fatal(err)
				}
			}
			continue
		}
		if err := s.Remove(m.ID); err != nil {
			t.Fatal(err)
		}
	}
	first := s.segPath(1) // keep[0]'s
	waitFor(t, "the first segment to be compacted", func() bool {
		putBody(t, s, "nudge") // compaction runs when the committer is idle after a batch
		_, err := os.Stat(first)
		return os.IsNotExist(err)
	})
	got := mustLoad(t, s)
	for _, m := range got {
		if m.ID == keep[0] && (m.Crashes != 1 || m.Recipients[0].Attempts != 3) {
			t.Fatalf("compaction lost the latest state: %+v", m.State)
		}
		if _, ok := want[m.ID]; !ok {
			want[m.ID] = "nudge"
		}
	}
	checkBodies(t, s, want)
	s.Close()
	checkBodies(t, openLogTest(t, opts), want)
}

// TestLogTornTailCutBeforeFirstWrite: a store that writes before its
// first Load cuts the torn tail of the previous process's last segment
// first, so that a later Load (by another process) does not take it for
// damage in a sealed segment.
func TestLogTornTailCutBeforeFirstWrite(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir})
	kept := putBody(t, s, "kept\r\n")
	torn := putBody(t, s, "torn\r\n")
	s.Close()
	seg := segFiles(t, dir)[0]
	fi, _ := os.Stat(seg)
	os.Truncate(seg, fi.Size()-2)
	_ = torn

	s = openLogTest(t, LogOptions{Dir: dir})
	later := putBody(t, s, "later\r\n") // no Load first
	s.Close()
	checkBodies(t, openLogTest(t, LogOptions{Dir: dir}), map[hub.QueueID]string{kept.ID: "kept\r\n", later.ID: "later\r\n"})
	if q := dirNames(t, filepath.Join(dir, "quarantine")); len(q) != 0 {
		t.Fatalf("quarantine holds %v", q)
	}
}

// TestLogOpenDuringReclaim: bodies read while their segments are compacted
// and reclaimed under them read whole: Open never finds a segment gone,
// and an open reader keeps its unlinked file.
func TestLogOpenDuringReclaim(t *testing.T) {
	dir := t.TempDir()
	s := openLogTest(t, LogOptions{Dir: dir, SegmentSize: 4096})
	mustLoad(t, s)
	type kept struct {
		id   hub.QueueID
		body string
	}
	keep := make(chan kept, 1000)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		readers.Go(func() {
			var mine []kept
			for {
				select {
				case k := <-keep:
					mine = append(mine, k)
				case <-stop:
					return
				default:
				}
				for _, k := range mine {
					rc, err := s.Open(k.id)
					if err != nil {
						errs <- err
						return
					}
					b, err := io.ReadAll(rc)
					rc.Close()
					if err != nil || string(b) != k.body {
						errs <- fmt.Errorf("%s: %q, %v", k.id, b, err)
						return
					}
				}
			}
		})
	}
	for i := range 400 {
		body := strings.Repeat(fmt.Sprintf("%d,", i), 40)
		m := putBody(t, s, body)
		if i%10 == 0 {
			keep <- kept{m.ID, body}
			continue
		}
		if err := s.Remove(m.ID); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// About 60 segments were written; the 40 kept messages, a quarter of
	// a segment or more each way they are packed, fit in 30 or so.
	if n := len(segFiles(t, dir)); n > 30 {
		t.Fatalf("%d segments left: reclaiming and compaction did not keep up", n)
	}
}

// writeSegment writes segment seq of the spool at dir by hand: each
// record a MSG (body given) or a SETTLE (body "settle").
func writeSegment(t *testing.T, dir string, seq uint64, recs ...[2]string) {
	t.Helper()
	var data []byte
	for _, r := range recs {
		id, body := hub.QueueID(r[0]), r[1]
		if body == "settle" {
			rec, _ := encodeRecord(recSettle, id, nil)
			data = append(data, rec...)
			continue
		}
		js, _ := json.Marshal(logMsg{Envelope: newMessage("a@example.com").Envelope, Size: int64(len(body)),
			BodyCRC: crc32.Checksum([]byte(body), castagnoli), State: newMessage("a@example.com").State})
		data = append(data, encodeHead(recMsg, id, js, []byte(body))...)
		data = append(data, body...)
	}
	os.MkdirAll(filepath.Join(dir, "log"), 0o700)
	if err := os.WriteFile(filepath.Join(dir, "log", fmt.Sprintf("%016d.seg", seq)), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestLogSettleOutlivesShadowCopy: compaction copied message A forward
// (segment 3) and a crash came before it unlinked the old segment 2,
// which still has to stay (a SETTLE and a live message are in it). Once A is removed, its
// SETTLE must be kept as long as segment 2 (with A's old MSG record)
// exists, or a later crash would bring A back.
func TestLogSettleOutlivesShadowCopy(t *testing.T) {
	dir := t.TempDir()
	w, b, a, c := hub.NewQueueID(time.Now()), hub.NewQueueID(time.Now()), hub.NewQueueID(time.Now()), hub.NewQueueID(time.Now())
	big := strings.Repeat("c", 2000) // keeps segment 2 from being compacted
	writeSegment(t, dir, 1, [2]string{string(w), "w"}, [2]string{string(b), "b"})
	writeSegment(t, dir, 2, [2]string{string(b), "settle"}, [2]string{string(a), "a"}, [2]string{string(c), big})
	writeSegment(t, dir, 3, [2]string{string(a), "a"}, [2]string{string(b), "settle"})
	opts := LogOptions{Dir: dir, SegmentSize: 512}
	s := openLogTest(t, opts)
	checkBodies(t, s, map[hub.QueueID]string{w: "w", a: "a", c: big})
	if err := s.Remove(a); err != nil {
		t.Fatal(err)
	}
	for range 20 { // seal the segment of A's SETTLE and let reclaiming run
		m := putBody(t, s, strings.Repeat("x", 200))
		s.Remove(m.ID)
	}
	s.Close()
	checkBodies(t, openLogTest(t, opts), map[hub.QueueID]string{w: "w", c: big})
}
