package policy

import (
	"net/netip"
	"testing"
)

const decideConfig = `hub {
  hostname  = "mx.example.com"
  spool_dir = "var/spool"
}
accepted_domain "example.com" {}
accepted_domain "*.example.com" { type = "external_relay" }
accepted_domain "sales.example.com" {}
accepted_domain "relay.example" {
  type       = "internal_relay"
  recipients = ["known@relay.example"]
}
accepted_domain "open.example" { type = "external_relay" }
mailbox "alice@example.com" { addresses = ["a.smith@example.com"] }
mailbox "bob@example.com" {}
mailbox "carol@sales.example.com" {}
alias "postmaster@example.com" { to = ["alice@example.com"] }
alias "team@example.com" { to = ["alice@example.com", "bob@example.com"] }
receive_connector "internet" {
  bind = ["0.0.0.0:25", "[::]:25"]
}
receive_connector "office" {
  bind             = ["0.0.0.0:25"]
  remote_ip_ranges = ["192.0.2.0/24"]
  permissions {
    anonymous = ["submit", "relay"]
  }
}
receive_connector "printer" {
  bind             = ["0.0.0.0:25"]
  remote_ip_ranges = ["192.0.2.7"]
}
receive_connector "lab" {
  bind             = ["0.0.0.0:25", "[::]:25"]
  remote_ip_ranges = ["198.51.100.10-198.51.100.20", "2001:db8::/32"]
}
receive_connector "lab-host" {
  bind             = ["[::]:25"]
  remote_ip_ranges = ["2001:db8::1/128"]
}
receive_connector "parked" {
  enabled          = false
  bind             = ["0.0.0.0:25"]
  remote_ip_ranges = ["192.0.2.8"]
}
send_connector "relay" {
  address_spaces = ["relay.example"]
  smart_hosts    = ["[192.0.2.5]"]
}
`

func decideCfg(t *testing.T) *Config {
	t.Helper()
	cfg, diags := loadSrc(t, t.TempDir(), decideConfig)
	if cfg == nil {
		t.Fatalf("load: %v", diags)
	}
	return cfg
}

func TestConnectorFor(t *testing.T) {
	cfg := decideCfg(t)
	cases := []struct {
		bind, peer, want string
	}{
		{"0.0.0.0:25", "203.0.113.9", "internet"},
		{"0.0.0.0:25", "192.0.2.99", "office"},        // /24 beats 0.0.0.0/0
		{"0.0.0.0:25", "192.0.2.7", "printer"},        // /32 beats /24
		{"0.0.0.0:25", "192.0.2.8", "office"},         // the /32 connector is disabled
		{"0.0.0.0:25", "::ffff:192.0.2.7", "printer"}, // 4in6 peers are unmapped
		{"0.0.0.0:25", "198.51.100.15", "lab"},        // a-b range
		{"0.0.0.0:25", "198.51.100.21", "internet"},
		{"[::]:25", "2001:db8::9", "lab"},
		{"[::]:25", "2001:db8::1", "lab-host"},
		{"[::]:25", "2001:db9::1", "internet"},
		{"0.0.0.0:587", "192.0.2.7", ""}, // nothing bound there
	}
	for _, tc := range cases {
		rc := cfg.ConnectorFor(tc.bind, netip.MustParseAddr(tc.peer))
		got := ""
		if rc != nil {
			got = rc.Name
		}
		if got != tc.want {
			t.Errorf("ConnectorFor(%s, %s) = %q, want %q", tc.bind, tc.peer, got, tc.want)
		}
	}
	if got := cfg.Binds(); len(got) != 2 || got[0] != "0.0.0.0:25" || got[1] != "[::]:25" {
		t.Errorf("Binds = %v", got)
	}
}

func TestDomain(t *testing.T) {
	cfg := decideCfg(t)
	cases := map[string]string{
		"example.com":          "example.com",
		"EXAMPLE.COM.":         "example.com",
		"sales.example.com":    "sales.example.com", // exact beats wildcard
		"eu.sales.example.com": "*.example.com",
		"x.example.com":        "*.example.com",
		"example.org":          "",
		"[192.0.2.1]":          "",
	}
	for in, want := range cases {
		got := ""
		if d := cfg.Domain(in); d != nil {
			got = d.Name
		}
		if got != want {
			t.Errorf("Domain(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckRecipient(t *testing.T) {
	cfg := decideCfg(t)
	anon := Rights(RightSubmit)
	relay := Rights(RightSubmit | RightRelay)
	cases := []struct {
		rights Rights
		rcpt   string
		want   string // "" = accepted
	}{
		{anon, "alice@example.com", ""},
		{anon, "ALICE@Example.COM", ""},       // case-insensitive
		{anon, "a.smith@example.com", ""},     // extra address
		{anon, "team@example.com", ""},        // alias
		{anon, "alice+lists@example.com", ""}, // RFC 5233 subaddress
		{anon, "nobody+x@example.com", "550 5.1.1 User unknown"},
		{anon, "nobody@example.com", "550 5.1.1 User unknown"},
		{anon, "carol@sales.example.com", ""},
		{anon, "anyone@x.example.com", ""}, // external_relay, no recipient set
		{anon, "known@relay.example", ""},
		{anon, "unknown@relay.example", "550 5.1.1 User unknown"},
		{anon, "someone@example.org", "550 5.7.1 Unable to relay"},
		{relay, "someone@example.org", ""},
		{anon, "postmaster", ""}, // RFC 5321 §4.5.1
		{anon, "PostMaster", ""},
		{anon, `"alice"@example.com`, ""},                                      // quoted but plain
		{anon, "someone%example.org@example.com", "550 5.7.1 Unable to relay"}, // percent hack
		{anon, "example.org!someone@example.com", "550 5.7.1 Unable to relay"}, // bang path
		{anon, `"someone@example.org"@example.com`, "550 5.7.1 Unable to relay"},
		{anon, "@mx.example.com:alice@example.com", "550 5.7.1 Unable to relay"}, // source route
		{relay, "@mx.example.com:alice@example.com", ""},
		{relay, "someone%example.org@example.com", "550 5.1.1 User unknown"},
		{anon, "user@[192.0.2.1]", "550 5.7.1 Unable to relay"},
		{anon, "not an address", "501 5.1.3 Bad recipient address syntax"},
		{anon, "alice@", "501 5.1.3 Bad recipient address syntax"},
		{0, "alice@example.com", "550 5.7.1 Not authorized to submit"},
		{Rights(RightRelay), "someone@example.org", "550 5.7.1 Not authorized to submit"},
	}
	for _, tc := range cases {
		got := ""
		if r := cfg.CheckRecipient(tc.rights, tc.rcpt); r != nil {
			got = r.Error()
		}
		if got != tc.want {
			t.Errorf("CheckRecipient(%b, %q) = %q, want %q", tc.rights, tc.rcpt, got, tc.want)
		}
	}
}

func TestResolveLocal(t *testing.T) {
	cfg := decideCfg(t)
	cases := map[string]string{
		"Alice+Tag@Example.com":     "alice@example.com",
		"a.smith+x@example.com":     "a.smith@example.com",
		"postmaster":                "postmaster@example.com", // hostname's parent domain
		"team@example.com":          "team@example.com",
		"known@relay.example":       "", // not authoritative
		"nobody@example.com":        "",
		"carol+x@sales.example.com": "carol@sales.example.com",
	}
	for in, want := range cases {
		if got := cfg.ResolveLocal(in); got != want {
			t.Errorf("ResolveLocal(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCheckSender(t *testing.T) {
	cfg := decideCfg(t)
	auth := Rights(RightSubmit | RightRelay)
	cases := []struct {
		rights     Rights
		user, from string
		want       string
	}{
		{auth, "alice@example.com", "alice@example.com", ""},
		{auth, "alice@example.com", "A.Smith@EXAMPLE.com", ""},
		{auth, "alice@example.com", "alice+news@example.com", ""},
		{auth, "alice@example.com", "bob@example.com", "550 5.7.1 Not authorized to send as <bob@example.com>"},
		{auth, "alice@example.com", "team@example.com", "550 5.7.1 Not authorized to send as <team@example.com>"},
		{auth | Rights(RightAnySender), "alice@example.com", "bob@example.com", ""},
		{auth, "ghost@example.com", "ghost@example.com", "550 5.7.1 Not authorized to send as <ghost@example.com>"},
		{auth, "alice@example.com", "", ""}, // null reverse-path
		{Rights(RightSubmit), "", "anyone@example.org", ""},
		{Rights(RightSubmit), "", "bad address", "501 5.1.7 Bad sender address syntax"},
	}
	for _, tc := range cases {
		got := ""
		if r := cfg.CheckSender(tc.rights, tc.user, tc.from); r != nil {
			got = r.Error()
		}
		if got != tc.want {
			t.Errorf("CheckSender(%b, %q, %q) = %q, want %q", tc.rights, tc.user, tc.from, got, tc.want)
		}
	}
}

func TestLookups(t *testing.T) {
	cfg := decideCfg(t)
	if mb := cfg.MailboxFor("BOB@example.com"); mb == nil || mb.Address != "bob@example.com" {
		t.Errorf("MailboxFor = %+v", mb)
	}
	if cfg.MailboxFor("team@example.com") != nil {
		t.Error("alias found as mailbox")
	}
	if a := cfg.AliasFor("Team@Example.com"); a == nil || len(a.To) != 2 {
		t.Errorf("AliasFor = %+v", a)
	}
}

func TestSessionRights(t *testing.T) {
	rc := ReceiveConnector{Permissions: Permissions{
		Anonymous: Rights(RightSubmit), Authenticated: Rights(RightRelay), Trusted: Rights(RightAnySender)}}
	if got := rc.SessionRights(false); got != Rights(RightSubmit) {
		t.Errorf("anonymous = %b", got)
	}
	if got := rc.SessionRights(true); got != Rights(RightSubmit|RightRelay) {
		t.Errorf("authenticated = %b", got)
	}
	rc.ExternallySecured = true
	if got := rc.SessionRights(false); got != Rights(RightSubmit|RightAnySender) {
		t.Errorf("externally secured = %b", got)
	}
}
