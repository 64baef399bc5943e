package jsqueue

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// Setup creates (or updates) the streams and buckets. A cluster that is
// still forming refuses them for a while (no meta leader, no suitable
// peers); internal/natsnode.Node retries those errors. PlainSetup makes
// each call once.
type Setup interface {
	JetStream() jetstream.JetStream
	EnsureStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	EnsureKV(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
	EnsureObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error)
}

// PlainSetup is Setup on js without retries.
func PlainSetup(js jetstream.JetStream) Setup { return plainSetup{js} }

type plainSetup struct{ js jetstream.JetStream }

func (p plainSetup) JetStream() jetstream.JetStream { return p.js }

func (p plainSetup) EnsureStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return p.js.CreateOrUpdateStream(ctx, cfg)
}

func (p plainSetup) EnsureKV(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return p.js.CreateOrUpdateKeyValue(ctx, cfg)
}

func (p plainSetup) EnsureObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	return p.js.CreateOrUpdateObjectStore(ctx, cfg)
}
