package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
)

const connectorUsage = "connector list | stop NAME | start NAME [--json]"

// cmdConnector is `hubctl connector list|stop NAME|start NAME`: the receive
// connectors as they run, and the runtime override that stops one until
// it is started again or hubd reloads or restarts.
func cmdConnector(e *env, args []string) int {
	fs := newFlags(e, "connector")
	rest, err := parseInterspersed(fs, args)
	if err != nil {
		return 64
	}
	if len(rest) == 0 {
		return usageError(e, "connector: a subcommand is needed", connectorUsage)
	}
	ctx := context.Background()
	switch verb := rest[0]; {
	case verb == "list" && len(rest) == 1:
		list, err := e.client.Connectors(ctx)
		if err != nil {
			return apiFailed(e, err)
		}
		if e.json {
			return printJSON(e, list)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tSTATE\tUSAGE\tBINDINGS\tREMOTE RANGES\tSESSIONS\tACCEPTED\tREFUSED")
		for _, c := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", c.Name, c.State, c.Usage,
				strings.Join(c.Bindings, ","), strings.Join(c.RemoteIPRanges, ","), c.Sessions, c.Accepted, c.Refused)
		}
		tw.Flush()
		return 0
	case (verb == "stop" || verb == "start") && len(rest) == 2:
		act := e.client.StopConnector
		if verb == "start" {
			act = e.client.StartConnector
		}
		res, err := act(ctx, rest[1])
		if err != nil {
			return apiFailed(e, err)
		}
		if e.json {
			return printJSON(e, res)
		}
		fmt.Fprintf(e.stdout, "connector %s %s\n", res.ID, res.Message)
		return 0
	default:
		return usageError(e, fmt.Sprintf("connector: bad arguments %q", rest), connectorUsage)
	}
}
