package jsqueue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"hubd/hub"
	"hubd/hub/queue"
)

// Names of the streams and buckets (see the package comment).
const (
	msgStream    = "HUBD_MSGS"
	msgSubject   = "hubd.msg." // + queue ID
	stateBucket  = "hubd_state"
	nodesBucket  = "hubd_nodes"
	bodiesBucket = "hubd_bodies"

	hdrRecord = "Hubd-Record" // the record, JSON
	hdrBody   = "Hubd-Body"   // "object": the body is in the object store
)

// ErrNoQuorum wraps the error of a write the cluster did not acknowledge
// (no quorum, no leader, a timeout): nothing was promised, the caller
// answers with a temporary failure.
var ErrNoQuorum = errors.New("queue cluster did not acknowledge the write")

// Options configure a Store.
type Options struct {
	// Setup creates the streams and buckets and gives the JetStream
	// context (PlainSetup, or an internal/natsnode.Node).
	Setup    Setup
	Node     string // this hub's name: the owner of what it accepts
	Replicas int    // of every stream and bucket; default 3
	Logger   *slog.Logger
	Clock    func() time.Time
	// InlineMax is the largest body kept in the message itself; larger
	// ones go to the object store. Default: the server's max_payload less
	// 64 KiB for the record.
	InlineMax int64
	// Timeout bounds every call to the cluster; default 10 s.
	Timeout time.Duration
	// NodeTTL is how long a hub's heartbeat lasts: a hub silent this long
	// is dead and its messages are taken over. Default 10 s.
	NodeTTL time.Duration
	// MarksDir keeps this hub's active marks (marks.go); "" keeps none.
	MarksDir string
	// CrashDelay: a message in flight when this hub died is not due before
	// this long after the next start (the transport's first retry rung).
	CrashDelay time.Duration
}

// Store is the JetStream queue.Store. See the package comment.
type Store struct {
	o        Options
	js       jetstream.JetStream
	log      *slog.Logger
	msgs     jetstream.Stream
	state    jetstream.KeyValue
	nodes    jetstream.KeyValue
	bodies   jetstream.ObjectStore
	kvRaw    jetstream.Stream // the state bucket's stream, for purges without markers
	nodesRaw jetstream.Stream // the nodes bucket's stream, for Live

	incarnation string // this process, in its active marks

	mu      sync.Mutex
	revs    map[hub.QueueID]uint64 // owned messages: the state entry's revision (0: none yet)
	objects map[hub.QueueID]bool   // owned messages whose body is in the object store
	lost    func(hub.QueueID)      // SetLost

	takeover *takeover // takeover.go
}

var _ queue.Store = (*Store)(nil)

// record is what the Hubd-Record header holds.
type record struct {
	Envelope hub.Envelope `json:"envelope"`
	Arrived  time.Time    `json:"arrived"`
	Size     int64        `json:"size"`
	Owner    string       `json:"owner"`
	State    queue.State  `json:"state"`
}

// stateEntry is a message's KV entry: its owner and latest State, or a
// tombstone written by the Remove that settles it.
type stateEntry struct {
	Owner   string      `json:"owner"`
	Removed bool        `json:"removed,omitempty"`
	State   queue.State `json:"state"`
}

// Open creates (or finds) the streams and buckets and starts this hub's
// heartbeat. ctx bounds the set-up.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Replicas == 0 {
		o.Replicas = 3
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.NodeTTL == 0 {
		o.NodeTTL = 10 * time.Second
	}
	js := o.Setup.JetStream()
	if o.InlineMax == 0 {
		o.InlineMax = js.Conn().MaxPayload() - 64<<10
	}
	if o.MarksDir != "" {
		if err := os.MkdirAll(o.MarksDir, 0o700); err != nil {
			return nil, err
		}
	}
	s := &Store{o: o, js: js, incarnation: newIncarnation(), log: o.Logger.With("component", "jsqueue"), revs: map[hub.QueueID]uint64{},
		objects: map[hub.QueueID]bool{}}
	var err error
	s.msgs, err = o.Setup.EnsureStream(ctx, jetstream.StreamConfig{
		Name: msgStream, Subjects: []string{msgSubject + "*"}, Storage: jetstream.FileStorage,
		Replicas: o.Replicas, MaxMsgsPerSubject: 1, Duplicates: 2 * time.Minute,
		// No direct gets: a follower answers those from what it has
		// applied so far, and a hub must read back what it just wrote.
		AllowDirect: false,
		MaxMsgSize:  -1, Discard: jetstream.DiscardNew,
	})
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", msgStream, err)
	}
	if s.state, err = o.Setup.EnsureKV(ctx, jetstream.KeyValueConfig{
		Bucket: stateBucket, History: 1, Storage: jetstream.FileStorage, Replicas: o.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("bucket %s: %w", stateBucket, err)
	}
	if err := retrySetup(ctx, func(ctx context.Context) (err error) {
		s.state, s.kvRaw, err = leaderReads(ctx, js, stateBucket)
		return err
	}); err != nil {
		return nil, fmt.Errorf("bucket %s: %w", stateBucket, err)
	}
	if s.nodes, err = o.Setup.EnsureKV(ctx, jetstream.KeyValueConfig{
		Bucket: nodesBucket, History: 1, TTL: o.NodeTTL, Storage: jetstream.FileStorage, Replicas: o.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("bucket %s: %w", nodesBucket, err)
	}
	if err := retrySetup(ctx, func(ctx context.Context) (err error) {
		s.nodesRaw, err = js.Stream(ctx, "KV_"+nodesBucket)
		return err
	}); err != nil {
		return nil, fmt.Errorf("bucket %s: %w", nodesBucket, err)
	}
	if s.bodies, err = o.Setup.EnsureObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: bodiesBucket, Storage: jetstream.FileStorage, Replicas: o.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("object store %s: %w", bodiesBucket, err)
	}
	if err := retrySetup(ctx, s.heartbeat); err != nil {
		return nil, err
	}
	s.takeover = newTakeover(s)
	return s, nil
}

// retrySetup retries a set-up call that Setup does not cover (binding a
// stream, changing its configuration) while a cluster that just formed
// elects its leaders: each attempt bounded to 5 s, all of them by ctx's
// deadline or 30 s.
func retrySetup(ctx context.Context, attempt func(context.Context) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := attempt(actx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-tick.C:
		}
	}
}

// leaderReads turns off direct gets on a bucket's stream, which KV
// buckets have by default, and binds the bucket again: a direct get may be
// answered by a follower that has not applied the last writes yet, and the
// owner check at Open or a Get after an Update must see them (a stale
// owner would make a hub drop a message it had just taken over).
func leaderReads(ctx context.Context, js jetstream.JetStream, bucket string) (jetstream.KeyValue, jetstream.Stream, error) {
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, nil, err
	}
	cfg := st.CachedInfo().Config
	if cfg.AllowDirect {
		cfg.AllowDirect = false
		if st, err = js.UpdateStream(ctx, cfg); err != nil {
			return nil, nil, err
		}
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, nil, err
	}
	return kv, st, nil
}

// SetLost sets what is told of a message another hub took over from this
// one (its write failed with queue.ErrLeaseLost): the transport forgets it.
// fn is called in a goroutine of its own.
func (s *Store) SetLost(fn func(hub.QueueID)) {
	s.mu.Lock()
	s.lost = fn
	s.mu.Unlock()
}

func (s *Store) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	if parent == nil {
		parent = context.Background()
	}
	return context.WithTimeout(parent, s.o.Timeout)
}

// wrongLastSequence reports a conditional write that lost its race: the
// API error "wrong last sequence" (10071; 10164 on replicated streams).
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// unacked wraps a failed write: a revision conflict is a lost lease,
// anything else the cluster's failure to acknowledge.
func unacked(id hub.QueueID, what string, err error) error {
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || wrongLastSequence(err) {
		return fmt.Errorf("%s %s: %w (another hub took it over)", what, id, queue.ErrLeaseLost)
	}
	return fmt.Errorf("%s %s: %w: %w", what, id, ErrNoQuorum, err)
}

// Put stores the body (inline or in the object store) and then the record;
// it returns nil once the record's publish is acknowledged by the quorum.
func (s *Store) Put(ctx context.Context, m *queue.Message, body io.Reader) error {
	var buf bytes.Buffer
	n, err := io.Copy(&buf, io.LimitReader(body, s.o.InlineMax+1))
	if err != nil {
		return err
	}
	if m.ID == "" {
		m.ID = hub.NewQueueID(s.o.Clock())
	}
	if m.Arrived.IsZero() {
		m.Arrived = s.o.Clock()
	}
	object := n > s.o.InlineMax
	if object {
		// Chunked into the object store; the record's publish below
		// makes the message exist.
		cr := &countingReader{r: io.MultiReader(&buf, body)}
		cctx, cancel := context.WithTimeout(orBackground(ctx), 10*s.o.Timeout)
		_, err := s.bodies.Put(cctx, jetstream.ObjectMeta{Name: string(m.ID)}, cr)
		cancel()
		if err != nil {
			return unacked(m.ID, "store body of", err)
		}
		n = cr.n
		buf.Reset()
	}
	m.Size = n
	rec, err := json.Marshal(record{Envelope: m.Envelope, Arrived: m.Arrived, Size: m.Size, Owner: s.o.Node, State: m.State})
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: msgSubject + string(m.ID), Header: nats.Header{}, Data: buf.Bytes()}
	msg.Header.Set(hdrRecord, string(rec))
	if object {
		msg.Header.Set(hdrBody, "object")
	}
	pctx, cancel := s.ctx(ctx)
	defer cancel()
	// The queue ID as Nats-Msg-Id: a publish retried after a lost
	// acknowledgement is stored once.
	if _, err := s.js.PublishMsg(pctx, msg, jetstream.WithMsgID(string(m.ID)), jetstream.WithExpectStream(msgStream)); err != nil {
		if object {
			s.bodies.Delete(context.Background(), string(m.ID))
		}
		return unacked(m.ID, "queue", err)
	}
	s.mu.Lock()
	s.revs[m.ID] = 0
	if object {
		s.objects[m.ID] = true
	}
	s.mu.Unlock()
	return nil
}

// Update writes st as id's state, conditional on the revision this hub
// last saw (see Ownership in the package comment).
func (s *Store) Update(ctx context.Context, id hub.QueueID, st queue.State) error {
	return s.write(ctx, id, stateEntry{Owner: s.o.Node, State: st}, "update")
}

// write puts e as id's KV entry, conditional on the revision this hub
// last saw.
func (s *Store) write(ctx context.Context, id hub.QueueID, e stateEntry, what string) error {
	s.mu.Lock()
	rev, owned := s.revs[id]
	s.mu.Unlock()
	if !owned {
		return fmt.Errorf("%s %s: %w (not owned by this hub)", what, id, queue.ErrLeaseLost)
	}
	val, err := json.Marshal(e)
	if err != nil {
		return err
	}
	wctx, cancel := s.ctx(ctx)
	defer cancel()
	next, err := s.state.Update(wctx, string(id), val, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || wrongLastSequence(err) {
		// Our own earlier write may have landed after its caller gave up
		// on it (a timeout): then the entry names us and we go on from it.
		if cur, gerr := s.state.Get(wctx, string(id)); gerr == nil {
			var ce stateEntry
			if json.Unmarshal(cur.Value(), &ce) == nil && ce.Owner == s.o.Node && !ce.Removed {
				next, err = s.state.Update(wctx, string(id), val, cur.Revision())
			}
		}
	}
	if err != nil {
		err = unacked(id, what, err)
		if errors.Is(err, queue.ErrLeaseLost) {
			s.disown(id)
		}
		return err
	}
	s.mu.Lock()
	if _, still := s.revs[id]; still {
		s.revs[id] = next
	}
	s.mu.Unlock()
	return nil
}

// disown forgets id, which another hub took over, and tells the transport.
func (s *Store) disown(id hub.QueueID) {
	s.mu.Lock()
	delete(s.revs, id)
	delete(s.objects, id)
	lost := s.lost
	s.mu.Unlock()
	s.log.Warn("message taken over by another hub; this hub stops working on it", "id", id)
	if lost != nil {
		// In a goroutine: the write that found the loss may be made
		// under the transport's locks, which its Disown takes.
		go lost(id)
	}
}

// Remove settles id for good: a tombstone conditional on the revision (so
// a hub that lost the message cannot remove it), then the record, the body
// and the state entry are purged.
func (s *Store) Remove(id hub.QueueID) error {
	if err := s.write(context.Background(), id, stateEntry{Owner: s.o.Node, Removed: true}, "remove"); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.revs, id)
	object := s.objects[id]
	delete(s.objects, id)
	s.mu.Unlock()
	// From here the tombstone says the message is gone; a purge that
	// fails is finished by the next Scan.
	if err := s.purge(id, object); err != nil {
		s.log.Warn("removed message not purged yet", "id", id, "err", err)
	}
	return nil
}

// purge deletes what is left of a removed message (object: its body is
// in the object store).
func (s *Store) purge(id hub.QueueID, object bool) error {
	ctx, cancel := s.ctx(context.Background())
	defer cancel()
	if err := s.msgs.Purge(ctx, jetstream.WithPurgeSubject(msgSubject+string(id))); err != nil {
		return err
	}
	if object {
		if err := s.bodies.Delete(ctx, string(id)); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return err
		}
	}
	return s.kvRaw.Purge(ctx, jetstream.WithPurgeSubject("$KV."+stateBucket+"."+string(id)))
}

// owned reports whether this hub works on id: it put, loaded or took it
// over, and has not removed or lost it. Get and Open answer only for
// messages this hub owns (ErrNotFound otherwise), so that a transport
// that lost a message cannot deliver it again (transport.Disown).
func (s *Store) owned(id hub.QueueID) error {
	s.mu.Lock()
	_, ok := s.revs[id]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("%s: %w (not owned by this hub)", id, queue.ErrNotFound)
	}
	return nil
}

// Open returns id's body.
func (s *Store) Open(id hub.QueueID) (io.ReadCloser, error) {
	if err := s.owned(id); err != nil {
		return nil, err
	}
	ctx, cancel := s.ctx(context.Background())
	// Every attempt opens the body: asking the state entry who owns the
	// message now keeps a hub that was thought dead (and is not) from
	// delivering what another hub took over, short of a race.
	if e, err := s.state.Get(ctx, string(id)); err == nil {
		var se stateEntry
		if json.Unmarshal(e.Value(), &se) == nil && (se.Owner != s.o.Node || se.Removed) {
			cancel()
			s.disown(id)
			return nil, fmt.Errorf("%s: %w (taken over by %s)", id, queue.ErrNotFound, se.Owner)
		}
	}
	raw, err := s.msgs.GetLastMsgForSubject(ctx, msgSubject+string(id))
	cancel()
	if err != nil {
		return nil, notFound(id, err)
	}
	if raw.Header.Get(hdrBody) != "object" {
		return io.NopCloser(bytes.NewReader(raw.Data)), nil
	}
	// The object store's reader checks the body's digest at its end.
	octx, ocancel := context.WithCancel(context.Background())
	obj, err := s.bodies.Get(octx, string(id))
	if err != nil {
		ocancel()
		return nil, notFound(id, err)
	}
	return &objectBody{ObjectResult: obj, cancel: ocancel}, nil
}

// Get returns id without its body.
func (s *Store) Get(ctx context.Context, id hub.QueueID) (*queue.Message, error) {
	if err := s.owned(id); err != nil {
		return nil, err
	}
	return s.get(ctx, id)
}

// get reads id whoever owns it.
func (s *Store) get(ctx context.Context, id hub.QueueID) (*queue.Message, error) {
	gctx, cancel := s.ctx(ctx)
	defer cancel()
	raw, err := s.msgs.GetLastMsgForSubject(gctx, msgSubject+string(id))
	if err != nil {
		return nil, notFound(id, err)
	}
	m, _, err := decodeRecord(id, raw.Header)
	if err != nil {
		return nil, err
	}
	e, err := s.state.Get(gctx, string(id))
	switch {
	case err == nil:
		var se stateEntry
		if err := json.Unmarshal(e.Value(), &se); err != nil {
			return nil, fmt.Errorf("state of %s: %w: %v", id, queue.ErrCorrupt, err)
		}
		if se.Removed {
			return nil, fmt.Errorf("%s: %w", id, queue.ErrNotFound)
		}
		m.State = se.State
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
	default:
		return nil, err
	}
	return m, nil
}

func notFound(id hub.QueueID, err error) error {
	if errors.Is(err, jetstream.ErrMsgNotFound) || errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("%s: %w", id, queue.ErrNotFound)
	}
	return fmt.Errorf("%s: %w", id, err)
}

// isObject reports whether a record's body is in the object store.
func isObject(h nats.Header) bool { return h.Get(hdrBody) == "object" }

// decodeRecord reads a message's record header.
func decodeRecord(id hub.QueueID, h nats.Header) (*queue.Message, string, error) {
	var r record
	if err := json.Unmarshal([]byte(h.Get(hdrRecord)), &r); err != nil {
		return nil, "", fmt.Errorf("record of %s: %w: %v", id, queue.ErrCorrupt, err)
	}
	return &queue.Message{ID: id, Envelope: r.Envelope, Arrived: r.Arrived, Size: r.Size, State: r.State}, r.Owner, nil
}

// Load returns every message this hub owns; see Scan.
func (s *Store) Load(ctx context.Context) ([]*queue.Message, error) {
	var all []*queue.Message
	err := s.Scan(ctx, func(m *queue.Message) error { all = append(all, m); return nil })
	return all, err
}

// Close stops the heartbeat and take-overs; the connection is the
// caller's.
func (s *Store) Close() error {
	s.takeover.stop()
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type objectBody struct {
	jetstream.ObjectResult
	cancel context.CancelFunc
}

func (o *objectBody) Close() error {
	err := o.ObjectResult.Close()
	o.cancel()
	return err
}

func orBackground(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}
