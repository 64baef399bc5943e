package hub

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"strings"
	"sync"
	"time"
)

// NewQueueID returns a fresh queue ID: 13 base32hex characters of Unix
// nanoseconds, strictly increasing within the process, then 8 random
// characters (40 bits) so that two hubs, or a clock stepped back across a
// restart, do not collide. Base32hex in lower case keeps IDs sortable by
// time and safe as file names.
//
// A receive connector reserves the ID when a mail transaction starts (as
// Postfix does), so that the Received: field it writes, the 250 reply and
// every log line name the same ID; the store assigns one to anything
// submitted without (Envelope.ID).
func NewQueueID(now time.Time) QueueID {
	n := now.UnixNano()
	idMu.Lock()
	if n <= idLast {
		n = idLast + 1
	}
	idLast = n
	idMu.Unlock()
	var b [13]byte
	binary.BigEndian.PutUint64(b[:8], uint64(n))
	rand.Read(b[8:]) // never fails (crypto/rand, Go ≥ 1.24)
	// 13 bytes = 104 bits = 21 base32 characters without padding; the first
	// 13 carry the 64-bit time (65 bits, top bit zero).
	return QueueID(strings.ToLower(idEncoding.EncodeToString(b[:])))
}

var (
	idEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)
	idMu       sync.Mutex
	idLast     int64 // the last time part handed out, for strict increase
)

// Valid reports whether id looks like one NewQueueID made, so that a stray
// file in the spool, or a hostile name from an admin request or a client,
// is never treated as a message or joined into a path.
func (id QueueID) Valid() bool {
	if len(id) != 21 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'v') {
			return false
		}
	}
	return true
}
