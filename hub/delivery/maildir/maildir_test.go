package maildir

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"hubd/hub"
	"hubd/hub/delivery"
)

var arrival = time.Unix(1700000000, 0)

func testMessage(body string) delivery.Message {
	return delivery.Message{
		ID:       "Q1",
		Envelope: &hub.Envelope{From: "sender@remote.test", ReceivedAt: arrival},
		Size:     int64(len(body)),
		Open:     func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil },
	}
}

func newTest() delivery.Deliverer { return New(Options{Hostname: "mx.example.com"}) }

func wantStatus(t *testing.T, res []delivery.Result, want delivery.Status) {
	t.Helper()
	for i, r := range res {
		if r.Status != want {
			t.Errorf("result %d = %v %d %s %q, want %v", i, r.Status, r.Code, r.Enhanced, r.Text, want)
		}
	}
}

func listNew(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestDeliverTwoRecipients(t *testing.T) {
	root := t.TempDir()
	alice, bob := filepath.Join(root, "alice"), filepath.Join(root, "deep", "bob")
	body := "Subject: hi\r\nFrom: sender@remote.test\r\n\r\nline one\r\n.dot\r\nbare\rcr\r\n"
	res := newTest().Deliver(context.Background(), delivery.NextHop{Kind: delivery.KindMaildir}, testMessage(body),
		[]delivery.Recipient{
			{Address: "alice@example.com", Key: "Q1.0", Maildir: alice},
			{Address: "bob@example.com", Key: "Q1.1", Maildir: bob},
		})
	wantStatus(t, res, delivery.Delivered)
	for i, c := range []struct{ dir, addr, key string }{{alice, "alice@example.com", "Q1.0"}, {bob, "bob@example.com", "Q1.1"}} {
		for _, sub := range []string{"tmp", "new", "cur"} {
			fi, err := os.Stat(filepath.Join(c.dir, sub))
			if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
				t.Fatalf("%s/%s: %v %v", c.dir, sub, fi, err)
			}
		}
		name := "1700000000." + c.key + ".mx.example.com"
		if got := listNew(t, c.dir); len(got) != 1 || got[0] != name {
			t.Fatalf("new/ = %v, want [%s]", got, name)
		}
		if !strings.Contains(res[i].Text, name) || res[i].Code != 250 {
			t.Errorf("result text %q", res[i].Text)
		}
		got, err := os.ReadFile(filepath.Join(c.dir, "new", name))
		if err != nil {
			t.Fatal(err)
		}
		want := "Return-Path: <sender@remote.test>\nDelivered-To: " + c.addr + "\n" +
			"Subject: hi\nFrom: sender@remote.test\n\nline one\n.dot\nbare\rcr\n"
		if string(got) != want {
			t.Errorf("file =\n%q\nwant\n%q", got, want)
		}
		if tmp, _ := os.ReadDir(filepath.Join(c.dir, "tmp")); len(tmp) != 0 {
			t.Errorf("tmp/ not empty: %v", tmp)
		}
	}
}

func TestNullSenderAndHostnameSanitised(t *testing.T) {
	dir := t.TempDir()
	msg := testMessage("x\r\n")
	msg.Envelope.From = ""
	d := New(Options{Hostname: "a/b:c"})
	wantStatus(t, d.Deliver(context.Background(), delivery.NextHop{}, msg,
		[]delivery.Recipient{{Address: "a@example.com", Key: "Q1.0", Maildir: dir}}), delivery.Delivered)
	name := `1700000000.Q1.0.a\057b\072c`
	got, err := os.ReadFile(filepath.Join(dir, "new", name))
	if err != nil {
		t.Fatalf("%v (new/ = %v)", err, listNew(t, dir))
	}
	if !strings.HasPrefix(string(got), "Return-Path: <>\n") {
		t.Errorf("file = %q", got)
	}
}

func TestIdempotentPerKey(t *testing.T) {
	dir := t.TempDir()
	d := newTest()
	opens := 0
	msg := testMessage("body\r\n")
	open := msg.Open
	msg.Open = func() (io.ReadCloser, error) { opens++; return open() }
	rc := []delivery.Recipient{{Address: "a@example.com", Key: "Q1.0", Maildir: dir}}
	wantStatus(t, d.Deliver(context.Background(), delivery.NextHop{}, msg, rc), delivery.Delivered)
	wantStatus(t, d.Deliver(context.Background(), delivery.NextHop{}, msg, rc), delivery.Delivered)
	if got := listNew(t, dir); len(got) != 1 {
		t.Fatalf("new/ = %v, want one file", got)
	}
	if opens != 1 {
		t.Errorf("body opened %d times, want 1 (second attempt must not rewrite)", opens)
	}
	// A MUA moves the file to cur/ with flags; a retry must still see it.
	name := listNew(t, dir)[0]
	if err := os.Rename(filepath.Join(dir, "new", name), filepath.Join(dir, "cur", name+":2,S")); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, d.Deliver(context.Background(), delivery.NextHop{}, msg, rc), delivery.Delivered)
	if got := listNew(t, dir); len(got) != 0 || opens != 1 {
		t.Errorf("after move to cur/: new/ = %v, opens = %d", got, opens)
	}
}

// hub.hostname changes between a crash and the retry (a restart with a new
// configuration): the copy written under the old hostname is found, in new/
// or moved to cur/ by a mail reader, and no second copy is written. A copy
// for another key in the same second is not mistaken for it.
func TestHostnameChangeKeepsIdempotence(t *testing.T) {
	for _, moved := range []bool{false, true} {
		t.Run(fmt.Sprintf("moved=%v", moved), func(t *testing.T) {
			dir := t.TempDir()
			msg := testMessage("body\r\n")
			msg.Envelope.ReceivedAt = time.Now().Add(-time.Second) // before either process started
			rc := []delivery.Recipient{{Address: "a@example.com", Key: "q1.00000000000000aa", Maildir: dir}}
			other := []delivery.Recipient{{Address: "b@example.com", Key: "q1.00000000000000bb", Maildir: dir}}
			before := New(Options{Hostname: "old.example.com"})
			wantStatus(t, before.Deliver(context.Background(), delivery.NextHop{}, msg, rc), delivery.Delivered)
			wantStatus(t, before.Deliver(context.Background(), delivery.NextHop{}, msg, other), delivery.Delivered)
			if moved {
				for _, name := range listNew(t, dir) {
					if err := os.Rename(filepath.Join(dir, "new", name), filepath.Join(dir, "cur", name+":2,S")); err != nil {
						t.Fatal(err)
					}
				}
			}

			after := New(Options{Hostname: "new.example.com"})
			res := after.Deliver(context.Background(), delivery.NextHop{}, msg, rc)
			wantStatus(t, res, delivery.Delivered)
			if !strings.HasPrefix(res[0].Text, "already delivered") {
				t.Errorf("retry under a new hostname: %q", res[0].Text)
			}
			var all []string
			for _, sub := range []string{"new", "cur"} {
				ents, _ := os.ReadDir(filepath.Join(dir, sub))
				for _, e := range ents {
					all = append(all, sub+"/"+e.Name())
				}
			}
			if len(all) != 2 {
				t.Fatalf("Maildir holds %v, want one file per key", all)
			}
			for _, f := range all {
				if strings.Contains(f, "new.example.com") {
					t.Errorf("a second copy was written: %v", all)
				}
			}
			// A key never delivered is still delivered under the new name.
			third := []delivery.Recipient{{Address: "c@example.com", Key: "q1.00000000000000cc", Maildir: dir}}
			res = after.Deliver(context.Background(), delivery.NextHop{}, msg, third)
			if wantStatus(t, res, delivery.Delivered); !strings.HasPrefix(res[0].Text, "delivered as ") ||
				!strings.HasSuffix(res[0].Text, ".q1.00000000000000cc.new.example.com") {
				t.Errorf("new key: %q", res[0].Text)
			}
		})
	}
}

// A crashed attempt's leftover in tmp/ does not block the retry.
func TestStaleTmpIgnored(t *testing.T) {
	dir := t.TempDir()
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	name := "1700000000.Q1.0.mx.example.com"
	if err := os.WriteFile(filepath.Join(dir, "tmp", name), []byte("half a mess"), 0o600); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, newTest().Deliver(context.Background(), delivery.NextHop{}, testMessage("ok\r\n"),
		[]delivery.Recipient{{Address: "a@example.com", Key: "Q1.0", Maildir: dir}}), delivery.Delivered)
	got, _ := os.ReadFile(filepath.Join(dir, "new", name))
	if !strings.HasSuffix(string(got), "\nok\n") {
		t.Errorf("file = %q", got)
	}
}

func TestNoMaildirFails(t *testing.T) {
	res := newTest().Deliver(context.Background(), delivery.NextHop{}, testMessage("x\r\n"),
		[]delivery.Recipient{{Address: "nobody@example.com", Key: "Q1.0"}})
	if r := res[0]; r.Status != delivery.Failed || r.Code != 550 || r.Enhanced != "5.1.1" {
		t.Errorf("result = %+v", r)
	}
}

func TestUnwritableDeferred(t *testing.T) {
	root := t.TempDir()
	// tmp is a regular file: creating tmp/<name> fails with ENOTDIR.
	dir := filepath.Join(root, "broken")
	for _, sub := range []string{"new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "tmp"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	res := newTest().Deliver(context.Background(), delivery.NextHop{}, testMessage("x\r\n"),
		[]delivery.Recipient{{Address: "a@example.com", Key: "Q1.0", Maildir: dir}})
	if r := res[0]; r.Status != delivery.Deferred || r.Code != 451 || r.Enhanced != "4.3.0" || !strings.Contains(r.Text, "not a directory") {
		t.Errorf("result = %+v", r)
	}
}

// TestReadOnlyDirectoryDeferred makes new/ unwritable: mode 0500 for an
// ordinary user; for root (who ignores modes) the immutable attribute.
func TestReadOnlyDirectoryDeferred(t *testing.T) {
	dir := t.TempDir()
	d := newTest()
	rc := []delivery.Recipient{{Address: "a@example.com", Key: "Q1.0", Maildir: dir}}
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	newDir := filepath.Join(dir, "new")
	if os.Geteuid() == 0 {
		chattr, err := exec.LookPath("chattr")
		if err != nil {
			t.Skip("running as root without chattr: cannot make a directory read-only")
		}
		if out, err := exec.Command(chattr, "+i", newDir).CombinedOutput(); err != nil {
			t.Skipf("chattr +i: %v %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command(chattr, "-i", newDir).Run() })
	} else {
		if err := os.Chmod(newDir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Chmod(newDir, 0o700) })
	}
	res := d.Deliver(context.Background(), delivery.NextHop{}, testMessage("x\r\n"), rc)
	if r := res[0]; r.Status != delivery.Deferred || r.Code != 451 || r.Enhanced != "4.3.0" {
		t.Errorf("result = %+v", r)
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp file left behind: %v", tmp)
	}
}

func TestBodyErrorDeferredAndCleaned(t *testing.T) {
	dir := t.TempDir()
	msg := testMessage("")
	msg.Open = func() (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(strings.NewReader("partial\r\n"), iotest.ErrReader(fmt.Errorf("EIO on spool")))), nil
	}
	res := newTest().Deliver(context.Background(), delivery.NextHop{}, msg,
		[]delivery.Recipient{{Address: "a@example.com", Key: "Q1.0", Maildir: dir}})
	if r := res[0]; r.Status != delivery.Deferred || !strings.Contains(r.Text, "EIO on spool") {
		t.Errorf("result = %+v", r)
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp file left behind: %v", tmp)
	}
	if got := listNew(t, dir); len(got) != 0 {
		t.Errorf("new/ = %v", got)
	}
}

func TestCancelledContextDeferred(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := newTest().Deliver(ctx, delivery.NextHop{}, testMessage("x\r\n"),
		[]delivery.Recipient{{Address: "a@example.com", Key: "Q1.0", Maildir: t.TempDir()}})
	if r := res[0]; r.Status != delivery.Deferred || r.Enhanced != "4.4.2" {
		t.Errorf("result = %+v", r)
	}
}

func TestConcurrentDeliveriesOneMaildir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shared") // created by the racing deliveries
	d := newTest()
	const n = 32
	var wg sync.WaitGroup
	results := make([]delivery.Result, 2*n)
	for i := 0; i < 2*n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Every key is delivered by two goroutines at once: one file each.
			key := fmt.Sprintf("Q%d.0", i%n)
			body := fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i%n)
			results[i] = d.Deliver(context.Background(), delivery.NextHop{}, testMessage(body),
				[]delivery.Recipient{{Address: "a@example.com", Key: key, Maildir: dir}})[0]
		}()
	}
	wg.Wait()
	wantStatus(t, results, delivery.Delivered)
	names := listNew(t, dir)
	if len(names) != n {
		t.Fatalf("new/ has %d files, want %d", len(names), n)
	}
	for _, name := range names {
		got, err := os.ReadFile(filepath.Join(dir, "new", name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(got, []byte("\n\nbody\n")) || !bytes.HasPrefix(got, []byte("Return-Path:")) {
			t.Errorf("%s = %q", name, got)
		}
	}
}

func TestCopyLF(t *testing.T) {
	cases := map[string]string{
		"":               "",
		"a\r\nb\r\n":     "a\nb\n",
		"a\rb":           "a\rb",
		"a\r":            "a\r",
		"\r\r\n\r":       "\r\n\r",
		"x\n\r\n\r\r\ny": "x\n\n\r\ny",
	}
	for in, want := range cases {
		// One byte at a time exercises a CR split from its LF across reads.
		for _, r := range []io.Reader{strings.NewReader(in), iotest.OneByteReader(strings.NewReader(in))} {
			var b bytes.Buffer
			if _, err := copyLF(&b, r); err != nil {
				t.Fatal(err)
			}
			if b.String() != want {
				t.Errorf("copyLF(%q) = %q, want %q", in, b.String(), want)
			}
		}
	}
}
