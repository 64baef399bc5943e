// Package tracking is the hub's message tracking log: one JSON line for each
// thing that happens to a message (received, expanded, routed, deferred,
// delivered, failed, bounced, parked), kept in a directory of rotating files
// that an operator — or `hubctl` — searches to answer "where did this mail
// go?". It follows the Exchange 2007 message tracking log (event ids, the
// related-recipient and reference fields, circular deletion by age and by
// directory size) with JSON Lines instead of W3C CSV.
//
// # Format
//
// Each line is one JSON object ending in "\n". Keys are lower_snake_case and
// are the json tags of Event; empty fields are left out. "time" is always
// present, in RFC 3339 UTC with milliseconds ("2026-01-02T15:04:05.123Z").
// Strings are valid UTF-8 (an invalid byte becomes U+FFFD) and control
// characters are escaped, so an address or reply carrying CR LF can never
// split or forge a line.
//
// Subjects are never logged, unlike Exchange's default
// (MessageTrackingLogSubjectLoggingEnabled): a subject is message content,
// and the log is kept for 30 days and read by operators who need envelopes,
// not contents. The files are created mode 0640 in a directory of mode 0750
// because addresses are personal data too.
//
// # Files
//
// Files are named MSGTRKyyyymmdd-n.jsonl: the UTC day the file was started
// and a sequence number n (1, 2, ...) within that day. Ordering is by day and
// then by n as a number, not by the name as a string. A new file is started
// at Open (an existing file is never appended to, so a line torn by a crash
// stays alone at the end of its file), when the UTC day changes, and before a
// write that would push the current file past MaxFileSize. A single line
// larger than MaxFileSize still goes, alone, into a fresh file.
//
// At Open and after every rotation, files whose last event is older than
// MaxAge are deleted, and then the oldest files while the directory's
// tracking files total more than MaxDirectorySize. The current file is never
// deleted; the directory can therefore exceed MaxDirectorySize by up to one
// MaxFileSize between rotations. A file's last event is taken to be the
// earlier of its modification time and the end of the day in its name (a
// file never spans a UTC midnight), so copying logs around, which resets
// modification times, cannot keep them alive forever. Files in the directory
// that do not match the name pattern are ignored.
//
// # Durability and cost
//
// This is a log, not the queue: nothing is fsynced. A crash may lose the
// last lines the kernel had not yet written back; the queue (DESIGN.md
// invariant 1) is what guarantees the mail. Record costs one write(2) of a
// whole line to an O_APPEND file under a mutex, so lines from concurrent
// callers are never interleaved or torn by one another. Errors (disk full,
// directory removed) never fail or hold up mail: they are reported to the
// Logger at most once a minute, with the number of errors suppressed since
// the previous report, and Record carries on.
package tracking

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"hubd/policy"
)

// EventID says what happened. The set is Exchange 2007's core event ids,
// with POISON for Exchange's POISONMESSAGE.
type EventID string

// The events, and the fields each carries besides Time, Event, QueueID,
// MessageID, Sender and Size (which every event about a queued message
// should carry).
const (
	// RECEIVE: a message was accepted and is on stable storage. Source
	// ("SMTP", "DSN", "ADMIN"), Connector (the receive connector),
	// ClientAddr, RemoteMTA (the client's EHLO name); one event per
	// recipient, in Recipient.
	Receive EventID = "RECEIVE"
	// EXPAND: a distribution list was expanded. Recipient is a member,
	// RelatedRecipient the list.
	Expand EventID = "EXPAND"
	// RESOLVE: a recipient was rewritten (alias, canonical address).
	// Recipient is the new address, RelatedRecipient the original.
	Resolve EventID = "RESOLVE"
	// ROUTE: a recipient was given a route. Connector is the send
	// connector, NextHop the smart host or destination domain.
	Route EventID = "ROUTE"
	// DEFER: a delivery attempt failed temporarily. Reply holds the 4xx
	// reply (or the local reason, e.g. "451 4.4.1 connection refused"),
	// NextHop and RemoteMTA where we got that far.
	Defer EventID = "DEFER"
	// DELIVER: delivered to a local mailbox (Maildir, LMTP). Connector is
	// the deliverer, Reply the final status.
	Deliver EventID = "DELIVER"
	// SEND: handed over by SMTP to another server. NextHop, RemoteMTA (the
	// host and address we talked to), Reply (its 250 reply).
	Send EventID = "SEND"
	// FAIL: a recipient failed permanently (5xx, expiry, no route). Reply
	// holds the status that goes into the DSN.
	Fail EventID = "FAIL"
	// DSN: a delivery status notification was generated for this message.
	// Reference is the queue id of the DSN; Recipient the recipient it
	// reports on; Reply its status.
	DSN EventID = "DSN"
	// POISON: the message was parked in, or released from, the poison
	// queue. Reply says why.
	Poison EventID = "POISON"
	// Resubmit: a hub of the cluster took the message over from a hub
	// whose heartbeat stopped (docs/cluster.md); Reference names that hub.
	// Exchange logs shadow redundancy's resubmissions the same way.
	Resubmit EventID = "RESUBMIT"
)

// Event is one line of the tracking log. The json tags are the file format.
type Event struct {
	// Time the event happened: set by Record from the clock when zero.
	// Callers that set it should use a time at most minutes before Record
	// (Search skips files by their day with an hour's slack).
	Time      time.Time `json:"time"`
	Event     EventID   `json:"event,omitempty"`
	QueueID   string    `json:"queue_id,omitempty"`
	MessageID string    `json:"message_id,omitempty"` // the Message-ID header, as it appears
	Source    string    `json:"source,omitempty"`     // "SMTP", "HUB", "DSN", "ADMIN" ...
	// Node is the hub that recorded the event (the queue block's node):
	// set by Record from Options.Node when empty; "" on a single hub.
	Node      string `json:"node,omitempty"`
	Connector string `json:"connector,omitempty"` // the receive or send connector (or deliverer)

	ClientAddr string `json:"client_addr,omitempty"` // the SMTP client's IP:port (RECEIVE)
	// Sender is the reverse-path without angle brackets; "" (left out of
	// the line) for the null sender <>.
	Sender           string `json:"sender,omitempty"`
	Recipient        string `json:"recipient,omitempty"`
	RelatedRecipient string `json:"related_recipient,omitempty"` // the list or address expanded/resolved from, or the ORCPT

	// AuthResults sums up the receipt checks (RECEIVE on a connector
	// with checks): "spf=pass dkim=pass dmarc=none".
	AuthResults string `json:"auth_results,omitempty"`

	NextHop   string `json:"next_hop,omitempty"`
	Reply     string `json:"reply,omitempty"`      // e.g. "550 5.1.1 User unknown"
	RemoteMTA string `json:"remote_mta,omitempty"` // the other server: name and/or address
	Size      int64  `json:"size,omitempty"`       // message size in bytes
	Reference string `json:"reference,omitempty"`  // e.g. the queue id of the DSN for a DSN event
	// TraceID is the OpenTelemetry trace the event belongs to (32 hex
	// digits; "" when not traced): for DELIVER, SEND, DEFER and FAIL after
	// a delivery attempt, the attempt's trace (its CONSUMER span links to
	// the receiving span); for every other event, the receiving trace
	// (the SMTP transaction's, stored with the message).
	TraceID string `json:"trace_id,omitempty"`
}

// Defaults used when an Options field is zero: Exchange's defaults, which
// are also policy.Hub.TrackingLog's.
const (
	DefaultMaxFileSize      = 10 << 20
	DefaultMaxDirectorySize = 1 << 30
	DefaultMaxAge           = 30 * 24 * time.Hour
)

// errorReportInterval bounds how often write errors reach the Logger: a
// full disk must not turn every message into a log line of its own.
const errorReportInterval = time.Minute

// Options configure a Log. Zero limits mean the defaults above; a negative
// limit means no limit.
type Options struct {
	Dir              string // created (with parents) if missing
	MaxFileSize      int64
	MaxDirectorySize int64
	MaxAge           time.Duration
	Clock            func() time.Time // nil: time.Now
	Logger           *slog.Logger     // nil: discard
	// Node names this hub in every event (Event.Node); "" for none.
	Node string
}

// Log is an open tracking log. A nil *Log is valid: Record and Close do
// nothing, so a disabled log needs no checks at call sites.
type Log struct {
	dir             string
	maxFile, maxDir int64
	maxAge          time.Duration
	clock           func() time.Time
	log             *slog.Logger
	bufs            sync.Pool  // *[]byte, one encoded line each
	mu              sync.Mutex // guards the fields below
	f               *os.File   // nil only after Close
	cur             fileName
	size            int64 // bytes written to cur
	torn            bool  // the last write to cur was short: the next line starts with "\n"
	closed          bool
	node            string
	lastReport      time.Time
	suppressed      int // errors not reported since lastReport
}

// Open creates Dir if needed, starts a new file in it and deletes expired
// files. It fails when Dir cannot be created or the first file cannot be
// opened; later errors are only logged.
func Open(o Options) (*Log, error) {
	if o.Dir == "" {
		return nil, errors.New("tracking: no directory")
	}
	l := &Log{
		dir:     o.Dir,
		maxFile: orDefault(o.MaxFileSize, DefaultMaxFileSize),
		maxDir:  orDefault(o.MaxDirectorySize, DefaultMaxDirectorySize),
		maxAge:  time.Duration(orDefault(int64(o.MaxAge), int64(DefaultMaxAge))),
		node:    o.Node,
		clock:   o.Clock,
		log:     o.Logger,
	}
	if l.clock == nil {
		l.clock = time.Now
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(o.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("tracking: %w", err)
	}
	files, err := listFiles(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("tracking: %w", err)
	}
	var newest fileName
	if len(files) > 0 {
		newest = files[len(files)-1].fileName
	}
	now := l.clock()
	f, name, err := createNext(o.Dir, newest, now)
	if err != nil {
		return nil, fmt.Errorf("tracking: %w", err)
	}
	l.f, l.cur = f, name
	l.mu.Lock()
	l.cleanupLocked(now)
	l.mu.Unlock()
	return l, nil
}

// OpenConfig opens the log the hub configuration describes. It returns a
// nil *Log (a valid no-op log) and no error when the log is disabled.
func OpenConfig(c policy.TrackingLog, node string, logger *slog.Logger) (*Log, error) {
	if !c.Enabled {
		return nil, nil
	}
	return Open(Options{
		Dir:              c.Dir,
		MaxFileSize:      c.MaxFileSize,
		MaxDirectorySize: c.MaxDirectorySize,
		MaxAge:           c.MaxAge,
		Logger:           logger,
		Node:             node,
	})
}

func orDefault(v, def int64) int64 {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0 // no limit
	}
	return v
}

// Record appends e to the log. It is safe for concurrent use, never fails
// and never waits for more than one write(2) to the page cache (plus, once
// per rotation, a directory listing and the deletions it calls for).
// Record on a nil or closed Log does nothing.
func (l *Log) Record(e Event) {
	if l == nil {
		return
	}
	now := l.clock()
	if e.Time.IsZero() {
		e.Time = now
	}
	if e.Node == "" {
		e.Node = l.node
	}
	bp, _ := l.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	*bp = appendEvent((*bp)[:0], &e)

	l.mu.Lock()
	if !l.closed {
		l.writeLocked(now, *bp)
	}
	l.mu.Unlock()

	if cap(*bp) <= 64<<10 { // do not pin a huge buffer from one outsized line
		l.bufs.Put(bp)
	}
}

// writeLocked writes one encoded line, rotating first when needed.
func (l *Log) writeLocked(now time.Time, line []byte) {
	switch {
	case l.f == nil:
		l.rotateLocked(now)
	case l.cur.day.Before(utcDay(now)):
		l.rotateLocked(now)
	case l.maxFile > 0 && l.size > 0 && l.size+int64(len(line)) > l.maxFile:
		l.rotateLocked(now)
	}
	if l.f == nil {
		l.reportLocked(now, "dropped an event: no file open", nil)
		return
	}
	if l.torn {
		// Keep the half-written line from swallowing this one.
		line = append([]byte{'\n'}, line...)
	}
	n, err := l.f.Write(line)
	l.size += int64(n)
	// A short write leaves a torn line; a failed one leaves things as they were.
	l.torn = (n > 0 && n < len(line)) || (l.torn && n == 0)
	if err != nil {
		l.reportLocked(now, "write failed", err)
	}
}

// rotateLocked closes the current file and starts the next one, then
// deletes what the limits call for. When the new file cannot be created the
// current one (if any) is kept: an oversized file beats lost events.
func (l *Log) rotateLocked(now time.Time) {
	f, name, err := createNext(l.dir, l.cur, now)
	if err != nil {
		l.reportLocked(now, "cannot start a new file", err)
		return
	}
	if l.f != nil {
		if err := l.f.Close(); err != nil {
			l.reportLocked(now, "close failed", err)
		}
	}
	l.f, l.cur, l.size, l.torn = f, name, 0, false
	l.cleanupLocked(now)
}

// reportLocked logs an error, at most once per errorReportInterval.
func (l *Log) reportLocked(now time.Time, msg string, err error) {
	if !l.lastReport.IsZero() && now.Sub(l.lastReport) < errorReportInterval {
		l.suppressed++
		return
	}
	l.log.Error("tracking log: "+msg, "dir", l.dir, "err", err, "suppressed", l.suppressed)
	l.lastReport, l.suppressed = now, 0
}

// Close closes the current file. Later Records do nothing; Close on a nil
// or closed Log returns nil. There is nothing to flush: every Record has
// already been written.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("tracking: %w", err)
	}
	return nil
}
