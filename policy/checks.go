package policy

// The checks block of a receive connector: which sender authentication
// checks run on mail it receives (connectors/authcheck does them), and
// which of their failures refuse the message.
//
//	receive_connector "internet" {
//	  usage = "internet"
//	  checks {
//	    spf             = true  # RFC 7208, at MAIL FROM
//	    dkim            = true  # RFC 6376, at the end of DATA
//	    dmarc           = true  # RFC 7489, at the end of DATA
//	    spf_reject      = false # SPF "fail" refused at MAIL: 550 5.7.23
//	    dmarc_reject    = false # DMARC "fail" under p=reject refused: 550 5.7.1
//	    temperror_defer = true  # with a *_reject: a DNS temporary error defers (451)
//	  }
//	}
//
// spf, dkim and dmarc default to true on usage = "internet" and to false
// on every other usage; each field set wins over the preset. The
// rejections default to false everywhere: a check records its result in
// Authentication-Results and leaves the decision to the mailbox's filters
// until the operator asks for more, because a refusal on a DNS result
// loses mail when the sender's DNS is wrong, and forwarded mail fails SPF
// (and, through it, DMARC when it is not DKIM-signed) by design.

import "github.com/hashicorp/hcl/v2"

// ReceiveChecks are a receive connector's sender authentication checks.
// Sessions that authenticated and sessions of an externally secured
// connector (the Trusted rights) are never checked.
type ReceiveChecks struct {
	SPF   bool // RFC 7208 check of the MAIL FROM identity (the HELO identity for <>)
	DKIM  bool // RFC 6376 verification of up to 5 DKIM-Signature fields
	DMARC bool // RFC 7489 evaluation of the From: domain's policy (needs SPF or DKIM)

	// SPFReject refuses MAIL FROM whose SPF result is "fail" with
	// 550 5.7.23 (RFC 7372 §3.2); softfail, neutral and the rest pass.
	SPFReject bool
	// DMARCReject refuses, at the end of DATA, a message whose DMARC
	// result is "fail" under the policy "reject" (p=, or sp= for a
	// subdomain), within pct: 550 5.7.1. Quarantine is not refused.
	DMARCReject bool
	// TempErrorDefer (default true): where a rejection is on, a temporary
	// DNS error in its check answers 451 (4.7.24 for SPF, RFC 7372 §3.2;
	// 4.7.5 for DMARC) so that the client tries again, instead of
	// accepting a message the check could not judge.
	TempErrorDefer bool
}

// Any says whether any check runs.
func (c ReceiveChecks) Any() bool { return c.SPF || c.DKIM || c.DMARC }

type checksSchema struct {
	SPF                 *bool     `hcl:"spf,optional"`
	SPFRange            hcl.Range `hcl:"spf,attr_range"`
	DKIM                *bool     `hcl:"dkim,optional"`
	DMARC               *bool     `hcl:"dmarc,optional"`
	DMARCRange          hcl.Range `hcl:"dmarc,attr_range"`
	SPFReject           *bool     `hcl:"spf_reject,optional"`
	SPFRejectRange      hcl.Range `hcl:"spf_reject,attr_range"`
	DMARCReject         *bool     `hcl:"dmarc_reject,optional"`
	DMARCRejectRange    hcl.Range `hcl:"dmarc_reject,attr_range"`
	TempErrorDefer      *bool     `hcl:"temperror_defer,optional"`
	TempErrorDeferRange hcl.Range `hcl:"temperror_defer,attr_range"`
	DefRange            hcl.Range `hcl:",def_range"`
}

// receiveChecks fills rc.Checks from the usage preset and the checks
// block, and reports contradictions at the field that makes them.
func (l *loader) receiveChecks(s *receiveConnectorSchema, rc *ReceiveConnector) {
	on := rc.Usage == UsageInternet
	rc.Checks = ReceiveChecks{SPF: on, DKIM: on, DMARC: on, TempErrorDefer: true}
	c := s.Checks
	if c == nil {
		return
	}
	set := func(dst *bool, v *bool) {
		if v != nil {
			*dst = *v
		}
	}
	set(&rc.Checks.SPF, c.SPF)
	set(&rc.Checks.DKIM, c.DKIM)
	set(&rc.Checks.DMARC, c.DMARC)
	set(&rc.Checks.SPFReject, c.SPFReject)
	set(&rc.Checks.DMARCReject, c.DMARCReject)
	set(&rc.Checks.TempErrorDefer, c.TempErrorDefer)
	ck := rc.Checks
	if ck.DMARC && !ck.SPF && !ck.DKIM {
		// RFC 7489 §4.2: DMARC passes on an aligned SPF or DKIM pass.
		at := c.DMARCRange
		if c.DMARC == nil {
			at = c.DefRange
		}
		l.errorf(at, "DMARC without SPF and DKIM",
			"Connector %q evaluates DMARC, which passes only on an aligned SPF or DKIM result (RFC 7489 §4.2), "+
				"but checks neither: set spf = true or dkim = true, or dmarc = false.", rc.Name)
	}
	if ck.DMARCReject && !ck.DMARC {
		l.errorf(c.DMARCRejectRange, "dmarc_reject without dmarc",
			"Connector %q would refuse DMARC failures but does not evaluate DMARC: set dmarc = true (with spf or dkim).", rc.Name)
	}
	if ck.SPFReject && !ck.SPF {
		l.errorf(c.SPFRejectRange, "spf_reject without spf",
			"Connector %q would refuse SPF failures but does not check SPF: set spf = true.", rc.Name)
	}
	if c.TempErrorDefer != nil && !ck.SPFReject && !ck.DMARCReject {
		l.warnf(c.TempErrorDeferRange, "temperror_defer unused",
			"temperror_defer only matters with spf_reject or dmarc_reject; without them a temporary error is recorded "+
				"(spf=temperror, dmarc=temperror) and the message accepted.")
	}
	switch {
	case ck.Any() && rc.ExternallySecured:
		l.warnf(c.DefRange, "Checks never run",
			"Connector %q is externally secured: every session has the Trusted rights, and trusted and authenticated "+
				"sessions are not checked. Remove the checks block, or set externally_secured = false.", rc.Name)
	case ck.Any() && rc.Permissions.Anonymous.Has(RightRelay):
		l.warnf(c.DefRange, "Checks never run",
			"Connector %q lets anonymous sessions relay: its remote_ip_ranges are trusted hosts, whose sessions are "+
				"not checked. Remove the checks block, or relay from these ranges only after AUTH.", rc.Name)
	}
}
