package maildir

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"hubd/hub/delivery"
	"hubd/internal/durable"
)

// writeMessage performs the Maildir delivery dance for one file:
// tmp/<name>,<random> (O_EXCL) → write → fsync → close → link to new/<name> → unlink
// tmp → fsync new/. On any error the tmp file is removed. A new/<name> that
// already exists at link time means another attempt for the same key won;
// that is success, not an error.
func writeMessage(ctx context.Context, dir, name, hdr string, msg delivery.Message) (err error) {
	dst := filepath.Join(dir, "new", name)
	f, tmp, err := createTmp(dir, name)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close() // harmless if already closed
			os.Remove(tmp)
		}
	}()
	if err = writeContent(ctx, f, hdr, msg); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = ctx.Err(); err != nil {
		return err
	}
	if err = publish(tmp, dst); err != nil {
		return err
	}
	// The name is in new/ now; the only thing left is to make that directory
	// entry durable. If the fsync fails the entry may not survive a crash, so
	// report the error: the retry will find new/<name> (Delivered) or, after a
	// crash that lost it, write it again.
	return durable.SyncDir(filepath.Dir(dst))
}

// createTmp creates a fresh file in tmp/ named after the final name plus a
// random suffix. The final name alone is not enough: it is the same for every
// attempt of one key, and two attempts that overlap (a retry racing a slow
// first attempt) must not write into one file. Stale tmp files of crashed
// attempts are left for the usual 36-hour tmp/ sweep of Maildir readers.
func createTmp(dir, name string) (*os.File, string, error) {
	for range 3 {
		var rnd [6]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, "", err
		}
		tmp := filepath.Join(dir, "tmp", name+","+hex.EncodeToString(rnd[:]))
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if !errors.Is(err, os.ErrExist) {
			return f, tmp, err
		}
	}
	return nil, "", errors.New("cannot create a unique file in tmp/")
}

// publish moves tmp to dst without replacing an existing dst: link(2) then
// unlink, as the Maildir spec describes; rename(2) where hard links are
// not supported.
func publish(tmp, dst string) error {
	err := os.Link(tmp, dst)
	switch {
	case err == nil, errors.Is(err, os.ErrExist):
		// ErrExist: an earlier or concurrent attempt for this key already
		// delivered; keep its file and drop ours.
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return rerr
		}
		return nil
	case linkUnsupported(err):
		return os.Rename(tmp, dst)
	default:
		return err
	}
}

// writeContent writes the trace header then the message with CRLF → LF.
func writeContent(ctx context.Context, f *os.File, hdr string, msg delivery.Message) error {
	if msg.Open == nil {
		return errors.New("message body unavailable")
	}
	body, err := msg.Open()
	if err != nil {
		return fmt.Errorf("open message: %w", err)
	}
	defer body.Close()
	w := bufio.NewWriterSize(f, 64<<10)
	if _, err := w.WriteString(hdr); err != nil {
		return err
	}
	if _, err := copyLF(w, durable.Reader(ctx, body)); err != nil {
		return err
	}
	return w.Flush()
}

// copyLF copies r to w converting every CRLF to LF. A CR at the end of one
// read is held back until the next byte shows whether an LF follows; a lone
// CR (not part of CRLF) is copied unchanged.
func copyLF(w io.Writer, r io.Reader) (int64, error) {
	buf := make([]byte, 32<<10)
	out := make([]byte, 0, len(buf)+1)
	var n int64
	pendingCR := false
	for {
		k, rerr := r.Read(buf)
		chunk := buf[:k]
		out = out[:0]
		if pendingCR && k > 0 {
			if chunk[0] != '\n' {
				out = append(out, '\r')
			}
			pendingCR = false
		}
		for len(chunk) > 0 {
			i := bytes.IndexByte(chunk, '\r')
			if i < 0 {
				out = append(out, chunk...)
				break
			}
			out = append(out, chunk[:i]...)
			switch {
			case i+1 == len(chunk):
				pendingCR = true
			case chunk[i+1] != '\n':
				out = append(out, '\r')
			}
			chunk = chunk[i+1:]
		}
		if len(out) > 0 {
			m, werr := w.Write(out)
			n += int64(m)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			if pendingCR {
				m, werr := w.Write([]byte{'\r'})
				n += int64(m)
				return n, werr
			}
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}
