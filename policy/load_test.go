package policy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
	"golang.org/x/crypto/bcrypt"

	"hubd/internal/certgen"
)

// baseConfig is a valid configuration that validation cases extend.
const baseConfig = `hub {
  hostname  = "mx.example.com"
  spool_dir = "var/spool"
}
accepted_domain "example.com" {}
mailbox "alice@example.com" {}
receive_connector "default" {
  bind = ["127.0.0.1:2525"]
}
`

// testDir makes a directory holding real TLS files and a recipients file.
func testDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := certgen.WriteFiles(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"),
		[]string{"mx.example.com"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	rcpts := "# known users\nbob@relay.example\ncarol@relay.example  # trailing comment\n"
	if err := os.WriteFile(filepath.Join(dir, "rcpts.txt"), []byte(rcpts), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// loadSrc loads src as test.hcl in dir; it fails the test on a non-LoadError.
func loadSrc(t *testing.T, dir, src string) (*Config, hcl.Diagnostics) {
	t.Helper()
	cfg, err := LoadBytes("test.hcl", []byte(src), dir)
	if err == nil {
		return cfg, cfg.Warnings
	}
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("LoadBytes: %v (%T), want *LoadError", err, err)
	}
	return nil, le.Diags
}

// markedLine returns the 1-based line of src that contains "# <-".
func markedLine(t *testing.T, src string) int {
	t.Helper()
	for i, line := range strings.Split(src, "\n") {
		if strings.Contains(line, "# <-") {
			return i + 1
		}
	}
	t.Fatal("test source has no '# <-' marker")
	return 0
}

func TestAllErrorsAtOnce(t *testing.T) {
	src := baseConfig + `
receive_connector "x" {
  bind               = ["127.0.0.1:26"]
  connection_timeout = "soon"
  max_message_size   = "lots"
  auth               = ["plain"]
}
mailbox "bob@example.com" { password_hash = "x" }
`
	_, diags := loadSrc(t, testDir(t), src)
	want := map[string]bool{"Invalid duration": true, "Invalid size": true, "AUTH without TLS": true, "Invalid password_hash": true}
	for _, d := range diags {
		delete(want, d.Summary)
	}
	if len(want) > 0 {
		t.Errorf("missing diagnostics %v in %v", want, diags)
	}
}

func TestSyntaxError(t *testing.T) {
	_, diags := loadSrc(t, t.TempDir(), "hub {\n  hostname = \n")
	if !diags.HasErrors() {
		t.Fatal("want a syntax error")
	}
}

func TestLoadErrorRendering(t *testing.T) {
	src := baseConfig + `receive_connector "x" {
  bind               = ["127.0.0.1:26"]
  connection_timeout = "10 minutes"
}
`
	_, err := LoadBytes("test.hcl", []byte(src), t.TempDir())
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("err = %v, want *LoadError", err)
	}
	var buf bytes.Buffer
	if err := le.Write(&buf, false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"Error: Invalid duration", "on test.hcl line 12", `connection_timeout = "10 minutes"`} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered diagnostics lack %q:\n%s", want, out)
		}
	}
	if !strings.Contains(le.Error(), "test.hcl:12,") {
		t.Errorf("Error() = %q, want file:line", le.Error())
	}
}

func TestWarnings(t *testing.T) {
	src := baseConfig + `
accepted_domain "relay.example" { # <-
  type = "internal_relay"
}
`
	cfg, diags := loadSrc(t, testDir(t), src)
	if cfg == nil {
		t.Fatalf("load failed: %v", diags)
	}
	if len(cfg.Warnings) != 1 || cfg.Warnings[0].Summary != "Internal relay domain without a route" ||
		cfg.Warnings[0].Subject.Start.Line != markedLine(t, src) {
		t.Fatalf("warnings = %v", cfg.Warnings)
	}
	var buf bytes.Buffer
	if err := WriteDiagnostics(&buf, cfg.Files(), cfg.Warnings, false); err != nil || !strings.Contains(buf.String(), "Warning:") {
		t.Errorf("rendered warnings %q, %v", buf.String(), err)
	}

	// A matching send connector silences it.
	cfg, diags = loadSrc(t, testDir(t), src+`
send_connector "relay" {
  address_spaces = ["relay.example"]
  smart_hosts    = ["[192.0.2.5]"]
}
`)
	if cfg == nil || len(cfg.Warnings) != 0 {
		t.Fatalf("cfg=%v diags=%v", cfg != nil, diags)
	}
}

// TestAbuseSettings: the abuse-resistance settings of a receive connector,
// the header firewall of a send connector and back pressure are read, and
// their defaults are Exchange's.
func TestAbuseSettings(t *testing.T) {
	dir := testDir(t)
	src := `hub {
  hostname  = "mx.example.com"
  spool_dir = "var/spool"
  back_pressure {
    disk_free_high        = "1GB"
    disk_free_medium      = "2GB"
    memory_high_percent   = 90
    memory_medium_percent = 85
  }
}
receive_connector "limited" {
  bind                                          = ["127.0.0.1:2600"]
  tarpit_interval                               = "3s"
  message_rate_limit                            = 10
  message_rate_source                           = "all"
  max_inbound_connections_percentage_per_source = 5
  connection_rate_limit                         = 60
  recipient_rate_limit                          = 100
  max_auth_failures_per_source                  = 4
  max_auth_failures_per_network                 = 8
  auth_failure_window                           = "1h"
  proxy_protocol                                = true
  trusted_proxies                               = ["10.0.0.1", "10.0.1.0/24"]
  max_command_line_length                       = 1024
  max_commands_before_mail                      = 5
  require_ehlo_domain                           = false
  allow_vrfy                                    = true
  tls {
    cert_file      = "cert.pem"
    key_file       = "key.pem"
    client_ca_file = "cert.pem"
    min_version    = "1.3"
  }
  auth = ["external"]
}
receive_connector "defaults" {
  bind  = ["127.0.0.1:2601"]
  usage = "client"
  tls {
    cert_file = "cert.pem"
    key_file  = "key.pem"
  }
}
send_connector "internal" {
  address_spaces   = ["example.com"]
  smart_hosts      = ["[192.0.2.1]"]
  send_org_headers = true
}
`
	cfg, diags := loadSrc(t, dir, src)
	if cfg == nil {
		t.Fatalf("load failed: %v", diags)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %v", cfg.Warnings)
	}
	rc := cfg.ReceiveConnectors[0]
	if rc.TarpitInterval != 3*time.Second || rc.MessageRateLimit != 10 || rc.MessageRateSource != RateSourceAll ||
		rc.MaxInboundConnectionsPercentagePerSource != 5 || rc.ConnectionRateLimit != 60 || rc.RecipientRateLimit != 100 ||
		rc.MaxAuthFailuresPerSource != 4 || rc.MaxAuthFailuresPerNetwork != 8 || rc.AuthFailureWindow != time.Hour ||
		!rc.ProxyProtocol || len(rc.TrustedProxies) != 2 || rc.MaxCommandLineLength != 1024 || rc.MaxCommandsBeforeMail != 5 ||
		rc.RequireEHLODomain || !rc.AllowVRFY || rc.AllowEXPN || rc.TLS.ClientCAFile == "" || rc.TLS.MinVersion != tls.VersionTLS13 ||
		!slices.Equal(rc.Auth, []string{"external"}) {
		t.Errorf("limited = %+v", rc)
	}
	d := cfg.ReceiveConnectors[1]
	if d.MessageRateSource != RateSourceUser || d.MaxInboundConnectionsPercentagePerSource != 2 || d.ConnectionRateLimit != 0 ||
		d.MaxAuthFailuresPerSource != 10 || d.MaxAuthFailuresPerNetwork != 30 || d.AuthFailureWindow != 15*time.Minute ||
		d.MaxCommandLineLength != 2048 || d.MaxCommandsBeforeMail != 20 || !d.RequireEHLODomain || d.AllowVRFY ||
		d.TLS.MinVersion != tls.VersionTLS12 {
		t.Errorf("defaults = %+v", d)
	}
	if !cfg.SendConnectors[0].SendOrgHeaders {
		t.Error("send_org_headers not read")
	}
	b := cfg.Hub.BackPressure
	if !b.Enabled || b.DiskFreeHigh != 1<<30 || b.DiskFreeMedium != 2<<30 || b.MemoryHighPercent != 90 ||
		b.MemoryMediumPercent != 85 || b.CheckInterval != 2*time.Second {
		t.Errorf("back pressure = %+v", b)
	}
}

func TestDefaults(t *testing.T) {
	dir := testDir(t)
	cfg, diags := loadSrc(t, dir, baseConfig)
	if cfg == nil {
		t.Fatalf("load: %v", diags)
	}
	h := cfg.Hub
	if h.Hostname != "mx.example.com" || h.SpoolDir != filepath.Join(dir, "var/spool") ||
		h.QuickRetryCount != 4 || h.QuickRetryInterval != time.Minute || h.TransientRetryCount != 6 ||
		h.TransientRetryInterval != 5*time.Minute || h.RetryInterval != 10*time.Minute || h.MessageExpiration != 48*time.Hour ||
		h.DelayDSNAfter != 4*time.Hour || h.PoisonThreshold != 2 || h.MaxOutboundConnections != 1000 ||
		h.MaxPerDomainOutboundConnections != 20 || h.MaxHopCount != 100 ||
		h.MaxAliasDepth != 10 || h.ShutdownGrace != 30*time.Second {
		t.Errorf("hub = %+v", h)
	}
	if b := h.BackPressure; !b.Enabled || b.DiskFreeHigh != 500<<20 || b.DiskFreeMedium != 0 || b.MemoryHighPercent != 75 ||
		b.MemoryMediumPercent != 73 {
		t.Errorf("back pressure = %+v", b)
	}
	if tl := h.TrackingLog; !tl.Enabled || tl.Dir != filepath.Join(dir, "var", "log", "tracking") || tl.MaxFileSize != 10<<20 ||
		tl.MaxAge != 30*24*time.Hour || tl.MaxDirectorySize != 1<<30 {
		t.Errorf("tracking log = %+v", tl)
	}
	if mb := cfg.Mailboxes[0]; mb.Maildir != filepath.Join(dir, "var", "mail", "alice") {
		t.Errorf("maildir = %q", mb.Maildir)
	}
	if d := cfg.AcceptedDomains[0]; d.Type != Authoritative || d.Recipients != nil {
		t.Errorf("domain = %+v", d)
	}
	rc := cfg.ReceiveConnectors[0]
	if !rc.Enabled || rc.Usage != UsageCustom || rc.FQDN != "mx.example.com" || rc.Banner != "mx.example.com ESMTP hubd" ||
		rc.TLS.Mode != TLSOff || rc.RequireTLS || len(rc.Auth) != 0 || rc.ExternallySecured {
		t.Errorf("connector = %+v", rc)
	}
	if len(rc.RemoteIPRanges) != 2 || rc.RemoteIPRanges[0].Text != "0.0.0.0/0" || rc.RemoteIPRanges[1].Text != "::/0" {
		t.Errorf("ranges = %+v", rc.RemoteIPRanges)
	}
	wantPerm := Permissions{Anonymous: Rights(RightSubmit), Authenticated: Rights(RightSubmit | RightRelay)}
	if rc.Permissions != wantPerm {
		t.Errorf("permissions = %+v", rc.Permissions)
	}
	if rc.MaxMessageSize != 36<<20 || rc.MaxRecipients != 200 || rc.MaxHeaderSize != 64<<10 || rc.MaxHopCount != 100 ||
		rc.MaxInboundConnections != 5000 || rc.MaxInboundConnectionsPerSource != 20 || rc.MaxProtocolErrors != 5 ||
		rc.MaxLogonFailures != 3 || rc.ConnectionTimeout != 10*time.Minute || rc.ConnectionInactivityTimeout != 5*time.Minute ||
		rc.TarpitInterval != 5*time.Second || rc.MessageRateLimit != 0 {
		t.Errorf("limits = %+v", rc)
	}
}

func TestFullConfig(t *testing.T) {
	dir := testDir(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	src := `
hub {
  hostname           = "MX.Example.com"
  spool_dir          = "/var/spool/hubd"
  retry_interval     = "30s"
  quick_retry_count  = 0
  delay_dsn_after    = "0s"
  tracking_log {
    dir           = "/var/log/hubd"
    max_file_size = "1MB"
  }
  message_expiration = "1d12h"
  max_alias_depth    = 5
  shutdown_grace     = "0s"
}
accepted_domain "example.com" {}
accepted_domain "*.example.com" { type = "external_relay" }
accepted_domain "relay.example" {
  type            = "internal_relay"
  recipients      = ["Dave@relay.example"]
  recipients_file = "rcpts.txt"
}
mailbox "Alice@Example.com" {
  password_hash = "` + string(hash) + `"
  maildir       = "mail/alice"
  addresses     = ["a.smith@example.com"]
}
alias "postmaster@example.com" { to = ["alice@example.com", "ops@partner.example"] }
receive_connector "submission" {
  usage = "client"
  bind  = ["[::1]:587", "127.0.0.1:587"]
  tls {
    cert_file = "cert.pem"
    key_file  = "key.pem"
  }
  max_message_size = "10MiB"
  tarpit_interval  = "0s"
}
receive_connector "smtps" {
  bind = ["127.0.0.1:465"]
  tls {
    mode        = "implicit"
    self_signed = true
  }
  auth = ["PLAIN"]
}
send_connector "relay" {
  address_spaces = ["relay.example;5", "*.relay.example"]
  smart_hosts    = ["Smart.Example.NET", "192.0.2.5:2525", "[2001:db8::5]"]
  tls            = "required"
  max_message_size = "20MB"
}
send_connector "internet" {
  address_spaces = ["*"]
  dns_routing    = true
}
`
	cfg, diags := loadSrc(t, dir, src)
	if cfg == nil {
		t.Fatalf("load: %v", diags)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %v", cfg.Warnings)
	}
	if cfg.Hub.Hostname != "mx.example.com" || cfg.Hub.MessageExpiration != 36*time.Hour || cfg.Hub.SpoolDir != "/var/spool/hubd" ||
		cfg.Hub.ShutdownGrace != 0 || cfg.Hub.MaxAliasDepth != 5 || cfg.Hub.RetryInterval != 30*time.Second ||
		cfg.Hub.QuickRetryCount != 0 || cfg.Hub.DelayDSNAfter != 0 || cfg.Hub.TrackingLog.Dir != "/var/log/hubd" ||
		cfg.Hub.TrackingLog.MaxFileSize != 1<<20 {
		t.Errorf("hub = %+v", cfg.Hub)
	}
	relay := cfg.Domain("relay.example")
	if relay == nil || len(relay.Recipients) != 3 || !relay.Recipients["dave@relay.example"] || !relay.Recipients["carol@relay.example"] {
		t.Errorf("relay domain = %+v", relay)
	}
	mb := cfg.MailboxFor("A.Smith@EXAMPLE.com")
	if mb == nil || mb.Address != "alice@example.com" || mb.Maildir != filepath.Join(dir, "mail/alice") {
		t.Errorf("mailbox = %+v", mb)
	}
	sub := cfg.ReceiveConnectors[0]
	if !sub.RequireTLS || strings.Join(sub.Auth, ",") != "plain,login" || sub.Permissions.Anonymous != 0 ||
		sub.Permissions.Authenticated != Rights(RightSubmit|RightRelay) || sub.TLS.Mode != TLSStartTLS ||
		sub.TLS.CertFile != filepath.Join(dir, "cert.pem") || sub.MaxMessageSize != 10<<20 || sub.TarpitInterval != 0 {
		t.Errorf("submission = %+v", sub)
	}
	if got := strings.Join(cfg.Binds(), " "); got != "127.0.0.1:465 127.0.0.1:587 [::1]:587" {
		t.Errorf("Binds = %q", got)
	}
	smtps := cfg.ReceiveConnectors[1]
	if smtps.TLS.Mode != TLSImplicit || !smtps.TLS.SelfSigned || strings.Join(smtps.Auth, ",") != "plain" {
		t.Errorf("smtps = %+v", smtps)
	}
	sc := cfg.SendConnectors[0]
	if got := strings.Join(sc.SmartHosts, " "); got != "smart.example.net:25 [192.0.2.5]:2525 [2001:db8::5]:25" {
		t.Errorf("smart hosts = %q", got)
	}
	if sc.AddressSpaces[0] != (AddressSpace{"relay.example", 5}) || sc.AddressSpaces[1] != (AddressSpace{"*.relay.example", 1}) ||
		sc.TLS != SendTLSRequired || sc.MaxMessageSize != 20<<20 || sc.FQDN != "mx.example.com" || !sc.Enabled {
		t.Errorf("send connector = %+v", sc)
	}
	if cfg.SendConnectors[1].TLS != SendTLSOpportunistic {
		t.Errorf("default send tls = %q", cfg.SendConnectors[1].TLS)
	}
}

func TestPresets(t *testing.T) {
	tlsBlock := `tls {
    self_signed = true
  }`
	cases := []struct {
		name, body string
		check      func(rc ReceiveConnector) bool
	}{
		{"client", `usage = "client"` + "\n" + tlsBlock, func(rc ReceiveConnector) bool {
			return rc.RequireTLS && len(rc.Auth) == 2 && rc.Permissions.Anonymous == 0 &&
				rc.Permissions.Authenticated == Rights(RightSubmit|RightRelay)
		}},
		{"client explicit wins", `usage = "client"
  require_tls = false
  auth = ["login"]
  permissions {
    anonymous = ["submit"]
  }
  ` + tlsBlock, func(rc ReceiveConnector) bool {
			return !rc.RequireTLS && strings.Join(rc.Auth, ",") == "login" && rc.Permissions.Anonymous == Rights(RightSubmit) &&
				rc.Permissions.Authenticated == Rights(RightSubmit|RightRelay)
		}},
		{"internet", `usage = "internet"`, func(rc ReceiveConnector) bool {
			return !rc.RequireTLS && rc.Permissions.Anonymous == Rights(RightSubmit) && rc.SessionRights(false) == Rights(RightSubmit)
		}},
		{"internal narrow", `usage = "internal"
  remote_ip_ranges = ["10.9.0.0/16"]`, func(rc ReceiveConnector) bool {
			return rc.ExternallySecured && rc.Permissions.Trusted == allRights && rc.SessionRights(false) == allRights
		}},
		{"internal not secured", `usage = "internal"
  externally_secured = false`, func(rc ReceiveConnector) bool {
			return !rc.ExternallySecured && rc.SessionRights(false) == Rights(RightSubmit)
		}},
		{"partner", `usage = "partner"` + "\n" + tlsBlock, func(rc ReceiveConnector) bool {
			return rc.RequireTLS && rc.Permissions.Anonymous == Rights(RightSubmit) && len(rc.Auth) == 0
		}},
	}
	dir := testDir(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := baseConfig + "receive_connector \"p\" {\n  bind = [\"127.0.0.1:26\"]\n  " + tc.body + "\n}\n"
			cfg, diags := loadSrc(t, dir, src)
			if cfg == nil {
				t.Fatalf("load: %v", diags)
			}
			if rc := cfg.ReceiveConnectors[1]; !tc.check(rc) {
				t.Errorf("connector = %+v", rc)
			}
		})
	}
}

func TestLoadDirectory(t *testing.T) {
	dir := testDir(t)
	sub := filepath.Join(dir, "conf.d")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, src string) {
		if err := os.WriteFile(filepath.Join(sub, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("10-hub.hcl", baseConfig)
	write("20-more.hcl", `mailbox "bob@example.com" {}
receive_connector "submission" {
  bind = ["127.0.0.1:587"]
  tls {
    cert_file = "../cert.pem"
    key_file  = "../key.pem"
  }
}
`)
	write("README", "not hcl {")
	cfg, err := Load(sub)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Mailboxes) != 2 || len(cfg.ReceiveConnectors) != 2 || cfg.ReceiveConnectors[1].TLS.CertFile != filepath.Join(dir, "cert.pem") {
		t.Errorf("cfg = %+v", cfg)
	}
	// A duplicate across files names the first file and line.
	write("30-dup.hcl", "\n\nmailbox \"alice@example.com\" {}\n")
	_, err = Load(sub)
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("err = %v", err)
	}
	d := le.Diags[0]
	if d.Summary != `Duplicate mailbox "alice@example.com"` || d.Subject.Start.Line != 3 ||
		!strings.Contains(d.Detail, "10-hub.hcl:6") || !strings.HasSuffix(d.Subject.Filename, "30-dup.hcl") {
		t.Errorf("diag = %s: %s @%v", d.Summary, d.Detail, d.Subject)
	}
	if _, ok := le.Files[d.Subject.Filename]; !ok {
		t.Errorf("Files lacks %s", d.Subject.Filename)
	}
	// A single file loads too.
	if _, err := Load(filepath.Join(sub, "10-hub.hcl")); err != nil {
		t.Errorf("single file: %v", err)
	}
}
