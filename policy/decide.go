package policy

// Signatures the rest of hubd codes against. Bodies are filled in by the policy
// implementation; keep the signatures stable.

import "net/netip"

// ConnectorFor returns the enabled receive connector bound to bind ("ip:port"
// as listened on) whose remote_ip_ranges contain peer most specifically (the
// smallest range wins: a /32 beats a /24 beats 0.0.0.0/0), or nil.
// func (c *Config) ConnectorFor(bind string, peer netip.Addr) *ReceiveConnector

// Binds returns the distinct bind addresses of enabled connectors, sorted.
// func (c *Config) Binds() []string

// Domain returns the accepted domain matching domain (exact beats "*.x"; the
// longest wildcard wins), or nil. domain is matched case-insensitively.
// func (c *Config) Domain(domain string) *AcceptedDomain

// MailboxFor returns the mailbox owning address (primary or extra), or nil.
// func (c *Config) MailboxFor(address string) *Mailbox

// AliasFor returns the alias for address, or nil.
// func (c *Config) AliasFor(address string) *Alias

// SessionRights returns the rights of a session on rc.
// func (rc *ReceiveConnector) SessionRights(authenticated bool) Rights

// CheckSender decides MAIL FROM: nil, or a Reply (550 5.7.1 "Not authorized
// to send as <x>") when an authenticated user without RightAnySender uses an
// address that is not one of its mailbox's addresses.
// func (c *Config) CheckSender(rights Rights, authUser, from string) *Reply

// CheckRecipient decides RCPT TO: nil to accept, or a Reply:
//   - address not parseable, or using source routes / percent hack / '!' / a
//     quoted local part containing '@' without RightRelay -> 550 5.7.1 Unable to relay
//   - accepted domain with a recipient set (authoritative: mailboxes+aliases+Recipients)
//     and the address not in it -> 550 5.1.1 User unknown
//   - not an accepted domain and no RightRelay -> 550 5.7.1 Unable to relay
//   - no RightSubmit -> 550 5.7.1 Not authorized
// func (c *Config) CheckRecipient(rights Rights, rcpt string) *Reply

var _ = netip.Addr{}
