package categorizer

import (
	"fmt"
	"strings"
	"testing"
)

func TestTable(t *testing.T) {
	cfg := load(t, `
accepted_domain "example.com" {}
accepted_domain "relay.example.com" { type = "internal_relay" }
accepted_domain "*.ext.example" { type = "external_relay" }
send_connector "internet" {
  address_spaces = ["*;10"]
  dns_routing    = true
}
send_connector "wild" {
  address_spaces = ["*.example.org", "*.sub.example.org"]
  smart_hosts    = ["wild:25"]
}
send_connector "b-twin" {
  address_spaces = ["twin.example;3"]
  smart_hosts    = ["b:25", "b2:25"]
  tls            = "required"
}
send_connector "a-twin" {
  address_spaces = ["twin.example;3"]
  smart_hosts    = ["a:25"]
  max_message_size = "1MB"
}
send_connector "cheap" {
  address_spaces = ["twin.example;1", "alpha.example;7"]
  smart_hosts    = ["c:25"]
  max_message_size = "1KB"
}
send_connector "off" {
  enabled        = false
  address_spaces = ["twin.example"]
  smart_hosts    = ["off:25"]
}
send_connector "z-backup" {
  address_spaces = ["*;5"]
  smart_hosts    = ["backup:25"]
}
`)
	var got []string
	for _, r := range Table(cfg) {
		if r.DomainType != "" {
			got = append(got, fmt.Sprintf("%s %s", r.AddressSpace, r.DomainType))
			continue
		}
		got = append(got, fmt.Sprintf("%s %s cost=%d on=%v hosts=%s dns=%v tls=%s max=%d",
			r.AddressSpace, r.Connector, r.Cost, r.Enabled, strings.Join(r.SmartHosts, ","), r.DNSRouting, r.TLS, r.MaxMessageSize))
	}
	want := []string{
		"example.com authoritative",
		"relay.example.com internal_relay",
		"*.ext.example external_relay",
		"alpha.example cheap cost=7 on=true hosts=c:25 dns=false tls=opportunistic max=1024",
		"twin.example cheap cost=1 on=true hosts=c:25 dns=false tls=opportunistic max=1024",
		"twin.example a-twin cost=3 on=true hosts=a:25 dns=false tls=opportunistic max=1048576",
		"twin.example b-twin cost=3 on=true hosts=b:25,b2:25 dns=false tls=required max=0",
		"twin.example off cost=1 on=false hosts=off:25 dns=false tls=opportunistic max=0",
		"*.sub.example.org wild cost=1 on=true hosts=wild:25 dns=false tls=opportunistic max=0",
		"*.example.org wild cost=1 on=true hosts=wild:25 dns=false tls=opportunistic max=0",
		"* z-backup cost=5 on=true hosts=backup:25 dns=false tls=opportunistic max=0",
		"* internet cost=10 on=true hosts= dns=true tls=opportunistic max=0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("table\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The table's order is Route's: for each domain, the first enabled
	// matching row that admits the size is the connector Route picks.
	for _, c := range []struct {
		domain string
		size   int64
	}{{"twin.example", 10}, {"twin.example", 4096}, {"twin.example", 2 << 20}, {"a.sub.example.org", 10}, {"x.example.org", 10}, {"other.example", 10}} {
		sc, _, ok := Route(cfg, c.domain, c.size)
		first := ""
		for _, r := range Table(cfg) {
			if r.DomainType == "" && r.Enabled && domainMatches(r.AddressSpace, c.domain) &&
				(r.MaxMessageSize == 0 || c.size <= r.MaxMessageSize) {
				first = r.Connector
				break
			}
		}
		if !ok || sc.Name != first {
			t.Errorf("%s (%d bytes): Route picks %q, the table's first row is %q", c.domain, c.size, sc.Name, first)
		}
	}
}

func domainMatches(pattern, domain string) bool {
	switch {
	case pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		return strings.HasSuffix(domain, pattern[1:])
	}
	return pattern == domain
}

func TestExplain(t *testing.T) {
	cfg := loadLists(t)
	cfg = load(t, listDirectory+`
send_connector "small" {
  address_spaces   = ["big.example"]
  smart_hosts      = ["small:25"]
  max_message_size = "1KB"
}
`)
	noRoute := load(t, `
send_connector "partner" {
  address_spaces = ["partner.example"]
  smart_hosts    = ["p:25"]
  max_message_size = "1KB"
}
`)
	tests := []struct {
		name string
		cfg  bool // true: the config without a default route
		addr string
		size int64
		want []string // one substring of Why per outcome
	}{
		{"local", false, "alice@example.com", 10, []string{"mailbox alice@example.com in Maildir "}},
		{"LMTP", false, "carl@example.com", 10, []string{"mailbox carl@example.com via LMTP 127.0.0.1:24"}},
		{"alias", false, "postmaster@example.com", 10,
			[]string{"/mail/alice; expanded from alias postmaster@example.com"}},
		{"list and alias path", false, "viaalias@example.com", 10, []string{
			"; expanded from list viaalias@example.com > alias team@example.com",
			"; expanded from list viaalias@example.com > alias team@example.com",
			`send connector "partner": address space "partner.example", cost 1; expanded from list viaalias@example.com > alias team@example.com`}},
		{"remote", false, "x@elsewhere.example", 10, []string{`send connector "internet": address space "*", cost 1`}},
		{"too large for the specific connector", false, "x@big.example", 4096,
			[]string{`send connector "internet": address space "*", cost 1; too small: "small" (max_message_size 1024 < 4096)`}},
		{"internal relay", false, "q@relay.example.com", 10,
			[]string{"relay.example.com is an internal_relay domain and q@relay.example.com is not local: send connector \"internet\""}},
		{"unknown user", false, "nobody@example.com", 10, []string{"no mailbox, alias or list of that name in authoritative domain example.com"}},
		{"alias loop", false, "pong@example.com", 10, []string{"alias loop: pong@example.com expands back to itself", "mailbox bob@example.com"}},
		{"unreachable", true, "a@nowhere.example", 10, []string{"no enabled send connector has an address space matching nowhere.example"}},
		{"too large", true, "a@partner.example", 4096,
			[]string{`no send connector takes a message this large: dropped "partner" (max_message_size 1024 < 4096)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			if tt.cfg {
				c = noRoute
			}
			out := Explain(c, tt.addr, tt.size)
			if len(out) != len(tt.want) {
				t.Fatalf("Explain(%s) = %s", tt.addr, listSummary(out))
			}
			for i, w := range tt.want {
				if !strings.Contains(out[i].Why, w) {
					t.Errorf("outcome %d (%s): why %q\nwant it to contain %q", i, out[i].Address, out[i].Why, w)
				}
			}
		})
	}
}

func TestParseTrace(t *testing.T) {
	tests := []struct {
		value, list, host string
		ok                bool
	}{
		{"team@example.com; by=mx.example.com", "team@example.com", "mx.example.com", true},
		{"  team@example.com;by=mx.example.com  ", "team@example.com", "mx.example.com", true},
		{"team@example.com;\r\n\tBY = mx.example.com", "team@example.com", "mx.example.com", true},
		{"team@example.com", "team@example.com", "", true},
		{"team@example.com; by=", "team@example.com", "", true},
		{"team@example.com; future=1; by=a.example; by=b.example", "team@example.com", "a.example", true},
		{"team@example.com; by=mangled host", "team@example.com", "", true},
		{"team@example.com; junk", "team@example.com", "", true},
		{"", "", "", false},
		{"; by=mx.example.com", "", "", false},
		{"not an address; by=mx", "", "", false},
		{"team; by=mx", "", "", false},
		{"team@exa mple.com", "", "", false},
	}
	for _, tt := range tests {
		list, host, ok := ParseTrace(tt.value)
		if list != tt.list || host != tt.host || ok != tt.ok {
			t.Errorf("ParseTrace(%q) = %q, %q, %v; want %q, %q, %v", tt.value, list, host, ok, tt.list, tt.host, tt.ok)
		}
	}
	for _, c := range [][2]string{{"team@example.com", "mx.example.com"}, {"l@example.com", ""}, {"Üser@bücher.example", "hub"}} {
		v := TraceValue(c[0], c[1])
		if list, host, ok := ParseTrace(v); !ok || list != c[0] || host != c[1] {
			t.Errorf("round trip %q: %q, %q, %v", v, list, host, ok)
		}
	}
	if got := TraceValue("team@example.com", "mx.example.com"); got != "team@example.com; by=mx.example.com" {
		t.Errorf("TraceValue = %q", got)
	}
}

// FuzzParseTrace checks that ParseTrace never panics, that what it accepts
// is free of header-breaking characters, and that TraceValue writes back
// exactly what it read.
func FuzzParseTrace(f *testing.F) {
	for _, s := range []string{"team@example.com; by=mx.example.com", "team@example.com", "x@y;by=", "; by=h", "a@b; BY=h; by=i"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		list, host, ok := ParseTrace(value)
		if !ok {
			if list != "" || host != "" {
				t.Fatalf("ParseTrace(%q) failed but returned %q, %q", value, list, host)
			}
			return
		}
		if strings.ContainsAny(list+host, " \t\r\n;") || list == "" {
			t.Fatalf("ParseTrace(%q) accepted %q, %q", value, list, host)
		}
		l2, h2, ok2 := ParseTrace(TraceValue(list, host))
		if !ok2 || l2 != list || h2 != host {
			t.Fatalf("round trip of %q: %q, %q -> %q, %q, %v", value, list, host, l2, h2, ok2)
		}
	})
}
