package schema_test

import (
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/schema"
)

func TestParseDuration(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string // substring; "" means no error
	}{
		{in: "90d", want: 90 * day},
		{in: "12h", want: 12 * time.Hour},
		{in: "30m", want: 30 * time.Minute},
		{in: "45s", want: 45 * time.Second},
		{in: "2w", want: 14 * day},
		{in: "1w2d", want: 9 * day},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "1h30m15s", want: time.Hour + 30*time.Minute + 15*time.Second},
		{in: "12h1d", want: 36 * time.Hour}, // any order, summed
		{in: "0s", want: 0},
		{in: "007m", want: 7 * time.Minute},
		// The largest whole number of seconds a time.Duration holds.
		{in: "9223372036s", want: 9223372036 * time.Second},

		{in: "", wantErr: "empty duration"},
		{in: "90", wantErr: "want a number then one of w, d, h, m, s"},
		{in: "d", wantErr: "want a number then one of w, d, h, m, s"},
		{in: "1d2", wantErr: "want a number then one of w, d, h, m, s"},
		{in: "-1d", wantErr: "want a number"},
		{in: "1.5h", wantErr: "unknown unit"},
		{in: " 1h", wantErr: "want a number"},
		{in: "90x", wantErr: "unknown unit"},
		{in: "1H", wantErr: "unknown unit"},
		{in: "1h ", wantErr: "want a number"},
		{in: "9223372036854775808s", wantErr: "out of range"}, // does not fit int64
		// Products and sums past time.Duration's range are errors, not
		// durations that wrapped around (a negative maxBuildAge would
		// make every node look overdue).
		{in: "9223372037s", wantErr: "too long"},
		{in: "99999999999w", wantErr: "too long"},
		{in: "9223372036s1s", wantErr: "too long"},
		{in: "15250w1w", wantErr: "too long"},
	}
	for _, tt := range tests {
		got, err := schema.ParseDuration(tt.in)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("ParseDuration(%q): unexpected error %v", tt.in, err)
		case tt.wantErr == "" && got != tt.want:
			t.Errorf("ParseDuration(%q) = %v, want %v", tt.in, got, tt.want)
		case tt.wantErr != "" && err == nil:
			t.Errorf("ParseDuration(%q) = %v, want an error containing %q", tt.in, got, tt.wantErr)
		case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
			t.Errorf("ParseDuration(%q): error %q does not contain %q", tt.in, err, tt.wantErr)
		}
		if err == nil && got < 0 {
			t.Errorf("ParseDuration(%q) = %v: negative", tt.in, got)
		}
	}
}

func TestParseIntOrPercent(t *testing.T) {
	tests := []struct {
		in      string
		want    schema.IntOrPercent
		wantErr bool
	}{
		{in: "0", want: schema.IntOrPercent{Value: 0}},
		{in: "3", want: schema.IntOrPercent{Value: 3}},
		{in: "1000", want: schema.IntOrPercent{Value: 1000}}, // a count has no upper bound
		{in: "0%", want: schema.IntOrPercent{Value: 0, Percent: true}},
		{in: "25%", want: schema.IntOrPercent{Value: 25, Percent: true}},
		{in: "100%", want: schema.IntOrPercent{Value: 100, Percent: true}},

		{in: "101%", wantErr: true},
		{in: "250%", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "-5%", wantErr: true},
		{in: "%", wantErr: true},
		{in: "", wantErr: true},
		{in: "abc", wantErr: true},
		{in: "2.5", wantErr: true},
		{in: "25 %", wantErr: true},
		{in: "25%%", wantErr: true},
	}
	for _, tt := range tests {
		got, err := schema.ParseIntOrPercent(tt.in)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseIntOrPercent(%q) = %+v, want an error", tt.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseIntOrPercent(%q): unexpected error %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseIntOrPercent(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if s := got.String(); s != tt.in {
			t.Errorf("ParseIntOrPercent(%q).String() = %q, want the input back", tt.in, s)
		}
	}
}

func TestIntOrPercentOf(t *testing.T) {
	count := func(n int) schema.IntOrPercent { return schema.IntOrPercent{Value: n} }
	pct := func(n int) schema.IntOrPercent { return schema.IntOrPercent{Value: n, Percent: true} }
	tests := []struct {
		p     schema.IntOrPercent
		total int
		want  int
	}{
		{count(3), 10, 3},
		{count(3), 2, 3}, // a count is not capped by the population
		{count(0), 10, 0},
		{pct(25), 100, 25},
		{pct(25), 10, 2}, // 2.5 rounds down
		{pct(25), 3, 1},  // 0.75: never below one, so a rollout makes progress
		{pct(1), 99, 1},  // 0.99
		{pct(50), 1, 1},
		{pct(25), 0, 0}, // no population, nothing to take down
		{pct(0), 100, 0},
		{pct(100), 7, 7},
		{pct(33), 1000, 330},
	}
	for _, tt := range tests {
		if got := tt.p.Of(tt.total); got != tt.want {
			t.Errorf("%s.Of(%d) = %d, want %d", tt.p, tt.total, got, tt.want)
		}
	}
}

func TestHostAddress4(t *testing.T) {
	tests := []struct {
		prefix  string
		index   int
		want    string // "" means an error
		wantErr string
	}{
		{prefix: "10.10.0.0/24", index: 1, want: "10.10.0.1"},
		{prefix: "10.10.0.0/24", index: 11, want: "10.10.0.11"},
		{prefix: "10.10.0.0/24", index: 254, want: "10.10.0.254"},
		{prefix: "10.10.0.0/24", index: 0, wantErr: "hosts 1 to 254"},   // the network address
		{prefix: "10.10.0.0/24", index: 255, wantErr: "hosts 1 to 254"}, // the broadcast address
		{prefix: "10.10.0.0/24", index: 256, wantErr: "hosts 1 to 254"}, // the next network
		{prefix: "10.10.0.0/24", index: 300, wantErr: "does not fit"},   // the corpus' host-index-out-of-range
		{prefix: "10.10.0.0/24", index: -1, wantErr: "does not fit"},
		{prefix: "10.10.0.0/24", index: math.MaxInt, wantErr: "does not fit"},
		{prefix: "192.0.2.0/30", index: 1, want: "192.0.2.1"},
		{prefix: "192.0.2.0/30", index: 2, want: "192.0.2.2"},
		{prefix: "192.0.2.0/30", index: 0, wantErr: "hosts 1 to 2"},
		{prefix: "192.0.2.0/30", index: 3, wantErr: "hosts 1 to 2"}, // broadcast
		{prefix: "192.0.2.4/30", index: 2, want: "192.0.2.6"},
		{prefix: "10.10.0.0/16", index: 256, want: "10.10.1.0"}, // .0 is a host inside a /16
		{prefix: "10.10.0.0/16", index: 65534, want: "10.10.255.254"},
		{prefix: "10.10.0.0/16", index: 65535, wantErr: "hosts 1 to 65534"},
		{prefix: "10.0.0.0/8", index: 16777214, want: "10.255.255.254"},
		{prefix: "203.0.113.128/25", index: 126, want: "203.0.113.254"},
		{prefix: "203.0.113.128/25", index: 127, wantErr: "hosts 1 to 126"},
	}
	for _, tt := range tests {
		p := netip.MustParsePrefix(tt.prefix)
		got, err := schema.HostAddress4(p, tt.index)
		if tt.want == "" {
			if err == nil {
				t.Errorf("HostAddress4(%s, %d) = %s, want an error", p, tt.index, got)
			} else if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("HostAddress4(%s, %d): error %q does not contain %q", p, tt.index, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("HostAddress4(%s, %d): unexpected error %v", p, tt.index, err)
			continue
		}
		if got != netip.MustParseAddr(tt.want) {
			t.Errorf("HostAddress4(%s, %d) = %s, want %s", p, tt.index, got, tt.want)
		}
		if !p.Contains(got) {
			t.Errorf("HostAddress4(%s, %d) = %s is outside the prefix", p, tt.index, got)
		}
	}
}

func TestHostAddress6(t *testing.T) {
	tests := []struct {
		prefix string
		index  int
		want   string // "" means an error
	}{
		{"fd00:a:0:100::/64", 1, "fd00:a:0:100::1"},
		{"fd00:a:0:100::/64", 11, "fd00:a:0:100::b"},
		{"fd00:a:0:100::/64", 0, ""}, // the subnet-router anycast address
		{"fd00:a:0:100::/64", -1, ""},
		{"fd00:a:0:100::/64", 65535, "fd00:a:0:100::ffff"},
		{"fd00:a:0:100::/64", 1 << 32, "fd00:a:0:100::1:0:0"},
		{"fd00:a:0:100::/64", math.MaxInt, "fd00:a:0:100:7fff:ffff:ffff:ffff"},
		{"2001:db8::/120", 1, "2001:db8::1"},
		{"2001:db8::/120", 255, "2001:db8::ff"}, // IPv6 has no broadcast address
		{"2001:db8::/120", 256, ""},
		{"2001:db8::/120", 0, ""},
		{"2001:db8::100/120", 16, "2001:db8::110"},
		{"2001:db8::/126", 3, "2001:db8::3"},
		{"2001:db8::/126", 4, ""},
		{"2001:db8:0:100::/56", 1, "2001:db8:0:100::1"},
	}
	for _, tt := range tests {
		p := netip.MustParsePrefix(tt.prefix)
		got, err := schema.HostAddress6(p, tt.index)
		if tt.want == "" {
			if err == nil {
				t.Errorf("HostAddress6(%s, %d) = %s, want an error", p, tt.index, got)
			} else if !strings.Contains(err.Error(), "does not fit") {
				t.Errorf("HostAddress6(%s, %d): error %q does not say it does not fit", p, tt.index, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("HostAddress6(%s, %d): unexpected error %v", p, tt.index, err)
			continue
		}
		if got != netip.MustParseAddr(tt.want) {
			t.Errorf("HostAddress6(%s, %d) = %s, want %s", p, tt.index, got, tt.want)
		}
		if !p.Contains(got) {
			t.Errorf("HostAddress6(%s, %d) = %s is outside the prefix", p, tt.index, got)
		}
	}
}

func TestReverseName(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"10.10.1.11", "11.1.10.10.in-addr.arpa"},
		{"203.0.113.25", "25.113.0.203.in-addr.arpa"},
		{"192.0.2.1", "1.2.0.192.in-addr.arpa"},
		{"0.0.0.0", "0.0.0.0.in-addr.arpa"},
		{"255.255.255.255", "255.255.255.255.in-addr.arpa"},
		// RFC 3596 section 2.5's example.
		{"4321:0:1:2:3:4:567:89ab", "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa"},
		{"2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"},
		// The example site's bmc network: its name ends in the declared
		// zone 0.0.0.0.a.0.0.0.0.0.d.f.ip6.arpa (fd00:a::/48).
		{"fd00:a:0:100::b", "b.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.a.0.0.0.0.0.d.f.ip6.arpa"},
		{"::", "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa"},
		{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "e.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.f.ip6.arpa"},
	}
	for _, tt := range tests {
		if got := schema.ReverseName(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("ReverseName(%s) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

func TestZonesFind(t *testing.T) {
	site := schema.Zones{
		"example.net":                      true,
		"east.example.net":                 true,
		"10.10.in-addr.arpa":               true,
		"0.0.0.0.a.0.0.0.0.0.d.f.ip6.arpa": true,
	}
	tests := []struct {
		zones schema.Zones
		name  string
		want  string
	}{
		{site, "e1n01.east.example.net", "east.example.net"}, // the longest match
		{site, "e1n01.bmc.east.example.net", "east.example.net"},
		{site, "east.example.net", "east.example.net"}, // the apex
		{site, "api.example.net", "example.net"},
		{site, "e1n01.west.example.net", "example.net"}, // west is not a zone here
		{site, "example.net", "example.net"},
		{site, "example.net.", "example.net"},                 // absolute
		{site, "E1N01.East.Example.NET.", "east.example.net"}, // case-insensitive
		{site, "*.apps.east.example.net", "east.example.net"}, // wildcards
		{site, "_ldap._tcp.example.net", "example.net"},       // service labels
		{site, "example.org", ""},
		{site, "net", ""},
		{site, "", ""},
		{site, "11.1.10.10.in-addr.arpa", "10.10.in-addr.arpa"},
		{site, "11.1.10.100.in-addr.arpa", ""},
		{site, schema.ReverseName(netip.MustParseAddr("fd00:a:0:100::b")), "0.0.0.0.a.0.0.0.0.0.d.f.ip6.arpa"},
		// Label-wise, never a plain suffix match.
		{schema.Zones{"ample.net": true}, "example.net", ""},
		{schema.Zones{"ample.net": true}, "www.example.net", ""},
		{schema.Zones{"ample.net": true}, "www.ample.net", "ample.net"},
		{schema.Zones{"ample.net": true, "example.net": true}, "example.net", "example.net"},
		{schema.Zones{"example.net": true}, "notexample.net", ""},
		{schema.Zones{"0.10.in-addr.arpa": true}, "1.10.10.in-addr.arpa", ""},
		{schema.Zones{"0.10.in-addr.arpa": true}, "1.0.10.in-addr.arpa", "0.10.in-addr.arpa"},
		{nil, "example.net", ""},
	}
	for _, tt := range tests {
		if got := tt.zones.Find(tt.name); got != tt.want {
			t.Errorf("Zones%v.Find(%q) = %q, want %q", keys(tt.zones), tt.name, got, tt.want)
		}
	}
}

func keys(z schema.Zones) []string {
	var out []string
	for k := range z {
		out = append(out, k)
	}
	return out
}

func TestExpandPattern(t *testing.T) {
	tests := []struct {
		pattern, node, network, region, rack, domain string
		want                                         string
	}{
		{"{node}.{region}.{domain}", "e1n01", "internal", "east", "e1", "example.net", "e1n01.east.example.net"},
		{"{node}.bmc.{region}.{domain}", "e1n01", "bmc", "east", "e1", "example.net", "e1n01.bmc.east.example.net"},
		{"{node}-{network}.{rack}.{domain}", "e1n01", "internal", "east", "e1", "example.net", "e1n01-internal.e1.example.net"},
		{"{node}.{node}.{domain}", "w1n04", "public", "west", "w1", "example.net", "w1n04.w1n04.example.net"},
		{"{node}.{region}.{domain}", "e1n01", "internal", "east", "e1", "Example.NET.", "e1n01.east.example.net"},
		{"{node}.{domain}.", "e1n01", "internal", "east", "e1", "example.net", "e1n01.example.net"},
		{"{node}.EAST.{domain}", "e1n01", "internal", "east", "e1", "example.net", "e1n01.east.example.net"},
		{"{node}.lab", "e1n01", "internal", "east", "e1", "example.net", "e1n01.lab"},
		// An unknown placeholder is left for the pattern check to report.
		{"{host}.{domain}", "e1n01", "internal", "east", "e1", "example.net", "{host}.example.net"},
	}
	for _, tt := range tests {
		got := schema.ExpandPattern(tt.pattern, tt.node, tt.network, tt.region, tt.rack, tt.domain)
		if got != tt.want {
			t.Errorf("ExpandPattern(%q, %q, %q, %q, %q, %q) = %q, want %q", tt.pattern, tt.node, tt.network, tt.region, tt.rack, tt.domain, got, tt.want)
		}
	}
}

func TestAliasFQDN(t *testing.T) {
	tests := []struct{ alias, region, domain, want string }{
		{"db1", "east", "example.net", "db1.east.example.net"},
		{"ldap", "east", "example.net", "ldap.east.example.net"},
		{"backup", "west", "example.net", "backup.west.example.net"},
		{"ldap.svc", "west", "example.net", "ldap.svc.west.example.net"}, // relative, several labels
		{"db1.example.net.", "east", "example.net", "db1.example.net"},   // absolute
		{"Mail.Example.Org.", "east", "example.net", "mail.example.org"},
		{"DB1", "east", "Example.Net.", "db1.east.example.net"},
	}
	for _, tt := range tests {
		if got := schema.AliasFQDN(tt.alias, tt.region, tt.domain); got != tt.want {
			t.Errorf("AliasFQDN(%q, %q, %q) = %q, want %q", tt.alias, tt.region, tt.domain, got, tt.want)
		}
	}
}

func TestCanonicalName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"example.net", "example.net"},
		{"example.net.", "example.net"},
		{"Example.NET.", "example.net"},
		{"*.Apps.Example.Net", "*.apps.example.net"},
		{"_LDAP._tcp.example.net", "_ldap._tcp.example.net"},
		{"10.10.IN-ADDR.ARPA.", "10.10.in-addr.arpa"},
		{".", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := schema.CanonicalName(tt.in); got != tt.want {
			t.Errorf("CanonicalName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestZoneIndex: the index agrees with schema.Zones on
// names at, below, beside and above zones of every depth.
func TestZoneIndex(t *testing.T) {
	zones := schema.Zones{"example.net": true, "east.example.net": true, "ample.net": true,
		"10.10.in-addr.arpa": true, "0.10.in-addr.arpa": true, "0.0.0.0.a.0.0.0.0.0.d.f.ip6.arpa": true, "net.example": true}
	x := zones.Index()
	names := []string{"", "net", "example.net", "www.example.net", "a.b.east.example.net", "east.example.net",
		"notexample.net", "www.ample.net", "example.org", "1.10.10.in-addr.arpa", "1.0.10.in-addr.arpa", "0.10.in-addr.arpa",
		"10.in-addr.arpa", "in-addr.arpa", "x.net.example", "example", ".", "a..example.net",
		schema.ReverseName(netip.MustParseAddr("fd00:a::b")), schema.ReverseName(netip.MustParseAddr("fd00:b::b")),
		strings.Repeat("a.", 130) + "example.net"}
	for _, n := range names {
		if got, want := x.FindCanonical(n), zones.FindCanonical(n); got != want {
			t.Errorf("find(%q) = %q, schema.Zones says %q", n, got, want)
		}
	}
	if got := schema.Zones(nil).Index().FindCanonical("example.net"); got != "" {
		t.Errorf("no zones: find = %q", got)
	}
}
