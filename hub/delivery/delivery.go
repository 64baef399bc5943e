// Package delivery defines the Deliverer seam and holds the deliverers:
// Maildir and LMTP (local mailboxes) and SMTP (send connectors: smart hosts
// or MX).
//
// Contract, for every Deliverer:
//   - Deliver makes one attempt for a group of recipients of one message that
//     share one NextHop, and returns exactly one Result per recipient, in the
//     order given. It never returns fewer: a failure that hits the whole
//     attempt (connection refused, timeout) is reported on every recipient.
//   - A Result is final for that attempt: Delivered (the next hop took
//     responsibility, or the file is durably in the Maildir), Deferred (a
//     temporary failure: 4xx, network error; try again later) or Failed (a
//     permanent failure: 5xx; do not retry).
//   - Deliver honours ctx: when it is cancelled the attempt is abandoned and
//     the recipients not yet settled are Deferred.
//   - Delivery is idempotent per Recipient.Key where the medium allows it
//     (Maildir: a recipient whose file is already in new/ is Delivered again
//     without a second copy), so a crash between delivery and the queue's
//     state update does not duplicate mail.
//   - Deliverers do not de-duplicate or rewrite addresses: the categorizer has.
package delivery

import (
	"context"
	"io"
	"log/slog"
	"strconv"

	"hubd/hub"
	"hubd/policy"
)

// Kind names a deliverer.
type Kind string

const (
	KindMaildir Kind = "maildir"
	KindSMTP    Kind = "smtp"
	KindLMTP    Kind = "lmtp"
)

// NextHop is where a group of recipients goes. Two recipients with equal
// NextHop values are delivered in one attempt (one SMTP transaction).
type NextHop struct {
	Kind      Kind
	Connector string // send connector name (smtp), "" for maildir
	// SMTP: the smart hosts ("host:port" or "[ip]:port"), tried in order; when
	// empty and Domain is set, the MX hosts of Domain are used (dns_routing).
	// LMTP: the server, "unix:/path" or "host:port".
	SmartHosts string // comma-joined, so NextHop stays comparable
	Domain     string // recipient domain, for MX routing; "" when smart hosts are used
	TLS        policy.SendTLS
	FQDN       string // EHLO name
	// OrgHeaders (SMTP) keeps the hub-internal header fields (X-Hubd-*) in
	// the message sent: the send connector's send_org_headers. Without it
	// they are removed on the way out (the header firewall). Maildir and
	// LMTP always keep them.
	OrgHeaders bool
	// SMTP: the send connector's login to its smart hosts (RFC 4954) and
	// the client certificate presented in TLS handshakes. They are part of
	// the value, so that a connection or a delivery queue is never shared
	// between two identities (a reload that changes a password makes a new
	// next hop).
	Auth       SMTPAuth
	ClientCert string // PEM certificate file; "" for none
	ClientKey  string // its PEM key file
	CAFile     string // PEM certificates verifying the smart hosts; "" → the system's roots
}

// SMTPAuth is a comparable form of policy.SendAuth. The zero value (no
// Username) means no AUTH.
type SMTPAuth struct {
	Username      string
	Password      policy.Secret // never printed (policy.Secret)
	Mechanisms    string        // upper-case, comma-joined in preference order: "PLAIN,LOGIN"
	AllowInsecure bool          // credentials may go over a connection without TLS
}

// String renders the next hop for logs and the routing table.
func (h NextHop) String() string {
	switch {
	case h.Kind == KindMaildir:
		return "maildir"
	case h.Kind == KindLMTP:
		return "lmtp:" + h.SmartHosts
	case h.SmartHosts != "":
		return "smtp:" + h.Connector + "[" + h.SmartHosts + "]"
	default:
		return "smtp:" + h.Connector + "[mx:" + h.Domain + "]"
	}
}

// Message is the message being delivered.
type Message struct {
	ID       hub.QueueID
	Envelope *hub.Envelope // read-only
	Size     int64
	// Open returns the message body (CRLF line endings, as queued). It may be
	// called more than once (e.g. once per smart host tried); each reader
	// starts at the beginning. The caller closes it.
	Open func() (io.ReadCloser, error)
	// Plain: the body was seen whole as it was queued and is 7-bit with
	// no line over 998 octets (mime7bit.PlainReader), so it goes out
	// unchanged to any server; false when not known (e.g. after a restart).
	Plain bool
	// OpenUnsigned is set when the hub signed the message
	// (hub/transport/dkim.go): it opens the content without the hub's
	// DKIM-Signature fields, for a next hop that needs the body converted
	// (no 8BITMIME, a line over 998 octets), which no signature survives
	// (RFC 6376 §5.3). nil: the hub did not sign it.
	OpenUnsigned func() (io.ReadCloser, error)
}

// Recipient is one recipient in a delivery attempt.
type Recipient struct {
	Address string // the address to deliver to (after alias resolution)
	Key     string // stable across attempts, restarts and re-expansion: "<queue id>.<hash of the address>"
	Maildir string // KindMaildir: the mailbox's Maildir directory
	DSN     hub.Recipient
}

// Status is the outcome of one attempt for one recipient.
type Status int

const (
	Deferred Status = iota
	Delivered
	Failed
)

func (s Status) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Failed:
		return "failed"
	default:
		return "deferred"
	}
}

// Result is one recipient's outcome with the reply that decided it, e.g.
// Code 250, Enhanced "2.0.0", Text "ok: queued as X" from the remote, or
// 451 4.4.1 "connection refused" for a local decision.
type Result struct {
	Status    Status
	Code      int
	Enhanced  string
	Text      string
	RemoteMTA string // host that gave the reply, "" for local

	// Connection is set when the attempt failed before any host took part
	// in a transaction: no host could be reached or resolved, none greeted,
	// or none offered the TLS the hop requires. It says nothing about this
	// message: the transport puts the whole next hop in Retry (Exchange's
	// queue status) instead of counting it against each message alone.
	Connection bool

	// RemoteDSN is set when the next hop took the message with the DSN
	// extension (RFC 3461): it got the recipient's NOTIFY and reports
	// success itself, so the hub owes no "relayed" DSN.
	RemoteDSN bool
}

// String renders the reply for logs: "250 2.0.0 ok".
func (r Result) String() string {
	return strconv.Itoa(r.Code) + " " + r.Enhanced + " " + r.Text
}

// LogLevel is the level a deliverer logs an outcome at: Debug for a
// delivery (the transport logs it at Info), Warn for anything else.
func (s Status) LogLevel() slog.Level {
	if s == Delivered {
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

// Deliverer makes delivery attempts. See the package comment for the contract.
type Deliverer interface {
	Deliver(ctx context.Context, hop NextHop, msg Message, rcpts []Recipient) []Result
}
