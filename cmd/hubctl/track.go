package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"hubd/internal/admin"
)

const trackUsage = "track [--message-id ID] [--queue-id ID] [--sender A] [--recipient A] [--since 2h] [--limit N] [--json]"

// cmdTrack is `hubctl track`: the message tracking log, oldest first
// (Exchange's Get-MessageTrackingLog).
func cmdTrack(e *env, args []string) int {
	fs := newFlags(e, "track")
	var q admin.TrackQuery
	fs.StringVar(&q.MessageID, "message-id", "", "Message-ID, with or without <>")
	fs.StringVar(&q.QueueID, "queue-id", "", "queue id")
	fs.StringVar(&q.Sender, "sender", "", "envelope sender")
	fs.StringVar(&q.Recipient, "recipient", "", "recipient (also finds what a list or alias became)")
	fs.StringVar(&q.Since, "since", "", "how far back (2h, 3d) or an RFC 3339 time")
	fs.IntVar(&q.Limit, "limit", 0, "at most this many events (default 1000)")
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return 64
	}
	if len(rest) > 0 {
		return usageError(e, fmt.Sprintf("track: unexpected argument %q", rest[0]), trackUsage)
	}
	if q.Since != "" {
		if _, err := admin.ParseSince(q.Since, time.Now()); err != nil {
			return usageError(e, "track: --"+err.Error(), trackUsage)
		}
	}
	events, err := e.client.Track(context.Background(), q)
	if err != nil {
		return apiFailed(e, err)
	}
	if e.json {
		return printJSON(e, events)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	// The trace id comes last: the key from a line of the log to its trace.
	fmt.Fprintln(tw, "TIME\tEVENT\tQUEUE ID\tCONNECTOR\tSENDER\tRECIPIENT\tNEXT HOP\tREPLY\tTRACE ID")
	for _, ev := range events {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ev.Time.UTC().Format(time.RFC3339), ev.Event, ev.QueueID,
			dash(ev.Connector), dash(ev.Sender), dash(ev.Recipient), dash(ev.NextHop), dash(ev.Reply), dash(ev.TraceID))
	}
	tw.Flush()
	if len(events) == 0 {
		fmt.Fprintln(e.stdout, "(no events match)")
	}
	return 0
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
