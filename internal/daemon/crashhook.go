//go:build crashhook

package daemon

import (
	"bufio"
	"context"
	"io"
	"net/textproto"
	"os"
	"syscall"

	"hubd/hub/delivery"
)

// CrashHookHeader marks a message that kills hubd when a deliverer takes
// it. Only a binary built with -tags crashhook has the hook: the process
// tests of crash attribution (cmd/hubd) build one to have a message that
// really crashes the process, every time, however it is delivered.
const CrashHookHeader = "X-Test-Crash-Hook"

// hookDeliverers wraps every deliverer so that a message carrying
// CrashHookHeader: kill makes the process SIGKILL itself at delivery, as
// a fatal runtime error or a segfault in a deliverer would: no recover,
// no cleanup, the active mark left behind.
func hookDeliverers(ds map[delivery.Kind]delivery.Deliverer) map[delivery.Kind]delivery.Deliverer {
	out := make(map[delivery.Kind]delivery.Deliverer, len(ds))
	for k, d := range ds {
		out[k] = crashHook{d}
	}
	return out
}

type crashHook struct{ next delivery.Deliverer }

func (c crashHook) Deliver(ctx context.Context, hop delivery.NextHop, msg delivery.Message, rcpts []delivery.Recipient) []delivery.Result {
	if rc, err := msg.Open(); err == nil {
		hdr, _ := textproto.NewReader(bufio.NewReader(io.LimitReader(rc, 64<<10))).ReadMIMEHeader()
		rc.Close()
		if hdr.Get(CrashHookHeader) == "kill" {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way; nothing more happens here
		}
	}
	return c.next.Deliver(ctx, hop, msg, rcpts)
}
