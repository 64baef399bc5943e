package policy

import (
	"slices"
	"strings"
	"testing"
)

func TestDNSServers(t *testing.T) {
	load := func(list string) (*Config, error) {
		return LoadBytes("a.hcl", []byte(`hub {
  spool_dir   = "spool"
  dns_servers = `+list+`
}
receive_connector "in" { bind = ["127.0.0.1:0"] }`), t.TempDir())
	}
	cfg, err := load(`["192.0.2.53", "127.0.0.1:5353", "[2001:db8::53]:53", "2001:db8::54"]`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"192.0.2.53:53", "127.0.0.1:5353", "[2001:db8::53]:53", "[2001:db8::54]:53"}
	if !slices.Equal(cfg.Hub.DNSServers, want) {
		t.Errorf("dns_servers %q, want %q", cfg.Hub.DNSServers, want)
	}
	if cfg, err = load(`[]`); err != nil || len(cfg.Hub.DNSServers) != 0 {
		t.Errorf("empty list: %q, %v", cfg.Hub.DNSServers, err)
	}

	for _, c := range []struct{ list, want string }{
		{`["ns1.example.net"]`, `a.hcl:3,18-35: Invalid DNS server; "ns1.example.net" is not an IP address or ip:port`},
		{`["ns1.example.net:53"]`, `a.hcl:3,18-38: Invalid DNS server; "ns1.example.net" is not an IP address (a name server is given by address, not by name)`},
		{`["127.0.0.1:0"]`, `a.hcl:3,18-31: Invalid DNS server; port "0" is not a number from 1 to 65535`},
		{`["127.0.0.1:99999"]`, `a.hcl:3,18-35: Invalid DNS server; port "99999" is not a number`},
		{`["fe80::1%eth0"]`, `a.hcl:3,18-32: Invalid DNS server; "fe80::1%eth0" has a zone`},
		{`["192.0.2.53", "192.0.2.53:53"]`, `a.hcl:3,32-47: Duplicate DNS server; 192.0.2.53:53 is listed twice`},
		{`"192.0.2.53"`, `a.hcl:3,17-29: Expected a list of strings`},
	} {
		_, err := load(c.list)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("dns_servers = %s: %v\nwant %q", c.list, err, c.want)
		}
	}
}
