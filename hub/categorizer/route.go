package categorizer

import (
	"fmt"
	"strings"

	"hubd/hub/delivery"
	"hubd/policy"
)

// specificity orders address-space matches: an exact domain beats any
// wildcard, a longer wildcard beats a shorter one, and "*" comes last.
type specificity struct {
	rank int // 2 exact, 1 wildcard, 0 "*"
	n    int // wildcard suffix length
}

func (a specificity) less(b specificity) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	return a.n < b.n
}

func specificityOf(pattern string) specificity {
	switch {
	case pattern == "*":
		return specificity{}
	case strings.HasPrefix(pattern, "*."):
		return specificity{rank: 1, n: len(pattern)}
	default:
		return specificity{rank: 2, n: len(pattern)}
	}
}

// candidate is a send connector whose address space matches a domain.
type candidate struct {
	sc    *policy.SendConnector
	space policy.AddressSpace // the connector's most specific matching space
	spec  specificity
}

// Route picks the send connector for mail of size bytes to domain (see the
// package comment for the rules). why explains the choice, or the absence of
// one, in words fit for a log line or a routing table.
func Route(cfg *policy.Config, domain string, size int64) (sc policy.SendConnector, why string, ok bool) {
	domain = strings.ToLower(domain)
	var cands []candidate
	var dropped []string
	for i := range cfg.SendConnectors {
		c := &cfg.SendConnectors[i]
		if !c.Enabled {
			continue
		}
		best, matched := bestSpace(c.AddressSpaces, domain)
		if !matched {
			continue
		}
		if c.MaxMessageSize > 0 && size > c.MaxMessageSize {
			dropped = append(dropped, fmt.Sprintf("%q (max_message_size %d < %d)", c.Name, c.MaxMessageSize, size))
			continue
		}
		cands = append(cands, candidate{sc: c, space: best, spec: specificityOf(best.Pattern)})
	}
	if len(cands) == 0 {
		if len(dropped) > 0 {
			return policy.SendConnector{}, "no send connector takes a message this large: dropped " + strings.Join(dropped, ", "), false
		}
		return policy.SendConnector{}, "no enabled send connector has an address space matching " + domain, false
	}
	win := cands[0]
	for _, c := range cands[1:] {
		if better(c, win) {
			win = c
		}
	}
	why = fmt.Sprintf("send connector %q: address space %q, cost %d", win.sc.Name, win.space.Pattern, win.space.Cost)
	if len(dropped) > 0 {
		why += "; too small: " + strings.Join(dropped, ", ")
	}
	return *win.sc, why, true
}

// better reports whether a beats b: more specific, then cheaper, then the
// lower name.
func better(a, b candidate) bool {
	switch {
	case a.spec != b.spec:
		return b.spec.less(a.spec)
	case a.space.Cost != b.space.Cost:
		return a.space.Cost < b.space.Cost
	default:
		return a.sc.Name < b.sc.Name
	}
}

// bestSpace returns the most specific of spaces that matches domain; among
// equally specific ones (only possible with duplicates) the cheapest.
func bestSpace(spaces []policy.AddressSpace, domain string) (policy.AddressSpace, bool) {
	var best policy.AddressSpace
	var bestSpec specificity
	found := false
	for _, s := range spaces {
		if !policy.DomainMatches(s.Pattern, domain) {
			continue
		}
		sp := specificityOf(s.Pattern)
		if !found || bestSpec.less(sp) || (sp == bestSpec && s.Cost < best.Cost) {
			best, bestSpec, found = s, sp, true
		}
	}
	return best, found
}

// NextHopFor is the SMTP next hop of send connector sc for mail to domain:
// its smart hosts in order, or, with DNS routing and no smart hosts, the MX
// hosts of domain. The EHLO name is the connector's FQDN, else the hub's.
// The hub-internal header fields go out only with send_org_headers.
func NextHopFor(cfg *policy.Config, sc policy.SendConnector, domain string) delivery.NextHop {
	hop := delivery.NextHop{
		Kind:       delivery.KindSMTP,
		Connector:  sc.Name,
		SmartHosts: strings.Join(sc.SmartHosts, ","),
		TLS:        sc.TLS,
		FQDN:       sc.FQDN,
		OrgHeaders: sc.SendOrgHeaders,
		ClientCert: sc.ClientCertFile,
		ClientKey:  sc.ClientKeyFile,
		CAFile:     sc.CAFile,
	}
	if a := sc.Auth; a != nil {
		hop.Auth = delivery.SMTPAuth{Username: a.Username, Password: a.Password,
			Mechanisms: strings.Join(a.Mechanisms, ","), AllowInsecure: a.AllowInsecure}
	}
	if hop.SmartHosts == "" && sc.DNSRouting {
		hop.Domain = strings.ToLower(domain)
	}
	if hop.FQDN == "" {
		hop.FQDN = cfg.Hub.Hostname
	}
	return hop
}
