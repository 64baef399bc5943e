package natsnode

import (
	"context"
	"encoding/json"
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

// cluster is three embedded nodes clustered on loopback, without client
// listeners.
type cluster struct {
	t     *testing.T
	names []string
	qs    map[string]policy.Queue
	nodes map[string]*Node
}

func newCluster(t *testing.T, names ...string) *cluster {
	ports := freePorts(t, len(names))
	c := &cluster{t: t, names: names, qs: map[string]policy.Queue{}, nodes: map[string]*Node{}}
	for i, name := range names {
		var routes []string
		for j := range names {
			if j != i {
				routes = append(routes, "nats://"+addr(ports[j]))
			}
		}
		c.qs[name] = policy.Queue{
			Engine: policy.QueueJetStream, Node: name, Replicas: len(names), SyncAlways: true,
			StoreDir: t.TempDir(), ConnectTimeout: 20 * time.Second,
			Cluster: &policy.QueueCluster{Name: "hubs", Listen: addr(ports[i]), Routes: routes},
		}
	}
	return c
}

// start starts the named nodes concurrently: each Start waits for quorum,
// which a node alone cannot have.
func (c *cluster) start(ctx context.Context, names ...string) {
	c.t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(names))
	nodes := make([]*Node, len(names))
	for i, name := range names {
		wg.Go(func() { nodes[i], errs[i] = Start(ctx, c.qs[name], testLog(c.t, name)) })
	}
	wg.Wait()
	for i, name := range names {
		if errs[i] != nil {
			c.t.Fatalf("Start %s: %v", name, errs[i])
		}
		c.nodes[name] = nodes[i]
		c.t.Cleanup(func() { nodes[i].Close() })
	}
}

func (c *cluster) stop(name string) {
	c.t.Helper()
	if err := c.nodes[name].Close(); err != nil {
		c.t.Errorf("Close %s: %v", name, err)
	}
	delete(c.nodes, name)
}

// publish publishes until acknowledged (a leader may be changing), with a
// message ID so that a retry of an acknowledged-but-unseen publish is not a
// second message.
func publish(t *testing.T, ctx context.Context, n *Node, id string) *jetstream.PubAck {
	t.Helper()
	var ack *jetstream.PubAck
	waitUntil(t, 15*time.Second, "published "+id, func() (bool, string) {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		var err error
		ack, err = n.JetStream().Publish(pctx, "mail."+id, []byte("body of "+id), jetstream.WithMsgID(id))
		return err == nil, fmt.Sprint(err)
	})
	return ack
}

func peerNames(ps []Peer) string {
	var s []string
	for _, p := range ps {
		f := p.Name
		if p.Leader {
			f += "*"
		}
		if !p.Current {
			f += "(behind)"
		}
		if p.Offline {
			f += "(offline)"
		}
		s = append(s, f)
	}
	return strings.Join(s, " ")
}

// TestCluster: three nodes form a cluster, keep an R3 stream writable with
// one down, refuse writes with two down, and have every acknowledged
// message once one returns.
func TestCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	c := newCluster(t, "a", "b", "c")
	t0 := time.Now()
	c.start(ctx, "a", "b", "c")
	t.Logf("cluster formed in %s", time.Since(t0).Round(time.Millisecond))

	_, err := c.nodes["a"].EnsureStream(ctx, jetstream.StreamConfig{
		Name: "MAIL", Subjects: []string{"mail.>"}, Storage: jetstream.FileStorage, Replicas: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	acks := map[string]*jetstream.PubAck{}
	for i := range 5 {
		id := fmt.Sprintf("m%d", i)
		acks[id] = publish(t, ctx, c.nodes["b"], id)
	}

	// Every node's Status: three current peers, a leader, three replicas.
	for _, name := range c.names {
		waitUntil(t, 10*time.Second, name+"'s status complete", func() (bool, string) {
			st, err := c.nodes[name].Status(ctx, "MAIL")
			if err != nil {
				return false, err.Error()
			}
			ms := st.Streams[0]
			ok := st.Quorum && st.MetaLeader != "" && st.PeersFrom == st.MetaLeader && len(st.Peers) == 3 &&
				st.ClusterSize == 3 && st.QuorumNeeded == 2 && st.Cluster == "hubs" &&
				ms.Leader != "" && ms.Quorum && ms.Replicas == 3 && len(ms.Peers) == 3 && ms.Messages == 5 && ms.Error == "" &&
				len(st.Errors) == 0
			for _, p := range append(st.Peers, ms.Peers...) {
				ok = ok && p.Current && !p.Offline
			}
			return ok, fmt.Sprintf("%+v; peers %s; stream peers %s", st, peerNames(st.Peers), peerNames(ms.Peers))
		})
	}

	// One down: quorum 2 of 3, publishes succeed.
	t1 := time.Now()
	c.stop("a")
	for i := 5; i < 8; i++ {
		id := fmt.Sprintf("m%d", i)
		acks[id] = publish(t, ctx, c.nodes[[]string{"b", "c"}[i%2]], id)
	}
	t.Logf("publishes with a down took %s", time.Since(t1).Round(time.Millisecond))

	// Two down: a publish finds no quorum, and Status says so.
	t2 := time.Now()
	c.stop("b")
	pctx, pcancel := context.WithTimeout(ctx, 1*time.Second)
	_, err = c.nodes["c"].JetStream().Publish(pctx, "mail.lost", []byte("no quorum"), jetstream.WithMsgID("lost"))
	pcancel()
	if err == nil {
		t.Fatal("publish with 1 of 3 nodes up succeeded")
	}
	t.Logf("publish with 1 of 3 up: %v", err)
	var st Status
	waitUntil(t, 25*time.Second, "without quorum", func() (bool, string) {
		st, err = c.nodes["c"].Status(ctx, "MAIL")
		if err != nil {
			return false, err.Error()
		}
		ms := st.Streams[0]
		offline := 0
		for _, p := range st.Peers {
			if p.Offline {
				offline++
			}
		}
		return !st.Quorum && offline == 2 && !ms.Quorum,
			fmt.Sprintf("%+v; peers %s; stream peers %s", st, peerNames(st.Peers), peerNames(ms.Peers))
	})
	js, _ := json.Marshal(st)
	t.Logf("status without quorum after %s: %s", time.Since(t2).Round(time.Millisecond), js)

	// b returns: writes again, and every acknowledged message is there.
	t3 := time.Now()
	c.start(ctx, "b")
	t.Logf("b rejoined in %s", time.Since(t3).Round(time.Millisecond))
	acks["m8"] = publish(t, ctx, c.nodes["c"], "m8")
	s, err := c.nodes["b"].EnsureStream(ctx, jetstream.StreamConfig{
		Name: "MAIL", Subjects: []string{"mail.>"}, Storage: jetstream.FileStorage, Replicas: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, ack := range acks {
		m, err := s.GetMsg(ctx, ack.Sequence)
		if err != nil || string(m.Data) != "body of "+id {
			t.Errorf("message %s (seq %d): %v %v", id, ack.Sequence, m, err)
		}
	}
	t.Logf("recovered in %s", time.Since(t3).Round(time.Millisecond))
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
