// Package queue is the hub's durable storage: every accepted message, its
// envelope and the state of each of its recipients, kept so that a crash at
// any instant loses nothing that was acknowledged (DESIGN.md invariants 1–3).
//
// The Store interface is the seam: the transport codes against it, and a
// replicated backend replaces the disk spool without touching the
// transport or the categorizer (hub/queue/jsqueue: several hubs on NATS
// JetStream, docs/cluster.md). DiskStore is the
// embedded default; LogStore (log.go) is the log-structured spool of
// docs/queue.md ("Design outline"), which keeps the same contract with one
// fdatasync per group commit and imports a disk spool it is opened on.
//
// # Contract (every Store)
//
//   - Put reads body to EOF and returns nil only when the message (body,
//     envelope and initial recipient state) is on stable storage. It assigns
//     Message.ID (never reused) unless the caller reserved one with
//     hub.NewQueueID, and Message.Size. On error nothing is queued: a later
//     Load does not return the message, also after a crash. Put reads
//     m's Envelope and State only after body's EOF, so that a reader may
//     still set them at its end (the transport's hub.HeaderSource).
//   - Update replaces the mutable State of a message and returns nil only
//     when the new state is on stable storage. A Load after a crash returns
//     either the state of the last Update that returned nil, or a newer one
//     whose Update was in flight or failed — never an older one, never a
//     torn one. Callers serialise Updates of one message (the store does not
//     merge states).
//   - Remove forgets a message whose recipients are all settled, and returns
//     nil only when that is durable: a later Load does not return it. On
//     error the message is still queued with its last state, so the caller
//     can persist the final state instead. The transport relies on this to
//     skip the Update of a message's final state when every recipient
//     settles (the common case: one fsync per message instead of two).
//     Concurrent Removes share fsyncs like Puts do.
//   - Open returns the body exactly as it was given to Put. It may be called
//     any number of times, concurrently.
//   - Get returns one queued message without its body: ID, Envelope,
//     Arrived, Size and the State last made durable by Put or Update —
//     what Load would return for it, apart from the deaths Load records
//     from active marks (which Load then persists, so a Get after Load
//     agrees with it). The Message is a fresh copy the caller may keep
//     and change. A message never queued or removed is an error wrapping
//     ErrNotFound; a record proven corrupt, one wrapping ErrCorrupt (Get
//     quarantines nothing: that is Load's job). Get may run concurrently
//     with itself and every other call; for a message whose Update or
//     Remove is in flight it returns the old state or the new one (for a
//     Remove: ErrNotFound), never a torn one. It lets a caller drop the
//     Message of a message that only waits and read it back when a pass
//     or delivery starts. LogStore builds its index in Load: before the
//     first Load, Get knows only the messages put since OpenLog, and fails
//     for others without ErrNotFound.
//   - Scan calls fn once with every queued message, in an order the
//     store documents, and keeps none of them: the caller keeps what it
//     needs, so a start-up need not hold the whole queue's Messages at
//     once. Otherwise it is Load: the same messages with the same states,
//     deaths recorded and persisted, corrupt records quarantined, other
//     errors failing it before anything changes. An error fn returns ends
//     the scan, and Scan returns it; the messages not handed out yet are
//     still queued, untouched. Each Message is the caller's.
//   - Load returns every queued message, oldest first. A record proven
//     corrupt (bad framing or checksum) is moved aside (quarantined) and
//     logged, so that one damaged record cannot keep the hub from starting.
//     Any other error reading the spool (EACCES, EMFILE, EIO, ...) fails
//     Load with the file and the errno named, before anything in the spool
//     is changed: a disk or permission problem must not quarantine healthy
//     mail.
//   - MarkActive records, before a delivery attempt or a categorizer run,
//     that processing of a message is starting, and how (Mark);
//     ClearActive, that it ended. A message still marked when the process
//     dies is returned by the next Load with the death recorded (and
//     persisted) and with its pending recipients not due before the
//     Mark's NotBefore (the crash delay: a crash loop never becomes a retry
//     storm). Every such death increments Interrupted; a death under a Mark
//     with Isolated set also counts one crash against the message (Crashes
//     and Deaths). Load records each death once, even when a Load before it
//     was itself interrupted. The mark survives a process crash; it need
//     not survive a power loss (it is not fsynced: a lost mark costs one
//     unrecorded death, while an fsync would cost every attempt).
//   - Concurrent Put and Update calls share the cost of making things durable
//     (group commit, invariant 2): throughput is not capped by fsyncs/s.
//
// What a death means is the transport's rule (hub/transport: crash
// attribution); the store only keeps the counts.
//
// # The disk spool
//
// Layout under the spool directory:
//
//	tmp/               files being written; anything here at Open is a torn write and is deleted
//	queue/<id>.msg     one message: body, then a checksummed record (envelope + initial state)
//	queue/<id>.state   the latest recipient state, when it differs from the initial one
//	queue/<id>.active  the mark of a pass or delivery running now (MarkActive)
//	quarantine/        records Load found corrupt, kept for the operator
//
// A .msg file is the body followed by a trailer: the JSON record, its length
// (uint32, big-endian), its CRC-32C and an 8-byte magic. Putting the record
// after the body lets Put stream the body once without knowing its size in
// advance; the record holds the body's CRC-32C, checked as Open's reader
// reaches EOF. A .state file is the same trailer with an empty body.
//
// An .active mark is "<NotBefore, Unix ns, 20 digits> <incarnation, 16 hex>
// <i|->", written over the old value without truncation: a process killed
// mid-write leaves the old mark or the new one. The incarnation is random
// per OpenDisk; Load stores the dead process's incarnation in
// State.LastDeath along with the counts, and only then deletes the marks.
//
// Why this design: one file per message keeps Put to a single rename that
// makes the message visible with its envelope atomically, and Remove to a
// rename out of queue/; no journal needs compacting. Group commit works in two halves.
// Each writer fsyncs its own temp file; concurrent fsyncs of different files
// are merged by the filesystem into one journal commit (ext4's jbd2 and
// xfs's log both batch them), so they overlap rather than queue. The part
// that does serialise — making the directory entry durable — is done by a
// single committer goroutine: it takes every file that is ready, renames
// each into queue/, fsyncs queue/ once for the whole batch and then wakes all
// the waiters. A crash before the directory fsync leaves either nothing or a
// complete, fsynced file under its final name (rename is atomic); a crash
// while writing leaves a file in tmp/ that the next Open deletes.
//
// A directory fsync that fails fails every change of its batch, and each
// change is undone where it can be before the waiters hear of it, then
// queue/ is fsynced again: a Put's message is unlinked (its client got a
// 4xx and will send it again: keeping it would deliver it twice), and a
// Remove's files, which were renamed into tmp/ rather than unlinked, are
// renamed back (the caller then persists the final state). An Update
// cannot be undone (the rename replaced the old state) and need not be:
// the transport keeps the new state in memory, so the newer file on disk
// agrees with it. Removed files are unlinked from tmp/ once queue/ is
// durable; any left by a crash are deleted by the next Open.
//
// Start-up recovery of active marks is one group commit however many
// marks there are: every new state is written to its own temp file, the
// temp files are fsynced concurrently, and all are renamed in one commit
// with one fsync of queue/.
package queue

import (
	"context"
	"errors"
	"io"
	"time"

	"hubd/hub"
)

// Store is durable storage for queued messages. See the package comment for
// the contract every implementation keeps.
type Store interface {
	Put(ctx context.Context, m *Message, body io.Reader) error
	Update(ctx context.Context, id hub.QueueID, st State) error
	Remove(id hub.QueueID) error
	Open(id hub.QueueID) (io.ReadCloser, error)
	Get(ctx context.Context, id hub.QueueID) (*Message, error)
	Load(ctx context.Context) ([]*Message, error)
	Scan(ctx context.Context, fn func(*Message) error) error
	MarkActive(id hub.QueueID, mark Mark) error
	ClearActive(id hub.QueueID)
	Close() error
}

// ErrNotFound is wrapped by the error of Get for a message the store does
// not hold: never queued, or removed.
var ErrNotFound = errors.New("queue: no such message")

// Mark is what MarkActive records about a pass or delivery that starts.
type Mark struct {
	// NotBefore: if the process dies before ClearActive, the message's
	// pending recipients are not due before this time (the crash delay).
	NotBefore time.Time
	// Isolated: the message is a suspect processed in isolation (no other
	// suspect in flight), so a death now is counted against it.
	Isolated bool
}

// Message is one queued message as the store keeps it.
type Message struct {
	ID       hub.QueueID  // hub.NewQueueID, reserved by the caller or assigned by Put; never reused
	Envelope hub.Envelope // as submitted; never changed after Put
	Arrived  time.Time    // when Put was called; expiry counts from here
	Size     int64        // body size in bytes, set by Put

	State // the part Update replaces
}

// State is the mutable part of a message.
type State struct {
	// Expanded is true once the categorizer has resolved the envelope's
	// recipients (aliases expanded, de-duplicated) into Recipients. Before
	// that, Recipients mirrors Envelope.Recipients one to one. After it, the
	// list is fixed: a recipient's index in it is part of its delivery key
	// ("<queue id>.<index>"), which must not change across attempts.
	Expanded bool `json:"expanded,omitempty"`

	Recipients []RecipientState `json:"recipients"`

	// Crashes counts the crashes attributed to this message: panics in the
	// categorizer or a deliverer, and process deaths while it was processed
	// in isolation (Mark.Isolated). At Hub.PoisonThreshold the message is
	// Poisoned.
	Crashes int `json:"crashes,omitempty"`
	// Deaths is the part of Crashes that were process deaths. The transport
	// takes them back (and resets Interrupted) when the message is later
	// processed cleanly; panics stay counted.
	Deaths int `json:"deaths,omitempty"`
	// Interrupted counts the process deaths this message was in flight at
	// (marked active) since it was last processed cleanly, attributed or
	// not.
	Interrupted int `json:"interrupted,omitempty"`
	// LastDeath names the process (its store's incarnation) whose death
	// was recorded last, so that a mark found again after an interrupted
	// Load is not counted twice.
	LastDeath string `json:"last_death,omitempty"`
	// Poisoned messages are parked in the poison queue: never attempted or
	// expired automatically, only released by an operator (Exchange's
	// poison message queue).
	Poisoned bool `json:"poisoned,omitempty"`

	// Prepend is header fields (each ending in CRLF) sent above the stored
	// content on every delivery and in every DSN that returns it: decided
	// after the content was read (hub.HeaderSource) or after
	// categorization (a DKIM signature). Stored, so that every attempt
	// sends the same bytes.
	Prepend string `json:"prepend,omitempty"`
	// Held messages were parked by an operator (hubctl message hold):
	// never attempted, expired or notified about until released, and kept
	// across restarts like Postfix's hold queue. A delivery already running
	// when the hold came finishes and its outcome is settled normally.
	Held bool `json:"held,omitempty"`
}

// Status is where one recipient stands.
type Status string

const (
	Queued    Status = "queued"    // not yet attempted
	Deferred  Status = "deferred"  // attempted, temporary failure; NextAttempt says when again
	Delivered Status = "delivered" // settled: the next hop took it; never attempted again
	Failed    Status = "failed"    // settled: permanent failure or expired; a DSN is owed
)

// Settled reports whether no further attempt will be made for s.
func (s Status) Settled() bool { return s == Delivered || s == Failed }

// RecipientState is one recipient of a queued message.
type RecipientState struct {
	Address      string        `json:"address"`                 // where to deliver (after alias resolution)
	ResolvedFrom string        `json:"resolved_from,omitempty"` // the envelope recipient it came from, when different
	DSN          hub.Recipient `json:"dsn"`                     // the envelope recipient with its RFC 3461 parameters (ORCPT, NOTIFY)

	Status      Status    `json:"status"`
	Attempts    int       `json:"attempts,omitempty"`
	LastReply   Reply     `json:"last_reply,omitzero"`
	NextAttempt time.Time `json:"next_attempt,omitzero"` // Deferred: not before this time
	NextHop     string    `json:"next_hop,omitempty"`    // the last next hop tried, for logs and hubctl

	// Sender, when set, replaces the envelope sender for this recipient (a
	// distribution list's owner); Lists are the lists expanded on its path,
	// each added as a trace header to the copy it receives.
	Sender string   `json:"sender,omitempty"`
	Lists  []string `json:"lists,omitempty"`

	// Notified: the DSN this recipient's final state owes (failure, or
	// success when NOTIFY=SUCCESS) has been queued, or is not wanted.
	// DelayNotified: the one delay DSN has been queued, or is not wanted.
	Notified      bool `json:"notified,omitempty"`
	DelayNotified bool `json:"delay_notified,omitempty"`
}

// Reply is the SMTP reply that decided a recipient's last attempt.
type Reply struct {
	Code      int    `json:"code,omitempty"`
	Enhanced  string `json:"enhanced,omitempty"`
	Text      string `json:"text,omitempty"`
	RemoteMTA string `json:"remote_mta,omitempty"`
}

// CommitInfo describes the group commit that made a Put durable, for the
// caller's telemetry (the hub.enqueue span's hub.queue.batch_size).
type CommitInfo struct {
	// BatchSize is how many changes (Puts, Updates, Removes) shared the
	// directory fsync of this Put's batch; 1 when it was alone.
	BatchSize int
}

type commitObserverKey struct{}

// WithCommitObserver returns a context under which a Store's Put calls
// observe with its CommitInfo once the message is durable. A Store that
// has no group commit to describe may never call it.
func WithCommitObserver(ctx context.Context, observe func(CommitInfo)) context.Context {
	return context.WithValue(ctx, commitObserverKey{}, observe)
}

func reportCommit(ctx context.Context, info CommitInfo) {
	if observe, ok := ctx.Value(commitObserverKey{}).(func(CommitInfo)); ok {
		observe(info)
	}
}

var (
	_ Store = (*DiskStore)(nil)
	_ Store = (*LogStore)(nil)
)
