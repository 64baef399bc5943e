package sendmail

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"hubd/hub/ops"
	"hubd/internal/admin"
	"hubd/policy"
)

// mailq (also sendmail -bp, hubd mailq) lists the queue through the admin
// API (GET /v1/messages, a page at a time) in the layout of Postfix's mailq, so that scripts
// written for Postfix keep working (showq(8), postqueue -p):
//
//	-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
//	ID[*!]         SIZE Www Mmm dd hh:mm:ss  sender
//	                                               (reason, right-aligned to column 78)
//	                                         recipient
//
//	-- N Kbytes in M Requests.
//
// "*" follows the id of a message being delivered, "!" of a held (or
// poisoned) one; the null sender shows as MAILER-DAEMON; a blank line
// separates messages; an empty queue prints "Mail queue is empty". With
// --json each message is one JSON object per line, as postqueue -j prints
// it: queue_name (active, deferred, hold, incoming), queue_id, arrival_time
// (Unix seconds), message_size, forced_expire, sender, recipients with
// address and delay_reason.

func runMailq(args []string, std IO) error {
	o := &options{}
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "--json" || a == "-j":
			o.json = true
		case a == "-C" && i+1 < len(args):
			i++
			o.config = args[i]
		case strings.HasPrefix(a, "-C") && len(a) > 2:
			o.config = a[2:]
		case a == "-v":
		default:
			return fail(ExUsage, "unknown argument %q (usage: mailq [-C config] [--json])", a)
		}
	}
	return mailq(o, std)
}

// mailqPage is how many messages mailq asks hubd for at a time: it lists
// the whole queue a page after another (GET /v1/messages?after=), never
// holding more than a page, however long the queue.
var mailqPage = ops.DefaultLimit

// mailqPageTimeout bounds each page's request, not the whole listing.
const mailqPageTimeout = 30 * time.Second

func mailq(o *options, std IO) error {
	cfg, err := policy.LoadDropIn(configPath(o.config, std))
	if err != nil {
		return fail(ExConfig, "cannot read the configuration: %v", err)
	}
	client := admin.NewClient(cfg.AdminSocket, "")
	qw := &queueWriter{w: std.Stdout, loc: time.Local}
	f := ops.MessageFilter{Limit: mailqPage}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), mailqPageTimeout)
		list, err := client.Messages(ctx, f)
		cancel()
		if err != nil {
			return fail(ExUnavailable, "cannot list the queue through hubd's admin API at %s: %v (is hubd running?)", cfg.AdminSocket, err)
		}
		if len(list.Unanswered) > 0 && std.Stderr != nil {
			// A cluster's hubs that did not answer: the listing lacks
			// their messages.
			fmt.Fprintf(std.Stderr, "mailq: warning: hubs %s did not answer in time; their messages are not listed\n",
				strings.Join(list.Unanswered, ", "))
		}
		if o.json {
			if err := WriteQueueJSON(std.Stdout, list); err != nil {
				return err
			}
		} else {
			for _, m := range list.Messages {
				qw.add(m)
			}
		}
		if !list.Truncated || list.Next == "" {
			break
		}
		f.After = list.Next
	}
	if !o.json {
		qw.end()
	}
	return nil
}

// emptyAddr stands for the null sender, as Postfix's empty_address_recipient.
const emptyAddr = "MAILER-DAEMON"

// WriteQueue prints list in Postfix's mailq layout, times in loc.
func WriteQueue(w io.Writer, list ops.MessageList, loc *time.Location) {
	qw := &queueWriter{w: w, loc: loc}
	for _, m := range list.Messages {
		qw.add(m)
	}
	qw.end()
}

// queueWriter prints messages in Postfix's mailq layout as they come, a
// page at a time, then the trailer.
type queueWriter struct {
	w     io.Writer
	loc   *time.Location
	n     int
	total int64
}

// Postfix's short-id layout (postqueue's showq_compat): the id with its
// mark in 11 columns, the size in 7, asctime's first 20 characters.
const queueRow = "%-11s %7s %-20s %s\n"

func (q *queueWriter) add(m ops.MessageSummary) {
	w := q.w
	if q.n == 0 {
		fmt.Fprintf(w, queueRow, "-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
	} else {
		fmt.Fprintln(w)
	}
	q.n++
	q.total += m.Size
	from := m.From
	if from == "" {
		from = emptyAddr
	}
	// asctime without the year: "Thu Dec  4 21:20:33".
	fmt.Fprintf(w, "%-11s %7d %-20.20s %s\n", m.ID+stateMark(m.State), m.Size,
		m.Arrived.In(q.loc).Format("Mon Jan _2 15:04:05"), printable(from))
	// A reason line when it changes from the previous recipient's,
	// "(reason unavailable)" after one with a reason, as Postfix.
	reason := ""
	for _, r := range m.Recipients {
		if r.LastReply != reason {
			reason = r.LastReply
			show := reason
			if show == "" {
				show = "reason unavailable"
			}
			fmt.Fprintf(w, "%*s(%s)\n", max(0, 76-len(show)), "", printable(show))
		}
		fmt.Fprintf(w, queueRow, "", "", "", printable(r.Address))
	}
}

// end prints the trailer, or that the queue is empty.
func (q *queueWriter) end() {
	if q.n == 0 {
		fmt.Fprintln(q.w, "Mail queue is empty")
		return
	}
	s := "s"
	if q.n == 1 {
		s = ""
	}
	fmt.Fprintf(q.w, "\n-- %d Kbytes in %d Request%s.\n", q.total/1024, q.n, s)
}

// stateMark is the character after the queue id.
func stateMark(state string) string {
	switch state {
	case ops.StateActive:
		return "*"
	case ops.StateHeld, ops.StatePoisoned:
		return "!"
	}
	return ""
}

// printable replaces control characters, as showq does, so that an address
// or a reply cannot break the layout.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// postqueueJSON is one line of postqueue -j.
type postqueueJSON struct {
	QueueName    string          `json:"queue_name"`
	QueueID      string          `json:"queue_id"`
	ArrivalTime  int64           `json:"arrival_time"`
	MessageSize  int64           `json:"message_size"`
	ForcedExpire bool            `json:"forced_expire"`
	Sender       string          `json:"sender"`
	Recipients   []postqueueRcpt `json:"recipients"`
}

type postqueueRcpt struct {
	Address     string `json:"address"`
	DelayReason string `json:"delay_reason,omitempty"`
}

// WriteQueueJSON prints one JSON object per message, as postqueue -j.
func WriteQueueJSON(w io.Writer, list ops.MessageList) error {
	enc := json.NewEncoder(w)
	for _, m := range list.Messages {
		j := postqueueJSON{QueueName: queueName(m.State), QueueID: m.ID, ArrivalTime: m.Arrived.Unix(),
			MessageSize: m.Size, Sender: m.From, Recipients: []postqueueRcpt{}}
		for _, r := range m.Recipients {
			j.Recipients = append(j.Recipients, postqueueRcpt{Address: r.Address, DelayReason: r.LastReply})
		}
		if err := enc.Encode(j); err != nil {
			return fail(ExTempFail, "writing: %v", err)
		}
	}
	return nil
}

// queueName maps our states to Postfix's queue names: a poisoned message
// is parked as a held one is.
func queueName(state string) string {
	switch state {
	case ops.StateActive:
		return "active"
	case ops.StateDeferred:
		return "deferred"
	case ops.StateHeld, ops.StatePoisoned:
		return "hold"
	}
	return "incoming"
}
