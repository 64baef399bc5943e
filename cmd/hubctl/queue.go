package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"hubd/internal/admin"
)

// Exit codes (sysexits.h where one fits).
const (
	exitOK          = 0
	exitFailed      = 1  // an action failed (each failure is named on stderr)
	exitUsage       = 64 // EX_USAGE
	exitUnavailable = 69 // EX_UNAVAILABLE: hubd cannot be reached
)

// cmdQueue: queue list | retry Q [--resubmit] | suspend Q | resume Q
// (Exchange's Get-Queue, Retry-Queue [-Resubmit], Suspend-Queue,
// Resume-Queue).
func cmdQueue(e *env, args []string) int {
	if len(args) == 0 {
		return usageError(e, "queue: want list, retry, suspend or resume")
	}
	fs := e.flags("queue " + args[0])
	resubmit := false
	if args[0] == "retry" {
		fs.BoolVar(&resubmit, "resubmit", false, "route the queue's messages again with the configuration in force")
	}
	pos, ok := parseInterleaved(fs, args[1:])
	if !ok {
		return exitUsage
	}
	ctx := context.Background()
	switch args[0] {
	case "list":
		if len(pos) != 0 {
			return usageError(e, "queue list takes no arguments")
		}
		qs, err := e.client.Queues(ctx)
		if err != nil {
			return apiFailure(e, err)
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
		return exitOK
	case "retry", "suspend", "resume":
		if len(pos) != 1 {
			return usageError(e, "queue "+args[0]+" takes one queue name (see hubctl queue list)")
		}
		res, err := e.client.QueueAction(ctx, pos[0], args[0], resubmit)
		if err != nil {
			return apiFailure(e, err)
		}
		if e.json {
			return printJSON(e, res)
		}
		fmt.Fprintf(e.stdout, "%s: %s\n", res.ID, res.Message)
		return exitOK
	default:
		return usageError(e, fmt.Sprintf("queue: unknown subcommand %q", args[0]))
	}
}

// flags is a FlagSet for a subcommand that also accepts --json there.
func (e *env) flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("hubctl "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.BoolVar(&e.json, "json", e.json, "print JSON instead of tables")
	return fs
}

// parseInterleaved parses flags wherever they are among the positional
// arguments ("message hold ID --json" as well as "message --json hold ID").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, bool) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, false
		}
		if fs.NArg() == 0 {
			return pos, true
		}
		rest := fs.Args()
		if rest[0] == "--" {
			return append(pos, rest[1:]...), true
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

func usageError(e *env, msg string) int {
	fmt.Fprintf(e.stderr, "hubctl: %s\n", msg)
	usage(e.stderr)
	return exitUsage
}

// apiFailure reports err and returns its exit code: 69 when hubd cannot be
// reached (the message names the socket), 1 otherwise.
func apiFailure(e *env, err error) int {
	var un *admin.UnavailableError
	if errors.As(err, &un) {
		fmt.Fprintf(e.stderr, "hubctl: %v (is hubd running? use -socket or HUBD_ADMIN_SOCKET)\n", err)
		return exitUnavailable
	}
	fmt.Fprintf(e.stderr, "hubctl: %v\n", err)
	return exitFailed
}

func printJSON(e *env, v any) int {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(e.stderr, "hubctl: %v\n", err)
		return exitFailed
	}
	return exitOK
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
