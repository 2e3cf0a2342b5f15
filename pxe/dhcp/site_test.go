package dhcp

import (
	"bytes"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/rfc1035label"

	"github.com/anneal-dev/anneal/internal/sitetest"
)

// wantSiteOptions are the configuration options a ModeFull reply carries
// from the site: nil or zero means the option must be absent.
type wantSiteOptions struct {
	dns    []string
	domain string
	mtu    int
	search []string
}

// checkSiteOptions checks options 6, 15, 26 and 119 of a reply.
func checkSiteOptions(t *testing.T, resp *dhcpv4.DHCPv4, want wantSiteOptions) {
	t.Helper()
	var dns []string
	for _, ip := range resp.DNS() {
		dns = append(dns, ip.String())
	}
	if !slices.Equal(dns, want.dns) || resp.Options.Has(dhcpv4.OptionDomainNameServer) != (len(want.dns) > 0) {
		t.Errorf("option 6 = %v, want %v", dns, want.dns)
	}
	if got := resp.DomainName(); got != want.domain || resp.Options.Has(dhcpv4.OptionDomainName) != (want.domain != "") {
		t.Errorf("option 15 = %q, want %q", got, want.domain)
	}
	mtu := resp.Options.Get(dhcpv4.OptionInterfaceMTU)
	if want.mtu == 0 {
		if mtu != nil {
			t.Errorf("option 26 = %x, want none", mtu)
		}
	} else if !bytes.Equal(mtu, []byte{byte(want.mtu >> 8), byte(want.mtu)}) {
		t.Errorf("option 26 = %x, want %d", mtu, want.mtu)
	}
	var search []string
	if l := resp.DomainSearch(); l != nil {
		search = l.Labels
	}
	if !slices.Equal(search, want.search) || resp.Options.Has(dhcpv4.OptionDNSDomainSearchList) != (len(want.search) > 0) {
		t.Errorf("option 119 = %v, want %v", search, want.search)
	}
}

// TestLeaseFromExampleSite builds the leases of the example site, as is and
// edited, and the OFFER each gives: the resolvers (option 6), domain (15),
// MTU (26) and search list (119) are the site's, and absent when the site
// declares none.
func TestLeaseFromExampleSite(t *testing.T) {
	replace := func(old, new string) func(string) string {
		return func(s string) string { return strings.Replace(s, old, new, 1) }
	}
	const internalResolvers = `resolvers: [10.10.2.2, "fd00:a:0:120::2"]`
	tests := []struct {
		name  string
		edits map[string]func(string) string
		mac   string
		want  wantSiteOptions
	}{{
		// The provisioning network declares no resolvers: the node's other
		// networks' (internal's), IPv4 only, as its installed system gets.
		name: "example e1n01",
		mac:  knownMAC.String(),
		want: wantSiteOptions{dns: []string{"10.10.2.2"}, domain: "east.example.net", mtu: 1500, search: []string{"example.net"}},
	}, {
		name: "example w1n01 in region west",
		mac:  "3c:ec:ef:15:01:01",
		want: wantSiteOptions{dns: []string{"10.10.2.2"}, domain: "west.example.net", mtu: 1500, search: []string{"example.net"}},
	}, {
		name: "provisioning network's own resolvers win",
		edits: map[string]func(string) string{"networks.yaml": replace("provisioning: true\n",
			"provisioning: true\nresolvers: [10.10.1.53, \"fd00:a:0:110::53\", 10.10.1.54, 10.10.1.53]\n")},
		mac:  knownMAC.String(),
		want: wantSiteOptions{dns: []string{"10.10.1.53", "10.10.1.54"}, domain: "east.example.net", mtu: 1500, search: []string{"example.net"}},
	}, {
		name:  "no resolvers anywhere: no option 6",
		edits: map[string]func(string) string{"networks.yaml": replace(internalResolvers, "")},
		mac:   knownMAC.String(),
		want:  wantSiteOptions{domain: "east.example.net", mtu: 1500, search: []string{"example.net"}},
	}, {
		name:  "IPv6 resolvers only: no option 6",
		edits: map[string]func(string) string{"networks.yaml": replace(internalResolvers, `resolvers: ["fd00:a:0:120::2"]`)},
		mac:   knownMAC.String(),
		want:  wantSiteOptions{domain: "east.example.net", mtu: 1500, search: []string{"example.net"}},
	}, {
		name:  "no MTU on the provisioning network: no option 26",
		edits: map[string]func(string) string{"networks.yaml": replace("mtu: 1500\n", "")},
		mac:   knownMAC.String(),
		want:  wantSiteOptions{dns: []string{"10.10.2.2"}, domain: "east.example.net", search: []string{"example.net"}},
	}, {
		name:  "jumbo provisioning network",
		edits: map[string]func(string) string{"networks.yaml": replace("mtu: 1500\n", "mtu: 9000\n")},
		mac:   knownMAC.String(),
		want:  wantSiteOptions{dns: []string{"10.10.2.2"}, domain: "east.example.net", mtu: 9000, search: []string{"example.net"}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var leases map[string]Lease
			if tc.edits == nil {
				leases = LeasesFromSite(loadExample(t, exampleSite))
			} else {
				leases = LeasesFromSite(sitetest.ExampleWith(t, exampleSite, tc.edits))
			}
			l, ok := leases[tc.mac]
			if !ok {
				t.Fatalf("no lease for %s", tc.mac)
			}
			if l.Mask.String() != "ffffff00" || !l.Router.Equal(net.IPv4(10, 10, 1, 1)) {
				t.Errorf("mask %s router %v, want ffffff00 10.10.1.1", l.Mask, l.Router)
			}
			cfg, _ := testConfig(t)
			cfg.Lookup = LookupFrom(leases)
			s, err := newServer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			mac := mustMAC(tc.mac)
			offer := s.respond(discover(t, mac))
			if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatalf("no OFFER: %v", offer)
			}
			// What goes on the wire parses back to the same options.
			offer, err = dhcpv4.FromBytes(offer.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			if offer.SubnetMask().String() != "ffffff00" {
				t.Errorf("option 1 = %s", offer.SubnetMask())
			}
			if r := offer.Router(); len(r) != 1 || !r[0].Equal(net.IPv4(10, 10, 1, 1)) {
				t.Errorf("option 3 = %v", r)
			}
			checkSiteOptions(t, offer, tc.want)
			ack := s.respond(request(t, mac, l.IP))
			if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
				t.Fatalf("no ACK: %v", ack)
			}
			checkSiteOptions(t, ack, tc.want)
		})
	}
}

func TestDNSName(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"example.net", "example.net", true},
		{"example.net.", "example.net", true},
		{"East-1.Example.NET", "East-1.Example.NET", true},
		{"_ldap.example.net", "_ldap.example.net", true},
		{long + ".net", long + ".net", true},
		{long + "a.net", "", false},
		{strings.Repeat("a.", 127), strings.Repeat("a.", 126) + "a", true}, // 253 bytes without the last dot
		{strings.Repeat("ab.", 85), "", false},                             // 254 bytes
		{"", "", false},
		{".", "", false},
		{"a..b", "", false},
		{".example.net", "", false},
		{"-a.net", "", false},
		{"a-.net", "", false},
		{"a b.net", "", false},
		{"a;reboot.net", "", false},
		{"ex\x00ample.net", "", false},
		{"exämple.net", "", false},
	}
	for _, tc := range tests {
		got, ok := dnsName(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("dnsName(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzDNSName: dnsName never panics, and a name it accepts encodes as an
// option 119 that parses back to the same name.
func FuzzDNSName(f *testing.F) {
	for _, s := range []string{"example.net", "example.net.", "a..b", "-a", strings.Repeat("a", 64), "_x.y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, ok := dnsName(s)
		if !ok {
			return
		}
		wire := (&rfc1035label.Labels{Labels: []string{name}}).ToBytes()
		back, err := rfc1035label.FromBytes(wire)
		if err != nil || len(back.Labels) != 1 || back.Labels[0] != name {
			t.Fatalf("dnsName(%q) = %q: option 119 %x parses back to %v, %v", s, name, wire, back, err)
		}
	})
}

func TestIPv4s(t *testing.T) {
	got := ipv4s([]string{"10.0.0.1", "fd00::1", "10.0.0.1", " 10.0.0.2 ", "0.0.0.0", "bogus", "", "::ffff:10.0.0.3"})
	var s []string
	for _, ip := range got {
		s = append(s, ip.String())
	}
	if want := []string{"10.0.0.1", "10.0.0.2"}; !slices.Equal(s, want) {
		t.Errorf("ipv4s = %v, want %v", s, want)
	}
}
