package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"hubd/hub/ops"
)

// cmdMessage: message list | show ID | export ID | hold|release|retry ID... |
// delete ID... [--ndr] (Exchange's Get-Message, Suspend-Message,
// Resume-Message, Remove-Message [-WithNDR]; Postfix's postsuper -h/-H/-d
// and postcat).
const messageUsage = "message list [--queue Q] [--from A] [--to A] [--older-than D] [--state S] [--limit N] [--after POS] [-q] | show ID | export ID | hold|release|retry ID... | delete ID... [--ndr] (ID \"-\": ids from stdin)"

func cmdMessage(e *env, args []string) int {
	if len(args) == 0 {
		return usageError(e, "message: want list, show, export, hold, release, retry or delete", messageUsage)
	}
	switch args[0] {
	case "list":
		return messageList(e, args[1:])
	case "show", "export":
		return messageShow(e, args[0], args[1:])
	case "hold", "release", "retry", "delete":
		return messageAction(e, args[0], args[1:])
	default:
		return usageError(e, fmt.Sprintf("message: unknown subcommand %q", args[0]), messageUsage)
	}
}

func messageList(e *env, args []string) int {
	fs := newFlags(e, "message list")
	var f ops.MessageFilter
	var older string
	fs.StringVar(&f.Queue, "queue", "", "only messages with a recipient waiting in this queue")
	fs.StringVar(&f.From, "from", "", `only messages from this envelope sender ("<>" for the null sender)`)
	fs.StringVar(&f.To, "to", "", "only messages to this recipient")
	fs.StringVar(&older, "older-than", "", "only messages that arrived at least this long ago (90s, 30m, 4h, 2d)")
	fs.StringVar(&f.State, "state", "", "only messages in this state: queued, active, deferred, held, poisoned")
	fs.IntVar(&f.Limit, "limit", 0, "at most this many messages (0: the server's default, 1000)")
	fs.StringVar(&f.After, "after", "", "the next page: only messages after this position (a queue id, or the ID@ARRIVED a truncated listing names)")
	quiet := fs.Bool("q", false, "print only the ids, one a line (for: hubctl message hold -)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) != 0 {
		return usageError(e, "message list takes no arguments, only flags", messageUsage)
	}
	if older != "" {
		d, err := parseAge(older)
		if err != nil {
			return usageError(e, err.Error(), messageUsage)
		}
		f.OlderThan = d
	}
	l, err := e.client.Messages(context.Background(), f)
	if err != nil {
		return apiFailed(e, err)
	}
	switch {
	case e.json:
		return printJSON(e, l)
	case *quiet:
		for _, m := range l.Messages {
			fmt.Fprintln(e.stdout, m.ID)
		}
		unanswered(e, l.Unanswered, "their messages are missing from this listing")
		nextPage(e, f, older, *quiet, l)
		return exitOK
	}
	// On a cluster, the hub that owns each message.
	cluster := slices.ContainsFunc(l.Messages, func(m ops.MessageSummary) bool { return m.Node != "" })
	now := time.Now()
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	head := "ID\tSTATE\tAGE\tSIZE\tFROM\tRECIPIENTS\tQUEUE\tLAST ERROR"
	if cluster {
		head = "ID\tNODE\tSTATE\tAGE\tSIZE\tFROM\tRECIPIENTS\tQUEUE\tLAST ERROR"
	}
	fmt.Fprintln(tw, head)
	for _, m := range l.Messages {
		var rcpts []string
		for _, r := range m.Recipients {
			rcpts = append(rcpts, r.Address)
		}
		id := m.ID
		if cluster {
			id += "\t" + m.Node
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", id, m.State, age(now, m.Arrived), m.Size,
			sender(m.From), summarise(rcpts), strings.Join(m.Queues, ","), clip(m.LastError, 50))
	}
	tw.Flush()
	unanswered(e, l.Unanswered, "their messages are missing from this listing")
	nextPage(e, f, older, *quiet, l)
	return exitOK
}

// nextPage tells, on stderr, how to list the next page of a truncated
// listing: the same command, after its last message.
func nextPage(e *env, f ops.MessageFilter, older string, quiet bool, l ops.MessageList) {
	if !l.Truncated {
		return
	}
	args := []string{"hubctl", "message", "list"}
	for _, fl := range []struct{ name, value string }{{"--queue", f.Queue}, {"--from", f.From}, {"--to", f.To},
		{"--older-than", older}, {"--state", f.State}} {
		if fl.value != "" {
			args = append(args, fl.name, shellQuote(fl.value))
		}
	}
	if f.Limit > 0 {
		args = append(args, "--limit", strconv.Itoa(f.Limit))
	}
	if quiet {
		args = append(args, "-q")
	}
	args = append(args, "--after", shellQuote(l.Next))
	fmt.Fprintf(e.stderr, "hubctl: listing truncated at %d messages; the next page: %s\n", len(l.Messages), strings.Join(args, " "))
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%_+=:,./-", r))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// parseAge is a Go duration, or a whole number of days ("2d").
func parseAge(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days >= 0 {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("bad --older-than %q: want a duration such as 90s, 30m, 4h or 2d", s)
	}
	return d, nil
}

func sender(from string) string {
	if from == "" {
		return "<>"
	}
	return from
}

// summarise is the first address and how many more.
func summarise(addrs []string) string {
	switch len(addrs) {
	case 0:
		return ""
	case 1:
		return addrs[0]
	default:
		return fmt.Sprintf("%s (+%d)", addrs[0], len(addrs)-1)
	}
}

func messageShow(e *env, verb string, args []string) int {
	pos, err := parseInterspersed(newFlags(e, "message "+verb), args)
	if err != nil {
		return exitUsage
	}
	if len(pos) != 1 {
		return usageError(e, "message "+verb+" takes one message id", messageUsage)
	}
	ctx := context.Background()
	if verb == "export" {
		rc, err := e.client.OpenMessage(ctx, pos[0])
		if err != nil {
			return apiFailed(e, err)
		}
		defer rc.Close()
		if _, err := io.Copy(e.stdout, rc); err != nil {
			fmt.Fprintf(e.stderr, "hubctl: export of %s cut short: %v\n", pos[0], err)
			return exitFailed
		}
		return exitOK
	}
	d, err := e.client.Message(ctx, pos[0])
	if err != nil {
		return apiFailed(e, err)
	}
	if e.json {
		return printJSON(e, d)
	}
	printDetail(e.stdout, d, time.Now())
	return exitOK
}

func printDetail(w io.Writer, d ops.MessageDetail, now time.Time) {
	env := d.Envelope
	tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	line("Queue ID", d.ID)
	line("Node", d.Node)
	line("State", d.State)
	line("Arrived", d.Arrived.Format(time.RFC3339)+" ("+age(now, d.Arrived)+" ago)")
	line("Size", strconv.FormatInt(d.Size, 10))
	line("From", sender(env.From))
	line("Envelope to", strings.Join(env.Recipients, ", "))
	line("Message-ID", d.MessageID)
	line("Connector", env.Connector)
	line("Client", strings.TrimSpace(env.ClientAddr+" "+env.ClientHelo))
	line("Auth user", env.AuthUser)
	line("Body", env.Body)
	line("Trace ID", d.TraceID)
	if d.Crashes > 0 {
		line("Crashes", strconv.Itoa(d.Crashes))
	}
	line("Next retry", until(now, d.NextRetry))
	tw.Flush()
	fmt.Fprintln(w, "\nHeaders:")
	for _, h := range d.Headers {
		fmt.Fprintf(w, "  %s: %s\n", h.Name, clip(h.Value, 200))
	}
	fmt.Fprintln(w, "\nRecipients:")
	for _, r := range d.Recipients {
		fmt.Fprintf(w, "  %s  %s", r.Address, r.Status)
		if r.Queue != "" {
			fmt.Fprintf(w, "  queue %s", r.Queue)
		}
		if !r.NextAttempt.IsZero() {
			fmt.Fprintf(w, "  next attempt %s", until(now, r.NextAttempt))
		}
		if r.ResolvedFrom != "" {
			fmt.Fprintf(w, "  (from %s)", r.ResolvedFrom)
		}
		fmt.Fprintln(w)
		for _, a := range r.Attempts {
			fmt.Fprintf(w, "    %s  %-7s %s", a.Time.Format(time.RFC3339), a.Event, a.Reply)
			if a.RemoteMTA != "" {
				fmt.Fprintf(w, "  [%s]", a.RemoteMTA)
			}
			fmt.Fprintln(w)
		}
	}
}

func messageAction(e *env, verb string, args []string) int {
	fs := newFlags(e, "message "+verb)
	ndr := false
	if verb == "delete" {
		fs.BoolVar(&ndr, "ndr", false, "send the sender a DSN (non-delivery report) for every pending recipient")
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return exitUsage
	}
	ids, err := readIDs(pos, e.stdin)
	if err != nil {
		fmt.Fprintf(e.stderr, "hubctl: reading ids from stdin: %v\n", err)
		return exitFailed
	}
	if len(ids) == 0 {
		return usageError(e, "message "+verb+" takes one or more message ids (\"-\": read them from stdin)", messageUsage)
	}
	results, err := e.client.MessageAction(context.Background(), verb, ids, ndr)
	if err != nil {
		return apiFailed(e, err)
	}
	code := exitOK
	if e.json {
		printJSON(e, results)
	}
	for _, r := range results {
		switch {
		case !r.OK:
			fmt.Fprintf(e.stderr, "hubctl: %s: %s\n", r.ID, r.Error)
			code = exitFailed
		case !e.json:
			fmt.Fprintf(e.stdout, "%s: %s\n", r.ID, r.Message)
		}
	}
	return code
}
