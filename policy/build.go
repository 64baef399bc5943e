package policy

// Building the hub settings, accepted domains, mailboxes and aliases from
// the decoded schema, with defaults and per-field validation.

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"golang.org/x/net/publicsuffix"
)

// dupCheck reports a duplicate label of one block kind, pointing back at the
// first definition.
type dupCheck struct {
	kind  string
	first map[string]hcl.Range
}

func newDupCheck(kind string) *dupCheck {
	return &dupCheck{kind: kind, first: map[string]hcl.Range{}}
}

// seen records key and reports (and returns true) if it was defined before.
func (d *dupCheck) seen(l *loader, key, label string, rng hcl.Range) bool {
	if first, ok := d.first[key]; ok {
		l.errorf(rng, "Duplicate "+d.kind+" \""+label+"\"",
			"%s %q is defined more than once; the first definition is at %s.", d.kind, label, rangeLine(first))
		return true
	}
	d.first[key] = rng
	return false
}

// rangeLine renders a range as file:line, the way operators look for it.
func rangeLine(r hcl.Range) string {
	return r.Filename + ":" + itoa(r.Start.Line)
}

func (l *loader) buildHub() {
	hubs := l.schema.Hubs
	h := &l.cfg.Hub
	*h = Hub{
		QuickRetryCount:                 4,
		QuickRetryInterval:              time.Minute,
		TransientRetryCount:             6,
		TransientRetryInterval:          5 * time.Minute,
		RetryInterval:                   10 * time.Minute,
		MessageExpiration:               48 * time.Hour,
		DelayDSNAfter:                   4 * time.Hour,
		PoisonThreshold:                 2,
		MaxOutboundConnections:          1000,
		MaxPerDomainOutboundConnections: 20,
		MaxHopCount:                     100,
		MaxAliasDepth:                   10,
		ShutdownGrace:                   30 * time.Second,
		TrackingLog: TrackingLog{
			Enabled:          true,
			MaxFileSize:      10 << 20,
			MaxAge:           30 * 24 * time.Hour,
			MaxDirectorySize: 1 << 30,
		},
		BackPressure: BackPressure{
			Enabled:             true,
			DiskFreeHigh:        500 << 20,
			MemoryHighPercent:   75,
			MemoryMediumPercent: 73,
			CheckInterval:       2 * time.Second,
		},
	}
	if len(hubs) == 0 {
		l.errorf(l.firstRange(), "Missing hub block",
			"The configuration needs one hub block, e.g. hub { hostname = \"mx.example.com\"  spool_dir = \"./var/spool\" }.")
		return
	}
	for _, extra := range hubs[1:] {
		l.errorf(extra.DefRange, "Duplicate hub block",
			"Only one hub block is allowed; the first is defined at %s.", rangeLine(hubs[0].DefRange))
	}
	s := hubs[0]
	if s.Hostname != nil {
		name, err := normalizeDomain(*s.Hostname)
		if err != nil {
			l.errorf(s.HostnameRange, "Invalid hostname", "hostname must be a fully qualified domain name: %v.", err)
		}
		h.Hostname = name
	} else {
		name, err := os.Hostname()
		if err == nil {
			name, err = normalizeDomain(name)
		}
		if err != nil {
			l.errorf(s.DefRange, "Missing hostname",
				"The system host name cannot be used (%v); set hostname in the hub block.", err)
		}
		h.Hostname = name
	}
	switch {
	case s.SpoolDir == nil:
		l.errorf(s.DefRange, "Missing spool_dir", "The hub block needs spool_dir, the directory of the durable queue.")
	case strings.TrimSpace(*s.SpoolDir) == "":
		l.errorf(s.SpoolDirRange, "Invalid spool_dir", "spool_dir must not be empty.")
	default:
		h.SpoolDir = l.path(*s.SpoolDir, s.SpoolDirRange)
	}
	h.QuickRetryCount = l.intAtLeast(s.QuickRetryCount, s.QuickRetryCountRange, h.QuickRetryCount, 0, "quick_retry_count")
	h.QuickRetryInterval = l.positiveDuration(s.QuickRetryInterval, s.QuickRetryIntervalRange, h.QuickRetryInterval, "quick_retry_interval")
	h.TransientRetryCount = l.intAtLeast(s.TransientRetryCount, s.TransientRetryCountRange, h.TransientRetryCount, 0, "transient_retry_count")
	h.TransientRetryInterval = l.positiveDuration(s.TransientRetryInterval, s.TransientRetryIntervalRange, h.TransientRetryInterval, "transient_retry_interval")
	h.RetryInterval = l.positiveDuration(s.RetryInterval, s.RetryIntervalRange, h.RetryInterval, "retry_interval")
	h.MessageExpiration = l.positiveDuration(s.MessageExpiration, s.ExpirationRange, h.MessageExpiration, "message_expiration")
	h.DelayDSNAfter = l.duration(s.DelayDSNAfter, s.DelayDSNAfterRange, h.DelayDSNAfter)
	if h.DelayDSNAfter < 0 {
		l.errorf(s.DelayDSNAfterRange, "Invalid duration", "delay_dsn_after must not be negative (0 turns delay DSNs off).")
	}
	h.PoisonThreshold = l.intAtLeast(s.PoisonThreshold, s.PoisonThresholdRange, h.PoisonThreshold, 1, "poison_threshold")
	h.MaxOutboundConnections = l.intAtLeast(s.MaxOutboundConnections, s.MaxOutboundConnectionsRange, h.MaxOutboundConnections, 1, "max_outbound_connections")
	h.MaxPerDomainOutboundConnections = l.intAtLeast(s.MaxPerDomainOutboundConnections, s.MaxPerDomainOutboundConnectionsRange,
		h.MaxPerDomainOutboundConnections, 1, "max_per_domain_outbound_connections")
	if h.MaxPerDomainOutboundConnections > h.MaxOutboundConnections {
		l.errorf(s.MaxPerDomainOutboundConnectionsRange, "Invalid max_per_domain_outbound_connections",
			"max_per_domain_outbound_connections (%d) must not exceed max_outbound_connections (%d).",
			h.MaxPerDomainOutboundConnections, h.MaxOutboundConnections)
	}
	h.MaxHopCount = l.intAtLeast(s.MaxHopCount, s.MaxHopCountRange, h.MaxHopCount, 1, "max_hop_count")
	h.ShutdownGrace = l.duration(s.ShutdownGrace, s.ShutdownGraceRange, h.ShutdownGrace)
	h.MaxAliasDepth = l.intAtLeast(s.MaxAliasDepth, s.MaxAliasDepthRange, h.MaxAliasDepth, 1, "max_alias_depth")
	l.buildMaildrop(s)
	l.buildDNS(s)
	l.buildTrackingLog(s.TrackingLog)
	l.buildBackPressure(s.BackPressure)
}

// buildBackPressure fills Hub.BackPressure (Exchange's resource monitoring).
func (l *loader) buildBackPressure(s *backPressureSchema) {
	b := &l.cfg.Hub.BackPressure
	if s == nil {
		return
	}
	if s.Enabled != nil {
		b.Enabled = *s.Enabled
	}
	b.DiskFreeHigh = l.positiveSize(s.DiskFreeHigh, s.DiskFreeHighRange, b.DiskFreeHigh, "disk_free_high")
	b.DiskFreeMedium = l.positiveSize(s.DiskFreeMedium, s.DiskFreeMediumRange, b.DiskFreeMedium, "disk_free_medium")
	if s.DiskFreeMedium != nil && b.DiskFreeMedium <= b.DiskFreeHigh {
		l.errorf(s.DiskFreeMediumRange, "Invalid disk_free_medium",
			"disk_free_medium (%d bytes) must be more than disk_free_high (%d bytes): Medium comes before High.", b.DiskFreeMedium, b.DiskFreeHigh)
	}
	b.MemoryHighPercent = l.intAtLeast(s.MemoryHighPercent, s.MemoryHighPercentRange, b.MemoryHighPercent, 1, "memory_high_percent")
	b.MemoryMediumPercent = l.intAtLeast(s.MemoryMediumPercent, s.MemoryMediumPercentRange, b.MemoryMediumPercent, 1, "memory_medium_percent")
	switch {
	case b.MemoryHighPercent > 100:
		l.errorf(s.MemoryHighPercentRange, "Invalid memory_high_percent", "memory_high_percent is a percentage of RAM: at most 100.")
	case b.MemoryMediumPercent >= b.MemoryHighPercent:
		rng := s.MemoryMediumPercentRange
		if s.MemoryMediumPercent == nil {
			rng = s.MemoryHighPercentRange
		}
		l.errorf(rng, "Invalid memory thresholds", "memory_medium_percent (%d) must be below memory_high_percent (%d).",
			b.MemoryMediumPercent, b.MemoryHighPercent)
	}
	b.CheckInterval = l.positiveDuration(s.CheckInterval, s.CheckIntervalRange, b.CheckInterval, "check_interval")
}

// buildTrackingLog fills Hub.TrackingLog; the directory defaults to a
// sibling of the spool, like the default Maildirs.
func (l *loader) buildTrackingLog(s *trackingLogSchema) {
	t := &l.cfg.Hub.TrackingLog
	if l.cfg.Hub.SpoolDir != "" {
		t.Dir = filepath.Join(filepath.Dir(l.cfg.Hub.SpoolDir), "log", "tracking")
	}
	if s == nil {
		return
	}
	if s.Enabled != nil {
		t.Enabled = *s.Enabled
	}
	if s.Dir != nil {
		if strings.TrimSpace(*s.Dir) == "" {
			l.errorf(s.DirRange, "Invalid dir", "tracking_log dir must not be empty.")
		} else {
			t.Dir = l.path(*s.Dir, s.DirRange)
		}
	}
	t.MaxFileSize = l.positiveSize(s.MaxFileSize, s.MaxFileSizeRange, t.MaxFileSize, "max_file_size")
	t.MaxAge = l.positiveDuration(s.MaxAge, s.MaxAgeRange, t.MaxAge, "max_age")
	t.MaxDirectorySize = l.positiveSize(s.MaxDirectorySize, s.MaxDirectorySizeRange, t.MaxDirectorySize, "max_directory_size")
	if t.MaxDirectorySize < t.MaxFileSize {
		l.errorf(s.MaxDirectorySizeRange, "Invalid max_directory_size",
			"max_directory_size (%d bytes) must not be smaller than max_file_size (%d bytes).", t.MaxDirectorySize, t.MaxFileSize)
	}
}

// positiveDuration is duration with a check that the value is above zero.
func (l *loader) positiveDuration(p *string, rng hcl.Range, def time.Duration, name string) time.Duration {
	d := l.duration(p, rng, def)
	if d <= 0 {
		l.errorf(rng, "Invalid duration", "%s must be longer than zero.", name)
		return def
	}
	return d
}

var domainTypes = map[string]DomainType{
	string(Authoritative): Authoritative,
	string(InternalRelay): InternalRelay,
	string(ExternalRelay): ExternalRelay,
}

func (l *loader) buildDomains() {
	dups := newDupCheck("accepted_domain")
	for _, s := range l.schema.AcceptedDomains {
		name, err := normalizeDomainPattern(s.Name)
		if err != nil {
			l.errorf(s.NameRange, "Invalid accepted domain", "%v.", err)
			continue
		}
		if dups.seen(l, name, s.Name, s.DefRange) {
			continue
		}
		if isPublicSuffixPattern(name) {
			l.errorf(s.NameRange, "Accepted domain is a public suffix",
				"%q would accept mail for every domain under a public suffix (for relay types: relay to all of "+
					"them for anyone). Name your own domains, e.g. \"example.com\" or \"*.example.com\".", name)
			continue
		}
		d := AcceptedDomain{Name: name, Type: Authoritative}
		if s.Type != nil {
			t, ok := domainTypes[*s.Type]
			if !ok {
				l.errorf(s.TypeRange, "Invalid accepted domain type",
					"type must be \"authoritative\", \"internal_relay\" or \"external_relay\", not %q.", *s.Type)
			}
			d.Type = t
		}
		items, set := l.stringList(s.Recipients)
		if set {
			d.Recipients = map[string]bool{}
		}
		for _, it := range items {
			l.addRecipient(&d, it.val, it.rng)
		}
		if s.RecipientsFile != nil {
			if d.Recipients == nil {
				d.Recipients = map[string]bool{}
			}
			l.readRecipientsFile(&d, *s.RecipientsFile, s.RecipientsFileRange)
		}
		l.cfg.AcceptedDomains = append(l.cfg.AcceptedDomains, d)
	}
}

// isPublicSuffixPattern reports whether an accepted-domain pattern covers a
// whole public suffix: "*.com", "*.co.uk", "com", or "*.test" (any single
// label under a wildcard). A plain single-label name such as "localhost"
// stays allowed.
func isPublicSuffixPattern(name string) bool {
	base, wildcard := strings.CutPrefix(name, "*.")
	suffix, icann := publicsuffix.PublicSuffix(base)
	if suffix != base {
		return false
	}
	return wildcard || icann
}

// addRecipient checks one recipient of an accepted domain and adds it.
func (l *loader) addRecipient(d *AcceptedDomain, addr string, rng hcl.Range) {
	m, canon, ok := canonAddress(addr)
	switch {
	case !ok:
		_, err := parseMailbox(addr)
		l.errorf(rng, "Invalid recipient address", "%v.", err)
	case !DomainMatches(d.Name, m.domain):
		l.errorf(rng, "Recipient outside its domain", "%q is not an address in accepted domain %q.", addr, d.Name)
	default:
		d.Recipients[canon] = true
	}
}

// readRecipientsFile reads one address a line; '#' starts a comment.
func (l *loader) readRecipientsFile(d *AcceptedDomain, p string, rng hcl.Range) {
	before := len(l.diags)
	full := l.existingFile(p, rng, "recipients_file")
	if len(l.diags) > before {
		return // not a regular file: do not read it
	}
	src, err := os.ReadFile(full)
	if err != nil {
		l.errorf(rng, "Unreadable recipients_file", "%v.", err)
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		pos := hcl.Pos{Line: n, Column: 1}
		l.addRecipient(d, line, hcl.Range{Filename: full, Start: pos, End: hcl.Pos{Line: n, Column: 1 + len(sc.Text())}})
	}
}

func (l *loader) buildMailboxes() {
	dups := newDupCheck("mailbox")
	owner := map[string]string{} // address → mailbox that owns it
	var extras []hcl.Expression  // addresses of each built mailbox, same index
	for _, s := range l.schema.Mailboxes {
		m, addr, ok := canonAddress(s.Address)
		if !ok {
			_, err := parseMailbox(s.Address)
			l.errorf(s.AddressRange, "Invalid mailbox address", "%v.", err)
			continue
		}
		if dups.seen(l, addr, s.Address, s.DefRange) {
			continue
		}
		mb := Mailbox{Address: addr}
		if s.PasswordHash != nil && *s.PasswordHash != "" {
			mb.PasswordHash = l.passwordHash(*s.PasswordHash, s.PasswordHashRange)
		}
		switch {
		case s.Maildir != nil:
			mb.Maildir = l.path(*s.Maildir, s.MaildirRange)
		case m.quoted || strings.ContainsAny(m.local, "/\\") || m.local == "." || m.local == "..":
			l.errorf(s.AddressRange, "Maildir needed",
				"The local part of %q cannot name a directory safely; set maildir explicitly.", s.Address)
		case l.cfg.Hub.SpoolDir != "":
			mb.Maildir = filepath.Join(filepath.Dir(l.cfg.Hub.SpoolDir), "mail", m.local)
		}
		if s.LMTP != nil {
			mb.LMTP = l.lmtpAddress(*s.LMTP, s.LMTPRange)
		}
		owner[addr] = addr
		l.collectMaildirPath(s, mb)
		l.cfg.Mailboxes = append(l.cfg.Mailboxes, mb)
		extras = append(extras, s.Addresses)
	}
	// Extra addresses after all primaries, so a clash is found in any order.
	for i := range l.cfg.Mailboxes {
		mb := &l.cfg.Mailboxes[i]
		items, _ := l.stringList(extras[i])
		for _, it := range items {
			extra, ok := l.address(it.val, it.rng, "Invalid mailbox address")
			if !ok {
				continue
			}
			if o, taken := owner[extra]; taken {
				l.errorf(it.rng, "Address used twice", "%q already belongs to mailbox %q.", it.val, o)
				continue
			}
			owner[extra] = mb.Address
			mb.Addresses = append(mb.Addresses, extra)
		}
	}
}

// lmtpAddress checks an LMTP server address: "unix:/path" (relative paths
// resolve against the config file) or "host:port".
func (l *loader) lmtpAddress(v string, rng hcl.Range) string {
	if p, ok := strings.CutPrefix(v, "unix:"); ok {
		if strings.TrimSpace(p) == "" {
			l.errorf(rng, "Invalid lmtp", "lmtp = \"unix:PATH\" needs the socket path.")
			return ""
		}
		return "unix:" + l.path(p, rng)
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil || host == "" || port == "" {
		l.errorf(rng, "Invalid lmtp", "lmtp must be \"unix:/path/to/socket\" or \"host:port\", not %q.", v)
		return ""
	}
	return v
}

// buildLists builds the distribution lists. A list address may not also be
// a mailbox or an alias; members and owner must be valid addresses.
func (l *loader) buildLists() {
	dups := newDupCheck("distribution_list")
	for _, s := range l.schema.DistributionLists {
		addr, ok := l.address(s.Address, s.AddressRange, "Invalid distribution list address")
		if !ok {
			continue
		}
		if dups.seen(l, addr, s.Address, s.DefRange) {
			continue
		}
		if l.cfg.mailboxOrAlias(addr) {
			where := ""
			for _, a := range l.cfg.Aliases {
				if a.Address == addr && a.Source != "" {
					where = " (an alias of the aliases file at " + a.Source + ")"
				}
			}
			l.errorf(s.AddressRange, "Distribution list shadows an address",
				"%q is already a mailbox or alias address%s; an address is one of mailbox, alias or list.", s.Address, where)
			continue
		}
		dl := DistributionList{Address: addr}
		var empty bool
		dl.Members, empty = l.addressList(s.Members, "Invalid list member")
		if empty {
			l.errorf(s.Members.Range(), "Empty distribution list", "List %q needs at least one member.", s.Address)
		}
		if s.Owner != nil {
			dl.Owner, _ = l.address(*s.Owner, s.OwnerRange, "Invalid list owner")
		}
		l.cfg.DistributionLists = append(l.cfg.DistributionLists, dl)
	}
}

// mailboxOrAlias reports whether addr (canonical) is a mailbox or alias
// address, before the indexes exist.
func (c *Config) mailboxOrAlias(addr string) bool {
	for _, m := range c.Mailboxes {
		if m.Address == addr || slices.Contains(m.Addresses, addr) {
			return true
		}
	}
	for _, a := range c.Aliases {
		if a.Address == addr {
			return true
		}
	}
	return false
}

// address canonicalises an address written in the configuration; when it is
// invalid it reports why, under summary, at rng.
func (l *loader) address(val string, rng hcl.Range, summary string) (string, bool) {
	_, addr, ok := canonAddress(val)
	if !ok {
		_, err := parseMailbox(val)
		l.errorf(rng, summary, "%v.", err)
	}
	return addr, ok
}

// addressList reads a list of addresses (alias targets, list members),
// reporting each invalid one under summary; empty is true when the list was
// written but holds nothing.
func (l *loader) addressList(expr hcl.Expression, summary string) (addrs []string, empty bool) {
	items, set := l.stringList(expr)
	for _, it := range items {
		if a, ok := l.address(it.val, it.rng, summary); ok {
			addrs = append(addrs, a)
		}
	}
	return addrs, set && len(items) == 0
}
