package policy

import (
	"net/netip"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64 // -1: error
	}{
		{"36MB", 36 << 20},
		{"64KB", 64 << 10},
		{"64kb", 64 << 10},
		{"1GB", 1 << 30},
		{"10MiB", 10 << 20},
		{"2 KiB", 2 << 10},
		{"512B", 512},
		{"0B", 0},
		{"1.5MB", 3 << 19},
		{"36", -1},
		{"", -1},
		{"MB", -1},
		{"-5MB", -1},
		{"5XB", -1},
		{"99999999999GB", -1},
	}
	for _, tc := range cases {
		got, err := ParseSize(tc.in)
		if tc.want < 0 {
			if err == nil {
				t.Errorf("ParseSize(%q) = %d, want error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration // -1: error
	}{
		{"10m", 10 * time.Minute},
		{"90s", 90 * time.Second},
		{"1h30m", 90 * time.Minute},
		{"2d", 48 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{"1w", 7 * 24 * time.Hour},
		{"0.5d", 12 * time.Hour},
		{"500ms", 500 * time.Millisecond},
		{"0", 0},
		{"10", -1},
		{"", -1},
		{"-1h", -1},
		{"10 minutes", -1},
		{"1x", -1},
		{"d", -1},
		{"1h30", -1},
		{"999999999w", -1},
	}
	for _, tc := range cases {
		got, err := ParseDuration(tc.in)
		if tc.want < 0 {
			if err == nil {
				t.Errorf("ParseDuration(%q) = %v, want error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseIPRange(t *testing.T) {
	cases := []struct {
		in          string
		first, last string // "" first: error
	}{
		{"10.0.0.0/8", "10.0.0.0", "10.255.255.255"},
		{"10.1.2.3/24", "10.1.2.0", "10.1.2.255"},
		{"192.0.2.7", "192.0.2.7", "192.0.2.7"},
		{"0.0.0.0/0", "0.0.0.0", "255.255.255.255"},
		{"192.0.2.10-192.0.2.20", "192.0.2.10", "192.0.2.20"},
		{"192.0.2.10 - 192.0.2.10", "192.0.2.10", "192.0.2.10"},
		{"2001:db8::/32", "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"},
		{"::ffff:10.0.0.0/104", "10.0.0.0", "10.255.255.255"},
		{"::ffff:192.0.2.1", "192.0.2.1", "192.0.2.1"},
		{"2001:db8::1-2001:db8::ff", "2001:db8::1", "2001:db8::ff"},
		{"10.0.0.0/33", "", ""},
		{"10.0.0.9-10.0.0.1", "", ""},
		{"10.0.0.1-::1", "", ""},
		{"example.com", "", ""},
		{"fe80::1%eth0", "", ""},
		{"", "", ""},
	}
	for _, tc := range cases {
		r, err := ParseIPRange(tc.in)
		if tc.first == "" {
			if err == nil {
				t.Errorf("ParseIPRange(%q) = %v, want error", tc.in, r)
			}
			continue
		}
		if err != nil || r.First.String() != tc.first || r.Last.String() != tc.last {
			t.Errorf("ParseIPRange(%q) = %v-%v, %v; want %s-%s", tc.in, r.First, r.Last, err, tc.first, tc.last)
		}
	}
}

func TestIPRangeContains(t *testing.T) {
	r, _ := ParseIPRange("192.0.2.10-192.0.2.20")
	for addr, want := range map[string]bool{
		"192.0.2.10": true, "192.0.2.20": true, "192.0.2.15": true, "192.0.2.21": false, "192.0.2.9": false,
		"::ffff:192.0.2.12": true, "2001:db8::1": false,
	} {
		if got := r.Contains(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Contains(%s) = %v", addr, got)
		}
	}
	if r.Contains(netip.Addr{}) {
		t.Error("zero Addr contained")
	}
	all6, _ := ParseIPRange("::/0")
	if !all6.Contains(netip.MustParseAddr("::")) || !all6.Contains(netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")) ||
		all6.Contains(netip.MustParseAddr("10.0.0.1")) {
		t.Error("::/0 must hold all of IPv6 and no IPv4")
	}
	small, _ := ParseIPRange("2001:db8::/64")
	if !small.smallerThan(all6) || all6.smallerThan(small) {
		t.Error("smallerThan wrong for IPv6")
	}
}

func TestSplitAddress(t *testing.T) {
	cases := []struct {
		in, local, domain string // "" domain: error
	}{
		{"alice@example.com", "alice", "example.com"},
		{"Alice@EXAMPLE.com", "Alice", "example.com"},
		{"<alice@example.com>", "alice", "example.com"},
		{`"alice"@example.com`, "alice", "example.com"},
		{`"john doe"@example.com`, `"john doe"`, "example.com"},
		{`"a@b"@example.com`, `"a@b"`, "example.com"},
		{`"a\"b"@example.com`, `"a\"b"`, "example.com"},
		{"user%other@example.com", "user%other", "example.com"},
		{"first.last+tag@example.com", "first.last+tag", "example.com"},
		{"@relay.example,@b.example:alice@example.com", "alice", "example.com"},
		{"user@[192.0.2.1]", "user", "[192.0.2.1]"},
		{"user@[IPv6:2001:DB8::1]", "user", "[ipv6:2001:db8::1]"},
		{"user@bücher.example", "user", "xn--bcher-kva.example"},
		{"用户@example.com", "用户", "example.com"},
		{"postmaster", "", ""},
		{"a@b@example.com", "", ""},
		{".alice@example.com", "", ""},
		{"alice.@example.com", "", ""},
		{"al..ice@example.com", "", ""},
		{"alice@example..com", "", ""},
		{"alice@-example.com", "", ""},
		{"alice@example.com.", "", ""},
		{"alice@[300.1.1.1]", "", ""},
		{`"unterminated@example.com`, "", ""},
		{"al ice@example.com", "", ""},
		{"alice@", "", ""},
		{"@example.com", "", ""},
		{"", "", ""},
	}
	for _, tc := range cases {
		local, domain, err := SplitAddress(tc.in)
		if tc.domain == "" {
			if err == nil {
				t.Errorf("SplitAddress(%q) = %q, %q; want error", tc.in, local, domain)
			}
			continue
		}
		if err != nil || local != tc.local || domain != tc.domain {
			t.Errorf("SplitAddress(%q) = %q, %q, %v; want %q, %q", tc.in, local, domain, err, tc.local, tc.domain)
		}
	}
}

func TestDomainMatches(t *testing.T) {
	cases := []struct {
		pattern, domain string
		want            bool
	}{
		{"*", "anything.example", true},
		{"example.com", "example.com", true},
		{"example.com", "sub.example.com", false},
		{"*.example.com", "sub.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "badexample.com", false},
	}
	for _, tc := range cases {
		if got := DomainMatches(tc.pattern, tc.domain); got != tc.want {
			t.Errorf("DomainMatches(%q, %q) = %v", tc.pattern, tc.domain, got)
		}
	}
}

func FuzzLoadBytes(f *testing.F) {
	f.Add([]byte(baseConfig))
	f.Add([]byte(decideConfig))
	f.Add([]byte(`hub { spool_dir = "x" }` + "\nreceive_connector \"a\" { bind = [\"1.2.3.4:0\"]\n remote_ip_ranges = [\"1.2.3.4-1.2.3.9\"] }"))
	f.Add([]byte(`receive_connector "a" { tls { mode = "implicit" } permissions { anonymous = ["relay"] } }`))
	f.Add([]byte("hub {\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, err := LoadBytes("fuzz.hcl", src, dir)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("cfg=%v err=%v: exactly one must be set", cfg != nil, err)
		}
		if cfg != nil {
			cfg.Binds()
			cfg.CheckRecipient(Rights(RightSubmit), "postmaster")
		}
	})
}
