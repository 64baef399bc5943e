package authcheck

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
)

// SPFResult is the SPF check of one mail transaction.
type SPFResult struct {
	Result Result
	// MailFrom is the identity checked: the MAIL FROM address, or
	// "postmaster@<HELO name>" for the null reverse-path (RFC 7208 §2.4).
	MailFrom string
	Helo     string // the HELO/EHLO name
	// NullSender says MAIL FROM was <>: the HELO identity was checked.
	NullSender bool
	Domain     string // the domain of MailFrom, for DMARC alignment
	Reason     string // why, for temperror and permerror
}

func (s *SPFResult) format() string {
	r := &authres.SPFResult{Value: authres.ResultValue(s.Result), From: clean(s.MailFrom)}
	if s.NullSender {
		r.From, r.Helo = "", clean(s.Helo)
	}
	if s.Result == TempError || s.Result == PermError {
		r.Reason = clean(s.Reason)
	}
	return formatResult(r, "")
}

func (c *Checker) spfTimeout() time.Duration {
	if c.SPFTimeout > 0 {
		return c.SPFTimeout
	}
	return 20 * time.Second
}

// CheckSPF runs check_host() (RFC 7208 §4) for the client at ip, which
// said helo and gave mailFrom ("" for <>).
func (c *Checker) CheckSPF(ctx context.Context, ip netip.Addr, helo, mailFrom string) *SPFResult {
	res := &SPFResult{MailFrom: mailFrom, Helo: helo}
	if mailFrom == "" {
		res.NullSender = true
		res.MailFrom = "postmaster@" + helo
	}
	if i := strings.LastIndexByte(res.MailFrom, '@'); i >= 0 {
		res.Domain = strings.ToLower(strings.TrimSuffix(res.MailFrom[i+1:], "."))
	}
	if !spfDomain(res.Domain) {
		// RFC 7208 §4.3: not a multi-label domain name (an address
		// literal HELO, a dotless name): "none" without a lookup.
		res.Result = None
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, c.spfTimeout())
	defer cancel()
	r, err := spf.CheckHostWithSender(net.IP(ip.Unmap().AsSlice()), helo, res.MailFrom,
		spf.WithContext(ctx), spf.WithResolver(c.Resolver))
	res.Result = Result(r)
	if res.Result == TempError || res.Result == PermError {
		res.Reason = spfReason(err)
	}
	return res
}

// spfReason says why a check ended in an error.
func spfReason(err error) string {
	var de *net.DNSError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &de):
		return dnsReason(de)
	case errors.Is(err, spf.ErrLookupLimitReached):
		return "more than 10 DNS-querying terms (RFC 7208 4.6.4)"
	case errors.Is(err, spf.ErrVoidLookupLimitReached):
		return "more than 2 void lookups (RFC 7208 4.6.4)"
	case errors.Is(err, spf.ErrMultipleRecords):
		return "more than one SPF record"
	}
	return "invalid SPF record: " + err.Error()
}

// spfDomain says whether d is a domain check_host() evaluates: at least
// two labels, none empty or over 63 octets, at most 253 octets.
func spfDomain(d string) bool {
	if len(d) == 0 || len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for l := range strings.SplitSeq(d, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
	}
	return true
}
