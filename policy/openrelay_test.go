package policy

import (
	"strings"
	"testing"
)

// TestOpenRelayByCoverage: unauthenticated relay is refused when the remote
// ranges together cover a large part of the public Internet, however they
// are written; private space does not count; broad public ranges warn.
func TestOpenRelayByCoverage(t *testing.T) {
	for _, c := range []struct {
		ranges string
		want   string // "error", "warning" or ""
	}{
		{`"0.0.0.0/0"`, "error"},
		{`"::/0"`, "error"},
		{`"0.0.0.0/1", "128.0.0.0/1"`, "error"},
		{`"0.0.0.0-255.255.255.254"`, "error"},
		{`"8.0.0.0/7"`, "error"},
		{`"2000::/3"`, "error"},
		{`"2a00::/31"`, "error"},
		{`"8.8.0.0/15"`, "warning"},
		{`"2a00::/47"`, "warning"},
		{`"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"`, ""},
		{`"127.0.0.0/8", "fc00::/7", "2001:db8::/32"`, ""},
		{`"10.0.0.0-10.255.255.255", "10.1.2.0/28"`, ""},
		{`"192.0.2.10", "198.51.100.0/24"`, ""},
		{`"203.0.114.0/24", "8.8.8.8"`, ""},
		{`"8.8.0.0/16", "8.8.0.0/17"`, ""}, // overlaps counted once: exactly a /16
	} {
		src := `hub {
  hostname  = "mx.example.com"
  spool_dir = "var/spool"
}
accepted_domain "example.com" {}
receive_connector "apps" {
  bind             = ["127.0.0.1:2525"]
  remote_ip_ranges = [` + c.ranges + `]
  permissions {
    anonymous = ["submit", "relay"] # <-
  }
}
`
		cfg, diags := loadSrc(t, t.TempDir(), src)
		got := ""
		for _, d := range diags {
			switch {
			case d.Summary == "Open relay":
				got = "error"
			case d.Summary == "Broad unauthenticated relay":
				got = "warning"
			default:
				t.Errorf("%s: unexpected diagnostic %s: %s", c.ranges, d.Summary, d.Detail)
			}
			if d.Subject.Start.Line != markedLine(t, src) {
				t.Errorf("%s: diagnostic on line %d", c.ranges, d.Subject.Start.Line)
			}
		}
		if got != c.want {
			t.Errorf("%s: got %q, want %q", c.ranges, got, c.want)
		}
		if (c.want == "error") != (cfg == nil) {
			t.Errorf("%s: config loaded = %v", c.ranges, cfg != nil)
		}
		if c.want == "error" && !strings.Contains(diags[0].Detail, "public IPv4") {
			t.Errorf("%s: detail %q", c.ranges, diags[0].Detail)
		}
	}
}

// TestAcceptedDomainPublicSuffix: accepting a whole public suffix is an
// error; one's own domains, their wildcards and "localhost" are fine.
func TestAcceptedDomainPublicSuffix(t *testing.T) {
	for name, bad := range map[string]bool{
		"*.com": true, "com": true, "*.co.uk": true, "co.uk": true, "*.test": true,
		"example.org": false, "*.example.com": false, "example.co.uk": false, "localhost": false, "example.test": false,
	} {
		src := baseConfig + `accepted_domain "` + name + `" { type = "external_relay" } # <-` + "\n"
		cfg, diags := loadSrc(t, t.TempDir(), src)
		if bad {
			if cfg != nil || len(diags) == 0 || diags[0].Summary != "Accepted domain is a public suffix" ||
				diags[0].Subject.Start.Line != markedLine(t, src) {
				t.Errorf("%s: loaded=%v diags=%v", name, cfg != nil, diags)
			}
		} else if cfg == nil {
			t.Errorf("%s refused: %v", name, diags)
		}
	}
}
