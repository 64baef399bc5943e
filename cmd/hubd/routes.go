package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"hubd/hub/delivery/smtpout"
	"hubd/hub/routing"
	"hubd/internal/resolver"
	"hubd/policy"
)

// cmdRoutes prints the routing table and, for each address given, where a
// message to it would go and why: routing must never be a black box. The
// report is hub/routing's, the same as the admin API's GET /v1/routes.
//
//	hubd routes -config PATH [-size N] [-resolve=false] [address...]
//
// MX hosts are looked up through hub.dns_servers, as the running hub
// looks them up, unless mx is set (a test's fake).
func cmdRoutes(args []string, stdout, stderr io.Writer, mx smtpout.Resolver) int {
	fs := flag.NewFlagSet("hubd routes", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/hubd/hubd.hcl", "configuration file or directory of *.hcl files")
	sizeText := fs.String("size", "0", `message size to route for, e.g. "30MB" (connectors whose max_message_size is smaller are skipped)`)
	resolve := fs.Bool("resolve", true, "look up the MX hosts of remote domains routed by DNS")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	size := int64(0)
	if *sizeText != "0" {
		n, err := policy.ParseSize(*sizeText)
		if err != nil {
			fmt.Fprintf(stderr, "hubd routes: -size: %v\n", err)
			return 2
		}
		size = n
	}
	cfg, err := loadConfig(*path, stderr)
	if err != nil {
		return 1
	}
	o := routing.Options{Size: size}
	if *resolve {
		o.Resolver = mx
		if o.Resolver == nil {
			o.Resolver = smtpout.NetResolver{R: resolver.New(cfg.Hub.DNSServers).Resolver()}
		}
	}
	routing.Build(context.Background(), cfg, fs.Args(), o).WriteText(stdout)
	return 0
}
