package dns

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// oracleFindings is the consistency check written the plain way, from
// scratch: what the kept index must always agree with.
func oracleFindings(target string, zones []*ZoneContent) []Finding {
	forward := map[netip.Addr][]string{}
	ptrs := map[netip.Addr][]string{}
	var reverse []string
	for _, z := range zones {
		if strings.HasSuffix(z.Zone, ".arpa") {
			reverse = append(reverse, z.Zone)
		}
		for _, s := range z.RRsets {
			for _, d := range s.Data {
				switch s.Type {
				case TypeA, TypeAAAA:
					if ip, err := netip.ParseAddr(d); err == nil {
						forward[ip] = append(forward[ip], s.Name)
					}
				case TypePTR:
					if ip, ok := addrOfReverse(s.Name); ok {
						ptrs[ip] = append(ptrs[ip], canonicalName(d))
					}
				}
			}
		}
	}
	var out []Finding
	for ip, names := range ptrs {
		for _, name := range names {
			if !slices.Contains(forward[ip], name) {
				out = append(out, Finding{Kind: FindingOrphanPTR, Target: target, Name: name, Address: ip.String(),
					Detail: fmt.Sprintf("PTR of %s names %s, which has no A/AAAA %s here", ip, name, ip)})
			}
		}
	}
	served := func(ip netip.Addr) bool {
		r := reverseOf(ip)
		return slices.ContainsFunc(reverse, func(z string) bool { return r == z || strings.HasSuffix(r, "."+z) })
	}
	for ip, names := range forward {
		if len(ptrs[ip]) > 0 || !served(ip) {
			continue
		}
		names = slices.Compact(slices.Sorted(slices.Values(names)))
		out = append(out, Finding{Kind: FindingMissingPTR, Target: target, Name: names[0], Address: ip.String(),
			Detail: fmt.Sprintf("%s (%s) has no PTR although its reverse zone is served here", ip, strings.Join(names, ", "))})
	}
	slices.SortFunc(out, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Address, b.Address), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// TestConsistencyIncremental: a kept index, updated zone by zone through
// random changes (records added and dropped, zones added and removed,
// reverse zones served and not), gives the findings a check from scratch
// gives, every time.
func TestConsistencyIncremental(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"a.example.net", "b.example.net", "c.example.net", "grp.example.net", "x.east.example.net", "y.east.example.net"}
	ips := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1", "10.9.0.1", "fd00::1", "fd00::2", "fd01::1"}
	zoneNames := []string{"example.net", "east.example.net", "0.10.in-addr.arpa", "10.in-addr.arpa",
		"0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa"}
	random := func(zone string) *ZoneContent {
		z := &ZoneContent{Zone: zone}
		sets := map[RRsetKey]*RRset{}
		for range rng.IntN(8) {
			ip := netip.MustParseAddr(ips[rng.IntN(len(ips))])
			name := names[rng.IntN(len(names))]
			var k RRsetKey
			var data string
			if strings.HasSuffix(zone, ".arpa") {
				k, data = RRsetKey{reverseOf(ip), TypePTR}, name+"."
			} else {
				typ := TypeA
				if ip.Is6() {
					typ = TypeAAAA
				}
				k, data = RRsetKey{name, typ}, ip.String()
			}
			if sets[k] == nil {
				sets[k] = &RRset{Name: k.Name, Type: k.Type, TTL: 300}
			}
			sets[k].Data = append(sets[k].Data, data)
		}
		for _, s := range sets {
			s.Normalize()
			z.RRsets = append(z.RRsets, *s)
		}
		slices.SortFunc(z.RRsets, compareRRsets)
		return z
	}
	var kept Consistency
	current := map[string]*ZoneContent{}
	found := 0
	for step := range 400 {
		for range 1 + rng.IntN(2) {
			zone := zoneNames[rng.IntN(len(zoneNames))]
			if rng.IntN(6) == 0 {
				delete(current, zone)
			} else {
				current[zone] = random(zone)
			}
		}
		var zones []*ZoneContent
		for _, z := range zoneNames {
			if current[z] != nil {
				// A fresh copy each time: the index knows a zone by its
				// content, never by the pointer.
				c := *current[z]
				zones = append(zones, &c)
			}
		}
		got, want := kept.Findings("t", zones), oracleFindings("t", zones)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: kept index:\n%v\nfrom scratch:\n%v", step, got, want)
		}
		if scratch := consistency("t", zones); !reflect.DeepEqual(scratch, want) {
			t.Fatalf("step %d: from scratch:\n%v\noracle:\n%v", step, scratch, want)
		}
		if len(want) > 0 {
			found++
		}
	}
	if found < 200 {
		t.Fatalf("only %d of 400 steps had findings: the test does not exercise the index", found)
	}
}

// TestAddressDigest: what a server adds to a zone (apex NS, records of
// other types) does not change what consistency reads of it, so a zone in
// sync is not parsed again after it was read live.
func TestAddressDigest(t *testing.T) {
	desired := []RRset{rr("a.example.net", TypeA, "10.0.0.1"), rr("a.example.net", TypeAAAA, "fd00::1")}
	live := append(slices.Clone(desired), rr("example.net", TypeNS, "ns1.example.net."), rr("t.example.net", TypeTXT, `"x"`))
	slices.SortFunc(live, compareRRsets)
	if addressDigest(desired) != addressDigest(live) {
		t.Error("an apex NS and a TXT change the address digest")
	}
	moved := []RRset{rr("a.example.net", TypeA, "10.0.0.2"), rr("a.example.net", TypeAAAA, "fd00::1")}
	if addressDigest(desired) == addressDigest(moved) {
		t.Error("a moved address keeps the address digest")
	}
}
