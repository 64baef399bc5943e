package clusterops

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"hubd/hub/ops"
)

// cluster is three hubs, a, b and c, each with a fakeQueue of its own and
// a clusterops.Queue serving it, on one in-process NATS server (no
// JetStream: the requests between hubs are plain NATS).
type cluster struct {
	ns    *server.Server
	fakes map[string]*fakeQueue
	qs    map[string]*Queue

	mu   sync.Mutex
	live []string
}

func (c *cluster) Live(context.Context) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.live), nil
}

func (c *cluster) setLive(nodes ...string) {
	c.mu.Lock()
	c.live = nodes
	c.mu.Unlock()
}

// startCluster starts the server and the hubs; o's Timeout, ActionTimeout
// and ChunkSize apply to every hub.
func startCluster(t *testing.T, o Options) *cluster {
	t.Helper()
	ns, err := server.NewServer(&server.Options{DontListen: true, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(ns.Shutdown)
	c := &cluster{ns: ns, fakes: map[string]*fakeQueue{}, qs: map[string]*Queue{}, live: []string{"a", "b", "c"}}
	for _, n := range c.live {
		c.fakes[n] = newFake()
		c.qs[n] = c.start(t, n, o)
	}
	return c
}

// start connects hub n and serves its fake.
func (c *cluster) start(t *testing.T, n string, o Options) *Queue {
	t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(c.ns), nats.Name(n))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	o.Local, o.Conn, o.Node, o.Live = c.fakes[n], nc, n, c.Live
	q := New(o)
	if err := q.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := q.Close(); err != nil {
			t.Errorf("close %s: %v", n, err)
		}
	})
	return q
}

var t0 = time.Date(2026, 12, 4, 21, 0, 0, 0, time.UTC)

// at is t0 plus s seconds (and a few nanoseconds, which positions keep).
func at(s int) time.Time { return t0.Add(time.Duration(s)*time.Second + 123) }

// TestMessagesPagesAcrossHubs: a listing from any hub merges every hub's
// messages in arrival order (then id, for messages that arrived at the same
// time on different hubs), each naming its hub; paging with limit 2 lists
// every message that stays exactly once, even as messages leave and arrive
// between pages; a bare id as after works for a message of another hub.
func TestMessagesPagesAcrossHubs(t *testing.T) {
	c := startCluster(t, Options{})
	fa, fb, fc := c.fakes["a"], c.fakes["b"], c.fakes["c"]
	fa.add("a1", at(1), "x")
	fb.add("b2", at(2), "x")
	fc.add("c2", at(2), "x") // the same arrival as b2: b2 first, by id
	fa.add("a3", at(3), "x")
	fc.add("c4", at(4), "x")
	fc.add("c5", at(5), "x")
	fb.add("b6", at(6), "x")
	fa.add("a7", at(7), "x")
	ctx := context.Background()

	all, err := c.qs["b"].Messages(ctx, ops.MessageFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(all); got != "a1,b2,c2,a3,c4,c5,b6,a7" || all.Truncated || all.Next != "" || all.Unanswered != nil {
		t.Fatalf("whole listing: %s truncated %v next %q unanswered %v", got, all.Truncated, all.Next, all.Unanswered)
	}
	for _, m := range all.Messages {
		if m.Node != m.ID[:1] {
			t.Errorf("%s listed with node %q", m.ID, m.Node)
		}
	}

	// Page by 2 from a, changing the queue between pages.
	var listed []string
	f := ops.MessageFilter{Limit: 2}
	for page := 0; ; page++ {
		l, err := c.qs["a"].Messages(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Messages) > 2 {
			t.Fatalf("page %d: %d messages over the limit", page, len(l.Messages))
		}
		for _, m := range l.Messages {
			listed = append(listed, m.ID)
		}
		switch page {
		case 0:
			if ids(l) != "a1,b2" || !l.Truncated || l.Next != ops.PositionOf(l.Messages[1]).String() {
				t.Fatalf("page 0: %s truncated %v next %q", ids(l), l.Truncated, l.Next)
			}
			fb.remove("b2")          // already listed: leaves
			fc.remove("c5")          // not listed yet: leaves
			fa.add("a0", at(0), "x") // arrives before the page boundary: never listed
			fb.add("b9", at(9), "x") // arrives after: listed at the end
		}
		if !l.Truncated {
			break
		}
		f.After = l.Next
	}
	if got := strings.Join(listed, ","); got != "a1,b2,c2,a3,c4,b6,a7,b9" {
		t.Errorf("paged: %s, want a1,b2,c2,a3,c4,b6,a7,b9", got)
	}

	// A bare id of another hub's message as after.
	l, err := c.qs["a"].Messages(ctx, ops.MessageFilter{After: "c4", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if ids(l) != "b6,a7" || !l.Truncated || l.Next != "a7@"+at(7).Format(time.RFC3339Nano) {
		t.Errorf("after c4: %s truncated %v next %q", ids(l), l.Truncated, l.Next)
	}
	if _, err := c.qs["a"].Messages(ctx, ops.MessageFilter{After: "gone"}); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("after an unknown bare id: %v, want not found", err)
	}
	// Each listing asked each hub once, for a page (a bare id is found
	// through Message).
	if n := fc.called("messages"); n != 6 {
		t.Errorf("c asked %d times for a page, want 6 (the whole listing, 4 pages, after c4)", n)
	}
}

// TestActionsReachTheOwner: Message, OpenMessage, Hold, Release, Retry and
// Delete of a message another hub owns reach that hub (and no other acts);
// an id nobody has is not found; errors keep their kind across the hop.
func TestActionsReachTheOwner(t *testing.T) {
	c := startCluster(t, Options{})
	c.fakes["c"].add("c1", at(1), "Subject: hello\r\n\r\nbody\r\n")
	a := c.qs["a"]
	ctx := context.Background()

	d, err := a.Message(ctx, "c1")
	if err != nil || d.ID != "c1" || d.Node != "c" || len(d.Headers) != 1 || d.Headers[0].Value != "c1" {
		t.Fatalf("message c1 from a: %+v, %v", d, err)
	}
	rc, err := a.OpenMessage(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(body) != "Subject: hello\r\n\r\nbody\r\n" {
		t.Fatalf("open c1 from a: %q, %v", body, err)
	}

	if err := a.Hold(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if s := c.fakes["c"].state("c1"); s != ops.StateHeld {
		t.Fatalf("after hold from a, c1 is %q on c", s)
	}
	err = c.qs["b"].Hold(ctx, "c1")
	if !errors.Is(err, ops.ErrConflict) || errors.Is(err, ops.ErrNotFound) ||
		err.Error() != `not possible now: message "c1" is held already (hub c)` {
		t.Errorf("hold of a held message from b: %v, want c's conflict", err)
	}
	if err := a.Retry(ctx, "c1"); !errors.Is(err, ops.ErrConflict) {
		t.Errorf("retry of a held message: %v, want conflict", err)
	}
	if err := a.Release(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Retry(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(ctx, "c1", true); err != nil {
		t.Fatal(err)
	}
	if s := c.fakes["c"].state("c1"); s != "" {
		t.Fatalf("after delete from a, c1 is still %q on c", s)
	}
	if n := c.fakes["c"].called("hold"); n != 2 {
		t.Errorf("c asked to hold %d times, want 2 (from a, then from b)", n)
	}

	// Nobody has it: not found, with the local hub's text.
	for name, err := range map[string]error{
		"hold":    a.Hold(ctx, "c1"),
		"release": a.Release(ctx, "c1"),
		"retry":   a.Retry(ctx, "c1"),
		"delete":  a.Delete(ctx, "c1", false),
	} {
		if !errors.Is(err, ops.ErrNotFound) || err.Error() != `not found: no message "c1" in the queue` {
			t.Errorf("%s of a deleted message: %v, want not found", name, err)
		}
	}
	if _, err := a.Message(ctx, "c1"); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("message of a deleted message: %v", err)
	}
	if _, err := a.OpenMessage(ctx, "c1"); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("open of a deleted message: %v", err)
	}
}

// TestQueueActionsOnEveryHub: retry, suspend and resume of a queue go to
// every hub; the counts add up; not found only when no hub knows the
// queue; the poison queue's conflict keeps its kind.
func TestQueueActionsOnEveryHub(t *testing.T) {
	c := startCluster(t, Options{})
	hop := ops.QueueInfo{Name: "smtp:out[mx:example.net]", Kind: "smtp", State: "Ready"}
	for _, n := range []string{"a", "c"} {
		c.fakes[n].queues = append([]ops.QueueInfo{hop}, c.fakes[n].queues...)
	}
	c.fakes["a"].add("a1", at(1), "x")
	c.fakes["c"].add("c1", at(1), "x")
	c.fakes["c"].add("c2", at(2), "x")
	b := c.qs["b"] // b does not know the queue
	ctx := context.Background()

	n, err := b.RetryQueue(ctx, hop.Name, false)
	if err != nil || n != 3 {
		t.Errorf("retry queue: %d, %v; want 3", n, err)
	}
	if err := b.SuspendQueue(ctx, hop.Name); err != nil {
		t.Fatal(err)
	}
	qs, err := b.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if qs[0].Name != hop.Name || qs[0].State != "Suspended" {
		t.Errorf("after suspend: %+v", qs[0])
	}
	if err := b.ResumeQueue(ctx, hop.Name); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "c"} {
		if got := c.fakes[n].queues[0].State; got != "Ready" {
			t.Errorf("hub %s: %s is %s after resume", n, hop.Name, got)
		}
	}
	if _, err := b.RetryQueue(ctx, "nosuch", false); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("retry of an unknown queue: %v, want not found", err)
	}
	if err := b.SuspendQueue(ctx, "nosuch"); !errors.Is(err, ops.ErrNotFound) {
		t.Errorf("suspend of an unknown queue: %v, want not found", err)
	}
	_, err = b.RetryQueue(ctx, "poison", false)
	if !errors.Is(err, ops.ErrConflict) || !strings.Contains(err.Error(), "the poison queue is never retried") ||
		!strings.Contains(err.Error(), "failed on hubs a, b, c") {
		t.Errorf("retry of poison: %v, want a conflict on every hub", err)
	}
}

// TestQueuesMerged: the queue list of the cluster sums the counts and
// merges the states (Retry on any hub, the earliest times).
func TestQueuesMerged(t *testing.T) {
	c := startCluster(t, Options{})
	c.fakes["a"].queues = append([]ops.QueueInfo{{Name: "smtp:x", Kind: "smtp", State: "Active", Messages: 2,
		Recipients: 3, Active: 1, Oldest: at(5)}}, c.fakes["a"].queues...)
	c.fakes["b"].queues = append([]ops.QueueInfo{{Name: "smtp:x", Kind: "smtp", State: "Retry", Messages: 1,
		Recipients: 1, Oldest: at(2), NextRetry: at(60), LastError: "451 4.4.1 refused"}}, c.fakes["b"].queues...)
	c.fakes["c"].queues = append([]ops.QueueInfo{{Name: "lmtp:[127.0.0.1]:24", Kind: "lmtp", State: "Ready",
		Messages: 4, Recipients: 4}}, c.fakes["c"].queues...)
	c.fakes["c"].queues[3].Messages = 7 // poison
	qs, err := c.qs["a"].Queues(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, q := range qs {
		names = append(names, q.Name)
	}
	if strings.Join(names, ",") != "lmtp:[127.0.0.1]:24,smtp:x,submission,unreachable,poison" {
		t.Fatalf("queues: %v", names)
	}
	x := qs[1]
	if x.State != "Retry" || x.Messages != 3 || x.Recipients != 4 || x.Active != 1 || !x.Oldest.Equal(at(2)) ||
		!x.NextRetry.Equal(at(60)) || x.LastError != "451 4.4.1 refused" {
		t.Errorf("smtp:x merged: %+v", x)
	}
	if qs[0].Messages != 4 || qs[4].Messages != 7 || qs[4].State != "Suspended" {
		t.Errorf("lmtp %+v, poison %+v", qs[0], qs[4])
	}
}

// TestSilentHubLeftOut: a hub that does not answer (hanging, or gone
// without its heartbeat having expired yet) is left out of listings within
// the timeout and named; an action by id that nobody else has is not
// found, naming it; a queue action fails naming it.
func TestSilentHubLeftOut(t *testing.T) {
	c := startCluster(t, Options{Timeout: 300 * time.Millisecond, ActionTimeout: 500 * time.Millisecond})
	c.fakes["a"].add("a1", at(1), "x")
	c.fakes["b"].add("b1", at(2), "x")
	c.fakes["c"].add("c1", at(3), "x")
	c.fakes["c"].hang = true
	c.setLive("a", "b", "c", "d") // d: live by its heartbeat, but serves nothing
	a := c.qs["a"]
	ctx := context.Background()

	start := time.Now()
	l, err := a.Messages(ctx, ops.MessageFilter{})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("listing took %s with a silent hub (timeout 300ms)", took)
	}
	if err != nil || ids(l) != "a1,b1" || strings.Join(l.Unanswered, ",") != "c,d" {
		t.Errorf("listing without c and d: %s unanswered %v, %v", ids(l), l.Unanswered, err)
	}
	qs, err := a.Queues(ctx)
	if err != nil || len(qs) != 3 || strings.Join(qs[0].Unanswered, ",") != "c,d" {
		t.Errorf("queues without c and d: %+v, %v", qs, err)
	}

	start = time.Now()
	err = a.Hold(ctx, "c1")
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("hold took %s with a silent hub (action timeout 500ms)", took)
	}
	if !errors.Is(err, ops.ErrNotFound) || !strings.Contains(err.Error(), "hubs c, d did not answer") {
		t.Errorf("hold of a message on a silent hub: %v", err)
	}
	if err := a.Hold(ctx, "b1"); err != nil {
		t.Errorf("hold of b's message with c silent: %v", err)
	}
	err = a.SuspendQueue(ctx, "submission")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "(hub c) (failed on hubs c, d; done on hubs a, b)") {
		t.Errorf("suspend with silent hubs: %v", err)
	}

	// Every hub silent but this one, which fails: the listing fails.
	c.fakes["a"].hang = true
	ctx2, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	c.setLive("a", "c")
	if _, err := a.Messages(ctx2, ops.MessageFilter{}); err == nil {
		t.Error("a listing that no hub answered did not fail")
	}
}

// TestChunkedReplies: replies larger than a chunk (a page, a message
// body) come whole in chunks; a reader closed early ends its session on
// the serving hub.
func TestChunkedReplies(t *testing.T) {
	c := startCluster(t, Options{ChunkSize: 100})
	body := strings.Repeat("0123456789abcdef\r\n", 1000)
	c.fakes["b"].add("b1", at(1), body)
	for i := range 20 {
		c.fakes["c"].add("c"+string(rune('a'+i)), at(10+i), "x")
	}
	a := c.qs["a"]
	ctx := context.Background()

	l, err := a.Messages(ctx, ops.MessageFilter{})
	if err != nil || len(l.Messages) != 21 {
		t.Fatalf("chunked listing: %d messages, %v", len(l.Messages), err)
	}
	rc, err := a.OpenMessage(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(got) != body {
		t.Fatalf("chunked body: %d bytes (want %d), %v", len(got), len(body), err)
	}
	if n := sessions(c.qs["b"]); n != 0 {
		t.Errorf("%d sessions left on b after a whole read", n)
	}
	rc, err = a.OpenMessage(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, make([]byte, 250)); err != nil {
		t.Fatal(err)
	}
	if n := sessions(c.qs["b"]); n != 1 {
		t.Errorf("%d sessions on b while reading, want 1", n)
	}
	rc.Close()
	if n := sessions(c.qs["b"]); n != 0 {
		t.Errorf("%d sessions left on b after an early close", n)
	}
}

func sessions(q *Queue) int {
	q.srv.mu.Lock()
	defer q.srv.mu.Unlock()
	return len(q.srv.sessions)
}

// TestErrorKindsRoundTrip: each kind comes back as its sentinel, and an
// error of no kind as none of them.
func TestErrorKindsRoundTrip(t *testing.T) {
	for _, k := range kinds {
		e := &RemoteError{Node: "b", Msg: "x", Kind: kindOf(k.err)}
		if !errors.Is(e, k.err) || e.Kind != k.name {
			t.Errorf("%s: %v (kind %q)", k.name, e, e.Kind)
		}
	}
	e := &RemoteError{Node: "b", Msg: "disk full", Kind: kindOf(errors.New("disk full"))}
	for _, k := range kinds {
		if errors.Is(e, k.err) {
			t.Errorf("an error of no kind is %v", k.err)
		}
	}
	// Over the wire: a timeout on the serving hub.
	c := startCluster(t, Options{Timeout: 200 * time.Millisecond})
	c.fakes["b"].hang = true
	_, err := remoteJSON[ops.MessageList](context.Background(), c.qs["a"], "b", mMessages, request{}, time.Second)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a request the serving hub timed out: %v, want deadline exceeded", err)
	}
	var re *RemoteError
	if !errors.As(err, &re) || re.Node != "b" {
		t.Errorf("not b's error: %#v", err)
	}
}
