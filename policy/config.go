// Package policy turns hubd's HCL configuration into an immutable, validated
// Config and answers the pure policy questions the rest of hubd asks of it:
// which receive connector serves a peer, may this session relay, may it send
// as this sender, is this recipient known here.
//
// Loading (Load) decodes one file or a directory of *.hcl files with gohcl,
// applies the defaults of DESIGN.md (the Exchange 2007 hub transport's), and
// validates everything at once, returning hcl.Diagnostics that carry file,
// line, column and a source snippet. A Config is never mutated after Load
// returns: a reload builds a new one and swaps it atomically.
//
// Sizes: "KB", "MB", "GB" are binary (2^10, 2^20, 2^30), as Exchange's
// ByteQuantifiedSize is; "KiB", "MiB", "GiB" are accepted as synonyms, and
// "B" means bytes. Durations accept Go's units plus "d" (24h) and "w" (7d).
//
// This package does no I/O beyond reading configuration files (and checking
// that files it names exist).
package policy

import (
	"net/netip"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Config is one validated, immutable snapshot of the whole configuration.
type Config struct {
	Hub               Hub
	AcceptedDomains   []AcceptedDomain
	Mailboxes         []Mailbox
	Aliases           []Alias
	DistributionLists []DistributionList
	ReceiveConnectors []ReceiveConnector
	SendConnectors    []SendConnector
	Admin             Admin
	Users             []User        // user blocks, then the lines of hub.users_file
	AuthBackends      []AuthBackend // auth_backend blocks, by name
	Telemetry         Telemetry     // the telemetry block (traces, metrics, logs)
	DKIM              []DKIMDomain  // dkim blocks: signing domains and their keys (dkim.go)
	Queue             Queue         // the queue block: the queue engine (queue.go, queueblock.go)

	// Warnings are the non-fatal diagnostics of Load (for `hubd check`);
	// render them with WriteDiagnostics(w, c.Files(), c.Warnings, color).
	Warnings hcl.Diagnostics

	// Indexes built by Load; unexported so the snapshot stays immutable.
	mailboxByAddress map[string]*Mailbox // every address of every mailbox, lower-cased
	userByLogin      map[string]*User    // lookupKey(login)
	aliasByAddress   map[string]*Alias
	listByAddress    map[string]*DistributionList
	domainByName     map[string]*AcceptedDomain // exact names and "*.x" patterns
	files            map[string]*hcl.File       // sources (HCL files, aliases files), for rendering Warnings
	hashedOnly       map[string][]byte          // sources in Hash but never rendered (users_file: it holds hashes)
	pathUses         []PathUse                  // paths.go
}

// Files returns the parsed configuration sources, keyed by file name, so
// that warnings can be rendered with source snippets.
func (c *Config) Files() map[string]*hcl.File { return c.files }

// Hub holds settings shared by the whole transport.
type Hub struct {
	Hostname string // FQDN used in Received:, the default connector FQDN, and EHLO on send connectors
	SpoolDir string // durable queue; relative paths resolve against the config file's directory

	// The retry ladder for temporary delivery failures (Exchange's hub
	// defaults): QuickRetryCount retries QuickRetryInterval apart ("glitch"
	// retries), then TransientRetryCount retries TransientRetryInterval
	// apart, then one every RetryInterval until MessageExpiration.
	QuickRetryCount        int           // default 4
	QuickRetryInterval     time.Duration // default 1m
	TransientRetryCount    int           // default 6
	TransientRetryInterval time.Duration // default 5m
	RetryInterval          time.Duration // default 10m
	MessageExpiration      time.Duration // default 48h: then the recipient fails with 4.4.7
	DelayDSNAfter          time.Duration // default 4h: one delay DSN after this; 0 = never

	PoisonThreshold                 int // default 2: crashes attributed to a message (a panic, or a death while it was the isolated suspect) before it is parked
	MaxOutboundConnections          int // default 1000: concurrent deliveries overall
	MaxPerDomainOutboundConnections int // default 20: concurrent deliveries per next hop
	MaxHopCount                     int // default 100: Received: headers a message the hub expands or generates may carry

	MaxAliasDepth int           // default 10: alias and distribution list nesting
	ShutdownGrace time.Duration // default 30s: how long SIGTERM waits for sessions in DATA

	// The maildrop: where sendmail(1) leaves mail for the pickup
	// (internal/maildrop). MaildropDir defaults to <spool_dir>/../maildrop;
	// MaildropGroup names the group sendmail is installed setgid to (the
	// directory is made mode 1730, owner hubd, that group); "" leaves the
	// directory's group as it is (a hub run by one user only).
	MaildropDir   string
	MaildropGroup string

	// UsersFile is hub.users_file: more User logins, one per line (see
	// User). Read at every Load, so a reload re-reads it; a broken file
	// fails the load like a broken HCL file.
	UsersFile string

	// DNSServers are the name servers hubd asks ("ip:port"), for MX
	// routing and the mail authentication checks (internal/resolver);
	// empty: the system's resolver.
	DNSServers []string

	TrackingLog  TrackingLog
	BackPressure BackPressure
}

// BackPressure is Exchange 2007's resource monitoring: when the spool's
// filesystem runs short of free space, or the process of memory, the hub
// first refuses mail from anonymous sessions (Medium) and then all new mail
// (High), with 452 4.3.1, so that it never accepts a message it cannot
// store. Levels drop back only below the lower threshold (hysteresis).
type BackPressure struct {
	Enabled bool // default true
	// DiskFreeHigh: less free space than this on the spool's filesystem is
	// High. Default 500MB (Exchange 2010 SP1).
	DiskFreeHigh int64
	// DiskFreeMedium: less than this is Medium. 0 (the default) means
	// DiskFreeHigh plus 2% of the filesystem's size (Exchange's rule); the
	// level returns to Normal above DiskFreeHigh plus 4%.
	DiskFreeMedium int64
	// Process memory (resident) as a percentage of the machine's RAM:
	// High at MemoryHighPercent (default 75), Medium at MemoryMediumPercent
	// (default 73), Normal again below MemoryMediumPercent-2.
	MemoryHighPercent   int
	MemoryMediumPercent int
	CheckInterval       time.Duration // default 2s
}

// TrackingLog configures the message tracking log: one JSON line per event
// (RECEIVE, EXPAND, DELIVER, ...), rotated by size and age.
type TrackingLog struct {
	Enabled          bool          // default true
	Dir              string        // default <spool_dir>/../log/tracking
	MaxFileSize      int64         // default 10MB: a file is rotated when it would grow past this
	MaxAge           time.Duration // default 30d: older files are deleted
	MaxDirectorySize int64         // default 1GB: oldest files are deleted beyond this
}

// DomainType says what hubd does with mail for an accepted domain.
type DomainType string

const (
	// Authoritative: mailboxes live here; unknown recipients are refused at RCPT.
	Authoritative DomainType = "authoritative"
	// InternalRelay: the domain is ours but its mailboxes live elsewhere; mail goes
	// on through the send connector whose address space matches it.
	InternalRelay DomainType = "internal_relay"
	// ExternalRelay: we accept mail for the domain from anyone and relay it on.
	ExternalRelay DomainType = "external_relay"
)

// AcceptedDomain is a domain this hub accepts mail for from anonymous senders.
type AcceptedDomain struct {
	Name string     // "example.com" or "*.example.com", lower-case, ASCII (IDNA)
	Type DomainType // default Authoritative

	// Recipients, when non-nil, is the complete set of valid recipient
	// addresses (lower-case) for this domain: RCPT TO for anything else is
	// refused with 550 5.1.1 (as Postfix's relay_recipient_maps). Filled from
	// `recipients = [...]` and/or `recipients_file = "path"` (one address a line,
	// # comments). For Authoritative domains, mailboxes and aliases are always
	// valid recipients in addition.
	Recipients map[string]bool
}

// Mailbox is a local mailbox: a login and a Maildir.
type Mailbox struct {
	Address      string   // primary address, lower-case; also the AUTH login name
	PasswordHash string   // bcrypt or Argon2id (policy/passhash); empty means the mailbox cannot log in
	Maildir      string   // directory (tmp/new/cur made on first delivery); default <spool_dir>/../mail/<local part>
	Addresses    []string // extra addresses delivered here and usable as MAIL FROM; lower-case
	// LMTP, when set, delivers to an LMTP server (RFC 2033) instead of the
	// Maildir: "unix:/path/to/socket" or "host:port".
	LMTP string
}

// Alias expands one address into others (local or remote).
type Alias struct {
	Address string   // lower-case
	To      []string // targets, lower-case; may be other aliases
	// Source is "file:line" of an alias read from an aliases file (an
	// aliases_file block), for explanations; "" for an HCL alias block.
	Source string
}

// DistributionList expands one address into its members, each of which may
// be a mailbox, an alias, a remote address or another list. Expansion is
// recursive with de-duplication and a depth limit (Hub.MaxAliasDepth); a
// message expanded here carries a trace header so that the list is not
// expanded again when the message comes back (DESIGN.md invariant 7).
type DistributionList struct {
	Address string   // lower-case
	Members []string // lower-case
	// Owner, when set, becomes the envelope sender of the copies sent to
	// remote members, so that their bounces reach the owner, not the author.
	Owner string
}

// Usage is a receive connector preset (Exchange's -Usage); explicit fields win.
type Usage string

const (
	UsageCustom   Usage = "custom"   // nothing preset
	UsageClient   Usage = "client"   // submission: auth plain+login, require_tls, authenticated=[submit relay]
	UsageInternet Usage = "internet" // anonymous=[submit], STARTTLS offered if tls set
	UsageInternal Usage = "internal" // externally secured: trusted=[submit relay any_sender accept_org_headers bypass_size_limit]
	UsagePartner  Usage = "partner"  // anonymous=[submit], require_tls
)

// Right is one permission a principal may hold on a receive connector.
type Right uint32

const (
	RightSubmit           Right = 1 << iota // may submit mail for accepted domains
	RightRelay                              // may send to domains that are not accepted here
	RightAnySender                          // may use any MAIL FROM (otherwise: own addresses when authenticated)
	RightBypassSizeLimit                    // max_message_size does not apply
	RightAcceptOrgHeaders                   // hub-internal headers (X-Hubd-*) are kept instead of stripped (header firewall)
)

// Rights is a set of Right values.
type Rights uint32

// Has reports whether every right in r2 is in the set.
func (r Rights) Has(r2 Right) bool { return uint32(r)&uint32(r2) == uint32(r2) }

// Permissions maps each principal to its rights on one connector. A session's
// rights are the union of Anonymous, plus Authenticated once AUTH succeeded,
// plus Trusted when the connector is externally secured.
type Permissions struct {
	Anonymous     Rights
	Authenticated Rights
	Trusted       Rights
}

// TLSMode says how a receive connector offers TLS.
type TLSMode string

const (
	TLSOff      TLSMode = "off"      // no tls block
	TLSStartTLS TLSMode = "starttls" // default when a tls block is present
	TLSImplicit TLSMode = "implicit" // TLS from the first byte (port 465, RFC 8314)
)

// ReceiveTLS is a receive connector's TLS setup.
type ReceiveTLS struct {
	Mode       TLSMode
	CertFile   string // PEM; relative to the config file's directory
	KeyFile    string
	SelfSigned bool // development only: generate a certificate under <spool_dir>/tls/ at first start
	// ClientCAFile (PEM) makes the connector ask for a client certificate
	// and verify it against these CAs; with auth = ["external"] a verified
	// certificate authenticates the session (RFC 4422 EXTERNAL, mutual TLS
	// for partner connectors).
	ClientCAFile string
	MinVersion   uint16 // tls.VersionTLS12 (default) or tls.VersionTLS13
}

// IPRange is an inclusive range of addresses of one family, from a CIDR
// ("10.0.0.0/8"), a single address, or "a-b".
type IPRange struct {
	First, Last netip.Addr
	Text        string // as written in the config, for messages
}

// ReceiveConnector is one pathway into the hub, with its own policy.
type ReceiveConnector struct {
	Name              string
	Enabled           bool // default true
	Usage             Usage
	Bind              []string  // "ip:port"
	RemoteIPRanges    []IPRange // default 0.0.0.0/0 and ::/0
	FQDN              string    // default Hub.Hostname
	Banner            string    // default "<fqdn> ESMTP hubd"
	TLS               ReceiveTLS
	RequireTLS        bool     // MAIL refused with 530 5.7.0 before STARTTLS
	Auth              []string // SASL mechanisms, lower-case: "plain", "login"
	AllowInsecureAuth bool     // offer AUTH without TLS
	// AuthBackend names the auth_backend that checks PLAIN and LOGIN
	// passwords on this connector; "" (the default) checks them against
	// the local logins (mailbox and user password hashes).
	AuthBackend       string
	ExternallySecured bool // every session gets the Trusted rights (Exchange's ExternallySecured)
	Permissions       Permissions
	Checks            ReceiveChecks // SPF, DKIM, DMARC on receipt (checks.go)

	MaxMessageSize                 int64         // default 36MB (36*2^20)
	MaxRecipients                  int           // default 200
	MaxHeaderSize                  int64         // default 64KB
	MaxHopCount                    int           // default 100
	MaxInboundConnections          int           // default 5000
	MaxInboundConnectionsPerSource int           // default 20
	MaxProtocolErrors              int           // default 5
	MaxLogonFailures               int           // default 3
	ConnectionTimeout              time.Duration // default 10m: whole session
	ConnectionInactivityTimeout    time.Duration // default 5m: between commands
	TarpitInterval                 time.Duration // default 5s: reply delay for sessions that earn it; never for authenticated ones
	MessageRateLimit               int           // messages per minute per MessageRateSource; 0 = unlimited (over it: 421 4.4.2)
	MessageRateSource              RateSource    // default "ip"; "user" for usage = "client"

	// More limits (issue 4: abuse resistance). 0 means unlimited where noted.
	MaxInboundConnectionsPercentagePerSource int // default 2: % of the connector's remaining slots one source may take (421 4.3.2)
	ConnectionRateLimit                      int // connections per minute per client source; 0 = unlimited (421 4.4.2)
	RecipientRateLimit                       int // recipients per minute per authenticated user; 0 = unlimited (452 4.5.3)

	// Brute-force defence: failed AUTH counted across connections per
	// source (IPv4 address, IPv6 /64) and per network (/24 IPv4, /48 IPv6) within
	// AuthFailureWindow; each failure delays the reply more, and past the
	// limit AUTH is refused with 454 4.7.0 until the window has passed.
	MaxAuthFailuresPerSource  int           // default 10
	MaxAuthFailuresPerNetwork int           // default 30
	AuthFailureWindow         time.Duration // default 15m

	// PROXY protocol (v1 and v2) in front of the connector: the client
	// address in the header is used for ranges and limits, trusted only
	// from TrustedProxies; a connection from elsewhere is refused.
	ProxyProtocol  bool
	TrustedProxies []IPRange

	// Input hardening.
	MaxCommandLineLength  int  // default 2048 octets with CRLF (RFC 5321 §4.5.3.1.4 is 512 without extensions): 500 5.5.2
	MaxCommandsBeforeMail int  // default 20: commands (NOOP, RSET, VRFY, HELP, ...) before the first MAIL, then 421 4.7.0
	RequireEHLODomain     bool // default true: EHLO/HELO needs a domain or address literal (501 5.5.4)
	AllowVRFY             bool // default false: VRFY answers 252 2.5.0 (RFC 5321 §3.5.3) instead of revealing users
	AllowEXPN             bool // default false: EXPN answers 252 2.5.0 instead of listing members
}

// RateSource says what message_rate_limit counts per.
type RateSource string

const (
	RateSourceIP   RateSource = "ip"   // per client address
	RateSourceUser RateSource = "user" // per authenticated user (sessions without AUTH are not limited)
	RateSourceAll  RateSource = "all"  // per user when authenticated, else per address
)

// SendTLS is a send connector's TLS policy.
type SendTLS string

const (
	SendTLSNone          SendTLS = "none"
	SendTLSOpportunistic SendTLS = "opportunistic" // default
	SendTLSRequired      SendTLS = "required"
	SendTLSImplicit      SendTLS = "implicit" // TLS from the first byte, verified (RFC 8314 §3.3); port default 465
)

// AddressSpace is one domain pattern a send connector serves, with a cost.
type AddressSpace struct {
	Pattern string // "example.com", "*.example.com" or "*"; lower-case
	Cost    int    // 1..100, default 1
}

// SendConnector routes mail for its address spaces to smart hosts.
type SendConnector struct {
	Name           string
	Enabled        bool // default true
	AddressSpaces  []AddressSpace
	SmartHosts     []string // "host:port" or "[ip]:port", tried in order; port default 25
	DNSRouting     bool     // resolve MX (later issue); false requires smart_hosts
	TLS            SendTLS
	MaxMessageSize int64 // 0 = unlimited
	FQDN           string
	// SendOrgHeaders keeps hub-internal headers (X-Hubd-*) on mail sent
	// through this connector; default false: they are stripped (the header
	// firewall), as on Exchange's Internet-facing send connectors.
	SendOrgHeaders bool
	// Auth, when set, logs in to the smart hosts (sendauth.go); nil: no AUTH.
	Auth *SendAuth
	// ClientCertFile and ClientKeyFile (PEM, both or neither) are the
	// client certificate presented in every TLS handshake (sendauth.go).
	ClientCertFile, ClientKeyFile string
	// CAFile (PEM) holds the certificates that verify the smart hosts'
	// when TLS is verified (required, implicit), instead of the system's
	// roots: a private CA's smart host. "" → the system's roots.
	CAFile string
}

// Reply is an SMTP reply decided by policy: a code, an RFC 3463 enhanced
// status code and text. It is also an error, so a refusal travels as one.
type Reply struct {
	Code     int    // 550
	Enhanced string // "5.7.1"
	Text     string // "Unable to relay"
}

func (r *Reply) Error() string { return itoa(r.Code) + " " + r.Enhanced + " " + r.Text }

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
