package authcheck

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/mail"
	"strings"

	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// DMARCResult is the DMARC evaluation of one message.
type DMARCResult struct {
	Result Result
	From   string // the RFC5322.From domain
	// Policy is the policy that applies to From (p=, or sp= for a
	// subdomain under its organizational domain's record): "none",
	// "quarantine" or "reject"; "" without a record.
	Policy string
	// Sampled is false when pct= left this message out of the policy
	// (RFC 7489 §6.6.4): a reject is then treated as quarantine.
	Sampled bool
	Reason  string
}

// Reject says whether the domain owner asks that this message be refused:
// DMARC failed, the policy is reject, and pct= selected the message.
func (d *DMARCResult) Reject() bool {
	return d != nil && d.Result == Fail && d.Policy == string(dmarc.PolicyReject) && d.Sampled
}

func (d *DMARCResult) format() string {
	r := &authres.DMARCResult{Value: authres.ResultValue(d.Result), From: clean(d.From)}
	if d.Result != Pass && d.Result != None && d.Result != Fail {
		r.Reason = clean(d.Reason)
	}
	comment := ""
	if d.Policy != "" {
		comment = "p=" + d.Policy
		if d.Result == Fail && d.Policy == string(dmarc.PolicyReject) && !d.Sampled {
			comment += " pct=not sampled"
		}
	}
	return formatResult(r, comment)
}

// dmarcRecord is the outcome of policy discovery (RFC 7489 §6.6.3).
type dmarcRecord struct {
	rec    *dmarc.Record // nil: none, or an error in res
	atOrg  bool          // found at the organizational domain, not the From domain
	res    Result        // TempError or PermError when discovery failed
	reason string
}

// lookupDMARC finds the policy record for the From domain: at
// _dmarc.<domain>, else at _dmarc.<organizational domain>.
func (c *Checker) lookupDMARC(ctx context.Context, domain string) dmarcRecord {
	r := c.dmarcAt(ctx, domain)
	if r.rec != nil || r.res != "" {
		return r
	}
	if org := orgDomain(domain); org != domain {
		r = c.dmarcAt(ctx, org)
		r.atOrg = true
	}
	return r
}

func (c *Checker) dmarcAt(ctx context.Context, domain string) dmarcRecord {
	txts, err := c.lookupTXT(ctx, "_dmarc."+domain)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return dmarcRecord{}
		}
		if isTemporary(err) {
			return dmarcRecord{res: TempError, reason: dnsReason(err)}
		}
		return dmarcRecord{res: PermError, reason: dnsReason(err)}
	}
	var recs []string
	for _, t := range txts {
		// §6.6.3: records that do not start with a v=DMARC1 tag are discarded.
		if tag, _, _ := strings.Cut(t, ";"); strings.ReplaceAll(tag, " ", "") == "v=DMARC1" {
			recs = append(recs, t)
		}
	}
	if len(recs) != 1 {
		// None, or several: policy discovery ends, DMARC does not apply.
		return dmarcRecord{}
	}
	rec, err := dmarc.Parse(recs[0])
	if err != nil {
		return dmarcRecord{res: PermError, reason: "invalid DMARC record at _dmarc." + domain + ": " +
			strings.TrimPrefix(err.Error(), "dmarc: ")}
	}
	return dmarcRecord{rec: rec}
}

// evaluateDMARC decides DMARC for from with the record found and the SPF
// and DKIM results (RFC 7489 §4.2, §6.6.2).
func evaluateDMARC(from string, rec dmarcRecord, spf *SPFResult, dkims []DKIMResult) *DMARCResult {
	d := &DMARCResult{From: from, Sampled: true}
	switch {
	case rec.res != "":
		d.Result, d.Reason = rec.res, rec.reason
		return d
	case rec.rec == nil:
		d.Result = None
		return d
	}
	d.Policy = string(rec.rec.Policy)
	if rec.atOrg && rec.rec.SubdomainPolicy != "" {
		d.Policy = string(rec.rec.SubdomainPolicy)
	}
	temp := false
	if spf != nil && aligned(spf.Domain, from, rec.rec.SPFAlignment) {
		switch spf.Result {
		case Pass:
			d.Result = Pass
			return d
		case TempError:
			temp = true
		}
	}
	for _, k := range dkims {
		if !aligned(k.Domain, from, rec.rec.DKIMAlignment) {
			continue
		}
		switch k.Result {
		case Pass:
			d.Result = Pass
			return d
		case TempError:
			temp = true
		}
	}
	if temp {
		d.Result, d.Reason = TempError, "an aligned identifier could not be checked"
		return d
	}
	d.Result = Fail
	if pct := rec.rec.Percent; pct != nil && *pct < 100 {
		d.Sampled = rand.IntN(100) < *pct
	}
	return d
}

// aligned compares an authenticated domain with the From domain (RFC
// 7489 §3.1): equal under strict alignment, the same organizational
// domain under relaxed.
func aligned(domain, from string, mode dmarc.AlignmentMode) bool {
	domain = strings.ToLower(strings.TrimSuffix(domain, "."))
	if domain == "" {
		return false
	}
	if domain == from {
		return true
	}
	return mode != dmarc.AlignmentStrict && orgDomain(domain) == orgDomain(from)
}

// orgDomain is a domain's organizational domain (RFC 7489 §3.2): one label
// below its public suffix; a public suffix is its own.
func orgDomain(domain string) string {
	org, err := publicsuffix.EffectiveTLDPlusOne(domain)
	if err != nil {
		return domain
	}
	return org
}

// fromDomain finds the RFC5322.From domain (RFC 7489 §6.6.1).
func fromDomain(fields []field) (string, error) {
	var values []string
	for _, f := range fields {
		if strings.EqualFold(f.name, "From") {
			values = append(values, f.value)
		}
	}
	switch len(values) {
	case 0:
		return "", errors.New("no From field")
	case 1:
	default:
		return "", errors.New("several From fields")
	}
	v := strings.NewReplacer("\r\n", "", "\n", "").Replace(values[0])
	var domains []string
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil }}}
	if list, err := p.ParseList(v); err == nil {
		for _, a := range list {
			if i := strings.LastIndexByte(a.Address, '@'); i >= 0 {
				domains = append(domains, a.Address[i+1:])
			}
		}
	} else if d := lenientDomain(v); d != "" {
		// Not RFC 5322, but a reader's client will still show a domain:
		// judge that one, or a spoofer could slip by with bad syntax.
		domains = append(domains, d)
	}
	if len(domains) == 0 {
		return "", errors.New("no author domain in From")
	}
	d := strings.ToLower(strings.TrimSuffix(domains[0], "."))
	for _, o := range domains[1:] {
		if !strings.EqualFold(strings.TrimSuffix(o, "."), d) {
			return "", errors.New("From addresses of several domains")
		}
	}
	if !spfDomain(d) {
		return "", errors.New("invalid From domain")
	}
	return d, nil
}

// lenientDomain is the domain after the last '@' of v, up to a character
// no domain has.
func lenientDomain(v string) string {
	i := strings.LastIndexByte(v, '@')
	if i < 0 {
		return ""
	}
	d := v[i+1:]
	if j := strings.IndexAny(d, "> \t,;()\"<"); j >= 0 {
		d = d[:j]
	}
	return d
}
