package policy

// Building receive and send connectors: defaults, usage presets, and the
// per-connector checks (TLS, AUTH, open relay).

import (
	"crypto/tls"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// rcSource keeps, for one built receive connector, the source ranges the
// cross-connector checks point at.
type rcSource struct {
	defRange hcl.Range
	binds    []listItem // normalised "ip:port"
	ranges   []rangeItem
}

type rangeItem struct {
	r   IPRange
	rng hcl.Range
}

// preset is what a usage fills in when the operator left a field unset.
type preset struct {
	anonymous, authenticated, trusted Rights
	auth                              []string
	requireTLS, externallySecured     bool
}

const allRights = Rights(RightSubmit | RightRelay | RightAnySender | RightBypassSizeLimit | RightAcceptOrgHeaders)

// presets follow Exchange 2007's -Usage types; custom is the base of all.
var presets = map[Usage]preset{
	UsageCustom:   {anonymous: Rights(RightSubmit), authenticated: Rights(RightSubmit | RightRelay)},
	UsageClient:   {authenticated: Rights(RightSubmit | RightRelay), auth: []string{"plain", "login"}, requireTLS: true},
	UsageInternet: {anonymous: Rights(RightSubmit), authenticated: Rights(RightSubmit | RightRelay)},
	UsageInternal: {anonymous: Rights(RightSubmit), authenticated: Rights(RightSubmit | RightRelay), trusted: allRights, externallySecured: true},
	UsagePartner:  {anonymous: Rights(RightSubmit), authenticated: Rights(RightSubmit | RightRelay), requireTLS: true},
}

var rightNames = map[string]Right{
	"submit":             RightSubmit,
	"relay":              RightRelay,
	"any_sender":         RightAnySender,
	"bypass_size_limit":  RightBypassSizeLimit,
	"accept_org_headers": RightAcceptOrgHeaders,
}

// authMechanisms are the SASL mechanisms hubd implements: RFC 4616 PLAIN and
// the de-facto LOGIN (both carry the password, hence bcrypt works), and RFC
// 4422 EXTERNAL (the verified TLS client certificate).
var authMechanisms = map[string]bool{"plain": true, "login": true, "external": true}

func (l *loader) buildReceiveConnectors() {
	dups := newDupCheck("receive_connector")
	enabled := 0
	for i := range l.schema.ReceiveConnectors {
		s := &l.schema.ReceiveConnectors[i]
		if !validName(s.Name) {
			l.errorf(s.NameRange, "Invalid connector name",
				"Connector names start with a letter or digit and use only letters, digits, '.', '_' and '-'; %q does not.", s.Name)
		}
		if dups.seen(l, s.Name, s.Name, s.DefRange) {
			continue
		}
		rc, src := l.receiveConnector(s)
		if rc.Enabled {
			enabled++
		}
		l.cfg.ReceiveConnectors = append(l.cfg.ReceiveConnectors, rc)
		l.rcSources = append(l.rcSources, src)
	}
	if enabled == 0 {
		l.errorf(l.firstRange(), "No enabled receive connector",
			"Nothing could reach this hub: define at least one receive_connector with enabled = true (the default).")
	}
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || strings.IndexByte("._-", c) < 0) {
			return false
		}
	}
	return true
}

func (l *loader) receiveConnector(s *receiveConnectorSchema) (ReceiveConnector, rcSource) {
	rc := ReceiveConnector{Name: s.Name, Enabled: true, Usage: UsageCustom}
	src := rcSource{defRange: s.DefRange}
	if s.Enabled != nil {
		rc.Enabled = *s.Enabled
	}
	if s.Usage != nil {
		if _, ok := presets[Usage(*s.Usage)]; ok {
			rc.Usage = Usage(*s.Usage)
		} else {
			l.errorf(s.UsageRange, "Invalid usage",
				"usage must be one of custom, client, internet, internal, partner; not %q.", *s.Usage)
		}
	}
	binds, set := l.stringList(s.Bind)
	if set && len(binds) == 0 {
		l.errorf(s.Bind.Range(), "Missing bind address", "Connector %q needs at least one \"ip:port\" to listen on.", s.Name)
	}
	for _, b := range binds {
		ap, err := netip.ParseAddrPort(b.val)
		if err != nil {
			l.errorf(b.rng, "Invalid bind address",
				"bind takes \"ip:port\" with a literal address, e.g. \"0.0.0.0:25\" or \"[::]:587\": %v.", err)
			continue
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		rc.Bind = append(rc.Bind, ap.String())
		src.binds = append(src.binds, listItem{val: ap.String(), rng: b.rng})
	}
	rc.RemoteIPRanges, src.ranges = l.remoteRanges(s)

	rc.FQDN = l.cfg.Hub.Hostname
	if s.FQDN != nil {
		fqdn, err := normalizeDomain(*s.FQDN)
		if err != nil {
			l.errorf(s.FQDNRange, "Invalid fqdn", "%v.", err)
		}
		rc.FQDN = fqdn
	}
	rc.Banner = rc.FQDN + " ESMTP hubd"
	if s.Banner != nil {
		if strings.ContainsAny(*s.Banner, "\r\n") {
			l.errorf(s.DefRange, "Invalid banner", "The banner must be a single line.")
		}
		rc.Banner = *s.Banner
	}
	rc.TLS = l.receiveTLS(s.TLS)
	l.collectTLSPaths(s.Name, s.TLS, rc.TLS)
	l.receiveSecurity(s, &rc)
	l.receiveChecks(s, &rc) // checks.go
	l.receiveLimits(s, &rc)
	return rc, src
}

func (l *loader) remoteRanges(s *receiveConnectorSchema) ([]IPRange, []rangeItem) {
	items, set := l.stringList(s.RemoteIPRanges)
	if !set {
		all4, _ := ParseIPRange("0.0.0.0/0")
		all6, _ := ParseIPRange("::/0")
		return []IPRange{all4, all6}, []rangeItem{{all4, s.DefRange}, {all6, s.DefRange}}
	}
	if len(items) == 0 {
		l.errorf(s.RemoteIPRanges.Range(), "Empty remote_ip_ranges",
			"A connector with no remote ranges serves nobody; remove the attribute to serve everyone, or list ranges.")
	}
	var out []IPRange
	var src []rangeItem
	for _, it := range items {
		r, err := ParseIPRange(it.val)
		if err != nil {
			l.errorf(it.rng, "Invalid remote IP range", "%v. Use a CIDR (\"10.0.0.0/8\"), an address, or \"first-last\".", err)
			continue
		}
		out = append(out, r)
		src = append(src, rangeItem{r, it.rng})
	}
	return out, src
}

func (l *loader) receiveTLS(s *receiveTLSSchema) ReceiveTLS {
	if s == nil {
		return ReceiveTLS{Mode: TLSOff}
	}
	t := ReceiveTLS{Mode: TLSStartTLS}
	if s.Mode != nil {
		switch m := TLSMode(*s.Mode); m {
		case TLSStartTLS, TLSImplicit:
			t.Mode = m
		default:
			l.errorf(s.ModeRange, "Invalid TLS mode", "mode must be \"starttls\" or \"implicit\", not %q.", *s.Mode)
		}
	}
	if s.SelfSigned != nil {
		t.SelfSigned = *s.SelfSigned
	}
	switch {
	case t.SelfSigned && (s.CertFile != nil || s.KeyFile != nil):
		l.errorf(s.DefRange, "Conflicting TLS settings", "Use either self_signed = true or cert_file and key_file, not both.")
	case !t.SelfSigned && (s.CertFile == nil || s.KeyFile == nil):
		l.errorf(s.DefRange, "Missing TLS certificate",
			"TLS (mode %q) needs cert_file and key_file; for development only, self_signed = true generates one.", t.Mode)
	}
	if s.CertFile != nil {
		t.CertFile = l.existingFile(*s.CertFile, s.CertFileRange, "cert_file")
	}
	if s.KeyFile != nil {
		t.KeyFile = l.existingFile(*s.KeyFile, s.KeyFileRange, "key_file")
	}
	if s.ClientCAFile != nil {
		t.ClientCAFile = l.existingFile(*s.ClientCAFile, s.ClientCARange, "client_ca_file")
	}
	t.MinVersion = tls.VersionTLS12
	if s.MinVersion != nil {
		switch *s.MinVersion {
		case "1.2":
		case "1.3":
			t.MinVersion = tls.VersionTLS13
		default:
			// TLS 1.0 and 1.1 are deprecated (RFC 8996).
			l.errorf(s.MinVerRange, "Invalid min_version", "min_version must be \"1.2\" or \"1.3\" (RFC 8996 deprecates older versions), not %q.", *s.MinVersion)
		}
	}
	return t
}

// receiveSecurity fills AUTH, TLS requirements and permissions from the
// preset and explicit fields, and refuses combinations that are unsafe.
func (l *loader) receiveSecurity(s *receiveConnectorSchema, rc *ReceiveConnector) {
	p := presets[rc.Usage]
	presetRange := s.UsageRange
	if s.Usage == nil {
		presetRange = s.DefRange
	}
	rc.Auth = p.auth
	authRange := presetRange
	if items, set := l.stringList(s.Auth); set {
		rc.Auth, authRange = nil, s.Auth.Range()
		for _, it := range items {
			mech := strings.ToLower(it.val)
			if !authMechanisms[mech] {
				l.errorf(it.rng, "Unknown AUTH mechanism", "hubd offers \"plain\", \"login\" and \"external\"; %q is not supported.", it.val)
				continue
			}
			rc.Auth = append(rc.Auth, mech)
		}
	}
	rc.RequireTLS, rc.ExternallySecured = p.requireTLS, p.externallySecured
	tlsRange := presetRange
	if s.RequireTLS != nil {
		rc.RequireTLS, tlsRange = *s.RequireTLS, s.RequireTLSRange
	}
	if s.ExternallySecured != nil {
		rc.ExternallySecured = *s.ExternallySecured
	}
	if s.AllowInsecureAuth != nil {
		rc.AllowInsecureAuth = *s.AllowInsecureAuth
	}
	l.receiveAuthBackend(s, rc)
	if rc.RequireTLS && rc.TLS.Mode == TLSOff {
		l.errorf(tlsRange, "require_tls without TLS",
			"Connector %q requires TLS but has no tls block; add tls { cert_file = ...  key_file = ... } or set require_tls = false.", rc.Name)
	}
	if slices.Contains(rc.Auth, "external") && rc.TLS.ClientCAFile == "" {
		l.errorf(authRange, "EXTERNAL without client certificates",
			"Connector %q offers AUTH EXTERNAL, which authenticates by a verified client certificate: add client_ca_file to its tls block.", rc.Name)
	}
	if len(rc.Auth) > 0 && rc.TLS.Mode == TLSOff && !rc.AllowInsecureAuth {
		l.errorf(authRange, "AUTH without TLS",
			"Connector %q offers AUTH but has no tls block, so passwords would cross the network in clear text. "+
				"Add a tls block, or set allow_insecure_auth = true if the network is otherwise protected.", rc.Name)
	}
	relayAt := l.permissions(s, rc, p, presetRange)
	l.checkOpenRelay(rc, relayAt)
}

// permissions fills rc.Permissions and returns where an unauthenticated
// relay right came from (for the open-relay diagnostic).
func (l *loader) permissions(s *receiveConnectorSchema, rc *ReceiveConnector, p preset, presetRange hcl.Range) hcl.Range {
	rc.Permissions = Permissions{Anonymous: p.anonymous, Authenticated: p.authenticated, Trusted: p.trusted}
	anonAt, trustedAt := presetRange, presetRange
	if s.Permissions != nil {
		if r, at, set := l.rights(s.Permissions.Anonymous); set {
			rc.Permissions.Anonymous, anonAt = r, at
		}
		if r, _, set := l.rights(s.Permissions.Authenticated); set {
			rc.Permissions.Authenticated = r
		}
		if r, at, set := l.rights(s.Permissions.Trusted); set {
			rc.Permissions.Trusted, trustedAt = r, at
		}
	}
	if rc.Permissions.Anonymous.Has(RightRelay) {
		return anonAt
	}
	return trustedAt
}

// rights decodes a list of right names; at is the range of "relay" if listed.
func (l *loader) rights(expr hcl.Expression) (r Rights, at hcl.Range, set bool) {
	items, set := l.stringList(expr)
	if set {
		at = expr.Range()
	}
	for _, it := range items {
		right, ok := rightNames[it.val]
		if !ok {
			l.errorf(it.rng, "Unknown right",
				"Rights are submit, relay, any_sender, bypass_size_limit and accept_org_headers; %q is not one.", it.val)
			continue
		}
		if right == RightRelay {
			at = it.rng
		}
		r |= Rights(right)
	}
	return r, at, set
}

// checkOpenRelay enforces invariant 6 of DESIGN.md: unauthenticated relay is
// only allowed from named hosts, not from a large part of the Internet (see
// openrelay.go for what counts).
func (l *loader) checkOpenRelay(rc *ReceiveConnector, at hcl.Range) {
	unauth := rc.SessionRights(false)
	if !unauth.Has(RightRelay) {
		return
	}
	who := "anonymous"
	if rc.ExternallySecured && rc.Permissions.Trusted.Has(RightRelay) && !rc.Permissions.Anonymous.Has(RightRelay) {
		who = "trusted (externally_secured)"
	}
	v4, v6 := publicCoverage(rc.RemoteIPRanges)
	switch {
	case v4.Cmp(openRelayV4) > 0 || v6.Cmp(openRelayV6) > 0:
		l.errorf(at, "Open relay",
			"Connector %q gives %s sessions the relay right and its remote_ip_ranges cover %s public IPv4 and %s public "+
				"IPv6 addresses (more than a /8 or a /32), so much of the internet could relay mail through this hub. "+
				"Narrow remote_ip_ranges to the hosts allowed to relay (e.g. [\"10.1.2.0/28\"]), or remove relay from the "+
				"unauthenticated rights and require AUTH (permissions { authenticated = [\"submit\", \"relay\"] }).",
			rc.Name, who, v4, v6)
	case v4.Cmp(suspectV4) > 0 || v6.Cmp(suspectV6) > 0:
		l.warnf(at, "Broad unauthenticated relay",
			"Connector %q lets %s sessions relay from %s public IPv4 and %s public IPv6 addresses (more than a /16 or "+
				"a /48). Make sure every host in remote_ip_ranges is one you run.", rc.Name, who, v4, v6)
	}
}

func (l *loader) receiveLimits(s *receiveConnectorSchema, rc *ReceiveConnector) {
	rc.MaxMessageSize = l.positiveSize(s.MaxMessageSize, s.MaxMessageSizeRange, 36<<20, "max_message_size")
	rc.MaxHeaderSize = l.positiveSize(s.MaxHeaderSize, s.MaxHeaderSizeRange, 64<<10, "max_header_size")
	rc.MaxRecipients = l.intAtLeast(s.MaxRecipients, s.MaxRecipientsRange, 200, 1, "max_recipients")
	rc.MaxHopCount = l.intAtLeast(s.MaxHopCount, s.MaxHopCountRange, 100, 1, "max_hop_count")
	if rc.MaxHopCount < 100 {
		// RFC 5321 §6.3: the limit SHOULD be at least 100 hops.
		l.warnf(s.MaxHopCountRange, "Low max_hop_count",
			"RFC 5321 §6.3 asks for a hop limit of at least 100; %d may refuse legitimate mail.", rc.MaxHopCount)
	}
	rc.MaxInboundConnections = l.intAtLeast(s.MaxInboundConnections, s.MaxInboundConnectionsRange, 5000, 1, "max_inbound_connections")
	rc.MaxInboundConnectionsPerSource = l.intAtLeast(s.MaxInboundConnectionsPerSource, s.MaxInboundConnectionsPerSourceRange, 20, 1, "max_inbound_connections_per_source")
	rc.MaxProtocolErrors = l.intAtLeast(s.MaxProtocolErrors, s.MaxProtocolErrorsRange, 5, 1, "max_protocol_errors")
	rc.MaxLogonFailures = l.intAtLeast(s.MaxLogonFailures, s.MaxLogonFailuresRange, 3, 1, "max_logon_failures")
	rc.ConnectionTimeout = l.positiveDuration(s.ConnectionTimeout, s.ConnectionTimeoutRange, 10*time.Minute, "connection_timeout")
	rc.ConnectionInactivityTimeout = l.positiveDuration(s.ConnectionInactivityTimeout, s.ConnectionInactivityTimeoutRange, 5*time.Minute, "connection_inactivity_timeout")
	rc.TarpitInterval = l.duration(s.TarpitInterval, s.TarpitIntervalRange, 5*time.Second)
	rc.MessageRateLimit = l.intAtLeast(s.MessageRateLimit, s.MessageRateLimitRange, 0, 0, "message_rate_limit")
	rc.MessageRateSource = RateSourceIP
	if rc.Usage == UsageClient {
		rc.MessageRateSource = RateSourceUser // Exchange's client connectors count per user
	}
	if s.MessageRateSource != nil {
		switch src := RateSource(*s.MessageRateSource); src {
		case RateSourceIP, RateSourceUser, RateSourceAll:
			rc.MessageRateSource = src
		default:
			l.errorf(s.MessageRateSourceRange, "Invalid message_rate_source",
				"message_rate_source must be \"ip\", \"user\" or \"all\", not %q.", *s.MessageRateSource)
		}
	}
	rc.MaxInboundConnectionsPercentagePerSource = l.intAtLeast(s.MaxConnPercentPerSource, s.MaxConnPercentPerSourceRange, 2, 1,
		"max_inbound_connections_percentage_per_source")
	if rc.MaxInboundConnectionsPercentagePerSource > 100 {
		l.errorf(s.MaxConnPercentPerSourceRange, "Invalid max_inbound_connections_percentage_per_source",
			"It is a percentage of the connector's remaining connection slots: 1 to 100, not %d.", rc.MaxInboundConnectionsPercentagePerSource)
	}
	rc.ConnectionRateLimit = l.intAtLeast(s.ConnectionRateLimit, s.ConnectionRateLimitRange, 0, 0, "connection_rate_limit")
	rc.RecipientRateLimit = l.intAtLeast(s.RecipientRateLimit, s.RecipientRateLimitRange, 0, 0, "recipient_rate_limit")
	rc.MaxAuthFailuresPerSource = l.intAtLeast(s.MaxAuthFailuresPerSource, s.MaxAuthFailuresPerSourceRange, 10, 1, "max_auth_failures_per_source")
	rc.MaxAuthFailuresPerNetwork = l.intAtLeast(s.MaxAuthFailuresPerNetwork, s.MaxAuthFailuresPerNetworkRange, 30, 1, "max_auth_failures_per_network")
	rc.AuthFailureWindow = l.positiveDuration(s.AuthFailureWindow, s.AuthFailureWindowRange, 15*time.Minute, "auth_failure_window")
	rc.MaxCommandLineLength = l.intAtLeast(s.MaxCommandLineLength, s.MaxCommandLineLengthRange, 2048, 512, "max_command_line_length")
	rc.MaxCommandsBeforeMail = l.intAtLeast(s.MaxCommandsBeforeMail, s.MaxCommandsBeforeMailRange, 20, 1, "max_commands_before_mail")
	rc.RequireEHLODomain = true
	if s.RequireEHLODomain != nil {
		rc.RequireEHLODomain = *s.RequireEHLODomain
	}
	if s.AllowVRFY != nil {
		rc.AllowVRFY = *s.AllowVRFY
	}
	if s.AllowEXPN != nil {
		rc.AllowEXPN = *s.AllowEXPN
	}
	if s.ProxyProtocol != nil {
		rc.ProxyProtocol = *s.ProxyProtocol
	}
	proxies, set := l.stringList(s.TrustedProxies)
	for _, it := range proxies {
		r, err := ParseIPRange(it.val)
		if err != nil {
			l.errorf(it.rng, "Invalid trusted proxy", "%v. Use a CIDR, an address, or \"first-last\".", err)
			continue
		}
		rc.TrustedProxies = append(rc.TrustedProxies, r)
	}
	switch {
	case rc.ProxyProtocol && len(proxies) == 0:
		// Without a list, anyone could claim any address and walk past
		// every range and limit.
		l.errorf(s.ProxyProtocolRange, "PROXY protocol without trusted proxies",
			"Connector %q reads PROXY protocol headers; list the proxies allowed to send them in trusted_proxies.", rc.Name)
	case set && !rc.ProxyProtocol:
		l.warnf(s.TrustedProxies.Range(), "trusted_proxies unused", "trusted_proxies has no effect without proxy_protocol = true.")
	}
}

// positiveSize is size with a check that the value is above zero.
func (l *loader) positiveSize(p *string, rng hcl.Range, def int64, name string) int64 {
	n := l.size(p, rng, def)
	if n <= 0 {
		l.errorf(rng, "Invalid size", "%s must be larger than zero.", name)
		return def
	}
	return n
}

var sendTLSModes = map[string]SendTLS{"none": SendTLSNone, "opportunistic": SendTLSOpportunistic, "required": SendTLSRequired,
	"implicit": SendTLSImplicit}

func (l *loader) buildSendConnectors() {
	dups := newDupCheck("send_connector")
	for i := range l.schema.SendConnectors {
		s := &l.schema.SendConnectors[i]
		if !validName(s.Name) {
			l.errorf(s.NameRange, "Invalid connector name",
				"Connector names start with a letter or digit and use only letters, digits, '.', '_' and '-'; %q does not.", s.Name)
		}
		if dups.seen(l, s.Name, s.Name, s.DefRange) {
			continue
		}
		l.cfg.SendConnectors = append(l.cfg.SendConnectors, l.sendConnector(s))
	}
}

func (l *loader) sendConnector(s *sendConnectorSchema) SendConnector {
	sc := SendConnector{Name: s.Name, Enabled: true, TLS: SendTLSOpportunistic, FQDN: l.cfg.Hub.Hostname}
	if s.Enabled != nil {
		sc.Enabled = *s.Enabled
	}
	spaces, set := l.stringList(s.AddressSpaces)
	if set && len(spaces) == 0 {
		l.errorf(s.AddressSpaces.Range(), "Empty address_spaces", "Send connector %q serves no domain; list at least one (\"*\" for all).", s.Name)
	}
	for _, it := range spaces {
		if as, ok := l.addressSpace(it); ok {
			sc.AddressSpaces = append(sc.AddressSpaces, as)
		}
	}
	if s.TLS != nil {
		t, ok := sendTLSModes[*s.TLS]
		if !ok {
			l.errorf(s.TLSRange, "Invalid TLS policy", "tls must be \"none\", \"opportunistic\", \"required\" or \"implicit\", not %q.", *s.TLS)
		}
		sc.TLS = t
	}
	hosts, _ := l.stringList(s.SmartHosts)
	for _, it := range hosts {
		h, err := parseSmartHost(it.val, smartHostPort(sc.TLS))
		if err != nil {
			l.errorf(it.rng, "Invalid smart host", "%v. Write \"host\", \"host:port\" or \"[192.0.2.5]:25\".", err)
			continue
		}
		sc.SmartHosts = append(sc.SmartHosts, h)
	}
	if s.DNSRouting != nil {
		sc.DNSRouting = *s.DNSRouting
	}
	switch {
	case len(hosts) == 0 && !sc.DNSRouting:
		l.errorf(s.DefRange, "Send connector without a route",
			"Send connector %q needs smart_hosts = [...] or dns_routing = true.", s.Name)
	case len(hosts) > 0 && sc.DNSRouting:
		l.errorf(s.DefRange, "Send connector with two routes",
			"Send connector %q sets both smart_hosts and dns_routing = true; choose one.", s.Name)
	}
	sc.MaxMessageSize = l.size(s.MaxMessageSize, s.MaxSizeRange, 0)
	if s.SendOrgHeaders != nil {
		sc.SendOrgHeaders = *s.SendOrgHeaders
	}
	if s.FQDN != nil {
		fqdn, err := normalizeDomain(*s.FQDN)
		if err != nil {
			l.errorf(s.FQDNRange, "Invalid fqdn", "%v.", err)
		}
		sc.FQDN = fqdn
	}
	l.sendAuth(s, &sc)
	return sc
}

// addressSpace parses "example.com", "*.example.com;5" or "*".
func (l *loader) addressSpace(it listItem) (AddressSpace, bool) {
	pat, costText, hasCost := strings.Cut(it.val, ";")
	as := AddressSpace{Pattern: strings.TrimSpace(pat), Cost: 1}
	if as.Pattern != "*" {
		p, err := normalizeDomainPattern(as.Pattern)
		if err != nil {
			l.errorf(it.rng, "Invalid address space", "%v. Use \"example.com\", \"*.example.com\" or \"*\", optionally with \";cost\".", err)
			return as, false
		}
		as.Pattern = p
	}
	if hasCost {
		c, err := strconv.Atoi(strings.TrimSpace(costText))
		if err != nil || c < 1 || c > 100 {
			l.errorf(it.rng, "Invalid address space cost", "The cost after ';' must be a whole number from 1 to 100, not %q.", costText)
			return as, false
		}
		as.Cost = c
	}
	return as, true
}

// parseSmartHost normalises a smart host to "host:port" or "[ip]:port";
// defPort is the port when s gives none.
func parseSmartHost(s, defPort string) (string, error) {
	host, port := s, defPort
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", errBadHost(s, "unterminated '['")
		}
		host = s[1:end]
		if rest := s[end+1:]; rest != "" {
			p, ok := strings.CutPrefix(rest, ":")
			if !ok {
				return "", errBadHost(s, "junk after ']'")
			}
			port = p
		}
		if _, err := netip.ParseAddr(host); err != nil {
			return "", errBadHost(s, "not an IP address inside [ ]")
		}
	} else if h, p, ok := strings.Cut(s, ":"); ok {
		if strings.Contains(p, ":") {
			return "", errBadHost(s, "IPv6 addresses must be written in brackets")
		}
		host, port = h, p
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", errBadHost(s, "bad port")
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return "[" + a.Unmap().String() + "]:" + strconv.Itoa(n), nil
	}
	d, err := normalizeDomain(host)
	if err != nil {
		return "", errBadHost(s, err.Error())
	}
	return d + ":" + strconv.Itoa(n), nil
}

type smartHostError struct{ host, why string }

func (e *smartHostError) Error() string { return "smart host " + strconv.Quote(e.host) + ": " + e.why }

func errBadHost(host, why string) error { return &smartHostError{host, why} }
