// Package clusterops is the operator's view of a cluster's queue: an
// ops.Queue that answers for every hub sharing the JetStream queue
// (hub/queue/jsqueue), built on each hub's own ops.Queue (its transport,
// which works on the messages that hub owns) and requests between the hubs
// over NATS. The admin API serves it instead of the transport when the
// queue engine is jetstream, so `hubctl queue list`, `hubctl message ...`
// and mailq show and act on the whole queue from any hub.
//
// # Serving
//
// Each hub subscribes, without a queue group, to hubd.ops.<node>.* and
// answers every request by calling its local ops.Queue. Serve starts that;
// Close ends it and waits for the requests being answered.
//
// # Reads
//
// Queues and Messages ask every live hub (Options.Live, the heartbeats of
// jsqueue) at once, each bounded by Options.Timeout (2 s); this hub is
// asked directly, without NATS. A hub that does not answer in time, or
// fails, is left out: it is named in the result's Unanswered field
// (ops.QueueInfo.Unanswered on every queue, ops.MessageList.Unanswered)
// and in a warning in the log. Only when no hub answers is the listing an
// error.
//
// Queues are merged by name (mergeQueues: counts summed, state and times
// field by field). A page of Messages is the same page asked of every hub
// (the same filter, After and Limit) merged in the listing order (arrival,
// then queue id: ops "Paging") and cut at the limit; it is Truncated when
// any hub's page was or the merge was cut, and Next is the position of the
// last message listed. Each hub's page holds every message of that hub
// that precedes the ones it left out, so the merged page is exactly the
// first Limit messages of the cluster after After: paging never lists a
// message that stays queued twice and never skips one. A bare queue id as
// After is first turned into its position (ID@ARRIVED) through Message,
// since only its owner knows it. Memory: one page per hub.
//
// Each listed message and a MessageDetail name the hub that owns it
// (ops.MessageSummary.Node).
//
// # Actions
//
// Message, OpenMessage, Hold, Release, Retry and Delete try this hub first;
// on ops.ErrNotFound they ask every other live hub at once, and the first
// answer that is not ErrNotFound wins (only the owner has the message).
// When every hub says ErrNotFound, so does the action, naming the hubs
// that did not answer, or ran out of time, if any. Each request is bounded by
// Options.ActionTimeout (75 s: a Delete waits up to a minute for a running
// delivery); Message and OpenMessage by Options.Timeout.
//
// RetryQueue, SuspendQueue and ResumeQueue go to every live hub (a queue
// is a next hop, which every hub's transport delivers to on its own);
// RetryQueue's counts are summed. The action is ErrNotFound only when every
// hub says so; it fails when any hub failed or did not answer, with that
// hub's error (and its kind) naming the hubs it failed and was done on.
//
// # Wire format
//
// A request is a NATS request to hubd.ops.<node>.<method> whose data is
// the JSON of the method's arguments (request: id, ndr, name, resubmit,
// filter, session; only those the method takes) and whose header
// Hubd-Ops-Timeout is the time the requester waits, in milliseconds (the
// server stops working on it then). The methods are queues, messages,
// message, open, hold, release, retry, delete, retry_queue, suspend_queue,
// resume_queue, and more and done (below).
//
// A reply is the method's result as JSON ([]ops.QueueInfo,
// ops.MessageList, ops.MessageDetail, {} for an action, {"count": N} for
// retry_queue), or for open the message itself (RFC 5322, as queued). An
// error is a reply with the header Hubd-Ops-Error and the data
// {"error": "...", "kind": "not_found" | "conflict" | "timeout" | "canceled" | ""},
// which the requester turns back into an error that errors.Is the same
// sentinel (ops.ErrNotFound, ops.ErrConflict, context.DeadlineExceeded,
// context.Canceled), so the admin API answers with the same HTTP status as
// on a single hub; its text is the serving hub's, followed by "(hub
// <node>)".
//
// A reply larger than a chunk (Options.ChunkSize, by default 512 KiB or
// the server's max_payload less 16 KiB, whichever is smaller) is chunked,
// and so is every message body: the reply carries the first chunk and the
// header Hubd-Ops-More: <session>; the requester asks hubd.ops.<node>.more
// with {"session": "<session>"} for each next chunk, until a reply without
// the header. A requester that stops early says done with the session. So
// a body of any size is exported, one chunk in flight at a time. The
// serving hub keeps at most 64 sessions, each closed after 30 s without a
// request; a JSON reply is held whole (one page) until it is fetched,
// a body is read a chunk at a time. A requester refuses a JSON reply over
// 256 MiB.
//
// Whoever can publish on the NATS subjects hubd.ops.> can act on the
// queue, as whoever can write its streams already can: the NATS cluster
// is trusted as the queue is.
package clusterops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"hubd/hub/ops"
)

// Defaults of Options.
const (
	DefaultTimeout       = 2 * time.Second
	DefaultActionTimeout = 75 * time.Second
)

// Options configure a Queue.
type Options struct {
	// Local is this hub's own queue: its transport.
	Local ops.Queue
	// Conn is the connection to the cluster's NATS servers.
	Conn *nats.Conn
	// Node is this hub's name (policy.Queue.Node): the subject token it
	// serves on and the Node of the messages it owns.
	Node string
	// Live lists the live hubs (jsqueue.Store.Live). When it fails, the
	// last list it gave is used.
	Live   func(ctx context.Context) ([]string, error)
	Logger *slog.Logger // nil: discard
	// Timeout bounds each read request to another hub; default 2 s.
	Timeout time.Duration
	// ActionTimeout bounds each action request to another hub; default
	// 75 s.
	ActionTimeout time.Duration
	// ChunkSize is the largest part of a reply; 0: 512 KiB or the
	// server's max_payload less 16 KiB, whichever is smaller.
	ChunkSize int
}

// Queue is the cluster's ops.Queue. It is safe for concurrent use.
type Queue struct {
	o     Options
	local ops.Queue
	nc    *nats.Conn
	node  string
	log   *slog.Logger
	chunk int

	mu       sync.Mutex
	lastLive []string // what Live last returned

	srv serving // serve.go
}

var _ ops.Queue = (*Queue)(nil)

// New returns the cluster's Queue for o. It serves the other hubs only
// once Serve is called.
func New(o Options) *Queue {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.ActionTimeout <= 0 {
		o.ActionTimeout = DefaultActionTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	q := &Queue{o: o, local: o.Local, nc: o.Conn, node: o.Node, log: o.Logger.With("component", "clusterops"),
		chunk: o.ChunkSize}
	if q.chunk <= 0 {
		q.chunk = 512 << 10
		if mp := int(o.Conn.MaxPayload()); mp > 0 {
			q.chunk = max(4<<10, min(q.chunk, mp-16<<10))
		}
	}
	return q
}

// hubs lists the live hubs, this one always among them, sorted.
func (q *Queue) hubs(ctx context.Context) []string {
	lctx, cancel := context.WithTimeout(ctx, q.o.Timeout)
	live, err := q.o.Live(lctx)
	cancel()
	q.mu.Lock()
	if err != nil {
		live = q.lastLive
	} else {
		q.lastLive = slices.Clone(live)
	}
	q.mu.Unlock()
	if err != nil {
		q.log.Warn("live hubs not known; asking those of the last list", "hubs", strings.Join(live, ","), "err", err)
	}
	live = slices.Clone(live)
	if !slices.Contains(live, q.node) {
		live = append(live, q.node)
	}
	slices.Sort(live)
	return slices.Compact(live)
}

// answer is one hub's answer.
type answer[T any] struct {
	node string
	v    T
	err  error
}

// fanout asks every hub in nodes at once: this one through local, the
// others through remote.
func fanout[T any](ctx context.Context, q *Queue, nodes []string, local func(context.Context) (T, error),
	remote func(ctx context.Context, node string) (T, error)) []answer[T] {
	out := make([]answer[T], len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		out[i].node = n
		wg.Go(func() {
			if n == q.node {
				out[i].v, out[i].err = local(ctx)
			} else {
				out[i].v, out[i].err = remote(ctx, n)
			}
		})
	}
	wg.Wait()
	return out
}

// leftOut logs the hubs left out of a listing and returns their names.
func (q *Queue) leftOut(what string, failed []answer[error]) []string {
	if len(failed) == 0 {
		return nil
	}
	names := make([]string, len(failed))
	errs := make([]string, len(failed))
	for i, f := range failed {
		names[i], errs[i] = f.node, f.err.Error()
	}
	q.log.Warn("cluster "+what+" listed without the hubs that did not answer", "hubs", strings.Join(names, ","),
		"err", strings.Join(errs, "; "))
	return names
}

// Queues lists the queues of every live hub, merged by name (mergeQueues).
func (q *Queue) Queues(ctx context.Context) ([]ops.QueueInfo, error) {
	answers := fanout(ctx, q, q.hubs(ctx), q.local.Queues, func(ctx context.Context, n string) ([]ops.QueueInfo, error) {
		return remoteJSON[[]ops.QueueInfo](ctx, q, n, mQueues, request{}, q.o.Timeout)
	})
	var lists [][]ops.QueueInfo
	var failed []answer[error]
	for _, a := range answers {
		if a.err != nil {
			failed = append(failed, answer[error]{node: a.node, err: a.err})
			continue
		}
		lists = append(lists, a.v)
	}
	if len(lists) == 0 {
		return nil, failed[0].err
	}
	out := mergeQueues(lists)
	if missing := q.leftOut("queues", failed); missing != nil {
		for i := range out {
			out[i].Unanswered = missing
		}
	}
	return out, nil
}

// Messages is a page of the cluster's messages: the same page of every
// live hub, merged (mergeMessages).
func (q *Queue) Messages(ctx context.Context, f ops.MessageFilter) (ops.MessageList, error) {
	if f.Limit <= 0 {
		f.Limit = ops.DefaultLimit
	}
	if f.After != "" {
		p, err := ops.ParsePosition(f.After)
		if err != nil {
			return ops.MessageList{}, err
		}
		if p.Arrived.IsZero() {
			// A bare id: only its owner knows where it stands.
			d, err := q.Message(ctx, p.ID)
			if errors.Is(err, ops.ErrNotFound) {
				return ops.MessageList{}, fmt.Errorf("%w: no message %q in the queue to list after; give the position a listing returned as next (ID@ARRIVED)",
					ops.ErrNotFound, p.ID)
			}
			if err != nil {
				return ops.MessageList{}, err
			}
			f.After = ops.PositionOf(d.MessageSummary).String()
		}
	}
	answers := fanout(ctx, q, q.hubs(ctx), func(ctx context.Context) (ops.MessageList, error) {
		return q.local.Messages(ctx, f)
	}, func(ctx context.Context, n string) (ops.MessageList, error) {
		return remoteJSON[ops.MessageList](ctx, q, n, mMessages, request{Filter: &f}, q.o.Timeout)
	})
	var pages []ops.MessageList
	var failed []answer[error]
	for _, a := range answers {
		if a.err != nil {
			failed = append(failed, answer[error]{node: a.node, err: a.err})
			continue
		}
		for i := range a.v.Messages {
			a.v.Messages[i].Node = a.node
		}
		pages = append(pages, a.v)
	}
	if len(pages) == 0 {
		return ops.MessageList{}, failed[0].err
	}
	out := mergeMessages(pages, f.Limit)
	out.Unanswered = q.leftOut("messages", failed)
	return out, nil
}

// Message finds the message on its owner.
func (q *Queue) Message(ctx context.Context, id string) (ops.MessageDetail, error) {
	return byID(ctx, q, func(ctx context.Context) (ops.MessageDetail, error) {
		d, err := q.local.Message(ctx, id)
		d.Node = q.node
		return d, err
	}, func(ctx context.Context, n string) (ops.MessageDetail, error) {
		d, err := remoteJSON[ops.MessageDetail](ctx, q, n, mMessage, request{ID: id}, q.o.Timeout)
		d.Node = n
		return d, err
	})
}

// OpenMessage returns the message as queued, read from its owner a chunk
// at a time.
func (q *Queue) OpenMessage(ctx context.Context, id string) (io.ReadCloser, error) {
	return byID(ctx, q, func(ctx context.Context) (io.ReadCloser, error) {
		return q.local.OpenMessage(ctx, id)
	}, func(fctx context.Context, n string) (io.ReadCloser, error) {
		// fctx ends when OpenMessage returns; the chunks after the first
		// are read within the caller's ctx.
		return q.openRemote(fctx, ctx, n, id)
	})
}

// Hold holds the message on its owner.
func (q *Queue) Hold(ctx context.Context, id string) error {
	return q.act(ctx, mHold, request{ID: id}, func(ctx context.Context) error { return q.local.Hold(ctx, id) })
}

// Release releases the message on its owner.
func (q *Queue) Release(ctx context.Context, id string) error {
	return q.act(ctx, mRelease, request{ID: id}, func(ctx context.Context) error { return q.local.Release(ctx, id) })
}

// Retry makes the message due now on its owner.
func (q *Queue) Retry(ctx context.Context, id string) error {
	return q.act(ctx, mRetry, request{ID: id}, func(ctx context.Context) error { return q.local.Retry(ctx, id) })
}

// Delete deletes the message on its owner.
func (q *Queue) Delete(ctx context.Context, id string, ndr bool) error {
	return q.act(ctx, mDelete, request{ID: id, NDR: ndr}, func(ctx context.Context) error { return q.local.Delete(ctx, id, ndr) })
}

// act is an action on one message, by id.
func (q *Queue) act(ctx context.Context, method string, args request, local func(context.Context) error) error {
	_, err := byID(ctx, q, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, local(ctx)
	}, func(ctx context.Context, n string) (struct{}, error) {
		return remoteJSON[struct{}](ctx, q, n, method, args, q.o.ActionTimeout)
	})
	return err
}

// byID tries this hub, then, on ops.ErrNotFound, every other live hub at
// once; the first answer that is not ErrNotFound wins.
func byID[T any](ctx context.Context, q *Queue, local func(context.Context) (T, error),
	remote func(ctx context.Context, node string) (T, error)) (T, error) {
	v, err := local(ctx)
	if !errors.Is(err, ops.ErrNotFound) {
		return v, err
	}
	notFound := err
	others := slices.DeleteFunc(q.hubs(ctx), func(n string) bool { return n == q.node })
	if len(others) == 0 {
		return v, notFound
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan answer[T], len(others))
	for _, n := range others {
		go func() {
			v, err := remote(fctx, n)
			ch <- answer[T]{node: n, v: v, err: err}
		}()
	}
	var missing []string
	for left := len(others); left > 0; left-- {
		a := <-ch
		switch {
		case errors.Is(a.err, ops.ErrNotFound):
			continue
		case silent(a.err):
			missing = append(missing, a.node)
			continue
		}
		// The others say not found, or are cancelled now; a reader one
		// of them opened all the same is closed.
		go func() {
			for range left - 1 {
				if b := <-ch; b.err == nil {
					if c, ok := any(b.v).(io.Closer); ok {
						c.Close()
					}
				}
			}
		}()
		return a.v, a.err
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		notFound = fmt.Errorf("%w (not asked: hubs %s did not answer)", notFound, strings.Join(missing, ", "))
	}
	return v, notFound
}

// silent reports an error that says nothing of the message: the hub did
// not answer, or ran out of time before it knew.
func silent(err error) bool {
	return isNoAnswer(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// RetryQueue retries the queue on every live hub; the count is theirs
// summed.
func (q *Queue) RetryQueue(ctx context.Context, name string, resubmit bool) (int, error) {
	return q.everyHub(ctx, mRetryQueue, request{Name: name, Resubmit: resubmit}, func(ctx context.Context) (int, error) {
		return q.local.RetryQueue(ctx, name, resubmit)
	})
}

// SuspendQueue suspends the queue on every live hub.
func (q *Queue) SuspendQueue(ctx context.Context, name string) error {
	_, err := q.everyHub(ctx, mSuspendQueue, request{Name: name}, func(ctx context.Context) (int, error) {
		return 0, q.local.SuspendQueue(ctx, name)
	})
	return err
}

// ResumeQueue resumes the queue on every live hub.
func (q *Queue) ResumeQueue(ctx context.Context, name string) error {
	_, err := q.everyHub(ctx, mResumeQueue, request{Name: name}, func(ctx context.Context) (int, error) {
		return 0, q.local.ResumeQueue(ctx, name)
	})
	return err
}

// everyHub runs a queue action on every live hub. See the package
// comment for how the answers make one.
func (q *Queue) everyHub(ctx context.Context, method string, args request, local func(context.Context) (int, error)) (int, error) {
	answers := fanout(ctx, q, q.hubs(ctx), local, func(ctx context.Context, n string) (int, error) {
		r, err := remoteJSON[countReply](ctx, q, n, method, args, q.o.ActionTimeout)
		return r.Count, err
	})
	sum := 0
	var done, failedOn []string
	var notFound, failed error
	for _, a := range answers {
		switch {
		case a.err == nil:
			sum += a.v
			done = append(done, a.node)
		case errors.Is(a.err, ops.ErrNotFound):
			if notFound == nil {
				notFound = a.err
			}
		default:
			if failed == nil {
				failed = a.err
			}
			failedOn = append(failedOn, a.node)
		}
	}
	switch {
	case failed == nil && done == nil:
		return 0, notFound
	case failed == nil:
		return sum, nil
	}
	if len(answers) > 1 {
		more := "failed on hubs " + strings.Join(failedOn, ", ")
		if done != nil {
			more += "; done on hubs " + strings.Join(done, ", ")
		}
		failed = fmt.Errorf("%w (%s)", failed, more)
	}
	q.log.Warn("cluster queue action not done on every hub", "action", method, "queue", args.Name, "err", failed)
	return sum, failed
}
