// Package durable holds the two small helpers every writer of hubd's durable
// files needs: making a directory entry durable, and stopping a long copy
// when its context ends. The queue and the Maildir deliverer share them so
// that "on stable storage" means the same thing in both.
package durable

import (
	"context"
	"fmt"
	"io"
	"os"
)

// SyncDir fsyncs the directory dir, making the entries created, renamed or
// linked in it durable. A file's own fsync does not cover its name.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// Reader returns a reader that fails with ctx's error once ctx ends, so a
// copy from a slow or vanished source stops with the context.
func Reader(ctx context.Context, r io.Reader) io.Reader { return &ctxReader{ctx: ctx, r: r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
