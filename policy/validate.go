package policy

// Checks that span several blocks: receive connectors that cannot share
// their listeners, and routes that are missing.

import (
	"net/netip"

	"github.com/hashicorp/hcl/v2"
)

// checkBindings enforces DESIGN.md's connector choice rules among enabled
// receive connectors: on one bind address, remote ranges must be identical
// nowhere and nested or disjoint everywhere, so that "most specific wins" is
// always one connector; and a wildcard bind cannot share its port with a
// specific address of the same family in another connector, since the two
// listeners could not both bind.
func (l *loader) checkBindings() {
	rcs := l.cfg.ReceiveConnectors
	for i := range rcs {
		for j := range i {
			if !rcs[i].Enabled || !rcs[j].Enabled {
				continue
			}
			l.checkPair(&rcs[j], &l.rcSources[j], &rcs[i], &l.rcSources[i])
		}
	}
}

// checkPair reports conflicts of b (defined later) with a.
func (l *loader) checkPair(a *ReceiveConnector, as *rcSource, b *ReceiveConnector, bs *rcSource) {
	for _, bb := range bs.binds {
		for _, ab := range as.binds {
			if bb.val == ab.val {
				l.checkRanges(a, as, b, bs, bb.val)
				continue
			}
			if wildcardClash(ab.val, bb.val) {
				l.errorf(bb.rng, "Conflicting bind addresses",
					"Connector %q binds %s and connector %q (%s) binds %s on the same port; a wildcard and a specific "+
						"address cannot both listen. Use the same bind string in both and tell them apart with remote_ip_ranges.",
					b.Name, bb.val, a.Name, rangeLine(as.defRange), ab.val)
			}
		}
	}
}

func (l *loader) checkRanges(a *ReceiveConnector, as *rcSource, b *ReceiveConnector, bs *rcSource, bind string) {
	for _, br := range bs.ranges {
		for _, ar := range as.ranges {
			switch {
			case br.r.First == ar.r.First && br.r.Last == ar.r.Last:
				l.errorf(br.rng, "Duplicate remote range on one binding",
					"Connectors %q and %q (%s) both bind %s and both serve %s, so neither is more specific. "+
						"Give one of them a narrower remote_ip_ranges or a different bind.",
					b.Name, a.Name, rangeLine(as.defRange), bind, br.r.Text)
			case br.r.overlaps(ar.r) && !br.r.containsRange(ar.r) && !ar.r.containsRange(br.r):
				l.errorf(br.rng, "Partly overlapping remote ranges",
					"On %s, %s (connector %q) partly overlaps %s (connector %q, %s); ranges on one binding must be "+
						"nested or disjoint so that the most specific one decides.",
					bind, br.r.Text, b.Name, ar.r.Text, a.Name, rangeLine(as.defRange))
			}
		}
	}
}

// wildcardClash reports whether x and y are the same port and family, one
// the unspecified address and the other not. Port 0 (pick a free port, for
// tests) never clashes.
func wildcardClash(x, y string) bool {
	ax, err1 := netip.ParseAddrPort(x)
	ay, err2 := netip.ParseAddrPort(y)
	if err1 != nil || err2 != nil || ax.Port() != ay.Port() || ax.Port() == 0 {
		return false
	}
	if ax.Addr().Is4() != ay.Addr().Is4() || ax.Addr() == ay.Addr() {
		return false
	}
	return ax.Addr().IsUnspecified() || ay.Addr().IsUnspecified()
}

// checkRouting warns about accepted domains whose mail has nowhere to go,
// and mailboxes this hub would not accept mail for.
func (l *loader) checkRouting() {
	for i, d := range l.cfg.AcceptedDomains {
		if d.Type != InternalRelay || l.routed(d.Name) {
			continue
		}
		l.warnf(l.domainRange(i), "Internal relay domain without a route",
			"Mail for %q (internal_relay) is accepted but no enabled send connector's address_spaces match it, "+
				"so it will wait in the unreachable queue. Add a send_connector for it.", d.Name)
	}
	for _, s := range l.schema.Mailboxes {
		m, _, ok := canonAddress(s.Address)
		if !ok {
			continue
		}
		if d := l.cfg.Domain(m.domain); d == nil || d.Type != Authoritative {
			l.warnf(s.AddressRange, "Mailbox outside an authoritative domain",
				"%q is not in an authoritative accepted_domain, so mail for it from other hosts will be refused.", s.Address)
		}
	}
}

// routed reports whether an enabled send connector serves domain (which may
// itself be a "*.x" pattern: then the space must cover every subdomain).
func (l *loader) routed(domain string) bool {
	for _, sc := range l.cfg.SendConnectors {
		if !sc.Enabled {
			continue
		}
		for _, as := range sc.AddressSpaces {
			if as.Pattern == "*" || as.Pattern == domain || DomainMatches(as.Pattern, trimWildcard(domain)) {
				return true
			}
		}
	}
	return false
}

func trimWildcard(d string) string {
	if len(d) > 2 && d[:2] == "*." {
		return d[2:]
	}
	return d
}

// domainRange finds the source of the i-th built accepted domain.
func (l *loader) domainRange(i int) hcl.Range {
	name := l.cfg.AcceptedDomains[i].Name
	for _, s := range l.schema.AcceptedDomains {
		if n, err := normalizeDomainPattern(s.Name); err == nil && n == name {
			return s.DefRange
		}
	}
	return l.firstRange()
}

// index builds the lookup maps the decisions use.
func (c *Config) index() {
	c.mailboxByAddress = map[string]*Mailbox{}
	for i := range c.Mailboxes {
		m := &c.Mailboxes[i]
		c.mailboxByAddress[m.Address] = m
		for _, a := range m.Addresses {
			c.mailboxByAddress[a] = m
		}
	}
	c.userByLogin = map[string]*User{}
	for i := range c.Users {
		c.userByLogin[c.Users[i].Login] = &c.Users[i]
	}
	c.listByAddress = map[string]*DistributionList{}
	for i := range c.DistributionLists {
		c.listByAddress[c.DistributionLists[i].Address] = &c.DistributionLists[i]
	}
	c.aliasByAddress = map[string]*Alias{}
	for i := range c.Aliases {
		c.aliasByAddress[c.Aliases[i].Address] = &c.Aliases[i]
	}
	c.domainByName = map[string]*AcceptedDomain{}
	for i := range c.AcceptedDomains {
		c.domainByName[c.AcceptedDomains[i].Name] = &c.AcceptedDomains[i]
	}
}
