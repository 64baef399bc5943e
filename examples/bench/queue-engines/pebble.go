package main

// Engine "pebble": github.com/cockroachdb/pebble/v2 with pebble.Sync on
// every write. Pebble's commit pipeline appends concurrent batches to its
// WAL and covers them with one sync (its own group commit).
// Keys: "m"+id → envelope length | envelope | body; "s"+id → latest
// state; "h"+hop → deferred-until of a next hop.

import (
	"encoding/binary"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

type pebbleEngine struct{ db *pebble.DB }

func openPebble(dir string) (*pebbleEngine, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		return nil, err
	}
	return &pebbleEngine{db}, nil
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	fail(errorf(format, args...))
}

func key(kind byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{kind}, id)
}

func (p *pebbleEngine) Submit(id uint64, env, body []byte) error {
	v := make([]byte, 4, 4+len(env)+len(body))
	binary.BigEndian.PutUint32(v, uint32(len(env)))
	v = append(append(v, env...), body...)
	return p.db.Set(key('m', id), v, pebble.Sync)
}

func (p *pebbleEngine) State(id uint64, kind byte, payload []byte) error {
	return p.db.Set(key('s', id), append([]byte{kind}, payload...), pebble.Sync)
}

func (p *pebbleEngine) Settle(id uint64) error {
	b := p.db.NewBatch()
	b.Delete(key('m', id), nil)
	b.Delete(key('s', id), nil)
	return b.Commit(pebble.Sync)
}

func (p *pebbleEngine) HopRetry(hop string, until time.Time) (bool, error) {
	return true, p.db.Set(append([]byte{'h'}, hop...), []byte(until.UTC().Format(time.RFC3339Nano)), pebble.Sync)
}

func (p *pebbleEngine) Fsyncs() int64 { return -1 }

func (p *pebbleEngine) Close() error { return p.db.Close() }
