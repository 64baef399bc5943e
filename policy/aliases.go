package policy

// Aliases: the HCL alias blocks and the aliases(5) files of aliases_file
// blocks become one list of Config.Aliases, checked together, so that the
// categorizer, RCPT TO and `hubd routes` see no difference between them.
//
//	aliases_file "/etc/aliases" {
//	  domains = ["example.com", "example.org"]   # default: every authoritative accepted domain
//	}
//
// The label is the file's path, relative to the directory of the HCL file
// that names it. The file's format is aliasesfile.go's. A bare name
// ("postmaster") becomes one alias in each of the block's domains; a full
// address ("sales@example.org") is that one alias. A bare target gets the
// domain of the alias it belongs to (so "postmaster: root" in a block for
// example.com and example.org maps postmaster@example.com to
// root@example.com and postmaster@example.org to root@example.org), as a
// virtual alias table keeps a local part in its own domain. The domains must
// be accepted domains this hub resolves addresses of (authoritative or
// internal_relay; wildcards match); without a domains attribute, wildcard
// accepted domains are left out.
//
// Every alias address, from a block or a file, is defined once, and is not
// also a mailbox address (or, as buildLists checks, a distribution list).
// The files are part of the configuration: read at load, at every reload
// (SIGHUP, POST /v1/reload, newaliases), in Config.Files for diagnostics'
// snippets and in Config.Hash. An alias from a file carries its file:line
// in Alias.Source, which the categorizer's explanations show.

import (
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

type aliasesFileSchema struct {
	Path      string         `hcl:"path,label"`
	PathRange hcl.Range      `hcl:"path,label_range"`
	Domains   hcl.Expression `hcl:"domains,optional"`
	DefRange  hcl.Range      `hcl:",def_range"`
}

// aliasClaims holds what buildAliases needs to refuse an alias address
// defined twice, or that is a mailbox's.
type aliasClaims struct {
	dups      *dupCheck
	mailboxes map[string]string // address → the mailbox it belongs to
}

func (l *loader) buildAliases() {
	claims := aliasClaims{dups: newDupCheck("alias"), mailboxes: map[string]string{}}
	for _, mb := range l.cfg.Mailboxes {
		claims.mailboxes[mb.Address] = mb.Address
		for _, a := range mb.Addresses {
			claims.mailboxes[a] = mb.Address
		}
	}
	for _, s := range l.schema.Aliases {
		addr, ok := l.address(s.Address, s.AddressRange, "Invalid alias address")
		if !ok || !l.claimAlias(claims, addr, s.Address, s.AddressRange, s.DefRange) {
			continue
		}
		a := Alias{Address: addr}
		var empty bool
		a.To, empty = l.addressList(s.To, "Invalid alias target")
		if empty {
			l.errorf(s.To.Range(), "Empty alias", "Alias %q needs at least one target in to.", s.Address)
		}
		l.cfg.Aliases = append(l.cfg.Aliases, a)
	}
	files := newDupCheck("aliases_file")
	for _, s := range l.schema.AliasesFiles {
		l.buildAliasesFile(s, files, claims)
	}
}

// claimAlias records addr (label as written) as an alias address defined
// at def, reporting at rng why it cannot be.
func (l *loader) claimAlias(c aliasClaims, addr, label string, rng, def hcl.Range) bool {
	if c.dups.seen(l, addr, label, def) {
		return false
	}
	if owner, ok := c.mailboxes[addr]; ok {
		l.errorf(rng, "Alias shadows a mailbox",
			"%q is an address of mailbox %q; an address is either a mailbox or an alias, not both.", label, owner)
		return false
	}
	return true
}

// buildAliasesFile reads one aliases_file block's file into Config.Aliases.
func (l *loader) buildAliasesFile(s aliasesFileSchema, files *dupCheck, claims aliasClaims) {
	domains := l.aliasesFileDomains(s)
	before := len(l.diags)
	full := l.existingFile(s.Path, s.PathRange, "aliases_file")
	if len(l.diags) > before || files.seen(l, full, s.Path, s.DefRange) {
		return
	}
	src, err := os.ReadFile(full)
	if err != nil {
		l.errorf(s.PathRange, "Unreadable aliases_file", "%v.", err)
		return
	}
	entries, sources, diags := parseAliases(full, src, os.ReadFile)
	l.diags = append(l.diags, diags...)
	for name, b := range sources {
		l.extraFiles[name] = &hcl.File{Bytes: b}
	}
	names := newDupCheck("alias") // within the file, by name, before domains multiply them
	for _, e := range entries {
		if names.seen(l, aliasNameKey(e.name), e.name, e.nameRng) {
			continue
		}
		switch {
		case isAddress(e.name):
			l.addFileAlias(claims, e, e.name)
		case len(domains) == 0:
			l.errorf(e.nameRng, "Alias name without a domain",
				"%q is a bare name, and the aliases_file block at %s applies bare names to no domain (there is no "+
					"authoritative accepted_domain, or domains is empty). Write the full address, or set domains.",
				e.name, rangeLine(s.DefRange))
		default:
			for _, d := range domains {
				l.addFileAlias(claims, e, e.name+"@"+d)
			}
		}
	}
}

// addFileAlias adds the alias addr (name or name@domain) of entry e.
func (l *loader) addFileAlias(claims aliasClaims, e aliasesEntry, addr string) {
	m, canon, ok := canonAddress(addr)
	if !ok {
		_, err := parseMailbox(addr)
		l.errorf(e.nameRng, "Invalid alias address", "%v.", err)
		return
	}
	if !l.claimAlias(claims, canon, canon, e.nameRng, e.nameRng) {
		return
	}
	a := Alias{Address: canon, Source: rangeLine(e.nameRng)}
	for _, t := range e.targets {
		target := t.text
		if !isAddress(target) {
			target += "@" + m.domain // a bare target stays in the alias's domain
		}
		if to, ok := l.address(target, t.rng, "Invalid alias target"); ok {
			a.To = append(a.To, to)
		}
	}
	if len(a.To) > 0 {
		l.cfg.Aliases = append(l.cfg.Aliases, a)
	}
}

// aliasesFileDomains returns the domains bare names of the block's file
// belong to.
func (l *loader) aliasesFileDomains(s aliasesFileSchema) []string {
	items, set := l.stringList(s.Domains)
	var out []string
	if !set {
		for _, d := range l.cfg.AcceptedDomains {
			if d.Type == Authoritative && !strings.HasPrefix(d.Name, "*.") {
				out = append(out, d.Name)
			}
		}
		return out
	}
	seen := map[string]bool{}
	for _, it := range items {
		name, err := normalizeDomain(it.val)
		if err != nil {
			l.errorf(it.rng, "Invalid domain", "%v.", err)
			continue
		}
		var ad *AcceptedDomain
		for i := range l.cfg.AcceptedDomains {
			if d := &l.cfg.AcceptedDomains[i]; DomainMatches(d.Name, name) && (ad == nil || d.Name == name) {
				ad = d
			}
		}
		switch {
		case seen[name]:
			l.errorf(it.rng, "Duplicate domain", "%q is listed twice.", it.val)
		case ad == nil:
			l.errorf(it.rng, "Domain not accepted",
				"%q is not an accepted_domain; aliases resolve only in accepted domains (authoritative or internal_relay).", it.val)
		case ad.Type == ExternalRelay:
			l.errorf(it.rng, "Domain is external_relay",
				"Mail for %q is relayed on, never resolved here, so an alias in it would never apply.", it.val)
		default:
			out = append(out, name)
		}
		seen[name] = true
	}
	return out
}

// isAddress reports whether s is a whole address rather than a local part.
func isAddress(s string) bool {
	_, err := parseMailbox(s)
	return err == nil
}

// aliasNameKey is the form two names of one file are compared in.
func aliasNameKey(name string) string {
	if _, canon, ok := canonAddress(name); ok {
		return canon
	}
	if m, _, ok := canonAddress(name + "@x.invalid"); ok {
		return m.local
	}
	return strings.ToLower(name)
}
