package natsnode

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The JetStream API errors that a forming (or re-forming) cluster returns
// and that go away by themselves: the meta leader does not yet know enough
// peers with JetStream to place the replicas, or there is no meta leader.
const (
	errCodeNoSuitablePeers       jetstream.ErrorCode = 10005 // "no suitable peers for placement"
	errCodeClusterNotAvailable   jetstream.ErrorCode = 10008 // "JetStream system temporarily unavailable"
	errCodeInsufficientResources jetstream.ErrorCode = 10023 // "insufficient resources"
)

// The retry of Ensure*: each attempt is bounded by attemptTimeout; between
// attempts the delay doubles from retryMin to retryMax.
const (
	attemptTimeout = 5 * time.Second
	retryMin       = 100 * time.Millisecond
	retryMax       = time.Second
)

// EnsureStream creates the stream cfg describes, or updates the existing
// one to cfg, and returns its handle. While the cluster forms it retries
// the transient errors (no suitable peers, insufficient resources,
// JetStream temporarily unavailable, no answer) until ctx's deadline, or
// for the node's connect timeout when ctx has none; other errors (a
// configuration the server refuses, a change it cannot make in place such
// as the storage type) are returned at once.
func (n *Node) EnsureStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return ensure(ctx, n, func(ctx context.Context) (jetstream.Stream, error) {
		return n.js.CreateOrUpdateStream(ctx, cfg)
	})
}

// EnsureKV is EnsureStream for a key-value bucket.
func (n *Node) EnsureKV(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return ensure(ctx, n, func(ctx context.Context) (jetstream.KeyValue, error) {
		return n.js.CreateOrUpdateKeyValue(ctx, cfg)
	})
}

// EnsureObjectStore is EnsureStream for an object store bucket.
func (n *Node) EnsureObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	return ensure(ctx, n, func(ctx context.Context) (jetstream.ObjectStore, error) {
		return n.js.CreateOrUpdateObjectStore(ctx, cfg)
	})
}

func ensure[T any](ctx context.Context, n *Node, attempt func(context.Context) (T, error)) (T, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.timeout)
		defer cancel()
	}
	delay := retryMin
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		v, err := attempt(actx)
		cancel()
		if err == nil || !Transient(err) || ctx.Err() != nil {
			return v, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, err
		case <-t.C:
		}
		delay = min(2*delay, retryMax)
	}
}

// Transient reports whether err is one of the errors of a cluster that is
// forming or electing a leader, which a later retry may not get: no
// suitable peers for placement, insufficient resources, JetStream
// temporarily unavailable, or no answer in time.
func Transient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errCodeNoSuitablePeers, errCodeClusterNotAvailable, errCodeInsufficientResources:
			return true
		}
		return false
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
}
