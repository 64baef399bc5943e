// Package routing is the operator's view of where mail goes: the routing
// table (accepted domains, then send connectors in the order they are
// chosen) and, for any address, the categorizer's decision and why.
// `hubd routes` prints it (WriteText) and the admin API's GET /v1/routes
// returns it as JSON, so the two always give the same answer: both are
// built here from categorizer.Table and categorizer.Explain, the functions
// the transport itself routes with.
//
// For a next hop routed by DNS the report also carries the MX hosts of
// the recipient domain as a resolver sees them now (RFC 5321 §5.1: MX by
// preference, or the domain itself as an implicit MX), when Options.Resolver
// is set; a lookup failure is shown, never fatal.
package routing

import (
	"context"
	"fmt"
	"strings"
	"time"

	"hubd/hub/categorizer"
	"hubd/hub/delivery"
	"hubd/hub/delivery/smtpout"
	"hubd/policy"
)

// Report is the routing table and where each address asked about goes.
type Report struct {
	Domains        []DomainRow     `json:"accepted_domains"`
	SendConnectors []ConnectorRow  `json:"send_connectors"`
	Addresses      []AddressReport `json:"addresses,omitempty"`
}

// DomainRow is one accepted domain: decided before any send connector.
type DomainRow struct {
	Domain   string `json:"domain"`
	Type     string `json:"type"`     // authoritative, internal_relay, external_relay
	Delivery string `json:"delivery"` // how its addresses are delivered, in words
}

// ConnectorRow is one address space of one send connector, in the order
// rows are tried: the first enabled row matching the domain whose size
// limit admits the message wins.
type ConnectorRow struct {
	AddressSpace   string   `json:"address_space"`
	Connector      string   `json:"connector"`
	Enabled        bool     `json:"enabled"`
	Cost           int      `json:"cost"`
	SmartHosts     []string `json:"smart_hosts,omitempty"`
	DNSRouting     bool     `json:"dns_routing"`
	NextHop        string   `json:"next_hop"` // in words
	TLS            string   `json:"tls"`
	MaxMessageSize int64    `json:"max_message_size"` // 0: unlimited
}

// AddressReport is where mail to one address goes: one outcome per final
// recipient (an alias or a list has several).
type AddressReport struct {
	Address  string    `json:"address"`
	Outcomes []Outcome `json:"outcomes"`
}

// Outcome is the categorizer's decision for one final recipient.
type Outcome struct {
	Address      string   `json:"address"`
	ResolvedFrom string   `json:"resolved_from,omitempty"`
	Disposition  string   `json:"disposition"` // deliver, fail, unreachable, already expanded
	NextHop      string   `json:"next_hop,omitempty"`
	Sender       string   `json:"sender,omitempty"` // the envelope sender of this copy, when it changes
	Reply        string   `json:"reply,omitempty"`  // fail, unreachable: the reply the recipient gets
	Why          string   `json:"why,omitempty"`
	MX           []MXHost `json:"mx,omitempty"`        // DNS-routed next hop: the hosts tried, in order
	MXDomain     string   `json:"mx_domain,omitempty"` // the domain whose MX hosts those are
	MXError      string   `json:"mx_error,omitempty"`  // the MX lookup failed
}

// MXHost is one host a DNS-routed message is tried at.
type MXHost struct {
	Name     string   `json:"name"`
	Pref     int      `json:"preference"`
	Implicit bool     `json:"implicit,omitempty"` // no MX records: the domain's own address
	Addrs    []string `json:"addresses,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// Options adjust Build.
type Options struct {
	// Size is the message size to route for: send connectors whose
	// max_message_size is smaller are passed over. 0: any.
	Size int64
	// Resolver looks up the MX hosts of DNS-routed next hops; nil: none.
	Resolver smtpout.Resolver
	// LookupTimeout bounds each MX lookup; 0: 10 s.
	LookupTimeout time.Duration
}

// Build returns the routing table of cfg and the route of each address.
func Build(ctx context.Context, cfg *policy.Config, addresses []string, o Options) Report {
	r := Report{Domains: []DomainRow{}, SendConnectors: []ConnectorRow{}}
	for _, row := range categorizer.Table(cfg) {
		if row.DomainType != "" {
			r.Domains = append(r.Domains, DomainRow{Domain: row.AddressSpace, Type: string(row.DomainType), Delivery: row.Local})
			continue
		}
		r.SendConnectors = append(r.SendConnectors, ConnectorRow{AddressSpace: row.AddressSpace, Connector: row.Connector,
			Enabled: row.Enabled, Cost: row.Cost, SmartHosts: row.SmartHosts, DNSRouting: row.DNSRouting,
			NextHop: nextHopText(row), TLS: string(row.TLS), MaxMessageSize: row.MaxMessageSize})
	}
	for _, addr := range addresses {
		r.Addresses = append(r.Addresses, explain(ctx, cfg, addr, o))
	}
	return r
}

func nextHopText(r categorizer.TableRow) string {
	switch {
	case len(r.SmartHosts) > 0:
		return "smart hosts " + strings.Join(r.SmartHosts, ", ")
	case !r.DNSRouting:
		return "(no smart hosts, no DNS routing)"
	default:
		return "MX of the recipient domain"
	}
}

// explain is the categorizer's decision for addr, with the MX hosts of a
// DNS-routed next hop.
func explain(ctx context.Context, cfg *policy.Config, addr string, o Options) AddressReport {
	ar := AddressReport{Address: addr, Outcomes: []Outcome{}}
	for _, oc := range categorizer.Explain(cfg, addr, o.Size) {
		out := Outcome{Address: oc.Address, ResolvedFrom: oc.ResolvedFrom, Disposition: oc.Disposition.String(), Why: oc.Why}
		if oc.Disposition == categorizer.Deliver {
			out.NextHop, out.Sender = oc.NextHop.String(), oc.Sender
			if o.Resolver != nil && oc.NextHop.Kind == delivery.KindSMTP && oc.NextHop.Domain != "" {
				out.MXDomain = oc.NextHop.Domain
				out.MX, out.MXError = lookupMX(ctx, o, oc.NextHop.Domain)
			}
		} else {
			out.Reply = fmt.Sprint(oc.Reply)
		}
		ar.Outcomes = append(ar.Outcomes, out)
	}
	return ar
}

func lookupMX(ctx context.Context, o Options, domain string) ([]MXHost, string) {
	timeout := o.LookupTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hosts, err := smtpout.LookupHosts(ctx, o.Resolver, domain)
	if err != nil {
		return nil, err.Error()
	}
	out := make([]MXHost, 0, len(hosts))
	for _, h := range hosts {
		m := MXHost{Name: h.Name, Pref: h.Pref, Implicit: h.Implicit, Addrs: h.Addrs}
		if h.Err != nil {
			m.Error = h.Err.Error()
		}
		out = append(out, m)
	}
	return out, ""
}
