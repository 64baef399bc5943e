package main

// Engine "bbolt": go.etcd.io/bbolt, every write through db.Batch, which
// runs concurrent calls in one read-write transaction (one commit: data
// pages, then meta page, each fdatasync'ed). MaxBatchDelay is set by
// -bolt-delay (bbolt's default 10 ms would add 10 ms to every 250).

import (
	"fmt"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
)

var (
	msgBucket   = []byte("m")
	stateBucket = []byte("s")
	hopBucket   = []byte("h")
)

type boltEngine struct{ db *bbolt.DB }

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func openBolt(dir string, delay time.Duration) (*boltEngine, error) {
	db, err := bbolt.Open(filepath.Join(dir, "queue.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, err
	}
	db.MaxBatchDelay = delay
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{msgBucket, stateBucket, hopBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &boltEngine{db}, nil
}

func (e *boltEngine) Submit(id uint64, env, body []byte) error {
	v := make([]byte, 0, len(env)+len(body))
	v = append(append(v, env...), body...)
	return e.db.Batch(func(tx *bbolt.Tx) error {
		return tx.Bucket(msgBucket).Put(key('m', id), v)
	})
}

func (e *boltEngine) State(id uint64, kind byte, payload []byte) error {
	v := append([]byte{kind}, payload...)
	return e.db.Batch(func(tx *bbolt.Tx) error {
		return tx.Bucket(stateBucket).Put(key('s', id), v)
	})
}

func (e *boltEngine) Settle(id uint64) error {
	return e.db.Batch(func(tx *bbolt.Tx) error {
		if err := tx.Bucket(msgBucket).Delete(key('m', id)); err != nil {
			return err
		}
		return tx.Bucket(stateBucket).Delete(key('s', id))
	})
}

func (e *boltEngine) HopRetry(hop string, until time.Time) (bool, error) {
	return true, e.db.Batch(func(tx *bbolt.Tx) error {
		return tx.Bucket(hopBucket).Put([]byte(hop), []byte(until.UTC().Format(time.RFC3339Nano)))
	})
}

func (e *boltEngine) Fsyncs() int64 { return -1 }

func (e *boltEngine) Close() error { return e.db.Close() }
