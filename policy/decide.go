package policy

// The pure decisions the rest of hubd asks of a Config. None of them does
// I/O; all are safe for concurrent use because a Config never changes.

import (
	"net/netip"
	"slices"
	"strings"
)

// ConnectorFor returns the enabled receive connector bound to bind ("ip:port"
// as listened on) whose remote_ip_ranges contain peer most specifically (the
// smallest range wins: a /32 beats a /24 beats 0.0.0.0/0), or nil. An
// IPv4-mapped IPv6 peer is treated as the IPv4 address it carries.
func (c *Config) ConnectorFor(bind string, peer netip.Addr) *ReceiveConnector {
	if ap, err := netip.ParseAddrPort(bind); err == nil {
		bind = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	}
	peer = peer.Unmap().WithZone("")
	var best *ReceiveConnector
	var bestRange IPRange
	for i := range c.ReceiveConnectors {
		rc := &c.ReceiveConnectors[i]
		if !rc.Enabled || !slices.Contains(rc.Bind, bind) {
			continue
		}
		for _, r := range rc.RemoteIPRanges {
			if r.Contains(peer) && (best == nil || r.smallerThan(bestRange)) {
				best, bestRange = rc, r
			}
		}
	}
	return best
}

// Binds returns the distinct bind addresses of enabled connectors, sorted.
func (c *Config) Binds() []string {
	var out []string
	for _, rc := range c.ReceiveConnectors {
		if rc.Enabled {
			out = append(out, rc.Bind...)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Domain returns the accepted domain matching domain (exact beats "*.x"; the
// longest wildcard wins), or nil. domain is matched case-insensitively, and
// U-labels are converted to A-labels first.
func (c *Config) Domain(domain string) *AcceptedDomain {
	d := strings.TrimSuffix(domain, ".")
	if n, err := normalizeDomain(d); err == nil {
		d = n
	} else {
		d = strings.ToLower(d)
	}
	if ad := c.domainByName[d]; ad != nil {
		return ad
	}
	for rest := d; ; {
		_, parent, ok := strings.Cut(rest, ".")
		if !ok {
			return nil
		}
		if ad := c.domainByName["*."+parent]; ad != nil {
			return ad
		}
		rest = parent
	}
}

// MailboxFor returns the mailbox owning address (primary or extra), or nil.
// Addresses are compared case-insensitively.
func (c *Config) MailboxFor(address string) *Mailbox {
	return c.mailboxByAddress[lookupKey(address)]
}

// AliasFor returns the alias for address, or nil.
func (c *Config) AliasFor(address string) *Alias {
	return c.aliasByAddress[lookupKey(address)]
}

// ListFor returns the distribution list for address, or nil.
func (c *Config) ListFor(address string) *DistributionList {
	return c.listByAddress[lookupKey(address)]
}

func lookupKey(address string) string {
	if _, canon, ok := canonAddress(address); ok {
		return canon
	}
	return strings.ToLower(address)
}

// SessionRights returns the rights of a session on rc: Anonymous, plus
// Authenticated once AUTH succeeded, plus Trusted when the connector is
// externally secured (Exchange's ExternallySecured: the network vouches for
// every peer).
func (rc *ReceiveConnector) SessionRights(authenticated bool) Rights {
	r := rc.Permissions.Anonymous
	if authenticated {
		r |= rc.Permissions.Authenticated
	}
	if rc.ExternallySecured {
		r |= rc.Permissions.Trusted
	}
	return r
}

// CheckSender decides MAIL FROM: nil, or a Reply. The null reverse-path ""
// is always allowed (RFC 5321 §4.5.5: notifications must be deliverable).
// An unparseable address gets 501 5.1.7. An authenticated login without
// RightAnySender may only use its own senders: a mailbox's addresses, a
// user's senders (addresses and "@domain"), and the RFC 5233 subaddresses
// (user+tag@domain) of any address among them; anything else gets 550
// 5.7.1 "Not authorized to send as <x>". Unauthenticated sessions are not
// limited here. authUser was checked by the local logins; for a login an
// auth_backend vouched for, use CheckSenderVia.
func (c *Config) CheckSender(rights Rights, authUser, from string) *Reply {
	return c.CheckSenderVia(rights, "", authUser, from)
}

// CheckSenderVia is CheckSender for a login authenticated by the named
// auth_backend ("" = the local logins). A backend's login may send as
// itself when it is an address, as the addresses of the hubd mailbox of
// that address, and, with senders_domain_match, as any address at its
// domain (see AuthBackend).
func (c *Config) CheckSenderVia(rights Rights, backend, authUser, from string) *Reply {
	if from == "" || from == "<>" {
		return nil
	}
	m, canon, ok := canonAddress(from)
	if !ok {
		return &Reply{Code: 501, Enhanced: "5.1.7", Text: "Bad sender address syntax"}
	}
	if authUser == "" || rights.Has(RightAnySender) {
		return nil
	}
	base, _ := subaddressBase(m)
	if c.mayUse(backend, authUser, m, canon, base) {
		return nil
	}
	return &Reply{Code: 550, Enhanced: "5.7.1", Text: "Not authorized to send as <" + from + ">"}
}

// mayUse reports whether login may send as the address m (canonical canon,
// subaddress base base or "").
func (c *Config) mayUse(backend, login string, m mailboxSyntax, canon, base string) bool {
	key := lookupKey(login)
	ownsEither := func(mb *Mailbox) bool {
		return mb != nil && (owns(mb, canon) || base != "" && owns(mb, base))
	}
	if backend == "" {
		if u := c.userByLogin[key]; u != nil {
			return slices.Contains(u.Senders, canon) || base != "" && slices.Contains(u.Senders, base) ||
				slices.Contains(u.Senders, "@"+m.domain)
		}
		return ownsEither(c.mailboxByAddress[key])
	}
	b := c.AuthBackend(backend)
	lm, loginAddr, isAddr := canonAddress(login)
	if b == nil || !isAddr {
		return false
	}
	return canon == loginAddr || base == loginAddr || ownsEither(c.mailboxByAddress[loginAddr]) ||
		b.SendersDomainMatch && m.domain == lm.domain
}

func owns(mb *Mailbox, addr string) bool {
	return mb.Address == addr || slices.Contains(mb.Addresses, addr)
}

// subaddressBase returns "user@domain" for "user+detail@domain" (RFC 5233).
func subaddressBase(m mailboxSyntax) (string, bool) {
	if m.quoted {
		return "", false
	}
	user, _, ok := strings.Cut(m.local, "+")
	if !ok || user == "" {
		return "", false
	}
	return strings.ToLower(user) + "@" + m.domain, true
}

// CheckRecipient decides RCPT TO: nil to accept, or a Reply. In order:
//   - not parseable -> 501 5.1.3 Bad recipient address syntax
//   - no RightSubmit -> 550 5.7.1 Not authorized to submit
//   - a bare "postmaster" (RFC 5321 §4.5.1) -> accepted if ResolveLocal
//     knows it, else 550 5.1.1
//   - a local part with '%' (percent hack), '!' (bang path) or a quoted '@',
//     or a source route (RFC 5321 Appendix C), without RightRelay -> 550
//     5.7.1 Unable to relay: a downstream host could otherwise turn them
//     into a relay through us
//   - an accepted domain with a recipient set (authoritative: mailboxes,
//     aliases and Recipients; other types: only when Recipients != nil) and
//     the address not in it (subaddresses resolve to their base) -> 550
//     5.1.1 User unknown; otherwise accepted
//   - not an accepted domain and no RightRelay -> 550 5.7.1 Unable to relay
func (c *Config) CheckRecipient(rights Rights, rcpt string) *Reply {
	bare := isBarePostmaster(rcpt)
	m, canon, ok := canonAddress(rcpt)
	if !ok && !bare {
		return &Reply{Code: 501, Enhanced: "5.1.3", Text: "Bad recipient address syntax"}
	}
	if !rights.Has(RightSubmit) {
		return &Reply{Code: 550, Enhanced: "5.7.1", Text: "Not authorized to submit"}
	}
	if bare {
		if c.ResolveLocal(rcpt) == "" {
			return userUnknown()
		}
		return nil
	}
	if (m.route || strings.ContainsAny(m.local, "%!@")) && !rights.Has(RightRelay) {
		return unableToRelay()
	}
	d := c.Domain(m.domain)
	switch {
	case d == nil:
		if !rights.Has(RightRelay) {
			return unableToRelay()
		}
		return nil
	case d.Type == Authoritative:
		if c.ResolveLocal(rcpt) == "" {
			return userUnknown()
		}
	case d.Recipients != nil:
		base, _ := subaddressBase(m)
		if !d.Recipients[canon] && !d.Recipients[base] {
			return userUnknown()
		}
	}
	return nil
}

func userUnknown() *Reply   { return &Reply{Code: 550, Enhanced: "5.1.1", Text: "User unknown"} }
func unableToRelay() *Reply { return &Reply{Code: 550, Enhanced: "5.7.1", Text: "Unable to relay"} }

// isBarePostmaster reports whether addr is "postmaster" with no domain,
// which RFC 5321 §4.5.1 requires every SMTP server to accept.
func isBarePostmaster(addr string) bool {
	return strings.EqualFold(strings.TrimSuffix(strings.TrimPrefix(addr, "<"), ">"), "postmaster")
}

// ResolveLocal returns the canonical known address (lower-case) for a
// recipient in an authoritative domain: the address itself if it names a
// mailbox, an alias or a listed recipient; else, for "user+detail@domain",
// "user@domain" if that is known (RFC 5233 subaddressing); else "". A bare
// "postmaster" resolves to postmaster at the hub's hostname, at the
// hostname's parent domain, or at the first authoritative domain, whichever
// is known first. The categorizer uses this too, so RCPT and delivery agree.
func (c *Config) ResolveLocal(addr string) string {
	if isBarePostmaster(addr) {
		return c.postmaster()
	}
	m, canon, ok := canonAddress(addr)
	if !ok {
		return ""
	}
	d := c.Domain(m.domain)
	if d == nil || d.Type != Authoritative {
		return ""
	}
	if c.known(d, canon) {
		return canon
	}
	if base, ok := subaddressBase(m); ok && c.known(d, base) {
		return base
	}
	return ""
}

func (c *Config) known(d *AcceptedDomain, addr string) bool {
	return c.mailboxByAddress[addr] != nil || c.aliasByAddress[addr] != nil || c.listByAddress[addr] != nil || d.Recipients[addr]
}

func (c *Config) postmaster() string {
	var candidates []string
	if h := c.Hub.Hostname; h != "" {
		candidates = append(candidates, h)
		if _, parent, ok := strings.Cut(h, "."); ok && strings.Contains(parent, ".") {
			candidates = append(candidates, parent)
		}
	}
	for _, d := range c.AcceptedDomains {
		if d.Type == Authoritative && !strings.HasPrefix(d.Name, "*.") {
			candidates = append(candidates, d.Name)
			break
		}
	}
	for _, dom := range candidates {
		if r := c.ResolveLocal("postmaster@" + dom); r != "" {
			return r
		}
	}
	return ""
}
