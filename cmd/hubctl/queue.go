package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// cmdQueue: queue list | retry Q [--resubmit] | suspend Q | resume Q
// (Exchange's Get-Queue, Retry-Queue [-Resubmit], Suspend-Queue,
// Resume-Queue).
const queueUsage = "queue list | retry Q [--resubmit] | suspend Q | resume Q [--json]"

func cmdQueue(e *env, args []string) int {
	if len(args) == 0 {
		return usageError(e, "queue: want list, retry, suspend or resume", queueUsage)
	}
	fs := newFlags(e, "queue "+args[0])
	resubmit := false
	if args[0] == "retry" {
		fs.BoolVar(&resubmit, "resubmit", false, "route the queue's messages again with the configuration in force")
	}
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return exitUsage
	}
	ctx := context.Background()
	switch args[0] {
	case "list":
		if len(pos) != 0 {
			return usageError(e, "queue list takes no arguments", queueUsage)
		}
		qs, err := e.client.Queues(ctx)
		if err != nil {
			return apiFailed(e, err)
		}
		if e.json {
			return printJSON(e, qs)
		}
		now := time.Now()
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "QUEUE\tSTATE\tMSGS\tRCPTS\tACTIVE\tOLDEST\tNEXT RETRY\tLAST ERROR")
		for _, q := range qs {
			state := q.State
			if q.Override != "" {
				state = q.Override
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", q.Name, state, q.Messages, q.Recipients, q.Active,
				age(now, q.Oldest), until(now, q.NextRetry), clip(q.LastError, 60))
		}
		tw.Flush()
		if len(qs) > 0 {
			unanswered(e, qs[0].Unanswered, "their share is missing from the counts")
		}
		return exitOK
	case "retry", "suspend", "resume":
		if len(pos) != 1 {
			return usageError(e, "queue "+args[0]+" takes one queue name (see hubctl queue list)", queueUsage)
		}
		res, err := e.client.QueueAction(ctx, pos[0], args[0], resubmit)
		if err != nil {
			return apiFailed(e, err)
		}
		if e.json {
			return printJSON(e, res)
		}
		fmt.Fprintf(e.stdout, "%s: %s\n", res.ID, res.Message)
		return exitOK
	default:
		return usageError(e, fmt.Sprintf("queue: unknown subcommand %q", args[0]), queueUsage)
	}
}

// age is how long ago t was, "" for the zero time.
func age(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return compact(now.Sub(t))
}

// until is how long until t ("now" when due), "" for the zero time.
func until(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	if d := t.Sub(now); d > 0 {
		return "in " + compact(d)
	}
	return "now"
}

// compact renders d as "45s", "3m12s", "2h5m" or "3d4h".
func compact(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < 0:
		d = 0
		fallthrough
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

// clip shortens s to n runes for a table cell.
func clip(s string, n int) string {
	r := []rune(strings.ReplaceAll(s, "\n", " "))
	if len(r) <= n {
		return string(r)
	}
	return string(r[:n-1]) + "…"
}

// readIDs expands "-" in ids into the lines of r (one id a line; blank
// lines skipped).
func readIDs(ids []string, r io.Reader) ([]string, error) {
	var out []string
	for _, id := range ids {
		if id != "-" {
			out = append(out, id)
			continue
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				out = append(out, line)
			}
		}
	}
	return out, nil
}

// unanswered warns on stderr that a cluster's hubs did not answer.
func unanswered(e *env, hubs []string, what string) {
	if len(hubs) > 0 {
		fmt.Fprintf(e.stderr, "hubctl: warning: hubs %s did not answer in time: %s\n", strings.Join(hubs, ", "), what)
	}
}
