// Package categorizer decides where each recipient of a queued message goes:
// it resolves local addresses through aliases to mailboxes, routes everything
// else through the send connectors, and groups the result by next hop
// (bifurcation). It is a pure function of a *policy.Config snapshot and its
// inputs: no I/O, no clock, no state, so the transport can call it again on
// every attempt and a config reload changes routing on the next one.
//
// # Which recipients are local
//
// An address is first given to Config.ResolveLocal, the same function RCPT
// TO uses, so that what was accepted is what is delivered: it knows the
// authoritative domains' mailboxes, aliases and listed recipients, maps
// "user+detail" to "user" (RFC 5233) and a bare "postmaster" to the
// hub's postmaster (RFC 5321 §4.5.1). Otherwise the domain decides:
//   - authoritative: 550 5.1.1 User unknown, a permanent failure.
//   - internal_relay: the address is resolved as an alias or mailbox if it
//     is one; any other address is routed on through the send connectors
//     (the domain's other mailboxes live elsewhere).
//   - external_relay, or not an accepted domain: routed; aliases are not
//     consulted.
//
// A listed recipient of an authoritative domain (`recipients = [...]`) that
// is neither a mailbox nor an alias is routed too: its mailbox is elsewhere.
//
// Local addresses are compared case-insensitively (the policy lower-cases
// configured addresses); remote local parts keep their case, since RFC 5321
// §2.4 lets the receiving host decide whether case matters.
//
// # Aliases
//
// An alias expands to its targets, each resolved again by the same rules, so
// an alias may name mailboxes, other aliases and remote addresses. Expansion
// is recursive with two guards (DESIGN.md invariant 7):
//   - depth: the envelope recipient is at depth 0 and each alias expansion
//     adds one. Expanding an alias found at depth >= Hub.MaxAliasDepth fails
//     that branch with 554 5.4.6 "Alias loop or too deep" (RFC 3463 X.4.6,
//     routing loop detected).
//   - loops: a target equal to an address on its own expansion path is not
//     expanded again. If that address is also a mailbox, the mail goes to the
//     mailbox (`alias "a" { to = ["a", "b"] }` keeps a copy for a's owner);
//     otherwise that branch fails with 5.4.6. Sibling branches are unaffected.
//
// # De-duplication
//
// Within one Categorize call, every final destination receives the message
// once: a mailbox is identified by its primary address (so two aliases, or
// two addresses of one mailbox, give one delivery), a remote recipient by its
// local part and lower-cased domain. The first occurrence, in input order and
// depth-first target order, is kept; later ones produce no outcome.
//
// # Routing
//
// Route picks the send connector for a remote domain, as Exchange 2007's
// routing does: among enabled connectors with an address space matching the
// domain, drop those whose max_message_size is below the message size, keep
// the most specific match (exact "sub.example.com" > the longest wildcard
// "*.example.com" > "*"), then the lowest cost, then the lowest name. No
// connector left means the recipient is unreachable: 451 4.4.4, kept in the
// queue and retried (a reload may add a route), never dropped.
//
// # What an outcome names
//
// Each Outcome carries the index of the Input it came from, the final address
// and, when reached through aliases, the envelope address it was resolved
// from, so that a DSN can name both the original recipient (with its RFC 3461
// ORCPT) and the address that failed.
//
// Categorizing a final address again (a mailbox's primary address, a remote
// address) gives that address back, so the transport can route persisted
// recipients afresh on every attempt with the current config.
package categorizer

import (
	"strings"

	"hubd/hub"
	"hubd/hub/delivery"
	"hubd/policy"
)

// Input is one recipient to categorize.
type Input struct {
	Address string        // as in RCPT TO, or as resolved on an earlier attempt
	DSN     hub.Recipient // the envelope recipient it stands for (RFC 3461 parameters)
}

// Disposition says what happens to one outcome.
type Disposition int

const (
	// Deliver: hand to the deliverer of NextHop.Kind.
	Deliver Disposition = iota
	// Fail: permanent failure; Reply says why. No further attempt.
	Fail
	// Unreachable: no send connector serves the domain now; Reply (4.4.4)
	// says so. The recipient stays queued and is routed again later.
	Unreachable
)

func (d Disposition) String() string {
	switch d {
	case Deliver:
		return "deliver"
	case Fail:
		return "fail"
	default:
		return "unreachable"
	}
}

// Outcome is where one final recipient goes.
type Outcome struct {
	Input        int    // index into the inputs
	Address      string // final address: a mailbox's primary address, or the remote address
	ResolvedFrom string // the input address, when Address was reached through aliases or is another address of the mailbox

	Disposition Disposition
	NextHop     delivery.NextHop // Deliver
	Maildir     string           // Deliver to KindMaildir: the mailbox's directory
	Reply       *policy.Reply    // Fail, Unreachable
	Why         string           // routing explanation, for logs and the routing table
}

// WorkItem is one delivery attempt's worth of recipients: all outcomes that
// share a next hop (bifurcation, one SMTP transaction per next hop).
type WorkItem struct {
	NextHop  delivery.NextHop
	Outcomes []int // indexes into the outcomes given to Bifurcate, in order
}

// Replies decided here.
var (
	replyUnknownUser = policy.Reply{Code: 550, Enhanced: "5.1.1", Text: "User unknown"}
	replyBadAddress  = policy.Reply{Code: 553, Enhanced: "5.1.3", Text: "Bad recipient address syntax"}
	replyLoop        = policy.Reply{Code: 554, Enhanced: "5.4.6", Text: "Alias loop or too deep"}
)

// defaultMaxAliasDepth applies when a Config built by hand leaves it zero.
const defaultMaxAliasDepth = 10

// Categorize resolves and routes rcpts for a message of size bytes. It
// returns the outcomes in input order (an input expanding to several
// recipients contributes several, in target order; a duplicate contributes
// none).
func Categorize(cfg *policy.Config, size int64, rcpts []Input) []Outcome {
	c := &run{cfg: cfg, size: size, seen: map[string]bool{}, maxDepth: cfg.Hub.MaxAliasDepth}
	if c.maxDepth <= 0 {
		c.maxDepth = defaultMaxAliasDepth
	}
	for i, in := range rcpts {
		c.input = i
		c.in = in
		c.resolve(in.Address, 0, nil)
	}
	return c.out
}

// run is the state of one Categorize call.
type run struct {
	cfg      *policy.Config
	size     int64
	maxDepth int
	seen     map[string]bool // de-duplication keys of final destinations
	out      []Outcome

	input int   // index of the input being resolved
	in    Input // the input being resolved
}

// resolve places addr, reached at depth through the aliases on path.
func (c *run) resolve(addr string, depth int, path []string) {
	// ResolveLocal is what RCPT TO accepted: mailbox, alias or listed
	// recipient of an authoritative domain, "user+detail" as "user" (RFC
	// 5233), bare "postmaster" (RFC 5321 §4.5.1). Using it here keeps RCPT
	// and delivery in agreement.
	canon := c.cfg.ResolveLocal(addr)
	if canon == "" {
		local, domain, err := policy.SplitAddress(addr)
		if err != nil {
			c.emit(Outcome{Address: addr, Disposition: Fail, Reply: withText(replyBadAddress, err.Error())}, "")
			return
		}
		ad := c.cfg.Domain(domain)
		switch {
		case ad == nil || ad.Type == policy.ExternalRelay:
			c.route(local+"@"+domain, domain)
			return
		case ad.Type == policy.Authoritative:
			c.emit(Outcome{Address: strings.ToLower(local) + "@" + domain, Disposition: Fail, Reply: &replyUnknownUser}, "")
			return
		}
		canon = strings.ToLower(local) + "@" + domain // internal_relay: ours if configured here
	}
	c.resolveLocal(canon, depth, path)
}

// resolveLocal places a canonical address of a local domain.
func (c *run) resolveLocal(canon string, depth int, path []string) {
	onPath := contains(path, canon)
	if al := c.cfg.AliasFor(canon); al != nil && !onPath {
		if depth >= c.maxDepth {
			c.emit(Outcome{Address: canon, Disposition: Fail, Reply: &replyLoop, Why: "alias nested too deep"}, "")
			return
		}
		next := append(path[:len(path):len(path)], canon)
		for _, to := range al.To {
			c.resolve(to, depth+1, next)
		}
		return
	}
	if mb := c.cfg.MailboxFor(canon); mb != nil {
		c.emit(Outcome{
			Address:     mb.Address,
			Disposition: Deliver,
			NextHop:     delivery.NextHop{Kind: delivery.KindMaildir},
			Maildir:     mb.Maildir,
			Why:         "mailbox " + mb.Address,
		}, "mbox:"+mb.Address)
		return
	}
	if onPath {
		c.emit(Outcome{Address: canon, Disposition: Fail, Reply: &replyLoop, Why: "alias loop"}, "")
		return
	}
	// A listed recipient without a mailbox here, or an internal_relay
	// address that is neither alias nor mailbox: its mailbox is elsewhere.
	_, domain, _ := strings.Cut(canon, "@")
	c.route(canon, domain)
}

// route places a remote address through the send connectors.
func (c *run) route(addr, domain string) {
	sc, why, ok := Route(c.cfg, domain, c.size)
	key := "rcpt:" + addr
	if !ok {
		c.emit(Outcome{
			Address:     addr,
			Disposition: Unreachable,
			Reply:       &policy.Reply{Code: 451, Enhanced: "4.4.4", Text: "No route to " + domain + ": " + why},
			Why:         why,
		}, key)
		return
	}
	c.emit(Outcome{Address: addr, Disposition: Deliver, NextHop: NextHopFor(c.cfg, sc, domain), Why: why}, key)
}

// emit records o unless its destination (key, when not "") was seen before.
func (c *run) emit(o Outcome, key string) {
	if key != "" {
		if c.seen[key] {
			return
		}
		c.seen[key] = true
	}
	o.Input = c.input
	if !strings.EqualFold(o.Address, c.in.Address) {
		o.ResolvedFrom = c.in.Address
	}
	o.Reply = copyReply(o.Reply)
	c.out = append(c.out, o)
}

// Bifurcate groups the Deliver outcomes by next hop, in order of first
// appearance.
func Bifurcate(outcomes []Outcome) []WorkItem {
	var items []WorkItem
	index := map[delivery.NextHop]int{}
	for i, o := range outcomes {
		if o.Disposition != Deliver {
			continue
		}
		j, ok := index[o.NextHop]
		if !ok {
			j = len(items)
			index[o.NextHop] = j
			items = append(items, WorkItem{NextHop: o.NextHop})
		}
		items[j].Outcomes = append(items[j].Outcomes, i)
	}
	return items
}

func contains(path []string, s string) bool {
	for _, p := range path {
		if p == s {
			return true
		}
	}
	return false
}

func withText(r policy.Reply, detail string) *policy.Reply {
	r.Text += ": " + detail
	return &r
}

// copyReply keeps outcomes from sharing (and so mutating) the package's replies.
func copyReply(r *policy.Reply) *policy.Reply {
	if r == nil {
		return nil
	}
	cp := *r
	return &cp
}
