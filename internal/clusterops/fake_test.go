package clusterops

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"hubd/hub/ops"
)

// fakeQueue is one hub's own ops.Queue in the tests: a few messages in
// RAM, listed in the order of hub/transport (arrival, then id).
type fakeQueue struct {
	mu     sync.Mutex
	msgs   map[string]*fakeMsg
	queues []ops.QueueInfo
	// hang, when set, makes every call wait for ctx's end (a hub that
	// does not answer).
	hang bool
	// calls counts the calls by method.
	calls map[string]int
}

type fakeMsg struct {
	sum  ops.MessageSummary
	body []byte
}

func newFake() *fakeQueue {
	return &fakeQueue{msgs: map[string]*fakeMsg{}, calls: map[string]int{},
		queues: []ops.QueueInfo{
			{Name: "submission", Kind: "submission", State: "Ready"},
			{Name: "unreachable", Kind: "unreachable", State: "Ready"},
			{Name: "poison", Kind: "poison", State: "Suspended"},
		}}
}

func (f *fakeQueue) add(id string, arrived time.Time, body string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.msgs[id] = &fakeMsg{sum: ops.MessageSummary{ID: id, State: ops.StateQueued, Arrived: arrived,
		Size: int64(len(body)), From: "s@example.test"}, body: []byte(body)}
}

func (f *fakeQueue) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.msgs, id)
}

func (f *fakeQueue) called(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

// enter counts a call, and waits for ctx's end on a hanging hub.
func (f *fakeQueue) enter(ctx context.Context, method string) error {
	f.mu.Lock()
	f.calls[method]++
	hang := f.hang
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func notFound(id string) error {
	return fmt.Errorf("%w: no message %q in the queue", ops.ErrNotFound, id)
}

func (f *fakeQueue) Queues(ctx context.Context) ([]ops.QueueInfo, error) {
	if err := f.enter(ctx, "queues"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.queues), nil
}

func (f *fakeQueue) known(name string) bool {
	return slices.ContainsFunc(f.queues, func(q ops.QueueInfo) bool { return q.Name == name })
}

func (f *fakeQueue) RetryQueue(ctx context.Context, name string, resubmit bool) (int, error) {
	if err := f.enter(ctx, "retry_queue"); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case name == "poison":
		return 0, fmt.Errorf("%w: the poison queue is never retried", ops.ErrConflict)
	case !f.known(name):
		return 0, fmt.Errorf("%w: no queue named %q", ops.ErrNotFound, name)
	}
	return len(f.msgs), nil
}

func (f *fakeQueue) SuspendQueue(ctx context.Context, name string) error {
	return f.setState(ctx, "suspend_queue", name, "Suspended")
}

func (f *fakeQueue) ResumeQueue(ctx context.Context, name string) error {
	return f.setState(ctx, "resume_queue", name, "Ready")
}

func (f *fakeQueue) setState(ctx context.Context, method, name, state string) error {
	if err := f.enter(ctx, method); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.queues {
		if f.queues[i].Name == name {
			f.queues[i].State = state
			return nil
		}
	}
	return fmt.Errorf("%w: no delivery queue named %q", ops.ErrNotFound, name)
}

func (f *fakeQueue) Messages(ctx context.Context, flt ops.MessageFilter) (ops.MessageList, error) {
	if err := f.enter(ctx, "messages"); err != nil {
		return ops.MessageList{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []ops.MessageSummary
	for _, m := range f.msgs {
		if flt.State == "" || m.sum.State == flt.State {
			all = append(all, m.sum)
		}
	}
	slices.SortFunc(all, comparePos)
	if flt.After != "" {
		p, err := ops.ParsePosition(flt.After)
		if err != nil {
			return ops.MessageList{}, err
		}
		if p.Arrived.IsZero() {
			m := f.msgs[p.ID]
			if m == nil {
				return ops.MessageList{}, fmt.Errorf("%w: no message %q in the queue to list after", ops.ErrNotFound, p.ID)
			}
			p.Arrived = m.sum.Arrived
		}
		after := ops.MessageSummary{ID: p.ID, Arrived: p.Arrived}
		all = slices.DeleteFunc(all, func(m ops.MessageSummary) bool { return comparePos(m, after) <= 0 })
	}
	limit := cmp0(flt.Limit, ops.DefaultLimit)
	out := ops.MessageList{Messages: []ops.MessageSummary{}}
	if len(all) > limit {
		all, out.Truncated = all[:limit], true
	}
	out.Messages = append(out.Messages, all...)
	if out.Truncated {
		out.Next = ops.PositionOf(all[len(all)-1]).String()
	}
	return out, nil
}

func cmp0(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

func (f *fakeQueue) Message(ctx context.Context, id string) (ops.MessageDetail, error) {
	if err := f.enter(ctx, "message"); err != nil {
		return ops.MessageDetail{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.msgs[id]
	if m == nil {
		return ops.MessageDetail{}, notFound(id)
	}
	return ops.MessageDetail{MessageSummary: m.sum, Headers: []ops.Header{{Name: "Subject", Value: id}}}, nil
}

func (f *fakeQueue) OpenMessage(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := f.enter(ctx, "open"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.msgs[id]
	if m == nil {
		return nil, notFound(id)
	}
	return io.NopCloser(bytes.NewReader(m.body)), nil
}

func (f *fakeQueue) Hold(ctx context.Context, id string) error {
	return f.change(ctx, "hold", id, func(m *fakeMsg) error {
		if m.sum.State == ops.StateHeld {
			return fmt.Errorf("%w: message %q is held already", ops.ErrConflict, id)
		}
		m.sum.State = ops.StateHeld
		return nil
	})
}

func (f *fakeQueue) Release(ctx context.Context, id string) error {
	return f.change(ctx, "release", id, func(m *fakeMsg) error {
		if m.sum.State != ops.StateHeld {
			return fmt.Errorf("%w: message %q is neither held nor poisoned", ops.ErrConflict, id)
		}
		m.sum.State = ops.StateQueued
		return nil
	})
}

func (f *fakeQueue) Retry(ctx context.Context, id string) error {
	return f.change(ctx, "retry", id, func(m *fakeMsg) error {
		if m.sum.State == ops.StateHeld {
			return fmt.Errorf("%w: message %q is held; release it instead", ops.ErrConflict, id)
		}
		return nil
	})
}

func (f *fakeQueue) Delete(ctx context.Context, id string, ndr bool) error {
	return f.change(ctx, "delete", id, func(m *fakeMsg) error {
		delete(f.msgs, id)
		return nil
	})
}

func (f *fakeQueue) change(ctx context.Context, method, id string, fn func(*fakeMsg) error) error {
	if err := f.enter(ctx, method); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.msgs[id]
	if m == nil {
		return notFound(id)
	}
	return fn(m)
}

// state is a message's state on f, "" when f does not have it.
func (f *fakeQueue) state(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m := f.msgs[id]; m != nil {
		return m.sum.State
	}
	return ""
}

var _ ops.Queue = (*fakeQueue)(nil)

// ids are the ids of a listing, joined.
func ids(l ops.MessageList) string {
	var s []string
	for _, m := range l.Messages {
		s = append(s, m.ID)
	}
	return strings.Join(s, ",")
}
