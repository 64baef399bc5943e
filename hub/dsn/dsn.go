// Package dsn builds the delivery status notifications (RFC 3464) the hub
// sends back to a message's sender: failures, delays, and — when the sender
// asked for them with NOTIFY=SUCCESS — deliveries, relays and expansions.
//
// Build turns a Report (the original envelope, the message as queued, and
// what happened to some of its recipients) into a new envelope and message
// ready for hub.Submit. It does no I/O besides reading Report.Original and
// keeps no state; Wanted says whether a recipient's NOTIFY parameter asks
// for a given kind of notice at all.
//
// # What Build promises
//
//   - The DSN has the null reverse-path (RFC 5321 §4.5.5) and goes to the
//     original sender only. Build refuses a report whose original sender is
//     the null sender (ErrNullSender): a DSN is never sent to <> (RFC 3461
//     §6.2, RFC 5321 §6.1), so bounces cannot loop.
//   - The message is multipart/report; report-type=delivery-status (RFC
//     6522) with exactly three parts: a text/plain explanation for people,
//     the machine-readable message/delivery-status (RFC 3464 §2), and the
//     original message or its header section (RFC 3462 §2, RFC 3461 §4.3).
//   - It carries Auto-Submitted: auto-replied (RFC 3834 §5) and, when the
//     original had one, In-Reply-To/References naming the original
//     Message-ID, so that mail clients thread it and responders keep quiet.
//   - Every header and delivery-status field is at most 998 octets per line
//     (RFC 5322 §2.1.1), folded at white space; values taken from the
//     outside (remote replies, subjects, addresses) cannot inject fields:
//     control characters are replaced and non-ASCII is encoded where the
//     context requires ASCII.
//   - The original is embedded verbatim, never re-encoded. When it or the
//     DSN holds 8-bit octets the envelope asks for 8BITMIME; when the
//     sender's address is non-ASCII it asks for SMTPUTF8 (RFC 6531).
//
// # Internationalized DSNs (RFC 6533)
//
// When any address in the report is non-ASCII the machine-readable part is
// message/global-delivery-status, whose fields may carry UTF-8 (addresses
// of type "utf-8", RFC 6533 §3). When the original was received with
// SMTPUTF8, or its header section holds 8-bit octets, the returned content
// is message/global or message/global-headers (RFC 6532 §3.7, RFC 6533
// §3.5) instead of message/rfc822 or text/rfc822-headers.
//
// # How much of the original comes back
//
// RFC 3461 §4.3 lets the sender choose with RET; this package decides as
// follows:
//
//   - A delay, delivery, relay or expansion notice returns the header
//     section only: the sender still has the message, and repeated delay
//     notices must stay small (RFC 3461 §4.3 allows this).
//   - A failure returns the header section only when RET=HDRS was given.
//     Otherwise (RET=FULL, or no RET, which leaves the choice to us) it
//     returns the whole message when it is at most MaxReturnSize octets
//     (DefaultMaxReturnSize, 10 MiB, when zero) and the header section
//     otherwise, saying so in the text part. Like Postfix's default, a
//     sender who did not ask gets the whole message back: it is often the
//     only copy. The limit applies to RET=FULL too, because a DSN larger
//     than what the sender's server accepts would itself be lost.
//   - A report mixing failures with other actions is treated as a failure.
//
// Original-Envelope-Id (RFC 3464 §2.2.1) and Original-Recipient (§2.3.1)
// are written from the values the receive connector stored: go-smtp has
// already decoded their xtext (RFC 3461 §4.2, §4.4), so they are printed
// as received, with any character that is not allowed in a field
// re-encoded (xtext "+HH" for rfc822 addresses, "\x{HH}" for utf-8 ones).
package dsn

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/textproto"
	"slices"
	"strings"
	"time"

	"hubd/hub"
)

// Action is what happened to one recipient (RFC 3464 §2.3.3).
type Action string

// The actions of RFC 3464 §2.3.3.
const (
	Failed    Action = "failed"    // permanent failure, or gave up (expiry: status 4.4.7)
	Delayed   Action = "delayed"   // still trying
	Delivered Action = "delivered" // delivered to the recipient's mailbox
	Relayed   Action = "relayed"   // handed to a next hop that will not send DSNs
	Expanded  Action = "expanded"  // delivered to a list or alias that forwarded it
)

// DefaultMaxReturnSize is the largest original a failure DSN returns whole
// when Report.MaxReturnSize is zero.
const DefaultMaxReturnSize = 10 << 20

// ErrNullSender is returned by Build for a message whose sender is the null
// reverse-path: no DSN is ever sent to <> (RFC 3461 §6.2, RFC 5321 §6.1).
var ErrNullSender = errors.New("dsn: original sender is <>: no DSN is sent to the null sender")

// Recipient is one recipient's line in a report.
type Recipient struct {
	// FinalRecipient is the address attempted (after alias expansion).
	FinalRecipient string
	// OriginalRecipient is the RFC 3461 ORCPT as stored by the receive
	// connector ("rfc822;addr", xtext already decoded), or "". When "" and
	// FinalRecipient differs from EnvelopeRecipient, the report names
	// EnvelopeRecipient as the original recipient, so that the sender can
	// tell which of their recipients an expanded address came from.
	OriginalRecipient string
	// EnvelopeRecipient is the RCPT TO address the recipient came from.
	EnvelopeRecipient string

	Action Action
	// Status is the RFC 3463 status code, e.g. "5.1.1". When empty or
	// malformed, a generic one for Action is used (5.0.0, 4.0.0, 2.0.0).
	Status string
	// DiagnosticCode is the reply that decided the outcome, e.g. "550 5.1.1
	// User unknown"; written as "smtp; ..." when it begins with an SMTP
	// reply code (RFC 3464 §2.3.6).
	DiagnosticCode string
	// RemoteMTA is the host name or IP address of the next hop that gave
	// DiagnosticCode, or "" when the decision was local.
	RemoteMTA      string
	LastAttempt    time.Time
	WillRetryUntil time.Time // delayed only
}

// Report is everything Build needs for one DSN.
type Report struct {
	ReportingMTA string        // this hub's host name (Reporting-MTA, From: MAILER-DAEMON@...)
	Envelope     *hub.Envelope // the original envelope; the DSN goes to Envelope.From
	QueueID      string        // the original's queue ID, named in the DSN and its Message-ID
	Recipients   []Recipient   // usually all of one Action; mixed is allowed
	Original     io.Reader     // the queued message (CRLF); read to at most MaxReturnSize+1 octets
	// MaxReturnSize bounds the original returned whole in a failure DSN
	// (see the package comment); 0 means DefaultMaxReturnSize, negative
	// means never return more than the header section.
	MaxReturnSize int64
	Now           time.Time // the DSN's Date; zero means time.Now()
}

// Wanted reports whether a recipient whose RCPT carried NOTIFY=notify asks
// for a notice of action a (RFC 3461 §4.1). NEVER asks for nothing; no
// NOTIFY asks for failures and delays (the default RFC 3461 §4.1 leaves to
// the MTA, and the one most MTAs use); otherwise SUCCESS asks for
// delivered, relayed and expanded notices (all three are success
// notices in RFC 3461's terms), FAILURE for
// failed and DELAY for delayed. Keywords are matched case-insensitively.
func Wanted(notify []string, a Action) bool {
	if len(notify) == 0 {
		return a == Failed || a == Delayed
	}
	want := ""
	switch a {
	case Failed:
		want = "FAILURE"
	case Delayed:
		want = "DELAY"
	case Delivered, Relayed, Expanded:
		want = "SUCCESS"
	default:
		return false
	}
	asked := false
	for _, n := range notify {
		n = strings.TrimSpace(n)
		if strings.EqualFold(n, "NEVER") {
			// RFC 3461 §4.1: NEVER may not be combined with anything.
			return false
		}
		if strings.EqualFold(n, want) {
			asked = true
		}
	}
	return asked
}

// Build renders the DSN for r: the envelope to submit it with (null sender,
// one recipient: the original sender) and the message, CRLF throughout.
// It returns ErrNullSender when the original sender is <>, and another
// error when the report is incomplete (no envelope, no recipients, no
// reporting MTA, an unknown action) or Original fails to read.
func Build(r Report) (hub.Envelope, []byte, error) {
	if err := check(r); err != nil {
		return hub.Envelope{}, nil, err
	}
	now := r.Now
	if now.IsZero() {
		now = time.Now()
	}
	orig, err := readOriginal(r.Original, returnLimit(r))
	if err != nil {
		return hub.Envelope{}, nil, fmt.Errorf("dsn: reading the original: %w", err)
	}
	kind := reportKind(r.Recipients)
	ret := chooseReturn(r, kind, orig)
	global := slices.ContainsFunc(r.Recipients, hasNonASCIIAddress)

	var msg bytes.Buffer
	mw := multipart.NewWriter(&msg) // random boundary: cannot occur in the original by chance
	msgID := messageID(r.QueueID, r.ReportingMTA, now)
	writeTopHeaders(&msg, r, kind, orig, msgID, mw.Boundary(), now)

	if err := writeTextPart(mw, r, kind, ret); err != nil {
		return hub.Envelope{}, nil, err
	}
	if err := writeStatusPart(mw, r, global); err != nil {
		return hub.Envelope{}, nil, err
	}
	if err := writeOriginalPart(mw, orig, ret); err != nil {
		return hub.Envelope{}, nil, err
	}
	if err := mw.Close(); err != nil {
		return hub.Envelope{}, nil, err
	}

	body := msg.Bytes()
	env := hub.Envelope{
		From: "", // RFC 5321 §4.5.5: DSNs use the null reverse-path
		// RFC 3461 §6.2: no DSN is issued for a DSN; NOTIFY=NEVER tells
		// every later hop too, should one ignore the null sender.
		Recipients:  []hub.Recipient{{Address: r.Envelope.From, Notify: []string{"NEVER"}}},
		SMTPUTF8:    !isASCII(r.Envelope.From),
		Body:        "7BIT",
		ReceivedAt:  now,
		Connector:   "hub",
		MessageID:   msgID,
		TraceParent: r.Envelope.TraceParent,
	}
	if has8bit(body) {
		env.Body = "8BITMIME"
	}
	return env, body, nil
}

// check validates what Build cannot do without.
func check(r Report) error {
	switch {
	case r.Envelope == nil:
		return errors.New("dsn: report without the original envelope")
	case r.Envelope.From == "":
		return ErrNullSender
	case !safeHeaderText(r.Envelope.From) || strings.ContainsAny(r.Envelope.From, "<>"):
		return fmt.Errorf("dsn: original sender %q is not a usable address", r.Envelope.From)
	case len(r.Recipients) == 0:
		return errors.New("dsn: report without recipients")
	case !validHostName(r.ReportingMTA):
		return fmt.Errorf("dsn: reporting MTA %q is not a host name", r.ReportingMTA)
	}
	for _, rc := range r.Recipients {
		switch rc.Action {
		case Failed, Delayed, Delivered, Relayed, Expanded:
		default:
			return fmt.Errorf("dsn: recipient %q: unknown action %q", rc.FinalRecipient, rc.Action)
		}
		if rc.FinalRecipient == "" {
			return errors.New("dsn: recipient without a final recipient address")
		}
	}
	return nil
}

// reportKind is the action the DSN as a whole is about: the most serious
// one present, so that a mixed report is titled by its failures.
func reportKind(rs []Recipient) Action {
	order := []Action{Failed, Delayed, Delivered, Relayed, Expanded}
	for _, a := range order {
		if slices.ContainsFunc(rs, func(r Recipient) bool { return r.Action == a }) {
			return a
		}
	}
	return Failed
}

// subjectPrefix names the kind of notice in the Subject.
func subjectPrefix(kind Action) string {
	switch kind {
	case Delayed:
		return "Delivery delayed"
	case Delivered:
		return "Delivered"
	case Relayed:
		return "Relayed"
	case Expanded:
		return "Expanded"
	}
	return "Undeliverable"
}

// writeTopHeaders writes the DSN's header section and the blank line.
func writeTopHeaders(w *bytes.Buffer, r Report, kind Action, orig original, msgID, boundary string, now time.Time) {
	subject := subjectPrefix(kind)
	if s := orig.field("Subject"); s != "" {
		subject += ": " + s
	}
	rawField(w, "From", "Mail Delivery System <MAILER-DAEMON@"+r.ReportingMTA+">")
	rawField(w, "To", "<"+r.Envelope.From+">")
	field(w, "Subject", encodeWords(subject))
	field(w, "Date", now.Format(time.RFC1123Z))
	rawField(w, "Message-ID", msgID)
	if id := originalMessageID(r.Envelope, orig); id != "" {
		rawField(w, "In-Reply-To", id)
		rawField(w, "References", id)
	}
	field(w, "Auto-Submitted", "auto-replied") // RFC 3834 §5
	field(w, "MIME-Version", "1.0")
	field(w, "Content-Type", "multipart/report; report-type=delivery-status; boundary=\""+boundary+"\"")
	w.WriteString("\r\n")
}

// originalMessageID is the original's Message-ID for In-Reply-To, or "" when
// there is none that can be repeated safely (one msg-id, printable ASCII).
func originalMessageID(env *hub.Envelope, orig original) string {
	id := orig.field("Message-ID")
	if id == "" {
		id = env.MessageID
	}
	id = strings.TrimSpace(id)
	if len(id) < 3 || len(id) > 250 || id[0] != '<' || id[len(id)-1] != '>' ||
		strings.Count(id, "<") != 1 || strings.Count(id, ">") != 1 {
		return ""
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] >= 0x7f {
			return ""
		}
	}
	return id
}

// messageID makes the DSN's own Message-ID: the original's queue ID (for
// the operator reading logs), the time and randomness for uniqueness.
func messageID(queueID, host string, now time.Time) string {
	var b strings.Builder
	b.WriteString("<dsn.")
	for _, c := range []byte(queueID) {
		if isAtext(c) && c != '.' {
			b.WriteByte(c)
		}
	}
	fmt.Fprintf(&b, ".%d.%s@%s>", now.UnixNano(), strings.ToLower(rand.Text()[:10]), host)
	return b.String()
}

// validHostName accepts what can follow "MAILER-DAEMON@" and "dns;": LDH
// labels and dots, or an address literal in brackets.
func validHostName(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '[' || c == ']' || c == ':') {
			return false
		}
	}
	return true
}

// textprotoHeader builds a part header.
func textprotoHeader(kv ...string) textproto.MIMEHeader {
	h := textproto.MIMEHeader{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}
