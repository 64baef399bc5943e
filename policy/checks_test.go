package policy

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

func TestChecksDefaults(t *testing.T) {
	dir := testDir(t)
	src := strings.Replace(baseConfig, `receive_connector "default" {`, `receive_connector "default" {
  usage = "internet"`, 1) + `
receive_connector "custom" { bind = ["127.0.0.1:12526"] }
receive_connector "partial" {
  usage = "internet"
  bind  = ["127.0.0.1:2527"]
  checks {
    dkim         = false
    dmarc_reject = true
  }
}
receive_connector "on" {
  bind = ["127.0.0.1:2528"]
  checks {
    spf        = true
    spf_reject = true
    temperror_defer = false
  }
}
`
	cfg, diags := loadSrc(t, dir, src)
	if cfg == nil {
		t.Fatalf("load: %v", diags)
	}
	want := map[string]ReceiveChecks{
		"default": {SPF: true, DKIM: true, DMARC: true, TempErrorDefer: true},
		"custom":  {TempErrorDefer: true},
		"partial": {SPF: true, DMARC: true, DMARCReject: true, TempErrorDefer: true},
		"on":      {SPF: true, SPFReject: true},
	}
	for _, rc := range cfg.ReceiveConnectors {
		if rc.Checks != want[rc.Name] {
			t.Errorf("%s: checks = %+v, want %+v", rc.Name, rc.Checks, want[rc.Name])
		}
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %v", cfg.Warnings)
	}
}

func TestChecksDiagnostics(t *testing.T) {
	dir := testDir(t)
	cases := []struct {
		name, block, summary string
		sev                  hcl.DiagnosticSeverity
	}{
		{"dmarc alone", `checks {
    spf   = false
    dkim  = false
    dmarc = true # <-
  }`, "DMARC without SPF and DKIM", hcl.DiagError},
		{"dmarc from the preset", `usage = "internet"
  checks { # <-
    spf  = false
    dkim = false
  }`, "DMARC without SPF and DKIM", hcl.DiagError},
		{"dmarc_reject without dmarc", `checks {
    dkim         = true
    dmarc_reject = true # <-
  }`, "dmarc_reject without dmarc", hcl.DiagError},
		{"spf_reject without spf", `usage = "internet"
  checks {
    spf        = false
    spf_reject = true # <-
  }`, "spf_reject without spf", hcl.DiagError},
		{"temperror_defer alone", `usage = "internet"
  checks {
    temperror_defer = false # <-
  }`, "temperror_defer unused", hcl.DiagWarning},
		{"externally secured", `usage = "internal"
  checks { spf = true } # <-`, "Checks never run", hcl.DiagWarning},
		{"trusted ranges", `remote_ip_ranges = ["10.1.2.0/28"]
  permissions { anonymous = ["submit", "relay"] }
  checks { spf = true } # <-`, "Checks never run", hcl.DiagWarning},
		{"not a bool", `checks {
    spf = "yes please" # <-
  }`, "Unsuitable value type", hcl.DiagError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := baseConfig + `
receive_connector "x" {
  bind = ["127.0.0.1:12526"]
  ` + tc.block + `
}
`
			line := markedLine(t, src)
			_, diags := loadSrc(t, dir, src)
			var got []string
			for _, d := range diags {
				if d.Summary == tc.summary && d.Severity == tc.sev && d.Subject != nil && d.Subject.Start.Line == line {
					return
				}
				got = append(got, d.Summary)
			}
			t.Errorf("want %q at line %d; got %q", tc.summary, line, got)
		})
	}
}
