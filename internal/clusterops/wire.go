package clusterops

// The requests between hubs (the package comment's "Wire format"): the
// requester's side.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"hubd/hub/ops"
)

// subjectPrefix + node + "." + method is where a hub serves.
const subjectPrefix = "hubd.ops."

// Headers.
const (
	hdrError   = "Hubd-Ops-Error"   // the reply is an errorReply
	hdrMore    = "Hubd-Ops-More"    // the reply is a part: ask more with this session for the next
	hdrTimeout = "Hubd-Ops-Timeout" // how long the requester waits, in milliseconds
)

// Methods.
const (
	mQueues       = "queues"
	mMessages     = "messages"
	mMessage      = "message"
	mOpen         = "open"
	mMore         = "more"
	mDone         = "done"
	mHold         = "hold"
	mRelease      = "release"
	mRetry        = "retry"
	mDelete       = "delete"
	mRetryQueue   = "retry_queue"
	mSuspendQueue = "suspend_queue"
	mResumeQueue  = "resume_queue"
)

// maxReply bounds a JSON reply put together from its chunks.
const maxReply = 256 << 20

// request holds the arguments of every method; each sets those it takes.
type request struct {
	ID       string             `json:"id,omitempty"`
	NDR      bool               `json:"ndr,omitempty"`
	Name     string             `json:"name,omitempty"`
	Resubmit bool               `json:"resubmit,omitempty"`
	Filter   *ops.MessageFilter `json:"filter,omitempty"`
	Session  string             `json:"session,omitempty"`
}

// countReply is retry_queue's result.
type countReply struct {
	Count int `json:"count"`
}

// errorReply is an error's reply.
type errorReply struct {
	Error string `json:"error"`
	Kind  string `json:"kind,omitempty"`
}

// Error kinds on the wire and the sentinels they stand for.
var kinds = []struct {
	name string
	err  error
}{
	{"not_found", ops.ErrNotFound},
	{"conflict", ops.ErrConflict},
	{"timeout", context.DeadlineExceeded},
	{"canceled", context.Canceled},
}

// kindOf is err's kind on the wire, "" for none of them.
func kindOf(err error) string {
	for _, k := range kinds {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return ""
}

// RemoteError is an error another hub answered with. It is (errors.Is)
// the sentinel its kind names.
type RemoteError struct {
	Node string // the hub that answered
	Msg  string // its error's text
	Kind string // "not_found", "conflict", "timeout", "canceled" or ""
}

func (e *RemoteError) Error() string { return e.Msg + " (hub " + e.Node + ")" }

// Unwrap is the sentinel of the error's kind.
func (e *RemoteError) Unwrap() error {
	for _, k := range kinds {
		if k.name == e.Kind {
			return k.err
		}
	}
	return nil
}

// NoAnswerError: a hub did not answer (in time, or at all: it does not
// serve, or went away).
type NoAnswerError struct {
	Node string
	Err  error
}

func (e *NoAnswerError) Error() string {
	return fmt.Sprintf("hub %s did not answer: %v", e.Node, e.Err)
}

func (e *NoAnswerError) Unwrap() error { return e.Err }

func isNoAnswer(err error) bool {
	var na *NoAnswerError
	return errors.As(err, &na)
}

// call sends one request to node and returns its reply, or the error it
// answered with; each call waits at most timeout.
func (q *Queue) call(ctx context.Context, node, method string, args request, timeout time.Duration) (*nats.Msg, error) {
	data, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg := nats.NewMsg(subjectPrefix + node + "." + method)
	msg.Data = data
	if dl, ok := ctx.Deadline(); ok {
		msg.Header.Set(hdrTimeout, strconv.FormatInt(max(1, time.Until(dl).Milliseconds()), 10))
	}
	resp, err := q.nc.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return nil, &NoAnswerError{Node: node, Err: err}
	}
	if resp.Header.Get(hdrError) != "" {
		var e errorReply
		if err := json.Unmarshal(resp.Data, &e); err != nil || e.Error == "" {
			return nil, &RemoteError{Node: node, Msg: fmt.Sprintf("unreadable error reply to %s: %q", method, resp.Data)}
		}
		return nil, &RemoteError{Node: node, Msg: e.Error, Kind: e.Kind}
	}
	return resp, nil
}

// fetch is call putting a chunked reply together.
func (q *Queue) fetch(ctx context.Context, node, method string, args request, timeout time.Duration) ([]byte, error) {
	resp, err := q.call(ctx, node, method, args, timeout)
	if err != nil {
		return nil, err
	}
	body := resp.Data
	for s := resp.Header.Get(hdrMore); s != ""; s = resp.Header.Get(hdrMore) {
		if len(body) > maxReply {
			q.done(node, s)
			return nil, fmt.Errorf("hub %s: the reply to %s is over %d MiB", node, method, maxReply>>20)
		}
		if resp, err = q.call(ctx, node, mMore, request{Session: s}, timeout); err != nil {
			return nil, err
		}
		body = append(body, resp.Data...)
	}
	return body, nil
}

// done tells node that the requester will not ask for the rest of
// session (best effort: an idle session expires anyway).
func (q *Queue) done(node, session string) {
	ctx, cancel := context.WithTimeout(context.Background(), q.o.Timeout)
	defer cancel()
	q.call(ctx, node, mDone, request{Session: session}, q.o.Timeout)
}

// remoteJSON calls method on node and decodes its JSON result.
func remoteJSON[T any](ctx context.Context, q *Queue, node, method string, args request, timeout time.Duration) (T, error) {
	var v T
	b, err := q.fetch(ctx, node, method, args, timeout)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("hub %s: unreadable reply to %s: %w", node, method, err)
	}
	return v, nil
}

// openRemote opens id on node within ctx; the chunks after the first are
// asked for within rctx.
func (q *Queue) openRemote(ctx, rctx context.Context, node, id string) (io.ReadCloser, error) {
	resp, err := q.call(ctx, node, mOpen, request{ID: id}, q.o.Timeout)
	if err != nil {
		return nil, err
	}
	return &remoteReader{q: q, ctx: rctx, node: node, buf: resp.Data, session: resp.Header.Get(hdrMore)}, nil
}

// remoteReader reads a message body from another hub, a chunk at a time.
type remoteReader struct {
	q       *Queue
	ctx     context.Context
	node    string
	buf     []byte // what is left of the last chunk
	session string // "" once the last chunk came
	err     error
}

func (r *remoteReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.session == "" {
			return 0, io.EOF
		}
		resp, err := r.q.call(r.ctx, r.node, mMore, request{Session: r.session}, r.q.o.Timeout)
		if err != nil {
			r.err, r.session = err, ""
			return 0, err
		}
		r.buf, r.session = resp.Data, resp.Header.Get(hdrMore)
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *remoteReader) Close() error {
	if r.session != "" {
		r.q.done(r.node, r.session)
		r.session = ""
	}
	r.buf, r.err = nil, errors.New("clusterops: read of a closed message")
	return nil
}
