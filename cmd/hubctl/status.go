package main

import (
	"cmp"
	"context"
	"fmt"
	"time"

	"hubd/internal/admin"
)

// cmdStatus is `hubctl status`: what runs, since when, on which
// configuration, the queue engine (on a cluster: whether it has its
// quorum), and the overrides in force.
func cmdStatus(e *env, args []string) int {
	rest, err := parseInterspersed(newFlags(e, "status"), args)
	if err != nil {
		return 64
	}
	if len(rest) > 0 {
		return usageError(e, fmt.Sprintf("status: unexpected argument %q", rest[0]), "status [--json]")
	}
	st, err := e.client.Status(context.Background())
	if err != nil {
		return apiFailed(e, err)
	}
	if e.json {
		return printJSON(e, st)
	}
	w := e.stdout
	fmt.Fprintf(w, "hubd %s, pid %d, host %s\n", st.Version, st.PID, st.Hostname)
	fmt.Fprintf(w, "started:       %s (up %s)\n", st.Started.Format(time.RFC3339), time.Duration(st.Uptime)*time.Second)
	fmt.Fprintf(w, "config:        %s\n", st.ConfigPath)
	fmt.Fprintf(w, "config hash:   %s (loaded %s)\n", st.ConfigHash, st.ConfigLoaded.Format(time.RFC3339))
	fmt.Fprintf(w, "back pressure: %s\n", st.BackPressure)
	fmt.Fprintf(w, "queue:         %d messages, %d recipients pending, %d poisoned, %d held\n",
		st.Messages, st.Recipients, st.Poisoned, st.Held)
	fmt.Fprintf(w, "queue engine:  %s\n", queueEngine(st.Queue))
	if len(st.Overrides) == 0 {
		fmt.Fprintln(w, "overrides:     none (everything as the config says)")
	}
	for i, o := range st.Overrides {
		label := "overrides:    "
		if i > 0 {
			label = "              "
		}
		fmt.Fprintf(w, "%s %s\n", label, o)
	}
	return 0
}

// queueEngine is the queue engine's line of status: local, or on a
// cluster this hub's node and whether the cluster has the quorum to take
// its writes, and if not why.
func queueEngine(q admin.QueueStatus) string {
	switch {
	case q.Engine != admin.EngineJetStream:
		return cmp.Or(q.Engine, admin.EngineLocal) + " (this hub's spool)"
	case q.Quorum == nil:
		return "jetstream, node " + q.Node
	}
	since := ""
	if !q.Since.IsZero() {
		since = " since " + q.Since.Format(time.RFC3339)
	}
	if *q.Quorum {
		return "jetstream, node " + q.Node + ": quorum" + since + " (hubctl cluster status for the nodes)"
	}
	return "jetstream, node " + q.Node + ": NO QUORUM" + since + ": " + q.Error
}
