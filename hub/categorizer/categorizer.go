// Package categorizer decides where each recipient of a queued message goes:
// it resolves local addresses through aliases and distribution lists to
// mailboxes, routes everything else through the send connectors, and groups
// the result by next hop, envelope sender and expansion trace
// (bifurcation). It is a pure function of a *policy.Config snapshot and its
// inputs: no I/O, no clock, no state, so the transport can call it again on
// every attempt and a config reload changes routing on the next one.
//
// # Which recipients are local
//
// An address is first given to Config.ResolveLocal, the same function RCPT
// TO uses, so that what was accepted is what is delivered: it knows the
// authoritative domains' mailboxes, aliases, distribution lists and listed
// recipients, maps "user+detail" to "user" (RFC 5233) and a bare
// "postmaster" to the hub's postmaster (RFC 5321 §4.5.1). Otherwise the
// domain decides:
//   - authoritative: 550 5.1.1 User unknown, a permanent failure.
//   - internal_relay: the address is resolved as an alias, list or mailbox
//     if it is one; any other address is routed on through the send
//     connectors (the domain's other mailboxes live elsewhere).
//   - external_relay, or not an accepted domain: routed; aliases and lists
//     are not consulted.
//
// A listed recipient of an authoritative domain (`recipients = [...]`) that
// is neither a mailbox, an alias nor a list is routed too: its mailbox is
// elsewhere.
//
// Local addresses are compared case-insensitively (the policy lower-cases
// configured addresses); remote local parts keep their case, since RFC 5321
// §2.4 lets the receiving host decide whether case matters.
//
// # Mailboxes
//
// A mailbox is delivered to its Maildir (NextHop Kind "maildir",
// Outcome.Maildir set) or, when it has `lmtp = "..."`, to that LMTP server
// (RFC 2033; NextHop Kind "lmtp", SmartHosts the server, FQDN the hub's
// hostname for LHLO, Outcome.Maildir empty).
//
// The address of a Maildir outcome is the mailbox's primary address: the
// Maildir is the mailbox, and nothing downstream reads the subaddress. The
// address of an LMTP outcome is the recipient as addressed: the mailbox's
// primary address with the RFC 5233 detail of the address that named the
// mailbox, so "alice+news@example.com" (or "a.smith+news@example.com" for
// an extra address of alice's) goes to the LMTP server as
// "alice+news@example.com", as Postfix's LMTP client sends it. The server
// can then file it by detail (Dovecot's lmtp_save_to_detail_mailbox,
// Sieve's envelope :detail) and write it in Delivered-To. The detail is
// the part of the local part after the first "+", as written; it is kept
// only when the "+" form resolved to the mailbox, not when the whole
// address is itself configured (an alias "alice+news@..." is an alias).
// Alias and list targets are addresses in their own right: a target
// "alice+news@..." keeps its detail, an alias "news@..." does not lend its
// own to its targets.
//
// # Aliases and distribution lists
//
// An alias expands to its targets and a distribution list to its members,
// each resolved again by the same rules, so either may name mailboxes,
// aliases, lists and remote addresses. Expansion is recursive with guards
// (DESIGN.md invariant 7):
//   - depth: the envelope recipient is at depth 0 and each alias or list
//     expansion adds one; both count against one limit. Expanding an alias
//     or list found at depth >= Hub.MaxAliasDepth fails that branch with
//     554 5.4.6 (RFC 3463 X.4.6, routing loop detected).
//   - alias loops: a target equal to an address on its own expansion path is
//     not expanded again. If that address is also a mailbox, the mail goes to
//     the mailbox (`alias "a" { to = ["a", "b"] }` keeps a copy for a's
//     owner); otherwise that branch fails with 5.4.6. Sibling branches are
//     unaffected.
//   - list loops are harmless: a list found again on its own expansion path
//     (A ∋ A, or A ∋ B ∋ A) is skipped silently, so every member is
//     delivered once. A list whose expansion reaches no recipient at all
//     (its only members loop back) fails with 550 5.2.4 (RFC 3463 X.2.4,
//     mailing list expansion problem), so the recipient does not vanish.
//   - a list is expanded at most once per call (again only when reached at
//     a shallower depth, where the depth limit may cut less of it), so
//     diamond-shaped nesting stays linear.
//
// # Expansion trace
//
// A message expanded for a list carries one trace header per list,
//
//	X-Hubd-Expanded: team@example.com; by=mx.example.com
//
// naming the list and the hub that expanded it (TraceValue, ParseTrace;
// unknown "key=value" parameters after the list are ignored, and "by" may
// be absent). The transport reads these headers into Message.ExpandedLists
// and adds, to each copy it delivers, one header per entry of the copy's
// Outcome.Lists (the lists expanded on its path, outermost first). A list
// named in ExpandedLists, by this hub or any other, is not expanded again:
// its outcome is AlreadyExpanded (250 2.1.5, settled, nothing delivered).
// This ends the loop Exchange 5.5/2003 expansion servers fell into when a
// list contained a list of another organisation that contained it back. A
// forged header only suppresses the list for the message that carries it,
// which its sender could as well not have addressed to the list.
//
// # List owners
//
// When a list has an owner, the copies for remote recipients reached through
// it (routed through a send connector, and those unreachable for now) get
// Outcome.Sender = the owner, so that their bounces reach the owner rather
// than the author, as RFC 5321 §3.10 asks of mailing lists. The innermost
// list with an owner on the path wins. Local deliveries keep the original
// envelope sender (Sender == "").
//
// # De-duplication
//
// Within one call, every final destination receives the message once: a
// Maildir mailbox is identified by its primary address (so two aliases, or
// two addresses of one mailbox, give one delivery), an LMTP mailbox by the
// address it is delivered as, compared without regard to case (so
// "alice@..." and "alice+news@..." give two copies, one per folder, as
// they do through Postfix and Dovecot; "alice@..." named twice gives one),
// a remote recipient by its local part and lower-cased domain. The first
// occurrence, in input order and depth-first target order, is kept, with
// its path's Lists and Sender; later ones produce no outcome.
//
// # Routing
//
// Route picks the send connector for a remote domain, as Exchange 2007's
// routing does: among enabled connectors with an address space matching the
// domain, drop those whose max_message_size is below the message size, keep
// the most specific match (exact "sub.example.com" > the longest wildcard
// "*.example.com" > "*"), then the lowest cost, then the lowest name. No
// connector left means the recipient is unreachable: 451 4.4.4, kept in the
// queue and retried (a reload may add a route), never dropped. Table lists
// every address space in that order, and Explain tells why one address goes
// where it goes (`hubd routes`).
//
// # What an outcome names
//
// Each Outcome carries the index of the Input it came from, the final address
// and, when reached through aliases or lists, the envelope address it was
// resolved from, so that a DSN can name both the original recipient (with
// its RFC 3461 ORCPT) and the address that failed. Why says, in words for
// an operator, what decided the outcome and through which aliases and lists.
//
// Categorizing a final address again (a mailbox's primary address, a remote
// address) gives that address back, so the transport can route persisted
// recipients afresh on every attempt with the current config; Lists and
// Sender are properties of the expansion and must be persisted with the
// recipient if they are to outlive it.
package categorizer

import (
	"fmt"
	"slices"
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

// Message is what the categorizer needs to know of the message itself.
type Message struct {
	Size int64
	// ExpandedLists are the lists this message was already expanded for, by
	// this hub or another: the list addresses of its TraceHeader fields.
	// They are matched case-insensitively.
	ExpandedLists []string
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
	// AlreadyExpanded: the outcome's Address is a list this message was
	// already expanded for (Message.ExpandedLists). Settled: nothing is
	// delivered and no DSN is due; Reply is 250 2.1.5.
	AlreadyExpanded
)

func (d Disposition) String() string {
	switch d {
	case Deliver:
		return "deliver"
	case Fail:
		return "fail"
	case AlreadyExpanded:
		return "already-expanded"
	default:
		return "unreachable"
	}
}

// Outcome is where one final recipient goes.
type Outcome struct {
	Input        int    // index into the inputs
	Address      string // final address: a mailbox's primary address, or the remote address
	ResolvedFrom string // the input address, when Address was reached through aliases or lists or is another address of the mailbox

	Disposition Disposition
	NextHop     delivery.NextHop // Deliver
	Maildir     string           // Deliver to KindMaildir: the mailbox's directory
	Reply       *policy.Reply    // Fail, Unreachable, AlreadyExpanded
	Why         string           // routing explanation, for logs and the routing table

	// Lists are the distribution lists expanded on the way to Address,
	// outermost first: the transport adds one TraceHeader per list to the
	// copy it delivers, and logs an EXPAND event for each.
	Lists []string
	// Sender is the envelope sender for this copy when it differs from the
	// message's (the owner of a list on the path, for a remote recipient);
	// "" means unchanged.
	Sender string
}

// WorkItem is one delivery attempt's worth of recipients: all outcomes that
// share a next hop, an envelope sender and an expansion trace
// (bifurcation: one SMTP transaction per distinct envelope).
type WorkItem struct {
	NextHop  delivery.NextHop
	Sender   string   // "" = the message's own envelope sender
	Lists    []string // trace headers to add to this copy, outermost first
	Outcomes []int    // indexes into the outcomes given to Bifurcate, in order
}

// Replies decided here.
var (
	replyUnknownUser     = policy.Reply{Code: 550, Enhanced: "5.1.1", Text: "User unknown"}
	replyBadAddress      = policy.Reply{Code: 553, Enhanced: "5.1.3", Text: "Bad recipient address syntax"}
	replyLoop            = policy.Reply{Code: 554, Enhanced: "5.4.6", Text: "Alias loop or too deep"}
	replyListTooDeep     = policy.Reply{Code: 554, Enhanced: "5.4.6", Text: "Distribution list nested too deep"}
	replyListEmpty       = policy.Reply{Code: 550, Enhanced: "5.2.4", Text: "Distribution list expands to no recipients"}
	replyAlreadyExpanded = policy.Reply{Code: 250, Enhanced: "2.1.5", Text: "List already expanded for this message"}
)

// defaultMaxAliasDepth applies when a Config built by hand leaves it zero.
const defaultMaxAliasDepth = 10

// Categorize resolves and routes rcpts for a message of size bytes that
// carries no expansion trace. It is CategorizeMessage with
// Message{Size: size}.
func Categorize(cfg *policy.Config, size int64, rcpts []Input) []Outcome {
	return CategorizeMessage(cfg, Message{Size: size}, rcpts)
}

// CategorizeMessage resolves, expands and routes rcpts for m. It returns
// the outcomes in input order (an input expanding to several recipients
// contributes several, in target order; a duplicate contributes none).
func CategorizeMessage(cfg *policy.Config, m Message, rcpts []Input) []Outcome {
	c := &run{
		cfg:       cfg,
		size:      m.Size,
		seen:      map[string]bool{},
		listDepth: map[string]int{},
		expanded:  map[string]bool{},
		maxDepth:  cfg.Hub.MaxAliasDepth,
	}
	if c.maxDepth <= 0 {
		c.maxDepth = defaultMaxAliasDepth
	}
	for _, l := range m.ExpandedLists {
		c.expanded[canonList(cfg, l)] = true
	}
	for i, in := range rcpts {
		c.input = i
		c.in = in
		c.resolve(in.Address, step{})
	}
	return c.out
}

// canonList is the key a list address is compared by.
func canonList(cfg *policy.Config, addr string) string {
	if dl := cfg.ListFor(addr); dl != nil {
		return dl.Address
	}
	return strings.ToLower(strings.TrimSpace(addr))
}

// run is the state of one CategorizeMessage call.
type run struct {
	cfg       *policy.Config
	size      int64
	maxDepth  int
	seen      map[string]bool // de-duplication keys of final destinations
	listDepth map[string]int  // lists expanded in this call, and the shallowest depth they were expanded at
	expanded  map[string]bool // Message.ExpandedLists, canonical
	placed    int             // outcomes emitted or de-duplicated so far: tells an empty expansion
	out       []Outcome

	input int   // index of the input being resolved
	in    Input // the input being resolved
}

// step is where an address was reached: its depth and the aliases and lists
// expanded on the way.
type step struct {
	depth   int
	path    []string // aliases and lists expanded on the way, outermost first
	via     []string // the same, as "alias x" / "list y", for Why
	lists   []string // the lists among path
	owner   string   // innermost list owner on the path
	ownerOf string   // the list whose owner that is
}

// into returns the step of the targets of alias or list addr. The slices
// are clipped so that sibling branches never share appended elements.
func (s step) into(kind, addr string) step {
	n := s
	n.depth++
	n.path = append(slices.Clip(s.path), addr)
	n.via = append(slices.Clip(s.via), kind+" "+addr)
	if kind == "list" {
		n.lists = append(slices.Clip(s.lists), addr)
	}
	return n
}

// resolve places addr, reached at s.
func (c *run) resolve(addr string, s step) {
	// ResolveLocal is what RCPT TO accepted: mailbox, alias, list or listed
	// recipient of an authoritative domain, "user+detail" as "user" (RFC
	// 5233), bare "postmaster" (RFC 5321 §4.5.1). Using it here keeps RCPT
	// and delivery in agreement.
	canon := c.cfg.ResolveLocal(addr)
	if canon == "" {
		local, domain, err := policy.SplitAddress(addr)
		if err != nil {
			c.emit(Outcome{Address: addr, Disposition: Fail, Reply: withText(replyBadAddress, err.Error()),
				Why: "bad address syntax: " + err.Error()}, "", s)
			return
		}
		ad := c.cfg.Domain(domain)
		switch {
		case ad == nil:
			c.route(local+"@"+domain, domain, "", s)
			return
		case ad.Type == policy.ExternalRelay:
			c.route(local+"@"+domain, domain, domain+" is an external_relay domain: ", s)
			return
		case ad.Type == policy.Authoritative:
			c.emit(Outcome{Address: strings.ToLower(local) + "@" + domain, Disposition: Fail, Reply: &replyUnknownUser,
				Why: "no mailbox, alias or list of that name in authoritative domain " + ad.Name}, "", s)
			return
		}
		canon = strings.ToLower(local) + "@" + domain // internal_relay: ours if configured here
		c.resolveLocal(canon, "", s)
		return
	}
	c.resolveLocal(canon, subaddressDetail(addr, canon), s)
}

// subaddressDetail is the RFC 5233 detail of addr ("news" in
// "alice+news@example.com", as written) when ResolveLocal found addr's
// mailbox, alias or list by its base address canon; "" otherwise.
func subaddressDetail(addr, canon string) string {
	local, domain, err := policy.SplitAddress(addr)
	if err != nil {
		return ""
	}
	user, detail, ok := strings.Cut(local, "+")
	if !ok || strings.ToLower(user)+"@"+domain != canon {
		return "" // not found by its base: the whole address is configured
	}
	return detail
}

// resolveLocal places a canonical address of a local domain. detail is the
// subaddress it was reached with, for an LMTP mailbox.
func (c *run) resolveLocal(canon, detail string, s step) {
	onPath := slices.Contains(s.path, canon)
	if al := c.cfg.AliasFor(canon); al != nil && !onPath {
		if s.depth >= c.maxDepth {
			c.emit(Outcome{Address: canon, Disposition: Fail, Reply: &replyLoop,
				Why: fmt.Sprintf("alias %s nested deeper than max_alias_depth %d", canon, c.maxDepth)}, "", s)
			return
		}
		next := s.into("alias", canon)
		if al.Source != "" { // from an aliases file: say where, for `hubd routes`
			next.via[len(next.via)-1] += " (" + al.Source + ")"
		}
		for _, to := range al.To {
			c.resolve(to, next)
		}
		return
	}
	if dl := c.cfg.ListFor(canon); dl != nil {
		c.expandList(dl, onPath, s)
		return
	}
	if mb := c.cfg.MailboxFor(canon); mb != nil {
		c.deliverMailbox(mb, detail, s)
		return
	}
	if onPath {
		c.emit(Outcome{Address: canon, Disposition: Fail, Reply: &replyLoop,
			Why: "alias loop: " + canon + " expands back to itself and is not a mailbox"}, "", s)
		return
	}
	// A listed recipient without a mailbox here, or an internal_relay
	// address that is neither alias, list nor mailbox: its mailbox is
	// elsewhere.
	_, domain, _ := strings.Cut(canon, "@")
	why := "listed recipient of " + domain + " without a mailbox here: "
	if ad := c.cfg.Domain(domain); ad != nil && ad.Type == policy.InternalRelay {
		why = domain + " is an internal_relay domain and " + canon + " is not local: "
	}
	c.route(canon, domain, why, s)
}

// deliverMailbox places a local mailbox: its Maildir (one copy per
// mailbox), or its LMTP server (one copy per address delivered as, the
// subaddress kept).
func (c *run) deliverMailbox(mb *policy.Mailbox, detail string, s step) {
	o := Outcome{Address: mb.Address, Disposition: Deliver}
	if mb.LMTP == "" {
		o.NextHop = delivery.NextHop{Kind: delivery.KindMaildir}
		o.Maildir = mb.Maildir
		o.Why = "mailbox " + mb.Address + " in Maildir " + mb.Maildir
		c.emit(o, "mbox:"+mb.Address, s)
		return
	}
	// RFC 2033: the LMTP server stores the message; LHLO names this hub.
	o.NextHop = delivery.NextHop{Kind: delivery.KindLMTP, SmartHosts: mb.LMTP, FQDN: c.cfg.Hub.Hostname}
	o.Why = "mailbox " + mb.Address + " via LMTP " + mb.LMTP
	if detail != "" {
		at := strings.LastIndexByte(mb.Address, '@')
		o.Address = mb.Address[:at] + "+" + detail + mb.Address[at:]
		o.Why += " as " + o.Address + " (RFC 5233 subaddress kept)"
	}
	c.emit(o, "lmtp:"+strings.ToLower(o.Address), s)
}

// route places a remote address through the send connectors. why, when
// not "", says why the address is remote.
func (c *run) route(addr, domain, why string, s step) {
	sc, routeWhy, ok := Route(c.cfg, domain, c.size)
	why += routeWhy
	key := "rcpt:" + addr
	o := Outcome{Address: addr, Why: why}
	if ok {
		o.Disposition = Deliver
		o.NextHop = NextHopFor(c.cfg, sc, domain)
	} else {
		o.Disposition = Unreachable
		o.Reply = &policy.Reply{Code: 451, Enhanced: "4.4.4", Text: "No route to " + domain + ": " + routeWhy}
	}
	// RFC 5321 §3.10: bounces of a list's remote copies go to the list's
	// owner. Unreachable copies keep it too: they are routed later.
	if s.owner != "" {
		o.Sender = s.owner
		o.Why += "; envelope sender " + s.owner + " (owner of list " + s.ownerOf + ")"
	}
	c.emit(o, key, s)
}

// emit records o, reached at s, unless its destination (key, when not "")
// was seen before.
func (c *run) emit(o Outcome, key string, s step) {
	c.placed++
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
	o.Lists = slices.Clone(s.lists)
	if len(s.via) > 0 {
		o.Why += "; expanded from " + strings.Join(s.via, " > ")
	}
	c.out = append(c.out, o)
}

// Bifurcate groups the Deliver outcomes by next hop, envelope sender and
// expansion trace, in order of first appearance: each group is one
// transaction with one MAIL FROM and one set of trace headers.
func Bifurcate(outcomes []Outcome) []WorkItem {
	type key struct {
		hop    delivery.NextHop
		sender string
		lists  string
	}
	var items []WorkItem
	index := map[key]int{}
	for i, o := range outcomes {
		if o.Disposition != Deliver {
			continue
		}
		// Addresses never contain a newline, so the join is unambiguous.
		k := key{o.NextHop, o.Sender, strings.Join(o.Lists, "\n")}
		j, ok := index[k]
		if !ok {
			j = len(items)
			index[k] = j
			items = append(items, WorkItem{NextHop: o.NextHop, Sender: o.Sender, Lists: slices.Clone(o.Lists)})
		}
		items[j].Outcomes = append(items[j].Outcomes, i)
	}
	return items
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
