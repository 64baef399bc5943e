package connectors

// The tarpit (Exchange's TarpitInterval): a session that earns a refusal
// gets it late. A directory-harvest run that walks a dictionary of local
// parts at RCPT, or a client that keeps sending commands we refuse, then
// costs its sender tarpit_interval per try instead of a round trip.
//
// Which refusals earn it: 550 5.1.1 (unknown user) and 550 5.7.1 (relay or
// submission refused) at RCPT or MAIL, refusals of bad syntax and commands
// out of sequence (500-504, 555, 530), whether the session or the command
// filter makes them, and a failed AUTH (535, and 454 while the brute-force
// defence refuses AUTH). go-smtp's own refusals of bad parameter values are
// not seen here.
//
// Who never gets it: authenticated sessions, and every session on an
// externally secured connector (Exchange treats both as authenticated).
//
// How: the connection's own goroutine (go-smtp's, which also runs the
// filter and the session) sleeps before the refusal is written, holding
// no lock, so other sessions are not slowed. The sleep ends
// early when the Service shuts down (it polls the connection's shutdown
// flag every tarpitPoll) or when connection_timeout ends the session.
//
// A failed AUTH is delayed by tarpit_interval × the failures its client
// source (an IPv4 address, an IPv6 /64; source.go) has in the current
// brute-force window, capped at maxAuthDelay; the delay is the same for a
// known and an unknown user.

import (
	"time"

	"hubd/policy"
)

const (
	// tarpitPoll bounds how late a tarpitted session notices shutdown.
	tarpitPoll = 100 * time.Millisecond
	// maxAuthDelay caps the growing delay of a failed AUTH: long enough
	// to make guessing slow, well within the 5 minutes an RFC 5321
	// §4.5.3.2 client waits for a reply.
	maxAuthDelay = 30 * time.Second
)

// earnsTarpit says whether a refusal is one the tarpit delays.
func earnsTarpit(err error) bool {
	r, ok := replyOf(err)
	return ok && replyEarnsTarpit(r)
}

// replyEarnsTarpit: 550 5.1.1 and 550 5.7.1 (RFC 3463: bad destination
// mailbox, not authorized), bad syntax and commands out of sequence
// (500-504, 555, 530), failed AUTH (535).
func replyEarnsTarpit(r *policy.Reply) bool {
	switch {
	case r.Code == 550:
		return r.Enhanced == "5.1.1" || r.Enhanced == "5.7.1"
	case r.Code >= 500 && r.Code <= 504, r.Code == 555, r.Code == 530, r.Code == 535:
		return true
	}
	return false
}

// delay tarpits a refusal the session earned, then returns it unchanged.
func (s *session) delay(cmd string, err error) error {
	if r, ok := replyOf(err); ok && replyEarnsTarpit(r) {
		s.sc.tarpit(cmd, s.c.rc.TarpitInterval, r)
	}
	return err
}

// tarpit holds the reply r to cmd back for d, unless the session is
// exempt: authenticated, or on an externally secured connector.
func (c *sessionConn) tarpit(cmd string, d time.Duration, r *policy.Reply) {
	if d <= 0 || c.c.rc.ExternallySecured || c.state.authenticated() {
		return
	}
	c.state.log.Info("tarpit", "command", cmd, "delay", d, "reply", r.Error())
	c.c.svc.meters.tarpitted(c.c.rc.Name, c.sleep(d))
}

// sleep waits d in the connection's goroutine, less if the Service shuts
// down or connection_timeout ends the session first, and returns how long
// it waited.
func (c *sessionConn) sleep(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	// Replies to the commands before this one are not held back too.
	c.flush()
	start := time.Now()
	deadline := start.Add(d)
	if end := c.end; !end.IsZero() && end.Before(deadline) {
		deadline = end
	}
	for !c.shuttingDown.Load() {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		t := time.NewTimer(min(left, tarpitPoll))
		<-t.C
	}
	return time.Since(start)
}

// authDelay is the delay of a failed AUTH reply after a client source's
// n-th failure in the brute-force window.
func (s *session) authDelay(n int) time.Duration {
	base := s.c.rc.TarpitInterval
	if base <= 0 {
		return 0
	}
	n = max(n, 1)
	if time.Duration(n) > maxAuthDelay/base {
		return maxAuthDelay
	}
	return min(base*time.Duration(n), maxAuthDelay)
}
