package dns

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/anneal-dev/anneal/schema"
)

// Consistency keeps, per target, the index behind the forward-confirmed
// reverse DNS findings across plans, updated zone by zone: after a change
// to one zone, a plan costs that zone's records, not every record the
// target serves. The zero value is ready; a nil *Consistency indexes from
// scratch on every plan.
type Consistency struct {
	mu      sync.Mutex
	targets map[string]*fcrdns
}

func (c *Consistency) target(name string) *fcrdns {
	if c == nil {
		return &fcrdns{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.targets == nil {
		c.targets = map[string]*fcrdns{}
	}
	x := c.targets[name]
	if x == nil {
		x = &fcrdns{}
		c.targets[name] = x
	}
	return x
}

// Findings checks forward-confirmed reverse DNS on what one target serves,
// given the content of each of its zones: every PTR's name resolves back
// to its address, and every address with a forward name in a served
// reverse zone has a PTR.
func (c *Consistency) Findings(target string, zones []*ZoneContent) []Finding {
	x := c.target(target)
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.update(target, zones, c != nil)
}

// consistency is Findings from scratch.
func consistency(target string, zones []*ZoneContent) []Finding {
	return (*Consistency)(nil).Findings(target, zones)
}

// addrName pairs an address with a name: a forward record (the name has
// the address), or a PTR (the address names the name).
type addrName struct {
	ip   netip.Addr
	name string
}

// addressDigest fingerprints what consistency reads of RRsets: their A,
// AAAA and PTR records. A zone in sync and the same zone read from its
// server (with the server's SOA and apex NS) have the same.
func addressDigest(rrsets []RRset) string {
	return digestRRsets(rrsets, func(t RRType) bool { return t == TypeA || t == TypeAAAA || t == TypePTR })
}

// zoneFacts is what consistency needs of one zone's RRsets, parsed.
type zoneFacts struct {
	forward, ptrs []addrName
}

func factsOf(rrsets []RRset) *zoneFacts {
	f := &zoneFacts{}
	for _, s := range rrsets {
		switch s.Type {
		case TypeA, TypeAAAA:
			for _, d := range s.Data {
				if ip, err := netip.ParseAddr(d); err == nil {
					f.forward = append(f.forward, addrName{ip, s.Name})
				}
			}
		case TypePTR:
			ip, ok := addrOfReverse(s.Name)
			if !ok {
				continue
			}
			for _, d := range s.Data {
				f.ptrs = append(f.ptrs, addrName{ip, canonicalName(d)})
			}
		}
	}
	return f
}

// fcrdns is one target's index: by address, the names that have it and
// the names its PTRs give, and the findings of each address.
type fcrdns struct {
	mu       sync.Mutex
	reverse  string // the served reverse zones the index was built for
	revIndex schema.ZoneIndex
	zones    map[string]indexedZone
	fwd      map[netip.Addr][]string // address → names with it
	ptr      map[netip.Addr][]string // address → PTR targets
	found    map[netip.Addr][]Finding
}

// indexedZone is a zone as the index holds it.
type indexedZone struct {
	digest string // addressDigest
	facts  *zoneFacts
}

// update brings the index to zones (each zone's content known by its
// address digest: only a zone whose addresses or PTRs changed is parsed
// and re-indexed),
// then returns the target's findings, sorted. An index that is not kept
// needs no digests.
func (x *fcrdns) update(target string, zones []*ZoneContent, keep bool) []Finding {
	var rev []string
	for _, z := range zones {
		if strings.HasSuffix(z.Zone, ".arpa") {
			rev = append(rev, z.Zone)
		}
	}
	slices.Sort(rev)
	if key := strings.Join(rev, " "); x.zones == nil || key != x.reverse {
		// Which reverse zones are served decides every missing PTR: start
		// over.
		set := schema.Zones{}
		for _, z := range rev {
			set[z] = true
		}
		x.reverse, x.revIndex, x.zones = key, set.Index(), map[string]indexedZone{}
		x.fwd, x.ptr, x.found = map[netip.Addr][]string{}, map[netip.Addr][]string{}, map[netip.Addr][]Finding{}
	}
	touched := map[netip.Addr]bool{}
	seen := make(map[string]bool, len(zones))
	for _, z := range zones {
		seen[z.Zone] = true
		digest := ""
		switch {
		case z.desired != nil:
			digest = z.desired.addressDigest()
		case keep:
			digest = addressDigest(z.RRsets)
		}
		old, had := x.zones[z.Zone]
		if had && digest != "" && old.digest == digest {
			continue
		}
		var facts *zoneFacts
		if z.desired != nil {
			facts = z.desired.facts()
		} else {
			facts = factsOf(z.RRsets)
		}
		if had {
			x.index(old.facts, false, touched)
		}
		x.index(facts, true, touched)
		x.zones[z.Zone] = indexedZone{digest: digest, facts: facts}
	}
	for name, old := range x.zones {
		if !seen[name] {
			x.index(old.facts, false, touched)
			delete(x.zones, name)
		}
	}
	for ip := range touched {
		x.check(target, ip)
	}
	var out []Finding
	for _, fs := range x.found {
		out = append(out, fs...)
	}
	slices.SortFunc(out, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Address, b.Address), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// index adds (or removes) a zone's pairs, noting the addresses touched.
func (x *fcrdns) index(f *zoneFacts, add bool, touched map[netip.Addr]bool) {
	edit := func(m map[netip.Addr][]string, an addrName) {
		touched[an.ip] = true
		if add {
			m[an.ip] = append(m[an.ip], an.name)
			return
		}
		names := m[an.ip]
		if i := slices.Index(names, an.name); i >= 0 {
			names = slices.Delete(names, i, i+1)
		}
		if len(names) == 0 {
			delete(m, an.ip)
		} else {
			m[an.ip] = names
		}
	}
	for _, an := range f.forward {
		edit(x.fwd, an)
	}
	for _, an := range f.ptrs {
		edit(x.ptr, an)
	}
}

// check recomputes one address's findings.
func (x *fcrdns) check(target string, ip netip.Addr) {
	var out []Finding
	names, ptrs := x.fwd[ip], x.ptr[ip]
	for _, name := range ptrs {
		if !slices.Contains(names, name) {
			out = append(out, Finding{Kind: FindingOrphanPTR, Target: target, Name: name, Address: ip.String(),
				Detail: fmt.Sprintf("PTR of %s names %s, which has no A/AAAA %s here", ip, name, ip)})
		}
	}
	if len(ptrs) == 0 && len(names) > 0 && x.revIndex.FindCanonical(reverseOf(ip)) != "" {
		sorted := slices.Compact(slices.Sorted(slices.Values(names)))
		out = append(out, Finding{Kind: FindingMissingPTR, Target: target, Name: sorted[0], Address: ip.String(),
			Detail: fmt.Sprintf("%s (%s) has no PTR although its reverse zone is served here", ip, strings.Join(sorted, ", "))})
	}
	if out == nil {
		delete(x.found, ip)
	} else {
		x.found[ip] = out
	}
}
