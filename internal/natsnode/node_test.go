package natsnode

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"hubd/policy"
)

// freePorts reserves n loopback ports: it holds n listeners at once (so the
// ports differ) and closes them. The cluster's routes must be known before
// its nodes start, so the servers cannot pick their own.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// testLog writes Warn and above to the test's output, with the node's name.
func testLog(t *testing.T, node string) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", node)
}

// startNode starts q and closes it when the test ends (Close is idempotent,
// so a test may close it earlier).
func startNode(t *testing.T, ctx context.Context, q policy.Queue) *Node {
	t.Helper()
	n, err := Start(ctx, q, testLog(t, q.Node))
	if err != nil {
		t.Fatalf("Start %s: %v", q.Node, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// waitUntil polls cond every 50 ms until it holds or d has passed.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s still not %s: %s", d, what, state)
		}
		<-tick.C
	}
}

// recordLog is a slog handler that keeps the records.
type recordLog struct {
	mu   sync.Mutex
	recs []slog.Record
	with []slog.Attr
}

func (h *recordLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordLog) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.with...)
	h.mu.Lock()
	h.recs = append(h.recs, r)
	h.mu.Unlock()
	return nil
}
func (h *recordLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &withAttrs{h, as}
}
func (h *recordLog) WithGroup(string) slog.Handler { return h }

type withAttrs struct {
	h  *recordLog
	as []slog.Attr
}

func (w *withAttrs) Enabled(context.Context, slog.Level) bool { return true }
func (w *withAttrs) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(w.as...)
	return w.h.Handle(ctx, r)
}
func (w *withAttrs) WithAttrs(as []slog.Attr) slog.Handler {
	return &withAttrs{w.h, append(append([]slog.Attr(nil), w.as...), as...)}
}
func (w *withAttrs) WithGroup(string) slog.Handler { return w }

// TestSingleNodeSyncAlways: an embedded node without a listener, sync
// always, keeps an acknowledged R1 message across a restart on its store.
func TestSingleNodeSyncAlways(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	q := policy.Queue{
		Engine: policy.QueueJetStream, Node: "solo", Replicas: 1, SyncAlways: true,
		StoreDir: t.TempDir(), ConnectTimeout: 10 * time.Second,
	}
	logs := &recordLog{}
	n, err := Start(ctx, q, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })

	if jsz, err := n.ns.Jsz(nil); err != nil || !jsz.Config.SyncAlways {
		t.Fatalf("JetStream config %+v, %v: want sync_always", jsz.Config, err)
	}
	if u := n.ClientURL(); u != "" {
		t.Errorf("ClientURL %q without a listener", u)
	}
	if !n.Healthy() {
		t.Error("not Healthy after Start")
	}

	cfg := jetstream.StreamConfig{Name: "Q", Subjects: []string{"q.>"}, Storage: jetstream.FileStorage, Replicas: 1}
	if _, err := n.EnsureStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	cfg.MaxMsgs = 1000 // Ensure again: an update
	if s, err := n.EnsureStream(ctx, cfg); err != nil || s.CachedInfo().Config.MaxMsgs != 1000 {
		t.Fatalf("EnsureStream update: %v", err)
	}
	ack, err := n.JetStream().Publish(ctx, "q.1", []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}

	kv, err := n.EnsureKV(ctx, jetstream.KeyValueConfig{Bucket: "owners", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "m1", []byte("solo")); err != nil {
		t.Fatal(err)
	}
	obj, err := n.EnsureObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "bodies", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obj.PutBytes(ctx, "m1", []byte("body")); err != nil {
		t.Fatal(err)
	}

	st, err := n.Status(ctx, "Q")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Quorum || st.MetaLeader != "solo" || st.Mode != "embedded" || len(st.Streams) != 1 ||
		st.Streams[0].Leader != "solo" || !st.Streams[0].Quorum || st.Streams[0].Replicas != 1 || st.Streams[0].Messages != 1 {
		t.Errorf("Status %+v", st)
	}

	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n.Healthy() {
		t.Error("Healthy after Close")
	}
	if _, err := n.Status(ctx); err == nil {
		t.Error("Status after Close: no error")
	}

	var natsInfo bool
	logs.mu.Lock()
	for _, r := range logs.recs {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "component" && a.Value.String() == "nats" && r.Level == slog.LevelInfo {
				natsInfo = true
			}
			return true
		})
	}
	logs.mu.Unlock()
	if !natsInfo {
		t.Error("no Info record with component=nats from the server")
	}

	n2 := startNode(t, ctx, q)
	s, err := n2.JetStream().Stream(ctx, "Q")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, ack.Sequence)
	if err != nil || string(m.Data) != "hello" {
		t.Fatalf("after restart: message %d: %v %v", ack.Sequence, m, err)
	}
	kv, err = n2.EnsureKV(ctx, jetstream.KeyValueConfig{Bucket: "owners", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "m1"); err != nil || string(e.Value()) != "solo" {
		t.Fatalf("after restart: key m1: %v", err)
	}
	obj, err = n2.EnsureObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "bodies", Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := obj.GetBytes(ctx, "m1"); err != nil || string(b) != "body" {
		t.Fatalf("after restart: object m1: %q %v", b, err)
	}
}

// TestExternal: a node in external mode uses an embedded node's client
// listener.
func TestExternal(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	port := freePorts(t, 1)[0]
	hub := startNode(t, ctx, policy.Queue{
		Engine: policy.QueueJetStream, Node: "hub", Replicas: 1, SyncAlways: true,
		StoreDir: t.TempDir(), Listen: addr(port), ConnectTimeout: 10 * time.Second,
	})
	if u := hub.ClientURL(); u != "nats://"+addr(port) {
		t.Fatalf("ClientURL %q, want nats://%s", u, addr(port))
	}
	ext := startNode(t, ctx, policy.Queue{
		Engine: policy.QueueJetStream, Node: "ext", Replicas: 1,
		URLs: []string{hub.ClientURL()}, ConnectTimeout: 10 * time.Second,
	})
	if ext.Embedded() || !hub.Embedded() {
		t.Fatal("Embedded wrong")
	}
	if _, err := ext.EnsureStream(ctx, jetstream.StreamConfig{Name: "X", Subjects: []string{"x.>"}, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	ack, err := ext.JetStream().Publish(ctx, "x.1", []byte("via the listener"))
	if err != nil {
		t.Fatal(err)
	}
	hs, err := hub.JetStream().Stream(ctx, "X")
	if err != nil {
		t.Fatal(err)
	}
	if m, err := hs.GetMsg(ctx, ack.Sequence); err != nil || string(m.Data) != "via the listener" {
		t.Fatalf("embedded side: %v %v", m, err)
	}

	st, err := ext.Status(ctx, "X")
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode != "external" || !st.Quorum || st.Server != "hub" || len(st.Streams) != 1 ||
		st.Streams[0].Leader != "hub" || !st.Streams[0].Quorum || st.Streams[0].Messages != 1 {
		t.Errorf("external Status %+v", st)
	}

	// The hub goes away: the external node is no longer Healthy.
	hub.Close()
	waitUntil(t, 5*time.Second, "unhealthy", func() (bool, string) { return !ext.Healthy(), ext.Conn().Status().String() })
}

// TestStartErrors: Start says what is missing when it gives up.
func TestStartErrors(t *testing.T) {
	ctx := t.Context()
	ports := freePorts(t, 3)
	alone := policy.Queue{
		Engine: policy.QueueJetStream, Node: "alone", StoreDir: t.TempDir(), ConnectTimeout: 1500 * time.Millisecond,
		Cluster: &policy.QueueCluster{Name: "hubs", Listen: addr(ports[0]),
			Routes: []string{"nats://" + addr(ports[1]), "nats://" + addr(ports[2])}},
	}
	_, err := Start(ctx, alone, testLog(t, "alone"))
	if err == nil || !strings.Contains(err.Error(), "no JetStream meta leader after") ||
		!strings.Contains(err.Error(), "1 of 3 cluster peers reachable") {
		t.Errorf("alone: %v", err)
	}
	t.Logf("alone: %v", err)

	nobody := policy.Queue{
		Engine: policy.QueueJetStream, Node: "nobody", URLs: []string{"nats://" + addr(ports[1])},
		ConnectTimeout: 500 * time.Millisecond,
	}
	_, err = Start(ctx, nobody, testLog(t, "nobody"))
	if err == nil || !strings.Contains(err.Error(), "not connected to nats://"+addr(ports[1])) {
		t.Errorf("nobody: %v", err)
	}
	t.Logf("nobody: %v", err)
}

func TestTransient(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{Code: 500, ErrorCode: 10005, Description: "no suitable peers for placement"}, true},
		{fmt.Errorf("create: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008}), true},
		{&jetstream.APIError{Code: 500, ErrorCode: 10023, Description: "insufficient resources"}, true},
		{context.DeadlineExceeded, true},
		{jetstream.ErrStreamNameAlreadyInUse, false},
		{&jetstream.APIError{Code: 400, ErrorCode: 10058}, false},
		{jetstream.ErrJetStreamNotEnabled, false},
	} {
		if got := Transient(c.err); got != c.want {
			t.Errorf("Transient(%v) = %v, want %v", c.err, got, c.want)
		}
	}
	if _, err := Start(t.Context(), policy.Queue{Engine: policy.QueueLocal, Node: "x"}, nil); err == nil {
		t.Error("Start of a local queue: no error")
	}
}
