package categorizer

import (
	"fmt"
	"strings"
	"testing"

	"hubd/hub/delivery"
	"hubd/policy"
)

// load builds a Config from HCL, the way hubd does.
func load(t *testing.T, src string) *policy.Config {
	t.Helper()
	dir := t.TempDir()
	src = fmt.Sprintf("hub {\n hostname = \"hub.example.com\"\n spool_dir = %q\n max_alias_depth = 3\n}\n", dir+"/spool") +
		"receive_connector \"in\" {\n bind = [\"127.0.0.1:2525\"]\n}\n" + src
	cfg, err := policy.LoadBytes("test.hcl", []byte(src), dir)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

const directory = `
accepted_domain "example.com" { type = "authoritative" }
accepted_domain "relay.example.com" { type = "internal_relay" }
mailbox "alice@example.com" {
  maildir   = "mail/alice"
  addresses = ["a.smith@example.com"]
}
mailbox "bob@example.com" { maildir = "mail/bob" }
alias "postmaster@example.com" { to = ["alice@example.com"] }
alias "abuse@example.com"      { to = ["alice@example.com"] }
alias "team@example.com"       { to = ["alice@example.com", "bob@example.com", "carol@partner.example"] }
alias "all@example.com"        { to = ["team@example.com", "bob@example.com"] }
alias "l1@example.com"         { to = ["l2@example.com"] }
alias "l2@example.com"         { to = ["l3@example.com"] }
alias "l3@example.com"         { to = ["l4@example.com"] }
alias "l4@example.com"         { to = ["bob@example.com"] }
alias "ping@example.com"       { to = ["pong@example.com", "bob@example.com"] }
alias "pong@example.com"       { to = ["ping@example.com"] }
alias "ghost@example.com"      { to = ["nobody@example.com"] }
alias "ops@relay.example.com"  { to = ["bob@example.com"] }

send_connector "internet" {
  address_spaces = ["*"]
  dns_routing    = true
}
send_connector "partner" {
  address_spaces = ["partner.example"]
  smart_hosts    = ["[192.0.2.5]:25", "backup.partner.example:2525"]
  tls            = "required"
  fqdn           = "out.example.com"
}
`

// summary renders outcomes compactly: address>where, in order.
func summary(out []Outcome) string {
	var parts []string
	for _, o := range out {
		s := fmt.Sprintf("%d:%s", o.Input, o.Address)
		switch o.Disposition {
		case Deliver:
			s += ">" + o.NextHop.String()
		default:
			s += ">" + o.Disposition.String() + " " + o.Reply.Enhanced
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func inputs(addrs ...string) []Input {
	var in []Input
	for _, a := range addrs {
		in = append(in, Input{Address: a})
	}
	return in
}

func TestCategorize(t *testing.T) {
	cfg := load(t, directory)
	tests := []struct {
		name  string
		rcpts []string
		want  string
	}{
		{"mailbox", []string{"alice@example.com"}, "0:alice@example.com>maildir"},
		{"case-insensitive local", []string{"Alice@Example.COM"}, "0:alice@example.com>maildir"},
		{"extra address of a mailbox", []string{"a.smith@example.com"}, "0:alice@example.com>maildir"},
		{"subaddress", []string{"bob+lists@example.com"}, "0:bob@example.com>maildir"},
		{"unknown user", []string{"nobody@example.com"}, "0:nobody@example.com>fail 5.1.1"},
		{"alias", []string{"postmaster@example.com"}, "0:alice@example.com>maildir"},
		{"bare postmaster", []string{"postmaster"}, "0:alice@example.com>maildir"},
		{"two aliases to one mailbox: one delivery",
			[]string{"postmaster@example.com", "abuse@example.com"}, "0:alice@example.com>maildir"},
		{"alias and the mailbox itself", []string{"alice@example.com", "postmaster@example.com"},
			"0:alice@example.com>maildir"},
		{"nested alias, remote target, de-dup",
			[]string{"all@example.com"},
			"0:alice@example.com>maildir 0:bob@example.com>maildir 0:carol@partner.example>smtp:partner[[192.0.2.5]:25,backup.partner.example:2525]"},
		{"depth limit", []string{"l1@example.com"}, "0:l4@example.com>fail 5.4.6"},
		{"within depth", []string{"l2@example.com"}, "0:bob@example.com>maildir"},
		{"loop fails its branch only", []string{"ping@example.com"},
			"0:ping@example.com>fail 5.4.6 0:bob@example.com>maildir"},
		{"alias to unknown user", []string{"ghost@example.com"}, "0:nobody@example.com>fail 5.1.1"},
		{"remote keeps local case", []string{"Carol@Partner.Example"},
			"0:Carol@partner.example>smtp:partner[[192.0.2.5]:25,backup.partner.example:2525]"},
		{"remote via MX", []string{"dave@elsewhere.example"}, "0:dave@elsewhere.example>smtp:internet[mx:elsewhere.example]"},
		{"internal relay alias", []string{"ops@relay.example.com"}, "0:bob@example.com>maildir"},
		{"internal relay other address is routed", []string{"x@relay.example.com"},
			"0:x@relay.example.com>smtp:internet[mx:relay.example.com]"},
		{"bad syntax", []string{"not an address"}, "0:not an address>fail 5.1.3"},
		{"remote duplicates", []string{"z@elsewhere.example", "z@ELSEWHERE.example"},
			"0:z@elsewhere.example>smtp:internet[mx:elsewhere.example]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summary(Categorize(cfg, 1000, inputs(tt.rcpts...))); got != tt.want {
				t.Errorf("Categorize(%v)\n got %s\nwant %s", tt.rcpts, got, tt.want)
			}
		})
	}
}

func TestOutcomeDetails(t *testing.T) {
	cfg := load(t, directory)
	out := Categorize(cfg, 10, inputs("team@example.com"))
	if len(out) != 3 {
		t.Fatalf("got %s", summary(out))
	}
	if out[0].ResolvedFrom != "team@example.com" || !strings.HasSuffix(out[0].Maildir, "mail/alice") {
		t.Errorf("alice outcome %+v", out[0])
	}
	hop := out[2].NextHop
	want := delivery.NextHop{Kind: delivery.KindSMTP, Connector: "partner",
		SmartHosts: "[192.0.2.5]:25,backup.partner.example:2525", TLS: policy.SendTLSRequired, FQDN: "out.example.com"}
	if hop != want {
		t.Errorf("hop %+v, want %+v", hop, want)
	}
	mx := Categorize(cfg, 10, inputs("x@elsewhere.example"))[0].NextHop
	if mx.Domain != "elsewhere.example" || mx.SmartHosts != "" || mx.FQDN != "hub.example.com" {
		t.Errorf("MX hop %+v", mx)
	}
	direct := Categorize(cfg, 10, inputs("alice@example.com"))[0]
	if direct.ResolvedFrom != "" {
		t.Errorf("direct delivery has ResolvedFrom %q", direct.ResolvedFrom)
	}
}

// A final address categorizes to itself, so the transport can route
// persisted recipients again on each attempt.
func TestFinalAddressesAreFixedPoints(t *testing.T) {
	cfg := load(t, directory)
	for _, o := range Categorize(cfg, 10, inputs("all@example.com")) {
		again := Categorize(cfg, 10, inputs(o.Address))
		if len(again) != 1 || again[0].Address != o.Address || again[0].NextHop != o.NextHop || again[0].ResolvedFrom != "" {
			t.Errorf("%s categorizes to %s", o.Address, summary(again))
		}
	}
}

func TestRoute(t *testing.T) {
	cfg := load(t, `
send_connector "any" {
  address_spaces = ["*"]
  smart_hosts = ["any:25"]
}
send_connector "wild" {
  address_spaces = ["*.example.org"]
  smart_hosts = ["wild:25"]
}
send_connector "wilder" {
  address_spaces = ["*.sub.example.org"]
  smart_hosts = ["wilder:25"]
}
send_connector "exact" {
  address_spaces = ["a.sub.example.org"]
  smart_hosts = ["exact:25"]
}
send_connector "z-cheap" {
  address_spaces = ["cost.example;1"]
  smart_hosts = ["cheap:25"]
}
send_connector "a-dear" {
  address_spaces = ["cost.example;5"]
  smart_hosts = ["dear:25"]
}
send_connector "b-twin" {
  address_spaces = ["twin.example"]
  smart_hosts = ["b:25"]
}
send_connector "a-twin" {
  address_spaces = ["twin.example"]
  smart_hosts = ["a:25"]
}
send_connector "small"    {
  address_spaces   = ["big.example"]
  smart_hosts      = ["small:25"]
  max_message_size = "1KB"
}
send_connector "off" {
  enabled        = false
  address_spaces = ["off.example"]
  smart_hosts    = ["off:25"]
}
send_connector "onlysmall" {
  address_spaces   = ["tiny.example"]
  smart_hosts      = ["tiny:25"]
  max_message_size = "1KB"
}
`)
	tests := []struct {
		domain string
		size   int64
		want   string // connector name, or "" for no route
	}{
		{"a.sub.example.org", 10, "exact"},
		{"b.sub.example.org", 10, "wilder"},
		{"x.y.example.org", 10, "wild"},
		{"example.org", 10, "any"}, // "*.example.org" does not cover the parent
		{"cost.example", 10, "z-cheap"},
		{"twin.example", 10, "a-twin"},
		{"big.example", 10, "small"},
		{"big.example", 4096, "any"}, // too large for "small": next best
		{"off.example", 10, "any"},
		{"Exact.Example", 10, "any"},
	}
	for _, tt := range tests {
		sc, why, ok := Route(cfg, tt.domain, tt.size)
		if !ok || sc.Name != tt.want {
			t.Errorf("Route(%s, %d) = %q, %v (%s); want %q", tt.domain, tt.size, sc.Name, ok, why, tt.want)
		}
	}
}

func TestNoRouteIsUnreachableAndKept(t *testing.T) {
	cfg := load(t, `
send_connector "partner" {
  address_spaces   = ["partner.example"]
  smart_hosts      = ["p:25"]
  max_message_size = "1KB"
}
`)
	out := Categorize(cfg, 10, inputs("a@nowhere.example"))
	if len(out) != 1 || out[0].Disposition != Unreachable || out[0].Reply.Code != 451 || out[0].Reply.Enhanced != "4.4.4" {
		t.Fatalf("got %+v", out)
	}
	if _, why, ok := Route(cfg, "partner.example", 4096); ok || !strings.Contains(why, "large") {
		t.Fatalf("oversize route: ok=%v why=%q", ok, why)
	}
	if len(Bifurcate(out)) != 0 {
		t.Fatal("an unreachable recipient became a work item")
	}
}

func TestBifurcate(t *testing.T) {
	cfg := load(t, directory)
	out := Categorize(cfg, 10, inputs(
		"alice@example.com", "x@a.example", "carol@partner.example", "bob@example.com",
		"y@a.example", "z@b.example", "nobody@example.com", "dan@partner.example"))
	items := Bifurcate(out)
	var got []string
	for _, it := range items {
		var addrs []string
		for _, i := range it.Outcomes {
			addrs = append(addrs, out[i].Address)
		}
		got = append(got, it.NextHop.String()+"="+strings.Join(addrs, ","))
	}
	want := []string{
		"maildir=alice@example.com,bob@example.com",
		"smtp:internet[mx:a.example]=x@a.example,y@a.example",
		"smtp:partner[[192.0.2.5]:25,backup.partner.example:2525]=carol@partner.example,dan@partner.example",
		"smtp:internet[mx:b.example]=z@b.example",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("work items\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
