package categorizer

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"hubd/policy"
)

// TraceHeader names the header field that records a list expansion (see
// the package comment): "X-Hubd-Expanded: <list>; by=<hostname>".
const TraceHeader = "X-Hubd-Expanded"

// TraceValue is the TraceHeader field body recording that hostname expanded
// list: "team@example.com; by=mx.example.com", or just the list when
// hostname is "".
func TraceValue(list, hostname string) string {
	if hostname == "" {
		return list
	}
	return list + "; by=" + hostname
}

// ParseTrace reads a TraceHeader field body (unfolded or not). ok is false
// unless the value starts with a syntactically valid address (the list);
// host is the "by" parameter, "" when absent or not a single token. Parameters are separated by
// ";" and written key=value; keys are case-insensitive, unknown ones are
// ignored, and the first "by" wins. A value that is not ours to trust is
// still harmless: it can only stop a list from expanding for the message
// that carries it.
func ParseTrace(value string) (list, host string, ok bool) {
	fields := strings.Split(value, ";")
	list = strings.TrimSpace(fields[0])
	if list == "" || !token(list) {
		return "", "", false
	}
	if _, _, err := policy.SplitAddress(list); err != nil {
		return "", "", false
	}
	foundBy := false
	for _, f := range fields[1:] {
		k, v, isParam := strings.Cut(f, "=")
		if !isParam || foundBy || !strings.EqualFold(strings.TrimSpace(k), "by") {
			continue
		}
		// A mangled host still leaves the list named: keep it, since
		// suppressing the expansion is what matters.
		if v = strings.TrimSpace(v); token(v) {
			host = v
		}
		foundBy = true
	}
	return list, host, true
}

// token reports whether s is valid UTF-8 free of white space and control
// characters, so that it survives being written into a header and read
// back.
func token(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == ';' {
			return false
		}
	}
	return true
}

// expandList places the members of dl, found at s. onPath says dl is on
// its own expansion path (a list loop).
func (c *run) expandList(dl *policy.DistributionList, onPath bool, s step) {
	switch {
	case onPath:
		// A ∋ … ∋ A: every member of A is being placed by the outer
		// expansion already. Not an error.
		return
	case c.expanded[dl.Address]:
		// Another hub, or this one on an earlier pass, expanded dl for this
		// message: expanding again is the Exchange 5.5/2003 expansion loop.
		c.emit(Outcome{Address: dl.Address, Disposition: AlreadyExpanded, Reply: &replyAlreadyExpanded,
			Why: "distribution list " + dl.Address + " already expanded for this message (" + TraceHeader + ")"},
			"expanded:"+dl.Address, s)
		return
	case s.depth >= c.maxDepth:
		c.emit(Outcome{Address: dl.Address, Disposition: Fail, Reply: &replyListTooDeep,
			Why: fmt.Sprintf("distribution list %s nested deeper than max_alias_depth %d", dl.Address, c.maxDepth)},
			"", s)
		return
	}
	if d, done := c.listDepth[dl.Address]; done && d <= s.depth {
		// Its members were placed from at least as shallow a depth, so
		// nothing new can come of expanding it here (only duplicates).
		c.placed++
		return
	}
	c.listDepth[dl.Address] = s.depth
	next := s.into("list", dl.Address)
	if dl.Owner != "" {
		next.owner, next.ownerOf = dl.Owner, dl.Address
	}
	before := c.placed
	for _, m := range dl.Members {
		c.resolve(m, next)
	}
	if c.placed == before {
		// Every member looped back: without an outcome the recipient
		// would vanish (DESIGN.md invariant 3).
		c.emit(Outcome{Address: dl.Address, Disposition: Fail, Reply: &replyListEmpty,
			Why: "distribution list " + dl.Address + " expands to no recipients (its members only loop back)"},
			"empty:"+dl.Address, s)
	}
}
