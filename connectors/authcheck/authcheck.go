// Package authcheck checks who sent a message received from the internet,
// and writes down what it found: SPF (RFC 7208) at MAIL FROM, DKIM (RFC
// 6376) and DMARC (RFC 7489) at the end of the content, one
// Authentication-Results header field (RFC 8601) naming the hub as the
// authentication service. The receive connectors decide what a result
// means for the session (policy.ReceiveChecks); this package only checks,
// through the hub's DNS resolver (Resolver), and never refuses anything
// itself.
//
// # SPF (spf.go)
//
// check_host() (RFC 7208 §4) of the client's address for the MAIL FROM
// identity; for the null reverse-path <>, for "postmaster@<HELO name>"
// (§2.4). The HELO identity is not checked on its own (§2.3 is a
// RECOMMENDED, not a MUST, and its result would not change the verdict
// DMARC builds on). The RFC's processing limits hold (§4.6.4: at most 10
// mechanisms and modifiers that query DNS, at most 2 void lookups, at most
// 10 MX and PTR names per lookup), enforced by blitiri.com.ar/go/spf,
// whose defaults are exactly those; a whole evaluation has SPFTimeout. A
// name that is not a multi-label domain gives "none" (§4.3). DNS timeouts
// and SERVFAIL are "temperror", never a pass; NXDOMAIN is "none".
//
// # DKIM (message.go)
//
// The content is streamed through github.com/emersion/go-msgauth's
// verifier as it goes to the queue, never held whole: what is kept is the
// header section (bounded by the connector's max_header_size before it
// gets here, and by MaxHeaderSection here) and one hash state per
// signature. At most MaxSignatures DKIM-Signature fields are verified (RFC
// 6376 §6.1 lets a verifier limit them); each gives one result, in header
// order. A run of blank lines or white space longer than MaxBlankRun
// stops the body hashing — the library's body canonicalization holds such
// a run in memory until it ends — and the signatures get "policy" (RFC
// 8601 §2.7.1: not acceptable to this verifier). Results map as RFC 8601
// §2.7.1 says: a valid signature "pass"; a body or header hash that does
// not verify, or the insecure l= tag, "fail"; a signature that does not
// parse (missing or malformed tags, an unknown version) "neutral"; a key
// that does not exist or does not fit (RFC 6376 §6.1.2's PERMFAIL) and an
// expired signature "permerror"; a DNS timeout or SERVFAIL on the key
// "temperror"; no signature at all "none". rsa-sha1 is refused (RFC 8301
// §3.1) as "permerror".
//
// # DMARC (dmarc.go)
//
// The RFC5322.From domain (RFC 7489 §6.6.1): the domain of the one author
// address of the message's single From field; no From field, several, or
// addresses of different domains give "permerror". The policy record is
// looked up at _dmarc.<From domain>, then, if there is none, at the
// organizational domain (§6.6.3), found with the public suffix list
// (golang.org/x/net/publicsuffix, §3.2). Records that do not start with
// "v=DMARC1" are ignored; several records, or none, give "none"; one that
// does not parse gives "permerror"; a temporary DNS error "temperror".
// Identifier alignment (§3.1): an SPF "pass" for the MAIL FROM (or HELO)
// domain, or a DKIM "pass" whose d= domain, aligned with the From domain —
// equal under strict alignment (aspf=s, adkim=s), the same organizational
// domain under relaxed (the default). Either aligned pass is "pass".
// Without one, the result is "temperror" if an aligned identifier could
// not be checked for a temporary DNS error (a retry may pass), else
// "fail". The policy that applies is p=, or sp= when the record was found
// at the organizational domain of a From subdomain (§6.3). pct= is
// honoured (§6.6.4): a failing message outside the sample gets the next
// policy down (reject → quarantine), by a random draw per message; the
// Authentication-Results field shows the result either way.
//
// # Authentication-Results (authres.go)
//
// One field, added above the message by the hub (hub.HeaderSource), with
// the hub's hostname as authserv-id and one result per line:
//
//	Authentication-Results: mx.example.net;
//		spf=pass smtp.mailfrom=alice@example.org;
//		dkim=pass header.b=Hw3nGmF4 header.d=example.org header.i=@example.org header.s=sel;
//		dmarc=pass (p=reject) header.from=example.org
//
// Properties follow RFC 8601 §2.7: smtp.mailfrom (smtp.helo for <>),
// header.d, header.i, header.s and the first 8 characters of header.b
// (RFC 6008 §4, telling two signatures of one domain apart), header.from;
// reason= for errors, and the DMARC policy that applied as a comment.
// Values that came from the client (addresses, tags, the From domain) are
// cut to printable US-ASCII, so a field never carries a line break of the
// sender's. Fields that arrive already claiming the hub's authserv-id are
// removed before delivery (StripOwnResults; RFC 8601 §5), compared without
// regard to case after the CFWS before them; fields of other servers are
// kept.
package authcheck

import (
	"context"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/authres"
)

// Resolver is what the checks ask DNS; *net.Resolver implements it (and
// the hub's, internal/resolver, is one). Errors are *net.DNSError: with
// IsNotFound for NXDOMAIN and NODATA, IsTemporary or IsTimeout for what
// may succeed later.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Checker runs the checks through one resolver, for one authserv-id.
type Checker struct {
	Resolver   Resolver
	AuthServID string // hub.hostname

	// LookupTimeout bounds each DNS question of the DKIM and DMARC checks
	// (0: 15s); SPFTimeout a whole SPF evaluation (0: 20s).
	LookupTimeout, SPFTimeout time.Duration
}

// Result is an RFC 8601 result value.
type Result string

const (
	Pass      Result = "pass"
	Fail      Result = "fail"
	SoftFail  Result = "softfail"
	Neutral   Result = "neutral"
	None      Result = "none"
	Policy    Result = "policy"
	TempError Result = "temperror"
	PermError Result = "permerror"
)

// Results are what the checks of one message found; a nil check did not run.
type Results struct {
	SPF   *SPFResult
	DKIM  []DKIMResult // one per signature verified; empty with DKIMChecked: dkim=none
	DMARC *DMARCResult

	DKIMChecked bool
}

// Field returns the Authentication-Results header field for r, CRLF
// ended, or "" when no check ran.
func (c *Checker) Field(r Results) string {
	var parts []string
	if r.SPF != nil {
		parts = append(parts, r.SPF.format())
	}
	if r.DKIMChecked {
		if len(r.DKIM) == 0 {
			parts = append(parts, "dkim=none")
		}
		for _, d := range r.DKIM {
			parts = append(parts, d.format())
		}
	}
	if r.DMARC != nil {
		parts = append(parts, r.DMARC.format())
	}
	if len(parts) == 0 {
		return ""
	}
	// RFC 8601 §2.2: one resinfo per folded line keeps the field readable
	// and every line under RFC 5322's 78 characters in the usual case.
	return "Authentication-Results: " + clean(c.AuthServID) + ";\r\n\t" + strings.Join(parts, ";\r\n\t") + "\r\n"
}

// Summary is r in a few words for a log line: "spf=pass dkim=pass dmarc=fail".
func (r Results) Summary() (spf, dkim, dmarc string) {
	if r.SPF != nil {
		spf = string(r.SPF.Result)
	}
	if r.DKIMChecked {
		dkim = string(None)
		if len(r.DKIM) > 0 {
			vals := make([]string, len(r.DKIM))
			for i, d := range r.DKIM {
				vals[i] = string(d.Result)
			}
			dkim = strings.Join(vals, ",")
		}
	}
	if r.DMARC != nil {
		dmarc = string(r.DMARC.Result)
	}
	return spf, dkim, dmarc
}

// formatResult formats one resinfo with go-msgauth's quoting, without its
// trailing space, and with comment (if any) after the result value.
func formatResult(r authres.Result, comment string) string {
	s := strings.TrimSpace(strings.TrimPrefix(authres.Format("", []authres.Result{r}), "; "))
	if comment != "" {
		method, rest, _ := strings.Cut(s, " ")
		s = method + " (" + comment + ")"
		if rest != "" {
			s += " " + rest
		}
	}
	return s
}

// maxValue bounds a value from the client in the field: five of them,
// quoted, stay within RFC 5322's 998-character line.
const maxValue = 128

// clean cuts a value to printable US-ASCII (other bytes, and the '"' and
// '\\' that quoting would double, become '?') and to maxValue bytes:
// nothing the sender wrote can break the field's lines or make it grow
// without bound.
func clean(s string) string {
	if len(s) > maxValue {
		s = s[:maxValue]
	}
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			b[i] = '?'
		}
	}
	return string(b)
}

func (c *Checker) lookupTimeout() time.Duration {
	if c.LookupTimeout > 0 {
		return c.LookupTimeout
	}
	return 15 * time.Second
}

// lookupTXT asks for name's TXT records with the per-question timeout.
func (c *Checker) lookupTXT(ctx context.Context, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.lookupTimeout())
	defer cancel()
	return c.Resolver.LookupTXT(ctx, name)
}

// dnsReason describes a DNS error for reason=, without the server's
// address (which says nothing to the reader and changes between runs).
func dnsReason(err error) string {
	if de, ok := err.(*net.DNSError); ok {
		switch {
		case de.IsTimeout:
			return "DNS timeout for " + de.Name
		case de.IsNotFound:
			return "no DNS record for " + de.Name
		case de.IsTemporary:
			return "DNS temporary failure for " + de.Name
		}
		return "DNS error for " + de.Name
	}
	return err.Error()
}

// isTemporary says whether a DNS error may go away: a timeout or SERVFAIL.
func isTemporary(err error) bool {
	if de, ok := err.(*net.DNSError); ok {
		return de.IsTimeout || de.IsTemporary
	}
	return false
}
