package categorizer

import (
	"fmt"
	"strings"
	"testing"
)

const lmtpDirectory = directory + `
mailbox "dora@example.com" {
  lmtp      = "unix:/run/dovecot/lmtp"
  addresses = ["d.ora@example.com"]
}
alias "news@example.com"      { to = ["dora+news@example.com"] }
alias "both@example.com"      { to = ["dora@example.com", "dora+news@example.com", "DORA+News@example.com"] }
alias "dora+alias@example.com" { to = ["bob@example.com"] }
`

// summary renders outcomes as "input:address<resolved-from>hop".
func subSummary(out []Outcome) string {
	var parts []string
	for _, o := range out {
		parts = append(parts, fmt.Sprintf("%d:%s<%s>%s", o.Input, o.Address, o.ResolvedFrom, o.NextHop.Kind))
	}
	return strings.Join(parts, " ")
}

// An LMTP mailbox is delivered as addressed: the primary address with the
// RFC 5233 detail kept, one copy per distinct address (compared without
// case); a Maildir mailbox is still one copy, at its primary address.
func TestLMTPSubaddress(t *testing.T) {
	cfg := load(t, lmtpDirectory)
	for _, tc := range []struct {
		name string
		in   []string
		want string
	}{
		{"detail kept", []string{"dora+news@example.com"}, "0:dora+news@example.com<>lmtp"},
		{"detail as written", []string{"Dora+News@Example.com"}, "0:dora+News@example.com<>lmtp"},
		{"plain and tagged: two copies", []string{"dora@example.com", "dora+news@example.com", "dora+NEWS@example.com"},
			"0:dora@example.com<>lmtp 1:dora+news@example.com<>lmtp"},
		{"extra address keeps the detail on the primary", []string{"d.ora+x@example.com"},
			"0:dora+x@example.com<d.ora+x@example.com>lmtp"},
		{"alias target with a detail", []string{"news@example.com"}, "0:dora+news@example.com<news@example.com>lmtp"},
		{"alias to plain and tagged", []string{"both@example.com"},
			"0:dora@example.com<both@example.com>lmtp 0:dora+news@example.com<both@example.com>lmtp"},
		{"a configured address is not a subaddress", []string{"dora+alias@example.com"},
			"0:bob@example.com<dora+alias@example.com>maildir"},
		{"maildir: one copy at the primary", []string{"bob+lists@example.com", "bob@example.com"},
			"0:bob@example.com<bob+lists@example.com>maildir"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := Categorize(cfg, 10, inputs(tc.in...))
			if got := subSummary(out); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			// The transport routes the final address again on every
			// attempt: it must come back unchanged.
			for _, o := range out {
				again := Categorize(cfg, 10, inputs(o.Address))
				if len(again) != 1 || again[0].Address != o.Address || again[0].NextHop != o.NextHop {
					t.Errorf("%s is not a fixed point: %s", o.Address, subSummary(again))
				}
			}
		})
	}
	out := Categorize(cfg, 10, inputs("dora+news@example.com"))
	if !strings.Contains(out[0].Why, "as dora+news@example.com") {
		t.Errorf("why: %s", out[0].Why)
	}
}
