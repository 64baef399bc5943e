package categorizer

import (
	"cmp"
	"slices"
	"strings"

	"hubd/policy"
)

// TableRow is one line of the routing table `hubd routes` prints: either an
// accepted domain (DomainType set, Connector "") or one address space of a
// send connector.
type TableRow struct {
	// Accepted domains: what the hub does with mail for the domain itself.
	DomainType policy.DomainType // "" for a send connector row
	Local      string            // accepted domain rows: how its addresses are delivered, in words

	Connector      string // send connector name
	Enabled        bool   // a disabled connector is listed but never chosen
	AddressSpace   string // "example.com", "*.example.com", "*"; the domain for accepted domain rows
	Cost           int
	SmartHosts     []string // in the order they are tried
	DNSRouting     bool     // no smart hosts: the MX hosts of the recipient domain
	TLS            policy.SendTLS
	MaxMessageSize int64 // 0 = unlimited; larger messages fall through to the next row that matches
}

// Table is the routing table of cfg: first the accepted domains, in
// configuration order (local delivery is decided before any send connector
// is consulted), then every address space of every send connector in the
// order Route prefers them: the most specific pattern first (exact domains,
// then wildcards longest first, then "*"), rows for one pattern together,
// enabled before disabled, then by cost, then by connector name. For a
// domain, the first enabled row whose pattern matches and whose
// max_message_size admits the message is the route.
func Table(cfg *policy.Config) []TableRow {
	var rows []TableRow
	for _, ad := range cfg.AcceptedDomains {
		rows = append(rows, TableRow{DomainType: ad.Type, Enabled: true, AddressSpace: ad.Name, Local: localText(ad.Type)})
	}
	var send []TableRow
	for _, sc := range cfg.SendConnectors {
		for _, sp := range sc.AddressSpaces {
			send = append(send, TableRow{
				Connector:      sc.Name,
				Enabled:        sc.Enabled,
				AddressSpace:   sp.Pattern,
				Cost:           sp.Cost,
				SmartHosts:     slices.Clone(sc.SmartHosts),
				DNSRouting:     sc.DNSRouting && len(sc.SmartHosts) == 0,
				TLS:            sc.TLS,
				MaxMessageSize: sc.MaxMessageSize,
			})
		}
	}
	slices.SortStableFunc(send, compareRows)
	return append(rows, send...)
}

// compareRows orders send connector rows as Route prefers them.
func compareRows(a, b TableRow) int {
	sa, sb := specificityOf(a.AddressSpace), specificityOf(b.AddressSpace)
	if sa.rank != sb.rank {
		return cmp.Compare(sb.rank, sa.rank)
	}
	if sa.rank == 1 && sa.n != sb.n {
		return cmp.Compare(sb.n, sa.n) // the longer wildcard is the more specific
	}
	if c := strings.Compare(a.AddressSpace, b.AddressSpace); c != 0 {
		return c
	}
	if a.Enabled != b.Enabled {
		if a.Enabled {
			return -1
		}
		return 1
	}
	if a.Cost != b.Cost {
		return cmp.Compare(a.Cost, b.Cost)
	}
	return strings.Compare(a.Connector, b.Connector)
}

// localText says, for the routing table, what an accepted domain's type
// means for delivery.
func localText(t policy.DomainType) string {
	switch t {
	case policy.Authoritative:
		return "local: mailboxes, aliases and distribution lists; other addresses fail 550 5.1.1"
	case policy.InternalRelay:
		return "local mailboxes, aliases and lists; other addresses routed by the send connectors"
	default:
		return "accepted, then routed by the send connectors"
	}
}

// Explain categorizes the single address addr for a message of size bytes
// with no expansion trace: what `hubd routes ADDRESS` prints. Each outcome's
// Why names the mailbox, connector and address space that decided it, the
// aliases and lists it was expanded through, and, when there is no route,
// why not (no matching address space, or every match too small).
func Explain(cfg *policy.Config, addr string, size int64) []Outcome {
	return CategorizeMessage(cfg, Message{Size: size}, []Input{{Address: addr}})
}
