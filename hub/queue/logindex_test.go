package queue

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"hubd/hub"
)

// TestIDKey: every valid queue ID, not only those hub.NewQueueID makes
// (whose last character carries one bit of padding), has its own key,
// which unpacks to it and sorts like it.
func TestIDKey(t *testing.T) {
	const digits = "0123456789abcdefghijklmnopqrstuv"
	ids := []hub.QueueID{
		"000000000000000000000", "vvvvvvvvvvvvvvvvvvvvv",
		"00000000000000000000v", "000000000000000000001", "000000000000000000000",
		hub.NewQueueID(time.Now()), hub.NewQueueID(time.Now()),
	}
	for range 1000 {
		b := make([]byte, idLen)
		for i := range b {
			b[i] = digits[rand.IntN(32)]
		}
		ids = append(ids, hub.QueueID(b))
	}
	for i, id := range ids {
		if !id.Valid() {
			t.Fatalf("%q not valid", id)
		}
		k := keyOf(id)
		if got := k.id(); got != id {
			t.Fatalf("keyOf(%q).id() = %q", id, got)
		}
		if i == 0 {
			continue
		}
		prev := ids[i-1]
		pk := keyOf(prev)
		if c, want := bytes.Compare(pk[:], k[:]), strings.Compare(string(prev), string(id)); c != want {
			t.Fatalf("%q vs %q: keys compare %d, IDs %d", prev, id, c, want)
		}
	}
}
