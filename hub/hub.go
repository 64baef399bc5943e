// Package hub defines the one door into the transport: the Submitter, and
// the Envelope it accepts. Everything that enters the hub (receive
// connectors, DSNs the hub generates, a future sendmail pickup) goes through
// Submit. The transport that implements it lives in hub/transport; the queue,
// categorizer and deliverers in their own sub-packages.
package hub

import (
	"context"
	"io"
	"time"
)

// QueueID names one message in the queue. IDs are never reused.
type QueueID string

// Submitter is the only way into the hub.
//
// Submit reads body to EOF (the message as received, CRLF line endings, with
// the receiving connector's Received: header already prepended) and returns
// only when the message and its envelope are on stable storage: file data
// and directory entries fsynced (DESIGN.md invariant 1). Concurrent calls
// share fsyncs (invariant 2). On error nothing was queued, and the error is
// a *policy.Reply when the hub has a specific SMTP answer (e.g. 452 4.3.1
// insufficient storage); any other error means 451 4.3.0.
// ctx cancellation abandons the submission (nothing queued).
type Submitter interface {
	Submit(ctx context.Context, env Envelope, body io.Reader) (QueueID, error)
}

// A HeaderSource is a body that decides only once it has been read to its
// end what header fields go above it: the Authentication-Results of checks
// that need the whole message (a DKIM body hash, the DMARC verdict built
// on it, RFC 8601 §5). Submit asks after the body's EOF and before the
// message is stored, and stores them with it: every delivery and every
// DSN returning the content sends them first. Fields end in CRLF; "" adds
// none. A check that refuses the message returns an error from Read
// instead, and nothing is queued.
type HeaderSource interface {
	io.Reader
	HeadersAtEnd() string
}

// An AuthResultsSource is a HeaderSource whose fields carry the receipt
// checks' verdicts: AuthResults sums them up for the tracking log's
// RECEIVE event ("spf=pass dkim=pass dmarc=none"), asked with
// HeadersAtEnd.
type AuthResultsSource interface {
	HeaderSource
	AuthResults() string
}

// Envelope is the SMTP envelope of one message plus how it arrived.
type Envelope struct {
	// ID, when set, is the queue ID reserved with NewQueueID when the mail
	// transaction started, so that the Received: field, the 250 reply and
	// every log line name the message alike; "" lets the hub assign one.
	ID QueueID `json:"-"`

	From       string      // reverse-path; "" is the null sender <>
	Recipients []Recipient // forward-paths, in RCPT order, de-duplicated by the connector

	SMTPUTF8   bool   // MAIL ... SMTPUTF8 was given (RFC 6531)
	Body       string // "7BIT", "8BITMIME" or "" (not declared)
	DSNRet     string // "FULL", "HDRS" or "" (RFC 3461 RET)
	DSNEnvID   string // RFC 3461 ENVID, or ""
	RequireTLS bool   // RFC 8689

	ReceivedAt  time.Time
	Connector   string // name of the receive connector, or "hub" for generated mail
	ClientAddr  string // "ip:port" of the SMTP client
	ClientHelo  string
	AuthUser    string // SASL identity, "" if none
	MessageID   string // Message-ID header value if known (for logs)
	TraceParent string // W3C traceparent of the receiving span, carried across the queue
}

// Recipient is one forward-path with its RFC 3461 parameters.
type Recipient struct {
	Address string   // as given in RCPT TO, without angle brackets
	Notify  []string // "NEVER" or some of "SUCCESS", "FAILURE", "DELAY"; nil = default
	ORCPT   string   // original recipient "rfc822;addr", or ""
}
