package connectors

// Rate limits and the brute-force ledger of one receive connector.
//
// What is counted, and where:
//
//   - message_rate_limit: messages per minute, checked (and consumed) at
//     MAIL FROM once every other check of the command has passed, per
//     message_rate_source: "ip" counts per client address, "user" per SASL
//     identity (sessions without AUTH are not limited), "all" per identity
//     when authenticated and per address otherwise. Over the limit the
//     session gets "421 4.4.2 Message rate limit exceeded" and the
//     connection ends (Exchange's MessageRateLimit behaviour).
//   - recipient_rate_limit: accepted recipients per minute per
//     authenticated identity, checked at RCPT; over it "452 4.5.3 Recipient
//     rate limit exceeded, try later" (RFC 5321 §4.5.3.1.10: the client
//     sends the rest later). Unauthenticated sessions are not limited here.
//   - Failed AUTH (PLAIN, LOGIN) per client address and per network (/24 for
//     IPv4, /64 for IPv6), across connections; see authLedger.
//
// Both rates are token buckets from golang.org/x/time/rate holding `limit`
// tokens (burst = limit) that refill at limit per minute. A bucket that has
// refilled completely is indistinguishable from a new one, so a sweep,
// run at most once a minute from the calls themselves (no goroutine to
// stop on reload), drops it: memory stays proportional to the sources seen
// in the last minute or so. A hard cap (maxTracked) bounds it under a flood
// of distinct sources; past it new keys are not tracked (they pass: the cap
// must not let a flood lock everybody out) and a warning is logged.
//
// All of this state belongs to one connector of one config generation: a
// reload builds new connectors and therefore a fresh, empty state, which new
// sessions use with the new limits; sessions in progress finish on the old
// one, which is then garbage.
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
	// connector: about 100 bytes an entry, so some 10 MB at worst.
	maxTracked = 100_000
	// sweepEvery is how often a table drops entries that carry no state.
	// A bucket refills completely within a minute of its last use.
	sweepEvery = time.Minute
)

// limits is one connector generation's rate and brute-force state.
type limits struct {
	rc  *policy.ReceiveConnector
	now func() time.Time
	log *slog.Logger

	messages   *buckets    // nil: message_rate_limit is 0
	recipients *buckets    // nil: recipient_rate_limit is 0
	auth       *authLedger // per address and per network
}

// newLimits returns empty state for rc; now is the Service's clock.
func newLimits(rc *policy.ReceiveConnector, now func() time.Time, log *slog.Logger) *limits {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &limits{rc: rc, now: now, log: log.With("connector", rc.Name)}
	if rc.MessageRateLimit > 0 {
		l.messages = newBuckets(rc.MessageRateLimit, "message_rate_limit", l.log)
	}
	if rc.RecipientRateLimit > 0 {
		l.recipients = newBuckets(rc.RecipientRateLimit, "recipient_rate_limit", l.log)
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
// the session is not limited (source "user" without AUTH).
func messageKey(src policy.RateSource, peer netip.Addr, user string) string {
	switch {
	case user != "" && (src == policy.RateSourceUser || src == policy.RateSourceAll):
		return "user:" + user
	case src == policy.RateSourceIP || src == policy.RateSourceAll:
		if peer.IsValid() {
			return "ip:" + peer.String()
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
// counted for its address and for its network, and the setting this failure
// tripped, if any (the next AUTH is refused).
func (l *limits) authFailed(peer netip.Addr) (source, network int, tripped string) {
	if l == nil {
		return 0, 0, ""
	}
	return l.auth.failed(peer, l.now())
}

// buckets are token buckets by key, all of the same rate.
type buckets struct {
	limit rate.Limit
	burst int
	name  string // the setting, for the overflow warning
	log   *slog.Logger

	mu        sync.Mutex
	m         map[string]*rate.Limiter
	lastSweep time.Time
	warned    time.Time
}

// newBuckets makes buckets of perMinute tokens refilled at perMinute a minute.
func newBuckets(perMinute int, name string, log *slog.Logger) *buckets {
	return &buckets{
		limit: rate.Limit(float64(perMinute) / 60),
		burst: perMinute,
		name:  name,
		log:   log,
		m:     map[string]*rate.Limiter{},
	}
}

// allow takes a token from key's bucket at now.
func (b *buckets) allow(key string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.sweep(now)
	lim := b.m[key]
	if lim == nil {
		if len(b.m) >= maxTracked {
			warnFull(b.log, &b.warned, now, b.name)
			return true
		}
		lim = rate.NewLimiter(b.limit, b.burst)
		b.m[key] = lim
	}
	return lim.AllowN(now, 1)
}

// sweep drops full buckets, at most once per sweepEvery or when the table
// is full. b.mu is held.
func (b *buckets) sweep(now time.Time) {
	if now.Sub(b.lastSweep) < sweepEvery && len(b.m) < maxTracked {
		return
	}
	b.lastSweep = now
	for k, lim := range b.m {
		if lim.TokensAt(now) >= float64(b.burst) {
			delete(b.m, k)
		}
	}
}

// authLedger counts failed AUTH per client address and per network.
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
	source     *counters // by address
	network    *counters // by /24 or /64
}

// networkOf is the network a peer's failures are pooled in: /24 for IPv4,
// /64 for IPv6 (a typical end site has a /64, or many of them).
func networkOf(peer netip.Addr) netip.Prefix {
	bits := 64
	if peer.Is4() {
		bits = 24
	}
	p, _ := peer.Prefix(bits)
	return p
}

func (a *authLedger) blocked(peer netip.Addr, now time.Time) string {
	if !peer.IsValid() {
		return ""
	}
	if a.source.blocked(peer.String(), now) {
		return "max_auth_failures_per_source"
	}
	if a.network.blocked(networkOf(peer).String(), now) {
		return "max_auth_failures_per_network"
	}
	return ""
}

func (a *authLedger) failed(peer netip.Addr, now time.Time) (source, network int, tripped string) {
	if !peer.IsValid() {
		return 0, 0, ""
	}
	var srcTrip, netTrip bool
	source, srcTrip = a.source.add(peer.String(), now, a.window, a.maxSource)
	network, netTrip = a.network.add(networkOf(peer).String(), now, a.window, a.maxNetwork)
	switch {
	case srcTrip:
		tripped = "max_auth_failures_per_source"
	case netTrip:
		tripped = "max_auth_failures_per_network"
	}
	return source, network, tripped
}

// counters are fixed-window failure counts by key; see authLedger.
type counters struct {
	name string
	log  *slog.Logger

	mu        sync.Mutex
	m         map[string]*failureCount
	lastSweep time.Time
	warned    time.Time
}

type failureCount struct {
	n            int
	windowEnd    time.Time // the count restarts from zero here
	blockedUntil time.Time // zero: not blocked
}

func newCounters(name string, log *slog.Logger) *counters {
	return &counters{name: name, log: log, m: map[string]*failureCount{}}
}

func (c *counters) blocked(key string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[key]
	return e != nil && now.Before(e.blockedUntil)
}

// add counts a failure of key and reports the count in the current window
// and whether this failure reached limit (blocking key for window).
func (c *counters) add(key string, now time.Time, window time.Duration, limit int) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweep(now)
	e := c.m[key]
	if e == nil {
		if len(c.m) >= maxTracked {
			warnFull(c.log, &c.warned, now, c.name)
			return 0, false
		}
		e = &failureCount{}
		c.m[key] = e
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

// sweep drops entries whose window and block have both passed. c.mu is held.
func (c *counters) sweep(now time.Time) {
	if now.Sub(c.lastSweep) < sweepEvery && len(c.m) < maxTracked {
		return
	}
	c.lastSweep = now
	for k, e := range c.m {
		if !now.Before(e.windowEnd) && !now.Before(e.blockedUntil) {
			delete(c.m, k)
		}
	}
}

// warnFull logs, at most once a minute, that a table is full and new
// sources go uncounted.
func warnFull(log *slog.Logger, last *time.Time, now time.Time, setting string) {
	if log == nil || now.Sub(*last) < time.Minute {
		return
	}
	*last = now
	log.Warn("limit table full: new sources are not counted", "limit", setting, "entries", maxTracked)
}
