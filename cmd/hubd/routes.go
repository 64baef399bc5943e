package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"hubd/hub/categorizer"
	"hubd/hub/delivery"
	"hubd/hub/delivery/smtpout"
	"hubd/policy"
)

// cmdRoutes prints the routing table and, for each address given, where a
// message to it would go and why: routing must never be a black box.
//
//	hubd routes -config PATH [-size N] [-resolve=false] [address...]
func cmdRoutes(args []string, stdout, stderr io.Writer, resolver smtpout.Resolver) int {
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
	printTable(stdout, cfg)
	for _, addr := range fs.Args() {
		fmt.Fprintln(stdout)
		explain(stdout, cfg, addr, size, *resolve, resolver)
	}
	return 0
}

func printTable(w io.Writer, cfg *policy.Config) {
	rows := categorizer.Table(cfg)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "Accepted domains (decided before any send connector):")
	fmt.Fprintln(tw, "  DOMAIN\tTYPE\tDELIVERY")
	for _, r := range rows {
		if r.DomainType != "" {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", r.AddressSpace, r.DomainType, r.Local)
		}
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Send connectors (the first enabled row matching the domain whose size limit admits the message wins):")
	fmt.Fprintln(tw, "  ADDRESS SPACE\tCONNECTOR\tCOST\tNEXT HOP\tTLS\tMAX SIZE\t")
	n := 0
	for _, r := range rows {
		if r.DomainType != "" {
			continue
		}
		n++
		next := "MX of the recipient domain"
		if len(r.SmartHosts) > 0 {
			next = "smart hosts " + strings.Join(r.SmartHosts, ", ")
		} else if !r.DNSRouting {
			next = "(no smart hosts, no DNS routing)"
		}
		limit := "unlimited"
		switch n := r.MaxMessageSize; {
		case n > 0 && n%(1<<20) == 0:
			limit = fmt.Sprintf("%dMB", n>>20)
		case n > 0 && n%(1<<10) == 0:
			limit = fmt.Sprintf("%dKB", n>>10)
		case n > 0:
			limit = fmt.Sprintf("%d bytes", n)
		}
		name := r.Connector
		if !r.Enabled {
			name += " (disabled)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\t\n", r.AddressSpace, name, r.Cost, next, r.TLS, limit)
	}
	tw.Flush()
	if n == 0 {
		fmt.Fprintln(w, "  (none: mail for other domains waits in the unreachable queue)")
	}
}

// explain prints the categorizer's decision for addr, with the MX hosts of
// a DNS-routed next hop when resolve is set.
func explain(w io.Writer, cfg *policy.Config, addr string, size int64, resolve bool, resolver smtpout.Resolver) {
	fmt.Fprintf(w, "%s:\n", addr)
	for _, o := range categorizer.Explain(cfg, addr, size) {
		target := o.Address
		if o.ResolvedFrom != "" {
			target += " (from " + o.ResolvedFrom + ")"
		}
		switch o.Disposition {
		case categorizer.Deliver:
			fmt.Fprintf(w, "  %s → %s", target, o.NextHop)
			if o.Sender != "" {
				fmt.Fprintf(w, ", envelope sender %s", o.Sender)
			}
			fmt.Fprintf(w, "\n      because: %s\n", o.Why)
			if resolve && o.NextHop.Kind == delivery.KindSMTP && o.NextHop.Domain != "" {
				printMX(w, resolver, o.NextHop.Domain)
			}
		default:
			fmt.Fprintf(w, "  %s → %s: %s\n", target, o.Disposition, o.Reply)
			if o.Why != "" {
				fmt.Fprintf(w, "      because: %s\n", o.Why)
			}
		}
	}
}

func printMX(w io.Writer, resolver smtpout.Resolver, domain string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hosts, err := smtpout.LookupHosts(ctx, resolver, domain)
	if err != nil {
		fmt.Fprintf(w, "      MX of %s: %v\n", domain, err)
		return
	}
	for _, h := range hosts {
		kind := fmt.Sprintf("MX %d", h.Pref)
		if h.Implicit {
			kind = "implicit MX (no MX records; the domain's own address)"
		}
		addrs := strings.Join(h.Addrs, ", ")
		if h.Err != nil {
			addrs = h.Err.Error()
		}
		fmt.Fprintf(w, "      %s %s: %s\n", kind, h.Name, addrs)
	}
}
