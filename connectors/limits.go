package connectors

// Rate limits and the brute-force ledger of one receive connector.
//
// What is counted, and where (a "source" is an IPv4 address or an IPv6
// /64; source.go):
//
//   - message_rate_limit: messages per minute, checked (and consumed) at
//     MAIL FROM once every other check of the command has passed, per
//     message_rate_source: "ip" counts per client source, "user" per SASL
//     identity (sessions without AUTH are not limited), "all" per identity
//     when authenticated and per source otherwise. Over the limit the
//     session gets "421 4.4.2 Message rate limit exceeded" and the
//     connection ends (Exchange's MessageRateLimit behaviour).
//   - recipient_rate_limit: accepted recipients per minute per
//     authenticated identity, checked at RCPT; over it "452 4.5.3 Recipient
//     rate limit exceeded, try later" (RFC 5321 §4.5.3.1.10: the client
//     sends the rest later). Unauthenticated sessions are not limited here.
//   - Failed AUTH (PLAIN, LOGIN) per client source and per network (/24 for
//     IPv4, /48 for IPv6), across connections; see authLedger.
//
// Both rates are token buckets from golang.org/x/time/rate holding `limit`
// tokens (burst = limit) that refill at limit per minute.
//
// Every table (buckets, and the ledger's counts) holds at most maxTracked
// keys, in least-recently-used order (lruTable): each call costs O(1)
// however full the table is. A new key in a full table evicts the least
// recently used one, so a flood of fresh sources (one client spreading over
// many IPv6 /64s, say) evicts its own older keys first, and never turns a
// limit off: a source over its limit that keeps trying stays recently used
// and keeps its empty bucket or its block. Only a flood of more than
// maxTracked other sources between two of its attempts forgets it, and a
// warning (once a minute) says that an entry with state was evicted.
//
// Entries that carry no state (a bucket that has refilled completely is
// indistinguishable from a new one; a count whose window and block have
// passed is zero) are dropped from the least recently used end, a few per
// call (sweepBatch), so memory follows the sources seen in the last minute
// or window rather than staying at the high-water mark of a past flood. No
// goroutine: nothing to stop on reload.
//
// All of this state belongs to one connector of one config generation: a
// reload builds new connectors and therefore a fresh, empty state, which new
// sessions use with the new limits; sessions in progress finish on the old
// one, which is dropped with its connector after their end (service.go).
//
// Every decision takes the time from the Service's clock (Options.Clock), so
// tests move windows and buckets without waiting.

import (
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"hubd/policy"
)

const (
	// maxTracked bounds each table (buckets or ledger entries) of a
	// connector: some 200 bytes an entry, so about 20 MB when full.
	maxTracked = 100_000
	// sweepBatch is how many stateless entries a call drops at most from
	// the least recently used end of a table: more than the one entry a
	// call can add, so a table shrinks back once a flood is over, and a
	// constant, so no call pays for the whole table.
	sweepBatch = 4
)

// limits is one connector generation's rate and brute-force state.
type limits struct {
	rc  *policy.ReceiveConnector
	now func() time.Time
	log *slog.Logger

	messages   *buckets[string] // nil: message_rate_limit is 0
	recipients *buckets[string] // nil: recipient_rate_limit is 0
	auth       *authLedger      // per source and per network
}

// newLimits returns empty state for rc; now is the Service's clock.
func newLimits(rc *policy.ReceiveConnector, now func() time.Time, log *slog.Logger) *limits {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &limits{rc: rc, now: now, log: log.With("connector", rc.Name)}
	if rc.MessageRateLimit > 0 {
		l.messages = newBuckets[string](rc.MessageRateLimit, "message_rate_limit", l.log)
	}
	if rc.RecipientRateLimit > 0 {
		l.recipients = newBuckets[string](rc.RecipientRateLimit, "recipient_rate_limit", l.log)
	}
	l.auth = &authLedger{
		window:     rc.AuthFailureWindow,
		maxSource:  rc.MaxAuthFailuresPerSource,
		maxNetwork: rc.MaxAuthFailuresPerNetwork,
		source:     newCounters("max_auth_failures_per_source", l.log),
		network:    newCounters("max_auth_failures_per_network", l.log),
	}
	return l
}

// messageKey is the bucket message_rate_limit counts a session in: "" when
// the session is not limited (source "user" without AUTH). It is also the
// key the refusal logs ("ip:192.0.2.7", "ip:2001:db8:1:2::/64",
// "user:alice@example.com").
func messageKey(src policy.RateSource, peer netip.Addr, user string) string {
	switch {
	case user != "" && (src == policy.RateSourceUser || src == policy.RateSourceAll):
		return "user:" + user
	case src == policy.RateSourceIP || src == policy.RateSourceAll:
		if peer.IsValid() {
			return "ip:" + sourceName(sourceKey(peer))
		}
	}
	return ""
}

// allowMessage takes one token from key's message bucket, and reports
// whether there was one. A nil receiver (no state) allows everything.
func (l *limits) allowMessage(key string) bool {
	if l == nil || l.messages == nil || key == "" {
		return true
	}
	return l.messages.allow(key, l.now())
}

// allowRecipient takes one token from user's recipient bucket.
func (l *limits) allowRecipient(user string) bool {
	if l == nil || l.recipients == nil || user == "" {
		return true
	}
	return l.recipients.allow(user, l.now())
}

// authBlocked returns the setting that blocks AUTH from peer now
// ("max_auth_failures_per_source" or "..._per_network"), or "".
func (l *limits) authBlocked(peer netip.Addr) string {
	if l == nil {
		return ""
	}
	return l.auth.blocked(peer, l.now())
}

// authFailed records a failed AUTH from peer and returns the failures now
// counted for its source and for its network, and the setting this failure
// tripped, if any (the next AUTH is refused).
func (l *limits) authFailed(peer netip.Addr) (source, network int, tripped string) {
	if l == nil {
		return 0, 0, ""
	}
	return l.auth.failed(peer, l.now())
}

// buckets are token buckets by key, all of the same rate.
type buckets[K comparable] struct {
	limit rate.Limit
	burst int
	name  string // the setting, for the eviction warning
	log   *slog.Logger

	mu     sync.Mutex
	t      *lruTable[K, *rate.Limiter]
	warned time.Time
}

// newBuckets makes buckets of perMinute tokens refilled at perMinute a minute.
func newBuckets[K comparable](perMinute int, name string, log *slog.Logger) *buckets[K] {
	return &buckets[K]{
		limit: rate.Limit(float64(perMinute) / 60),
		burst: perMinute,
		name:  name,
		log:   log,
		t:     newLRUTable[K, *rate.Limiter](maxTracked),
	}
}

// allow takes a token from key's bucket at now.
func (b *buckets[K]) allow(key K, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	idle := func(lim *rate.Limiter) bool { return lim.TokensAt(now) >= float64(b.burst) }
	b.t.trim(sweepBatch, idle)
	lim, ok := b.t.get(key)
	if !ok {
		lim = rate.NewLimiter(b.limit, b.burst)
		if old, evicted := b.t.add(key, lim); evicted && !idle(old) {
			warnEvicted(b.log, &b.warned, now, b.name)
		}
	}
	return lim.AllowN(now, 1)
}

// authLedger counts failed AUTH per client source and per network.
//
// The window is fixed, not sliding: it opens at the first failure a key
// records and closes AuthFailureWindow later, when the count starts again
// from zero. The failure that reaches a maximum blocks the key for a whole
// window from that moment, so a block always lasts AuthFailureWindow even
// when the limit is reached at the end of a counting window. Nothing resets
// early: not a successful AUTH (one valid account must not be the key that
// lets a guesser go on at the others), not the network count.
type authLedger struct {
	window     time.Duration
	maxSource  int
	maxNetwork int
	source     *counters // by sourceKey: IPv4 address, IPv6 /64
	network    *counters // by networkKey: IPv4 /24, IPv6 /48
}

func (a *authLedger) blocked(peer netip.Addr, now time.Time) string {
	if !peer.IsValid() {
		return ""
	}
	if a.source.blocked(sourceKey(peer), now) {
		return "max_auth_failures_per_source"
	}
	if a.network.blocked(networkKey(peer), now) {
		return "max_auth_failures_per_network"
	}
	return ""
}

func (a *authLedger) failed(peer netip.Addr, now time.Time) (source, network int, tripped string) {
	if !peer.IsValid() {
		return 0, 0, ""
	}
	var srcTrip, netTrip bool
	source, srcTrip = a.source.add(sourceKey(peer), now, a.window, a.maxSource)
	network, netTrip = a.network.add(networkKey(peer), now, a.window, a.maxNetwork)
	switch {
	case srcTrip:
		tripped = "max_auth_failures_per_source"
	case netTrip:
		tripped = "max_auth_failures_per_network"
	}
	return source, network, tripped
}

// counters are fixed-window failure counts by source or network; see
// authLedger.
type counters struct {
	name string
	log  *slog.Logger

	mu     sync.Mutex
	t      *lruTable[netip.Prefix, *failureCount]
	warned time.Time
}

type failureCount struct {
	n            int
	windowEnd    time.Time // the count restarts from zero here
	blockedUntil time.Time // zero: not blocked
}

// stale: the window and the block have both passed; the entry says nothing
// a new one would not.
func (e *failureCount) stale(now time.Time) bool {
	return !now.Before(e.windowEnd) && !now.Before(e.blockedUntil)
}

func newCounters(name string, log *slog.Logger) *counters {
	return &counters{name: name, log: log, t: newLRUTable[netip.Prefix, *failureCount](maxTracked)}
}

// blocked reports whether key is blocked at now. Asking counts as a use:
// a blocked source that keeps knocking stays recently used, so a flood of
// other sources does not evict its block.
func (c *counters) blocked(key netip.Prefix, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.t.get(key)
	return ok && now.Before(e.blockedUntil)
}

// add counts a failure of key and reports the count in the current window
// and whether this failure reached limit (blocking key for window).
func (c *counters) add(key netip.Prefix, now time.Time, window time.Duration, limit int) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t.trim(sweepBatch, func(e *failureCount) bool { return e.stale(now) })
	e, ok := c.t.get(key)
	if !ok {
		e = &failureCount{}
		if old, evicted := c.t.add(key, e); evicted && !old.stale(now) {
			warnEvicted(c.log, &c.warned, now, c.name)
		}
	}
	if !now.Before(e.windowEnd) {
		e.n, e.windowEnd = 0, now.Add(window)
	}
	e.n++
	if limit > 0 && e.n >= limit && !now.Before(e.blockedUntil) {
		e.blockedUntil = now.Add(window)
		return e.n, true
	}
	return e.n, false
}

// warnEvicted logs, at most once a minute, that a full table evicted an
// entry that still carried state (a bucket not yet refilled, a failure
// count or block still running): more than maxTracked sources are active.
func warnEvicted(log *slog.Logger, last *time.Time, now time.Time, setting string) {
	if log == nil || now.Sub(*last) < time.Minute {
		return
	}
	*last = now
	log.Warn("limit table full: least recently used sources forgotten", "limit", setting, "entries", maxTracked)
}
