package transport

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"hubd/hub"
	"hubd/hub/queue"
	"hubd/policy"
)

// backoff is the delay after the n-th failed attempt, on the retry ladder
// of DESIGN.md (Exchange's hub defaults): QuickRetryCount "glitch" retries
// QuickRetryInterval apart, then TransientRetryCount retries
// TransientRetryInterval apart, then RetryInterval for ever (until expiry).
// Up to 10% jitter is added, in integer nanoseconds, so that messages
// deferred together do not retry in lockstep.
func backoff(h policy.Hub, n int) time.Duration {
	var d time.Duration
	switch {
	case n <= h.QuickRetryCount:
		d = h.QuickRetryInterval
	case n <= h.QuickRetryCount+h.TransientRetryCount:
		d = h.TransientRetryInterval
	default:
		d = h.RetryInterval
	}
	if d <= 0 {
		d = time.Minute
	}
	if j := int64(d / 10); j > 0 {
		d += time.Duration(rand.Int64N(j))
	}
	return d
}

// persist stores st as e's state and makes it current. e.mu is held. A
// failed Update is logged and the state kept in memory: the attempt's
// effect already happened, and refusing to remember it would retry (and
// duplicate) delivered mail at once instead of only after a crash.
func (t *Transport) persist(e *entry, st queue.State) {
	if err := t.store.Update(context.Background(), e.id, st); err != nil {
		t.log.Error("cannot persist recipient state", "id", e.id, "err", err)
		e.dirty = true
	} else {
		e.dirty = false
	}
	e.msg.State = st
	t.depth.update(e)
}

func cloneState(s queue.State) queue.State {
	s.Recipients = append([]queue.RecipientState(nil), s.Recipients...)
	return s
}

func replyOf(r *policy.Reply) queue.Reply {
	if r == nil {
		return queue.Reply{}
	}
	return queue.Reply{Code: r.Code, Enhanced: r.Enhanced, Text: r.Text}
}

func replyString(r queue.Reply) string {
	if r.Code == 0 {
		return r.Text
	}
	return strconv.Itoa(r.Code) + " " + r.Enhanced + " " + r.Text
}

// deliveryKey names one final recipient of one message for the deliverers'
// idempotency (delivery.Recipient.Key): the queue id and a hash of the
// lower-cased address. It does not depend on the recipient's position, so
// an expansion recomputed after a crash or a reload keeps every key.
func deliveryKey(id hub.QueueID, addr string) string {
	h := fnv.New64a()
	h.Write([]byte(strings.ToLower(addr)))
	return fmt.Sprintf("%s.%016x", id, h.Sum64())
}

// hasRecipient reports whether addr is already among rs (case-insensitive).
func hasRecipient(rs []queue.RecipientState, addr string) bool {
	for _, r := range rs {
		if strings.EqualFold(r.Address, addr) {
			return true
		}
	}
	return false
}
