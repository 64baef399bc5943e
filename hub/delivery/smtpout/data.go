package smtpout

import (
	"bytes"
	"io"
	"sync"
	"time"

	"hubd/hub/delivery"
)

// writeData sends the message after a 354: lines end in CRLF (a bare LF
// becomes CRLF), a line starting with '.' gets another '.' (RFC 5321
// §4.5.2), and the data ends with "<CRLF>.<CRLF>" (§4.1.1.4). Every write to
// the socket gets a fresh blockTimeout deadline (the "data block" timeout of
// §4.5.3.2.5).
//
// The body is read a block at a time (dataBlock octets, or until it ends)
// and a block that needs no change (the usual case: CRLF lines, none
// starting with '.') is written as it was read, from the same buffer; only
// a block that does is copied, with its changes, into a second buffer. So
// a 100 KB message is two reads from the spool and two writes to the
// socket, the last carrying the end-of-data marker with it, and no copy
// in between.
//
// size is what the body's size is expected to be (-1: unknown): a body
// expected to be smaller than smallBlock is read through smallBlock
// buffers. A wrong guess costs more blocks, never a wrong octet.
func (c *conn) writeData(body io.Reader, size int64, blockTimeout time.Duration) error {
	pool, block := &dataBufs, dataBlock
	if size >= 0 && size < smallBlock {
		pool, block = &smallBufs, smallBlock
	}
	bufs := pool.Get().(*dataBuffers)
	defer bufs.release(pool, block)
	w := &delivery.DeadlineWriter{W: c.nc, Conn: c.nc, Timeout: blockTimeout}
	var st stuffState
	st.lineStart = true
	for {
		block, rerr := fillBlock(body, bufs.in[:block])
		if rerr != nil && rerr != io.EOF {
			return &readError{rerr}
		}
		out := st.stuff(bufs, block)
		if rerr == io.EOF {
			// The marker rides with the last block: block's buffer has
			// room for it (dataBuffers), and so has bufs.out.
			if !st.lineStart {
				out = append(out, '\r', '\n')
			}
			out = append(out, '.', '\r', '\n')
		}
		if len(out) > 0 {
			if _, err := w.Write(out); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
	}
}

// fillBlock reads from r until buf is full or r ends (io.EOF) or fails:
// readers hand out less than asked (the header firewall a header line at a
// time), and each block is one write to the socket.
func fillBlock(r io.Reader, buf []byte) ([]byte, error) {
	n, empty := 0, 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return buf[:n], err
		}
		if m > 0 {
			empty = 0
		} else if empty++; empty == 100 {
			// A reader that returns nothing without an error, over and
			// over: give up, as bufio does.
			return buf[:n], io.ErrNoProgress
		}
	}
	return buf, nil
}

// stuffState is what the transparency rules need to know of the octets
// before a block: whether a line starts at its first octet, and whether
// the octet before it was a CR.
type stuffState struct {
	lineStart, lastCR bool
}

// stuff applies the rules to block and returns what goes on the wire: block
// itself when nothing changes, else bufs.out with the changed copy.
func (st *stuffState) stuff(bufs *dataBuffers, block []byte) []byte {
	if len(block) == 0 {
		return block
	}
	var out []byte // nil until the first change
	done := 0      // block[:done] is in out, or needs no change
	lineStart, lastCR := st.lineStart, st.lastCR
	for i := 0; i < len(block); {
		if lineStart && block[i] == '.' {
			if out == nil {
				out = bufs.out[:0]
			}
			out = append(out, block[done:i]...)
			out = append(out, '.')
			done = i
		}
		j := bytes.IndexByte(block[i:], '\n')
		if j < 0 {
			lineStart, lastCR = false, block[len(block)-1] == '\r'
			break
		}
		lf := i + j
		cr := lastCR
		if lf > 0 {
			cr = block[lf-1] == '\r'
		}
		if !cr {
			// A bare LF becomes CRLF.
			if out == nil {
				out = bufs.out[:0]
			}
			out = append(out, block[done:lf]...)
			out = append(out, '\r')
			done = lf
		}
		i = lf + 1
		lineStart, lastCR = true, false
	}
	st.lineStart, st.lastCR = lineStart, lastCR
	if out == nil {
		return block
	}
	out = append(out, block[done:]...)
	bufs.out = out[:0] // keep what append grew
	return out
}

// dataBlock is how much of the body is read, and written, at a time;
// smallBlock, for a body known to be smaller. Each delivery under way
// holds one block (and a pool keeps them for two collections after): a
// 64 KiB block for a 5 KB message was ~0.2 MB of live heap at 20 sessions,
// twice that in the collector's goal.
const (
	dataBlock  = 64 << 10
	smallBlock = 8 << 10
)

// dataBuffers are writeData's buffers, pooled (fresh buffers per message
// were once a tenth of the relay's CPU in allocation and clearing). in
// has room for the end-of-data marker after a full block; out, for blocks
// that change, grows as needed and is dropped from the pool if it grew
// past twice a block (every octet a bare LF).
type dataBuffers struct {
	in, out []byte
}

var (
	dataBufs = sync.Pool{New: func() any {
		return &dataBuffers{in: make([]byte, dataBlock, dataBlock+len("\r\n.\r\n"))}
	}}
	smallBufs = sync.Pool{New: func() any {
		return &dataBuffers{in: make([]byte, smallBlock, smallBlock+len("\r\n.\r\n"))}
	}}
)

// release gives b back to pool, whose blocks are of size block.
func (b *dataBuffers) release(pool *sync.Pool, block int) {
	if cap(b.out) > 2*block+len("\r\n.\r\n") {
		b.out = nil
	}
	pool.Put(b)
}
