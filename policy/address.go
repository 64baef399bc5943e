package policy

// Mailbox and domain syntax (RFC 5321 §4.1.2, §4.1.3; RFC 6531 for UTF-8).

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// mailboxSyntax is a parsed RFC 5321 Mailbox, optionally preceded by a
// source route.
type mailboxSyntax struct {
	local  string // canonical: unquoted when the quoted form is a valid Dot-string
	quoted bool   // the local part stays a Quoted-string
	domain string // lower-case, A-labels; "[...]" for address literals
	route  bool   // "@a,@b:" was present (RFC 5321 §4.1.1.3, Appendix C)
}

// SplitAddress splits an RFC 5321 mailbox ("user@example.com",
// "\"john doe\"@example.com", "user@[192.0.2.1]") into its local part and
// domain. Surrounding angle brackets are allowed. A source route
// ("@relay:user@example.com") is accepted and ignored, as RFC 5321 §4.1.1.3
// asks of servers. The domain is lower-cased and converted to A-labels; the
// local part keeps its case. A quoted local part that is also a valid
// Dot-string is returned unquoted ("\"alice\"" → "alice"); otherwise it is
// returned with its quotes, exactly as written.
func SplitAddress(addr string) (local, domain string, err error) {
	m, err := parseMailbox(addr)
	if err != nil {
		return "", "", err
	}
	return m.local, m.domain, nil
}

func parseMailbox(addr string) (mailboxSyntax, error) {
	var m mailboxSyntax
	s := addr
	if strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") && len(s) >= 2 {
		s = s[1 : len(s)-1]
	}
	if s == "" {
		return m, errors.New("empty address")
	}
	if !utf8.ValidString(s) {
		return m, errors.New("address is not valid UTF-8")
	}
	if s[0] == '@' {
		// A-d-l ":" Mailbox; the route's domains must be valid too.
		colon := strings.IndexByte(s, ':')
		if colon < 0 {
			return m, fmt.Errorf("address %q: source route without ':'", addr)
		}
		for _, hop := range strings.Split(s[1:colon], ",") {
			hop = strings.TrimPrefix(hop, "@")
			if _, err := normalizeDomain(hop); err != nil {
				return m, fmt.Errorf("address %q: bad source route: %w", addr, err)
			}
		}
		m.route = true
		s = s[colon+1:]
	}
	var rest string
	if strings.HasPrefix(s, "\"") {
		end, unq, err := scanQuoted(s)
		if err != nil {
			return m, fmt.Errorf("address %q: %w", addr, err)
		}
		if isDotString(unq) {
			m.local = unq
		} else {
			m.local, m.quoted = s[:end], true
		}
		rest = s[end:]
	} else {
		at := strings.LastIndexByte(s, '@')
		if at < 0 {
			return m, fmt.Errorf("address %q has no domain", addr)
		}
		m.local, rest = s[:at], s[at:]
		if !isDotString(m.local) {
			return m, fmt.Errorf("address %q: bad local part %q", addr, m.local)
		}
	}
	if !strings.HasPrefix(rest, "@") {
		return m, fmt.Errorf("address %q has no domain", addr)
	}
	d, err := normalizeDomainOrLiteral(rest[1:])
	if err != nil {
		return m, fmt.Errorf("address %q: %w", addr, err)
	}
	m.domain = d
	return m, nil
}

// scanQuoted reads a Quoted-string at the start of s and returns the index
// just past the closing quote and the unescaped content.
func scanQuoted(s string) (int, string, error) {
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			return i + 1, b.String(), nil
		case c == '\\':
			// quoted-pairSMTP = %d92 %d32-126
			if i+1 >= len(s) || s[i+1] < 32 || s[i+1] > 126 {
				return 0, "", errors.New("bad quoted-pair in local part")
			}
			i++
			b.WriteByte(s[i])
		case c >= 32 && c <= 126 || c >= 0x80:
			b.WriteByte(c)
		default:
			return 0, "", errors.New("control character in quoted local part")
		}
	}
	return 0, "", errors.New("unterminated quoted local part")
}

// isDotString reports whether s is Atom *("." Atom) (RFC 5321 §4.1.2), with
// UTF-8 allowed in atoms (RFC 6531 §3.3).
func isDotString(s string) bool {
	if s == "" {
		return false
	}
	for atom := range strings.SplitSeq(s, ".") {
		if atom == "" {
			return false
		}
		for i := 0; i < len(atom); i++ {
			if !isAtext(atom[i]) {
				return false
			}
		}
	}
	return true
}

func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// normalizeDomainOrLiteral accepts a Domain or an address-literal.
func normalizeDomainOrLiteral(s string) (string, error) {
	if !strings.HasPrefix(s, "[") {
		return normalizeDomain(s)
	}
	if !strings.HasSuffix(s, "]") {
		return "", fmt.Errorf("unterminated address literal %q", s)
	}
	in := s[1 : len(s)-1]
	// RFC 5321 §4.1.3: IPv4 literals are bare; IPv6 literals carry "IPv6:".
	if tag, v6, ok := strings.Cut(in, ":"); ok && strings.EqualFold(tag, "IPv6") {
		a, err := netip.ParseAddr(v6)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", fmt.Errorf("bad IPv6 address literal %q", s)
		}
		return "[ipv6:" + a.String() + "]", nil
	}
	a, err := netip.ParseAddr(in)
	if err != nil || !a.Is4() {
		return "", fmt.Errorf("bad address literal %q", s)
	}
	return "[" + a.String() + "]", nil
}

// idnaProfile converts U-labels to A-labels with the lookup rules, but
// without the STD3 restrictions that would reject underscores in names
// some sites use internally.
var idnaProfile = idna.New(idna.MapForLookup(), idna.BidiRule())

// normalizeDomain checks Domain syntax (RFC 5321 §4.1.2, labels of letters,
// digits and hyphens, at most 63 octets, 255 in all, RFC 1035 §2.3.4) and
// returns it lower-case with A-labels (RFC 5890).
func normalizeDomain(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty domain")
	}
	d := s
	if !isASCII(d) {
		a, err := idnaProfile.ToASCII(d)
		if err != nil {
			return "", fmt.Errorf("domain %q is not a valid internationalized name: %v", s, err)
		}
		d = a
	}
	d = strings.ToLower(d)
	if len(d) > 255 {
		return "", fmt.Errorf("domain %q is longer than 255 octets", s)
	}
	for label := range strings.SplitSeq(d, ".") {
		if err := checkLabel(label); err != nil {
			return "", fmt.Errorf("domain %q: %w", s, err)
		}
	}
	return d, nil
}

func checkLabel(l string) error {
	if l == "" {
		return errors.New("empty label")
	}
	if len(l) > 63 {
		return errors.New("label longer than 63 octets")
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with '-'", l)
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("label %q has character %q", l, c)
		}
	}
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// normalizeDomainPattern accepts "example.com" or "*.example.com".
func normalizeDomainPattern(s string) (string, error) {
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		d, err := normalizeDomain(rest)
		return "*." + d, err
	}
	return normalizeDomain(s)
}

// canonAddress returns the form addresses are stored and looked up in:
// local part lower-cased (hubd treats local parts case-insensitively, as
// nearly every MTA does in practice) and the domain normalised.
func canonAddress(addr string) (mailboxSyntax, string, bool) {
	m, err := parseMailbox(addr)
	if err != nil {
		return m, "", false
	}
	m.local = strings.ToLower(m.local)
	return m, m.local + "@" + m.domain, true
}

// DomainMatches reports whether domain (lower-case, A-labels) matches
// pattern: "*" matches everything, "*.example.com" matches every subdomain
// of example.com but not example.com itself, anything else matches exactly.
// Accepted domains and send connector address spaces share these rules.
func DomainMatches(pattern, domain string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		return strings.HasSuffix(domain, pattern[1:]) && len(domain) > len(pattern)-1
	default:
		return pattern == domain
	}
}
