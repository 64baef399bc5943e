// Package ops is the operator's view of the hub's queue: what hubctl, mailq
// and the admin API show and do. It is a seam like hub.Submitter: the
// transport implements Queue today, and a later queue engine (a
// log-structured spool, a shared JetStream queue) implements the same
// interface, so the admin API and its clients stay as they are.
//
// The types are the admin API's JSON (docs/admin-api.md): field names are
// lower_snake_case, times RFC 3339 UTC, durations whole seconds, empty
// fields left out.
//
// # Names
//
// A queue is named as the transport names its next hop
// ("smtp:internet[mx:example.net]", "maildir", "lmtp:[127.0.0.1]:24"), plus
// three queues of their own: "submission" (messages not yet categorized),
// "unreachable" (recipients with no route) and "poison" (messages parked
// after crashes). A message is named by its queue id.
//
// # What actions promise
//
// Every action on a message takes effect in the queue's durable state
// before it returns (Hold and Delete survive a restart); actions on queues
// (Suspend, Resume) are runtime overrides that are never persisted
// (DESIGN.md invariant 5) and are shown as such. An action on a message
// being delivered right now waits for that attempt's outcome to be settled
// or applies to what remains: it never interrupts a transaction midway.
package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Queue is what an operator can see and do with the hub's queue.
type Queue interface {
	// Queues lists every queue with work, in Retry, or suspended, then
	// "submission", "unreachable" and "poison" (always present).
	Queues(ctx context.Context) ([]QueueInfo, error)
	// RetryQueue makes every deferred item of the named queue due now
	// (Exchange Retry-Queue); with resubmit its messages are routed again
	// from the categorizer (Retry-Queue -Resubmit), e.g. after a routing
	// change. It returns the number of messages affected.
	RetryQueue(ctx context.Context, name string, resubmit bool) (int, error)
	// SuspendQueue / ResumeQueue: a runtime override (not persisted).
	SuspendQueue(ctx context.Context, name string) error
	ResumeQueue(ctx context.Context, name string) error

	// Messages lists the messages matching f, oldest first (see Paging),
	// at most f.Limit of them (0: DefaultLimit), after f.After; Truncated
	// says more matched, and Next is where the next page starts. Its cost
	// follows the page, not the queue, when the filter matches often.
	Messages(ctx context.Context, f MessageFilter) (MessageList, error)
	// Message returns one message with its envelope, headers and every
	// recipient's state. ErrNotFound when the id is not queued.
	Message(ctx context.Context, id string) (MessageDetail, error)
	// OpenMessage returns the message as queued (RFC 5322, CRLF).
	OpenMessage(ctx context.Context, id string) (io.ReadCloser, error)

	// Hold parks a message: no attempt is made until Release (persisted,
	// as Postfix's hold queue and Exchange's Suspend-Message).
	Hold(ctx context.Context, id string) error
	// Release ends a hold, or moves a poisoned message back into the queue
	// with its crash counts cleared; its pending recipients are due now.
	Release(ctx context.Context, id string) error
	// Retry makes a message's deferred recipients due now.
	Retry(ctx context.Context, id string) error
	// Delete removes a message from the queue. With ndr every pending
	// recipient fails with 5.3.0 "deleted by an operator" and the sender
	// gets a DSN (Exchange Remove-Message -WithNDR); without it the
	// message goes silently. Both are tracked.
	Delete(ctx context.Context, id string, ndr bool) error
}

// # Paging
//
// A listing is in the order messages arrived, then by queue id, an order
// in which a message keeps its place for as long as it is queued. A page
// ends at its limit; the next one starts after the last message listed
// (MessageList.Next, given back as MessageFilter.After), so that paging
// through a queue that changes meanwhile never lists a message twice and
// never leaves out one that stays queued throughout. A message that
// arrives while a client pages may or may not be listed; one that leaves
// is not listed after it left.
//
// A position is written "ID@ARRIVED": the queue id and the arrival
// (RFC 3339 with nanoseconds, UTC) of a message, exactly as a listing
// shows them (MessageSummary.ID and Arrived), so that it names a place in
// the order even after that message has left. A bare queue id is also a
// position while that message is queued.

// ErrNotFound: no queue or message by that name.
var ErrNotFound = errors.New("not found")

// ErrConflict: the action does not apply to the message or queue in its
// present state (releasing a message that is neither held nor poisoned,
// retrying a held one, retrying the poison queue).
var ErrConflict = errors.New("not possible now")

// DefaultLimit bounds a message listing when the filter sets none.
const DefaultLimit = 1000

// QueueInfo is one queue (Exchange Get-Queue).
type QueueInfo struct {
	Name       string    `json:"name"`
	Kind       string    `json:"kind"`               // "smtp", "maildir", "lmtp", "submission", "unreachable", "poison"
	State      string    `json:"state"`              // "Active", "Ready", "Retry", "Suspended"
	Override   string    `json:"override,omitempty"` // "suspended (runtime override)" while suspended by an operator
	Messages   int       `json:"messages"`           // messages with work in this queue
	Recipients int       `json:"recipients"`         // recipients waiting in it
	Active     int       `json:"active"`             // deliveries running
	Oldest     time.Time `json:"oldest,omitzero"`    // arrival of its oldest message
	NextRetry  time.Time `json:"next_retry,omitzero"`
	LastError  string    `json:"last_error,omitempty"`
	// Unanswered, on a cluster, names the hubs that did not answer in
	// time: their share of the queue is missing from the counts
	// (internal/clusterops). A single hub leaves it empty.
	Unanswered []string `json:"unanswered,omitempty"`
}

// Message states, for MessageSummary.State and MessageFilter.State.
const (
	StateQueued   = "queued"   // waiting for its first attempt or for a delivery slot
	StateActive   = "active"   // being categorized or delivered now
	StateDeferred = "deferred" // a temporary failure; waiting for NextAttempt
	StateHeld     = "held"     // held by an operator
	StatePoisoned = "poisoned" // in the poison queue
)

// MessageFilter selects messages; zero fields match all.
type MessageFilter struct {
	Queue     string        `json:"queue,omitempty"`      // a pending recipient in this queue
	From      string        `json:"from,omitempty"`       // envelope sender, case-insensitive; "<>" the null sender
	To        string        `json:"to,omitempty"`         // a recipient (envelope or resolved), case-insensitive
	OlderThan time.Duration `json:"older_than,omitempty"` // arrived at least this long ago
	State     string        `json:"state,omitempty"`      // one of the states above
	Limit     int           `json:"limit,omitempty"`
	After     string        `json:"after,omitempty"` // a position (see Paging): only messages after it
}

// MessageList is a page of messages.
type MessageList struct {
	Messages  []MessageSummary `json:"messages"`
	Truncated bool             `json:"truncated,omitempty"`
	// Next, when Truncated, is the position of the last message listed:
	// the After of the next page.
	Next string `json:"next,omitempty"`
	// Unanswered, on a cluster, names the hubs that did not answer in
	// time: their messages are missing from the page (and from the pages
	// before the one they answer again). A single hub leaves it empty.
	Unanswered []string `json:"unanswered,omitempty"`
}

// Position is a place in the listing order (see Paging). Arrived zero:
// the place of the message ID while it is queued.
type Position struct {
	ID      string
	Arrived time.Time
}

// PositionOf is the position of a listed message.
func PositionOf(m MessageSummary) Position { return Position{ID: m.ID, Arrived: m.Arrived} }

// String is the position as MessageFilter.After takes it.
func (p Position) String() string {
	if p.Arrived.IsZero() {
		return p.ID
	}
	return p.ID + "@" + p.Arrived.UTC().Format(time.RFC3339Nano)
}

// ParsePosition reads "ID@ARRIVED" or a bare "ID".
func ParsePosition(s string) (Position, error) {
	id, at, timed := strings.Cut(s, "@")
	p := Position{ID: id}
	if id == "" || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return p, fmt.Errorf("bad position %q: want a queue id, or ID@ARRIVED as a listing's next", s)
	}
	if timed {
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			return p, fmt.Errorf("bad position %q: the arrival is not an RFC 3339 time (ID@2026-12-05T17:15:14.123456789Z)", s)
		}
		p.Arrived = t
	}
	return p, nil
}

// MessageSummary is one message in a listing (and one entry of mailq).
type MessageSummary struct {
	ID         string             `json:"id"`
	State      string             `json:"state"`
	Arrived    time.Time          `json:"arrived"`
	Size       int64              `json:"size"`
	From       string             `json:"from"` // "" is the null sender
	MessageID  string             `json:"message_id,omitempty"`
	Queues     []string           `json:"queues,omitempty"` // where its pending recipients wait
	Recipients []RecipientSummary `json:"recipients"`       // pending ones only
	NextRetry  time.Time          `json:"next_retry,omitzero"`
	LastError  string             `json:"last_error,omitempty"` // the latest reply among its pending recipients
	// Node, on a cluster, is the hub that owns the message (its transport
	// works on it: internal/clusterops); empty on a single hub. A
	// MessageDetail has it too, through its MessageSummary.
	Node string `json:"node,omitempty"`
}

// RecipientSummary is one recipient in a listing.
type RecipientSummary struct {
	Address   string `json:"address"`
	Status    string `json:"status"` // "queued", "deferred", "delivered", "failed"
	Queue     string `json:"queue,omitempty"`
	LastReply string `json:"last_reply,omitempty"` // "451 4.4.1 connection refused"
}

// MessageDetail is everything about one message.
type MessageDetail struct {
	MessageSummary
	Envelope   Envelope          `json:"envelope"`
	Headers    []Header          `json:"headers"` // in order, as queued (unfolded)
	Recipients []RecipientDetail `json:"recipient_details"`
	Crashes    int               `json:"crashes,omitempty"`
	TraceID    string            `json:"trace_id,omitempty"` // from the stored traceparent
}

// Envelope is the SMTP envelope and how the message arrived.
type Envelope struct {
	From       string    `json:"from"`
	Recipients []string  `json:"recipients"` // as given in RCPT TO
	Connector  string    `json:"connector"`
	ClientAddr string    `json:"client_addr,omitempty"`
	ClientHelo string    `json:"client_helo,omitempty"`
	AuthUser   string    `json:"auth_user,omitempty"`
	ReceivedAt time.Time `json:"received_at"`
	SMTPUTF8   bool      `json:"smtputf8,omitempty"`
	Body       string    `json:"body,omitempty"` // "7BIT", "8BITMIME"
	RequireTLS bool      `json:"requiretls,omitempty"`
	DSNRet     string    `json:"dsn_ret,omitempty"`
	DSNEnvID   string    `json:"dsn_envid,omitempty"`
}

// Header is one header field.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// RecipientDetail is one recipient with its history.
type RecipientDetail struct {
	Address      string    `json:"address"`
	ResolvedFrom string    `json:"resolved_from,omitempty"`
	Status       string    `json:"status"`
	Queue        string    `json:"queue,omitempty"`
	NextAttempt  time.Time `json:"next_attempt,omitzero"`
	Attempts     []Attempt `json:"attempts"`
}

// Attempt is one delivery attempt of one recipient, from the tracking log
// (empty when the tracking log is off or has rotated it away).
type Attempt struct {
	Time      time.Time `json:"time"`
	Event     string    `json:"event"` // DEFER, SEND, DELIVER, FAIL
	NextHop   string    `json:"next_hop,omitempty"`
	RemoteMTA string    `json:"remote_mta,omitempty"`
	Reply     string    `json:"reply,omitempty"`
}
