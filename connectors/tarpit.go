package connectors

// The tarpit (Exchange's TarpitInterval): a session that earns a refusal
// gets it late. A directory-harvest run that walks a dictionary of local
// parts at RCPT, or a client that keeps sending commands we refuse, then
// costs its sender tarpit_interval per try instead of a round trip.
//
// Which refusals earn it: 550 5.1.1 (unknown user) and 550 5.7.1 (relay or
// submission refused) at RCPT or MAIL, our refusals of bad syntax and
// commands out of sequence (500-504, 530), and a failed AUTH (535, and 454
// while the brute-force defence refuses AUTH). Refusals go-smtp makes itself,
// before our callbacks run, are not seen here.
//
// Who never gets it: authenticated sessions, and every session on an
// externally secured connector (Exchange treats both as authenticated).
//
// How: the session's own goroutine sleeps before returning the refusal to
// go-smtp, holding no lock, so other sessions are not slowed. The sleep ends
// early when the Service shuts down (it polls the connection's shutdown
// flag every tarpitPoll) or when connection_timeout ends the session.
//
// A failed AUTH is delayed by tarpit_interval × the failures its client
// source (an IPv4 address, an IPv6 /64; source.go) has in the current
// brute-force window, capped at maxAuthDelay; the delay is the same for a
// known and an unknown user.

import (
	"errors"
	"time"

	"github.com/emersion/go-smtp"
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
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return false
	}
	switch {
	case se.Code == 550:
		// RFC 3463: X.1.1 bad destination mailbox, X.7.1 not authorized.
		return se.EnhancedCode == smtp.EnhancedCode{5, 1, 1} || se.EnhancedCode == smtp.EnhancedCode{5, 7, 1}
	case se.Code >= 500 && se.Code <= 504, se.Code == 530, se.Code == 535:
		return true
	}
	return false
}

// delay tarpits a refusal the session earned, then returns it unchanged.
func (s *session) delay(cmd string, err error) error {
	if err != nil && earnsTarpit(err) {
		s.tarpit(cmd, s.c.rc.TarpitInterval, err)
	}
	return err
}

// tarpitExempt reports whether the session is never tarpitted.
func (s *session) tarpitExempt() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authUser != "" || s.c.rc.ExternallySecured
}

// tarpit holds the reply to cmd back for d, unless the session is exempt.
func (s *session) tarpit(cmd string, d time.Duration, refusal error) {
	if d <= 0 || s.tarpitExempt() {
		return
	}
	text := refusal.Error()
	if r, ok := replyOf(refusal); ok {
		text = r.Error()
	}
	s.st.log.Info("tarpit", "command", cmd, "delay", d, "reply", text)
	// metrics: hubd_smtp_tarpit_total{connector} and the seconds slept
	// (hubd_smtp_tarpit_seconds_total{connector}) go here.
	s.sleep(d)
}

// sleep waits d in the session's goroutine, less if the Service shuts down
// or connection_timeout ends the session first.
func (s *session) sleep(d time.Duration) {
	deadline := time.Now().Add(d)
	if end := s.sc.end; !end.IsZero() && end.Before(deadline) {
		deadline = end
	}
	for !s.sc.shuttingDown.Load() {
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		t := time.NewTimer(min(left, tarpitPoll))
		<-t.C
	}
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
