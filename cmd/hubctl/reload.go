package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"hubd/internal/admin"
)

// cmdReload is `hubctl reload`: hubd loads its configuration again. It
// prints what changed, or, if the configuration was refused, every
// diagnostic (on stderr) and exits 1; the running configuration then
// stays in force.
func cmdReload(e *env, args []string) int {
	rest, err := parseInterspersed(newFlags(e, "reload"), args)
	if err != nil {
		return 64
	}
	if len(rest) > 0 {
		return usageError(e, fmt.Sprintf("reload: unexpected argument %q", rest[0]), "reload [--json]")
	}
	res, err := e.client.Reload(context.Background())
	if err != nil {
		return apiFailed(e, err)
	}
	if e.json {
		if printJSON(e, res) != 0 || !res.Applied {
			return 1
		}
		return 0
	}
	if !res.Applied {
		fmt.Fprintln(e.stderr, "hubctl: reload refused; the running configuration stays in force:")
		for _, d := range res.Diagnostics {
			fmt.Fprintf(e.stderr, "  %s\n", d)
		}
		return 1
	}
	printReload(e.stdout, res)
	return 0
}

func printReload(w io.Writer, res admin.ReloadResult) {
	fmt.Fprintf(w, "reload applied; config %s\n", res.ConfigHash)
	line := func(what string, items []string) {
		if len(items) > 0 {
			fmt.Fprintf(w, "  %-28s %s\n", what+":", strings.Join(items, ", "))
		}
	}
	line("connectors started", res.Started)
	line("connectors stopped", res.Stopped)
	line("connectors changed", res.Changed)
	line("runtime overrides ended", res.OverridesEnded)
	line("listeners opened", res.Opened)
	line("listeners closed", res.Closed)
	for _, s := range res.NeedsRestart {
		fmt.Fprintf(w, "  %-28s %s\n", "needs a restart:", s)
	}
	for _, d := range res.Diagnostics {
		fmt.Fprintf(w, "  %s\n", d)
	}
	if len(res.Started)+len(res.Stopped)+len(res.Changed)+len(res.Opened)+len(res.Closed)+len(res.NeedsRestart) == 0 {
		fmt.Fprintln(w, "  no connector or listener changed")
	}
}
