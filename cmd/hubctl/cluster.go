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

	"hubd/internal/admin"
)

// cmdCluster: cluster status — the queue cluster as the hub asked sees it
// (GET /v1/cluster).
const clusterUsage = "cluster status [--json]"

func cmdCluster(e *env, args []string) int {
	if len(args) == 0 || args[0] != "status" {
		if len(args) > 0 {
			return usageError(e, fmt.Sprintf("cluster: unknown subcommand %q", args[0]), clusterUsage)
		}
		return usageError(e, "cluster: want status", clusterUsage)
	}
	rest, err := parseInterspersed(newFlags(e, "cluster status"), args[1:])
	if err != nil {
		return exitUsage
	}
	if len(rest) > 0 {
		return usageError(e, fmt.Sprintf("cluster status: unexpected argument %q", rest[0]), clusterUsage)
	}
	st, err := e.client.Cluster(context.Background())
	if err != nil {
		return apiFailed(e, err)
	}
	if e.json {
		return printJSON(e, st)
	}
	printCluster(e.stdout, st)
	return exitOK
}

// printCluster prints the status: who this hub is, the quorum, a row per
// node (its hub's heartbeat and its NATS server's place in the meta
// group), and a row per replica of each stream.
func printCluster(w io.Writer, st admin.ClusterStatus) {
	if st.Engine != admin.EngineJetStream {
		fmt.Fprintf(w, "queue engine: %s\n", st.Engine)
		if st.Note != "" {
			fmt.Fprintln(w, st.Note)
		}
		return
	}
	where := st.Mode + " NATS server " + st.Server
	if st.Cluster != "" {
		where += ", cluster " + st.Cluster
	}
	if !st.Connected {
		where += ", NOT CONNECTED"
	}
	fmt.Fprintf(w, "queue engine: jetstream, node %s (%s)\n", st.Node, where)
	quorum := "NO"
	if st.Quorum {
		quorum = "yes"
	}
	leader := st.MetaLeader
	if leader == "" {
		leader = "none"
	}
	if st.Mode == "external" {
		answered := "answered"
		if !st.Quorum {
			answered = "did not answer"
		}
		fmt.Fprintf(w, "quorum:       %s (the cluster's meta leader %s)\n", quorum, answered)
	} else {
		fmt.Fprintf(w, "quorum:       %s: meta leader %s, %d servers, %d needed", quorum, leader, st.ClusterSize, st.QuorumNeeded)
		if st.PeersFrom != "" {
			fmt.Fprintf(w, " (as %s sees them)", st.PeersFrom)
		}
		fmt.Fprintln(w)
	}
	hubs := strings.Join(st.Hubs, ", ")
	if st.HubsError != "" {
		hubs = "unknown: " + st.HubsError
	} else if hubs == "" {
		hubs = "none"
	}
	fmt.Fprintf(w, "live hubs:    %s\n", hubs)

	// Nodes: the meta group's servers and the live hubs (one and the same
	// with embedded servers, which are named after their hubs).
	var names []string
	peers := map[string]admin.ClusterPeer{}
	for _, p := range st.Peers {
		peers[p.Name] = p
		names = append(names, p.Name)
	}
	names = append(names, st.Hubs...)
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) > 0 {
		fmt.Fprintln(w)
		tw := newTable(w)
		fmt.Fprintln(tw, "NODE\tHUB\tNATS\tLAG\tLAST HEARD")
		for _, n := range names {
			hub := "-"
			if slices.Contains(st.Hubs, n) {
				hub = "live"
			}
			nats, lag, seen := "-", "", ""
			if p, ok := peers[n]; ok {
				nats, lag, seen = peerCells(p)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n, hub, nats, lag, seen)
		}
		tw.Flush()
	}

	if len(st.Streams) > 0 {
		fmt.Fprintln(w)
		tw := newTable(w)
		fmt.Fprintln(tw, "STREAM\tREPLICAS\tMESSAGES\tQUORUM\tREPLICA\tROLE\tLAG\tLAST HEARD")
		for _, s := range st.Streams {
			q := "NO"
			if s.Quorum {
				q = "yes"
			}
			head := fmt.Sprintf("%s\t%d\t%d\t%s", s.Name, s.Replicas, s.Messages, q)
			blank := "\t\t\t"
			if len(s.Peers) == 0 {
				fmt.Fprintf(tw, "%s\t-\t\t\t\n", head)
			}
			for i, p := range s.Peers {
				role, lag, seen := peerCells(p)
				if i > 0 {
					head = blank
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", head, p.Name, role, lag, seen)
			}
		}
		tw.Flush()
		for _, s := range st.Streams {
			if s.Error != "" {
				fmt.Fprintf(w, "stream %s: %s\n", s.Name, s.Error)
			}
		}
	}
	for _, e := range st.Errors {
		fmt.Fprintf(w, "not known: %s\n", e)
	}
}

// peerCells are a Raft peer's role (leader, current, behind or offline),
// lag and when it was last heard from.
func peerCells(p admin.ClusterPeer) (role, lag, seen string) {
	switch {
	case p.Leader:
		role = "leader"
	case p.Offline:
		role = "offline"
	case p.Current:
		role = "current"
	default:
		role = "behind"
	}
	if p.Lag > 0 {
		lag = strconv.FormatUint(p.Lag, 10)
	}
	if p.ActiveNS > 0 {
		seen = compact(p.ActiveNS) + " ago"
		if p.ActiveNS < time.Second {
			seen = "now"
		}
	}
	return role, lag, seen
}

// table is a tabwriter for w whose Flush drops the spaces an empty last
// cell is padded with.
type table struct {
	*tabwriter.Writer
	w   io.Writer
	buf strings.Builder
}

func newTable(w io.Writer) *table {
	t := &table{w: w}
	t.Writer = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', 0)
	return t
}

func (t *table) Flush() error {
	if err := t.Writer.Flush(); err != nil {
		return err
	}
	var out strings.Builder
	for l := range strings.Lines(t.buf.String()) {
		out.WriteString(strings.TrimRight(l, " \n"))
		out.WriteString("\n")
	}
	t.buf.Reset()
	_, err := io.WriteString(t.w, out.String())
	return err
}
