package policy

import (
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// validationCases: each source marks the line its diagnostic must point at
// with "# <-".
var validationCases = []struct {
	name    string
	extra   string // appended to baseConfig
	full    string // replaces baseConfig + extra when set
	summary string
}{
	{name: "unknown attribute", summary: "Unsupported argument", extra: `
receive_connector "x" {
  bind   = ["127.0.0.1:26"]
  colour = "red" # <-
}`},
	{name: "list shadows mailbox", summary: "Distribution list shadows an address", extra: `
distribution_list "alice@example.com" { # <-
  members = ["bob@example.com"]
}`},
	{name: "empty list", summary: "Empty distribution list", extra: `
distribution_list "team@example.com" {
  members = [] # <-
}`},
	{name: "bad list member", summary: "Invalid list member", extra: `
distribution_list "team@example.com" {
  members = ["bob@example.com", "not an address"] # <-
}`},
	{name: "bad list owner", summary: "Invalid list owner", extra: `
distribution_list "team@example.com" {
  members = ["bob@example.com"]
  owner   = "nobody" # <-
}`},
	{name: "duplicate list", summary: `Duplicate distribution_list "Team@example.com"`, extra: `
distribution_list "team@example.com" { members = ["bob@example.com"] }
distribution_list "Team@example.com" { members = ["bob@example.com"] } # <-`},
	{name: "bad lmtp", summary: "Invalid lmtp", extra: `
mailbox "lmtp@example.com" {
  lmtp = "dovecot" # <-
}`},
	{name: "per-domain over total", summary: "Invalid max_per_domain_outbound_connections", full: `
hub {
  hostname = "mx.example.com"
  spool_dir = "/var/spool/hubd"
  max_outbound_connections = 10
  max_per_domain_outbound_connections = 20 # <-
}
receive_connector "in" { bind = ["127.0.0.1:25"] }`},
	{name: "tracking dir smaller than file", summary: "Invalid max_directory_size", full: `
hub {
  hostname = "mx.example.com"
  spool_dir = "/var/spool/hubd"
  tracking_log {
    max_file_size      = "10MB"
    max_directory_size = "1MB" # <-
  }
}
receive_connector "in" { bind = ["127.0.0.1:25"] }`},
	{name: "poison threshold zero", summary: "Invalid poison_threshold", full: `
hub {
  hostname = "mx.example.com"
  spool_dir = "/var/spool/hubd"
  poison_threshold = 0 # <-
}
receive_connector "in" { bind = ["127.0.0.1:25"] }`},
	{name: "proxy without trusted", summary: "PROXY protocol without trusted proxies", extra: `
receive_connector "x" {
  bind           = ["127.0.0.1:2600"]
  proxy_protocol = true # <-
}`},
	{name: "bad rate source", summary: "Invalid message_rate_source", extra: `
receive_connector "x" {
  bind                = ["127.0.0.1:2600"]
  message_rate_source = "session" # <-
}`},
	{name: "tls 1.1", summary: "Invalid min_version", extra: `
receive_connector "x" {
  bind = ["127.0.0.1:2600"]
  tls {
    self_signed = true
    min_version = "1.1" # <-
  }
}`},
	{name: "external without client ca", summary: "EXTERNAL without client certificates", extra: `
receive_connector "x" {
  bind = ["127.0.0.1:2600"]
  tls { self_signed = true }
  auth = ["external"] # <-
}`},
	{name: "percentage over 100", summary: "Invalid max_inbound_connections_percentage_per_source", extra: `
receive_connector "x" {
  bind                                          = ["127.0.0.1:2600"]
  max_inbound_connections_percentage_per_source = 150 # <-
}`},
	{name: "medium not above high", summary: "Invalid disk_free_medium", full: `
hub {
  hostname  = "mx.example.com"
  spool_dir = "/var/spool/hubd"
  back_pressure {
    disk_free_high   = "1GB"
    disk_free_medium = "500MB" # <-
  }
}
receive_connector "in" { bind = ["127.0.0.1:25"] }`},
	{name: "unknown block", summary: "Unsupported block type", extra: `
frobnicate "x" {} # <-`},
	{name: "bad duration", summary: "Invalid duration", extra: `
receive_connector "x" {
  bind               = ["127.0.0.1:26"]
  connection_timeout = "10 minutes" # <-
}`},
	{name: "bare number size", summary: "Invalid size", extra: `
receive_connector "x" {
  bind             = ["127.0.0.1:26"]
  max_message_size = "36" # <-
}`},
	{name: "bad cidr", summary: "Invalid remote IP range", extra: `
receive_connector "x" {
  bind = ["127.0.0.1:2525"]
  remote_ip_ranges = [
    "10.0.0.0/8",
    "192.0.2.0/33", # <-
  ]
}`},
	{name: "range backwards", summary: "Invalid remote IP range", extra: `
receive_connector "x" {
  bind = ["127.0.0.1:2525"]
  remote_ip_ranges = [
    "10.0.0.9-10.0.0.1", # <-
  ]
}`},
	{name: "range mixed family", summary: "Invalid remote IP range", extra: `
receive_connector "x" {
  bind             = ["127.0.0.1:2525"]
  remote_ip_ranges = ["10.0.0.1-::1"] # <-
}`},
	{name: "bad bind", summary: "Invalid bind address", extra: `
receive_connector "x" {
  bind = ["localhost:25"] # <-
}`},
	{name: "duplicate domain", summary: `Duplicate accepted_domain "Example.COM"`, extra: `
accepted_domain "Example.COM" {} # <-`},
	{name: "duplicate connector", summary: `Duplicate receive_connector "default"`, extra: `
receive_connector "default" { # <-
  bind = ["127.0.0.1:26"]
}`},
	{name: "duplicate mailbox", summary: `Duplicate mailbox "Alice@example.com"`, extra: `
mailbox "Alice@example.com" {} # <-`},
	{name: "duplicate send connector", summary: `Duplicate send_connector "out"`, extra: `
send_connector "out" {
  address_spaces = ["*"]
  dns_routing    = true
}
send_connector "out" { # <-
  address_spaces = ["*"]
  dns_routing    = true
}`},
	{name: "duplicate hub", summary: "Duplicate hub block", extra: `
hub { # <-
  spool_dir = "x"
}`},
	{name: "same bind same range", summary: "Duplicate remote range on one binding", extra: `
receive_connector "twin" { # <-
  bind = ["127.0.0.1:2525"]
}`},
	{name: "partial overlap", summary: "Partly overlapping remote ranges", extra: `
receive_connector "a" {
  bind             = ["127.0.0.1:2600"]
  remote_ip_ranges = ["10.0.0.0-10.0.0.100"]
}
receive_connector "b" {
  bind             = ["127.0.0.1:2600"]
  remote_ip_ranges = ["10.0.0.64/26"] # <-
}`},
	{name: "wildcard and specific bind", summary: "Conflicting bind addresses", extra: `
receive_connector "a" {
  bind = ["0.0.0.0:2600"]
}
receive_connector "b" {
  bind             = ["127.0.0.1:2600"] # <-
  remote_ip_ranges = ["10.0.0.0/8"]
}`},
	{name: "open relay anonymous", summary: "Open relay", extra: `
receive_connector "x" {
  bind = ["127.0.0.1:26"]
  permissions {
    anonymous = [
      "submit",
      "relay", # <-
    ]
  }
}`},
	{name: "open relay internal preset", summary: "Open relay", extra: `
receive_connector "x" {
  bind  = ["127.0.0.1:26"]
  usage = "internal" # <-
}`},
	{name: "open relay ipv6 only", summary: "Open relay", extra: `
receive_connector "x" {
  bind               = ["127.0.0.1:26"]
  remote_ip_ranges   = ["10.0.0.0/8", "::/0"]
  externally_secured = true
  permissions {
    trusted = ["relay"] # <-
  }
}`},
	{name: "auth without tls", summary: "AUTH without TLS", extra: `
receive_connector "x" {
  bind = ["127.0.0.1:26"]
  auth = ["plain"] # <-
}`},
	{name: "client preset without tls", summary: "require_tls without TLS", extra: `
receive_connector "x" {
  bind                = ["127.0.0.1:26"]
  usage               = "client" # <-
  allow_insecure_auth = true
}`},
	{name: "require_tls without tls", summary: "require_tls without TLS", extra: `
receive_connector "x" {
  bind        = ["127.0.0.1:26"]
  require_tls = true # <-
}`},
	{name: "unknown auth mechanism", summary: "Unknown AUTH mechanism", extra: `
receive_connector "x" {
  bind                = ["127.0.0.1:26"]
  auth                = ["plain", "cram-md5"] # <-
  allow_insecure_auth = true
}`},
	{name: "implicit tls without cert", summary: "Missing TLS certificate", extra: `
receive_connector "x" {
  bind = ["127.0.0.1:26"]
  tls { # <-
    mode = "implicit"
  }
}`},
	{name: "bad tls mode", summary: "Invalid TLS mode", extra: `
receive_connector "x" {
  bind = ["127.0.0.1:26"]
  tls {
    mode        = "always" # <-
    self_signed = true
  }
}`},
	{name: "missing cert file", summary: "Missing cert_file", extra: `
receive_connector "x" {
  bind = ["127.0.0.1:26"]
  tls {
    cert_file = "nope.pem" # <-
    key_file  = "key.pem"
  }
}`},
	{name: "missing recipients file", summary: "Missing recipients_file", extra: `
accepted_domain "relay.example" {
  type            = "internal_relay"
  recipients_file = "missing.txt" # <-
}`},
	{name: "bad domain type", summary: "Invalid accepted domain type", extra: `
accepted_domain "relay.example" {
  type = "relay" # <-
}`},
	{name: "bad domain", summary: "Invalid accepted domain", extra: `
accepted_domain "exa_mple..com" {} # <-`},
	{name: "plaintext password", summary: "Invalid password_hash", extra: `
mailbox "bob@example.com" {
  password_hash = "hunter2" # <-
}`},
	{name: "bad mailbox address", summary: "Invalid mailbox address", extra: `
mailbox "bob@@example.com" {} # <-`},
	{name: "bad extra address", summary: "Invalid mailbox address", extra: `
mailbox "bob@example.com" {
  addresses = ["robert@example.com", "bob example.com"] # <-
}`},
	{name: "address used twice", summary: "Address used twice", extra: `
mailbox "bob@example.com" {
  addresses = ["ALICE@example.com"] # <-
}`},
	{name: "bad alias target", summary: "Invalid alias target", extra: `
alias "team@example.com" {
  to = ["alice@example.com", "x y@example.com"] # <-
}`},
	{name: "alias shadows mailbox", summary: "Alias shadows a mailbox", extra: `
alias "alice@example.com" { # <-
  to = ["bob@example.org"]
}`},
	{name: "bad recipient", summary: "Invalid recipient address", extra: `
accepted_domain "relay.example" {
  type       = "external_relay"
  recipients = ["ok@relay.example", "@relay.example"] # <-
}`},
	{name: "recipient outside domain", summary: "Recipient outside its domain", extra: `
accepted_domain "relay.example" {
  type       = "external_relay"
  recipients = ["ok@other.example"] # <-
}`},
	{name: "bad address space", summary: "Invalid address space", extra: `
send_connector "out" {
  address_spaces = ["exa mple.com"] # <-
  dns_routing    = true
}`},
	{name: "address space cost", summary: "Invalid address space cost", extra: `
send_connector "out" {
  address_spaces = ["example.org;101"] # <-
  dns_routing    = true
}`},
	{name: "bad smart host", summary: "Invalid smart host", extra: `
send_connector "out" {
  address_spaces = ["*"]
  smart_hosts    = ["relay.example.net:99999"] # <-
}`},
	{name: "send connector without route", summary: "Send connector without a route", extra: `
send_connector "out" { # <-
  address_spaces = ["*"]
}`},
	{name: "unknown right", summary: "Unknown right", extra: `
receive_connector "x" {
  bind = ["127.0.0.1:26"]
  permissions {
    authenticated = ["submit", "rely"] # <-
  }
}`},
	{name: "bad usage", summary: "Invalid usage", extra: `
receive_connector "x" {
  bind  = ["127.0.0.1:26"]
  usage = "submission" # <-
}`},
	{name: "zero limit", summary: "Invalid max_recipients", extra: `
receive_connector "x" {
  bind           = ["127.0.0.1:26"]
  max_recipients = 0 # <-
}`},
	{name: "missing spool_dir", summary: "Missing spool_dir", full: `hub { # <-
  hostname = "mx.example.com"
}
receive_connector "default" {
  bind = ["127.0.0.1:2525"]
}
`},
	{name: "missing hub", summary: "Missing hub block", full: `# <-
receive_connector "default" {
  bind = ["127.0.0.1:2525"]
}
`},
	{name: "no enabled receive connector", summary: "No enabled receive connector", full: `# <-
hub {
  hostname  = "mx.example.com"
  spool_dir = "var/spool"
}
receive_connector "default" {
  enabled = false
  bind    = ["127.0.0.1:2525"]
}
`},
}

func TestValidationErrors(t *testing.T) {
	cases := validationCases
	dir := testDir(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.full
			if src == "" {
				src = baseConfig + tc.extra
			}
			want := markedLine(t, src)
			cfg, diags := loadSrc(t, dir, src)
			if cfg != nil {
				t.Fatalf("loaded without error; want %q at line %d", tc.summary, want)
			}
			var got []string
			for _, d := range diags {
				if d.Severity != hcl.DiagError {
					continue
				}
				line := 0
				if d.Subject != nil {
					line = d.Subject.Start.Line
				}
				if d.Summary == tc.summary && line == want {
					if d.Detail == "" && !strings.HasPrefix(d.Summary, "Unsupported") {
						t.Errorf("diagnostic %q has no detail", d.Summary)
					}
					return
				}
				got = append(got, d.Summary+" @"+itoa(line)+": "+d.Detail)
			}
			t.Errorf("want error %q at line %d; got:\n  %s", tc.summary, want, strings.Join(got, "\n  "))
		})
	}
}
