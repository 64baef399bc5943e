package main

import (
	"context"
)

// cmdRoutes is `hubctl routes [ADDRESS...]`: the routing table of the
// configuration in force and where each address goes, as `hubd routes`
// prints it (both are hub/routing's report).
func cmdRoutes(e *env, args []string) int {
	fs := newFlags(e, "routes")
	size := fs.String("size", "", `message size to route for, e.g. "30MB"`)
	addrs, err := parseInterspersed(fs, args)
	if err != nil {
		return 64
	}
	rep, err := e.client.Routes(context.Background(), addrs, *size)
	if err != nil {
		return apiFailed(e, err)
	}
	if e.json {
		return printJSON(e, rep)
	}
	rep.WriteText(e.stdout)
	return 0
}
