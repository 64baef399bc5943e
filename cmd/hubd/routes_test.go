package main

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"

	"hubd/internal/dnstest"
)

const routesConfig = `
hub {
  hostname  = "hub.example.test"
  spool_dir = "spool"
}
accepted_domain "example.test" {}
accepted_domain "branch.example.test" { type = "internal_relay" }
mailbox "alice@example.test" { maildir = "mail/alice" }
alias "postmaster@example.test" { to = ["alice@example.test"] }
distribution_list "team@example.test" {
  members = ["alice@example.test", "carol@partner.example"]
  owner   = "alice@example.test"
}
receive_connector "in" { bind = ["127.0.0.1:2525"] }
send_connector "internet" {
  address_spaces = ["*"]
  dns_routing    = true
}
send_connector "partner" {
  address_spaces   = ["partner.example;5"]
  smart_hosts      = ["[192.0.2.5]:25"]
  tls              = "required"
  max_message_size = "10MB"
}
send_connector "branch" {
  address_spaces = ["branch.example.test"]
  smart_hosts    = ["branch-mx.example.test"]
}
`

// TestRoutes: `hubd routes` prints every address space with its connector,
// cost and next hop in the order they are chosen, and for each address the
// connector, next hop and reason — including MX hosts, a size that skips a
// connector, list expansion and an unknown user.
func TestRoutes(t *testing.T) {
	cfg := writeConfig(t, t.TempDir(), routesConfig)
	out, code := runHubd(t, "routes", "-config", cfg, "-resolve=false", "postmaster@example.test", "team@example.test",
		"x@partner.example", "nobody@example.test", "y@branch.example.test")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, want := range []string{
		"example.test         authoritative",
		"branch.example.test  internal_relay",
		"branch.example.test  branch     1     smart hosts branch-mx.example.test:25",
		"partner.example      partner    5     smart hosts [192.0.2.5]:25             required       10MB",
		"*                    internet   1     MX of the recipient domain",
		"alice@example.test (from postmaster@example.test) → maildir",
		"expanded from alias postmaster@example.test",
		"carol@partner.example (from team@example.test) → smtp:partner",
		"envelope sender alice@example.test",
		"nobody@example.test → fail: 550 5.1.1 User unknown",
		"y@branch.example.test → smtp:branch",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// A message over partner's limit falls through to the internet connector.
	out, _ = runHubd(t, "routes", "-config", cfg, "-resolve=false", "-size", "20MB", "x@partner.example")
	if !strings.Contains(out, "x@partner.example → smtp:internet[mx:partner.example]") || !strings.Contains(out, "too small") {
		t.Errorf("size not honoured:\n%s", out)
	}
}

// TestRoutesResolvesMX: with -resolve, the MX hosts of a DNS-routed domain
// are listed in the order they would be tried, and DNS errors are named.
func TestRoutesResolvesMX(t *testing.T) {
	dns := dnstest.Start(t)
	dns.SetMX("remote.example", &net.MX{Host: "mx2.remote.example.", Pref: 20}, &net.MX{Host: "mx1.remote.example.", Pref: 10})
	dns.SetHosts("mx1.remote.example", "192.0.2.1")
	dns.SetHosts("mx2.remote.example", "192.0.2.2")
	dns.SetMX("nullmx.example", &net.MX{Host: ".", Pref: 0})
	// Asked through hub.dns_servers, as the running hub asks.
	src := strings.Replace(routesConfig, `spool_dir = "spool"`, fmt.Sprintf(`spool_dir = "spool"
  dns_servers = [%q]`, dns.Addr), 1)
	cfg := writeConfig(t, t.TempDir(), src)
	var stdout, stderr bytes.Buffer
	if code := cmdRoutes([]string{"-config", cfg, "a@remote.example", "b@nullmx.example", "c@nxdomain.example"},
		&stdout, &stderr, nil); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	i1, i2 := strings.Index(out, "MX 10 mx1.remote.example: 192.0.2.1"), strings.Index(out, "MX 20 mx2.remote.example: 192.0.2.2")
	if i1 < 0 || i2 < i1 {
		t.Errorf("MX hosts missing or out of order:\n%s", out)
	}
	for _, want := range []string{"5.1.10", "5.1.2"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
