package dns

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/anneal-dev/anneal/schema"
	mdns "github.com/miekg/dns"
	"golang.org/x/sync/errgroup"
)

// DefaultTTL applies when neither the record, its network, the DNS
// document nor the site's defaults give one.
const DefaultTTL = 300

// DesiredZone is every RRset one zone should hold. It is immutable once
// compiled.
type DesiredZone struct {
	Zone    string  `json:"zone"`
	Reverse bool    `json:"reverse"`
	RRsets  []RRset `json:"rrsets"`

	digest     string
	digestOnce sync.Once
	zoneFacts  *zoneFacts
	factsOnce  sync.Once
	addrDigest string
	addrOnce   sync.Once
}

// facts parses the zone's records for consistency checks, once.
func (z *DesiredZone) facts() *zoneFacts {
	z.factsOnce.Do(func() { z.zoneFacts = factsOf(z.RRsets) })
	return z.zoneFacts
}

// addressDigest is addressDigest of the zone's RRsets, once.
func (z *DesiredZone) addressDigest() string {
	z.addrOnce.Do(func() { z.addrDigest = addressDigest(z.RRsets) })
	return z.addrDigest
}

// Digest fingerprints the zone's desired RRsets (SHA-256, hex), computed
// once.
func (z *DesiredZone) Digest() string {
	z.digestOnce.Do(func() { z.digest = z.computeDigest() })
	return z.digest
}

func (z *DesiredZone) computeDigest() string { return digestRRsets(z.RRsets, nil) }

// digestRRsets fingerprints RRsets (SHA-256, hex), those of the types only
// allows when it is not nil.
func digestRRsets(rrsets []RRset, only func(RRType) bool) string {
	h := sha256.New()
	var buf []byte
	for _, s := range rrsets {
		if only != nil && !only(s.Type) {
			continue
		}
		buf = append(buf[:0], s.Name...)
		buf = append(buf, 0)
		buf = append(buf, s.Type...)
		buf = append(buf, 0)
		buf = strconv.AppendUint(buf, uint64(s.TTL), 10)
		for _, d := range s.Data {
			buf = append(buf, 0)
			buf = append(buf, d...)
		}
		buf = append(buf, '\n')
		h.Write(buf)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Desired is the DNS a commit declares: zones and who serves them.
type Desired struct {
	// Zones sorted by name.
	Zones []*DesiredZone `json:"zones"`
	// Targets sorted by name, each with the zones it serves.
	Targets []TargetZones `json:"targets"`
	// MassDeletePercent is the site's mass-delete threshold.
	MassDeletePercent int `json:"massDeletePercent"`

	byZone map[string]*DesiredZone
}

// TargetZones is one DNS target and the zones it serves.
type TargetZones struct {
	Target string   `json:"target"`
	Kind   string   `json:"kind"`
	Zones  []string `json:"zones"`
}

// Zone returns the desired content of a zone, or nil.
func (d *Desired) Zone(name string) *DesiredZone { return d.byZone[name] }

// DefaultMassDeletePercent applies when the site sets no threshold.
const DefaultMassDeletePercent = 20

// Compile derives every DNS record of a site. It is a pure function of
// the site: the same commit gives the same records in the same order.
func Compile(site *schema.Site) (*Desired, error) {
	return CompileWith(site, Availability{})
}

// Availability is what the live fleet adds to the site's own view of who
// serves: nodes being rebuilt are out of their round-robin groups until
// verified, and decommissioned nodes keep their names until powered off.
type Availability struct {
	// OutOfService nodes are left out of every group.
	OutOfService map[string]bool
	// Retiring decommissioned nodes keep their own records (not groups).
	Retiring map[string]bool
	// Departed are the own records of nodes that left the site and are
	// not powered off yet (from their records): kept, like Retiring's,
	// where nothing the site declares now takes the name.
	Departed map[string][]RRset
}

// CompileWith is Compile with the live fleet's availability. It is
// a pure function of the site and av.
func CompileWith(site *schema.Site, av Availability) (*Desired, error) {
	out := &Desired{byZone: map[string]*DesiredZone{}, MassDeletePercent: site.Config.Policies.DNSMassDeletePercent}
	if out.MassDeletePercent == 0 {
		out.MassDeletePercent = DefaultMassDeletePercent
	}
	d := site.DNS
	if d == nil {
		return out, nil
	}
	b, ttlIn := newSiteBuilder(site, out, 24*len(site.Nodes))
	for _, n := range site.Nodes {
		if n.Exists() {
			b.node(site, n, ttlIn)
		}
	}
	for _, g := range d.Groups {
		name := schema.CanonicalName(g.FQDN)
		for _, n := range site.Nodes {
			if !n.InService() || av.OutOfService[n.Name] || !n.InGroup(&g) {
				continue
			}
			if a, ok := n.Address(g.Network); ok {
				b.addresses(name, a, ttlIn(name, g.TTL))
			}
		}
	}
	for _, w := range d.Wildcards {
		name := schema.CanonicalName(w.Name)
		b.add(name, TypeCNAME, ttlIn(name, w.TTL), mdns.Fqdn(schema.CanonicalName(w.Target)))
	}
	for _, r := range d.Records {
		if err := b.static(r, ttlIn); err != nil {
			return nil, err
		}
	}
	if len(b.errs) > 0 {
		return nil, fmt.Errorf("compile DNS: %s", strings.Join(b.errs, "; "))
	}
	b.retiring(site, av.Retiring, av.Departed, ttlIn)
	for _, z := range out.Zones {
		z.RRsets = make([]RRset, 0, b.sizes[z])
	}
	for i := range b.sets {
		set := &b.sets[i]
		if len(set.Data) > 1 {
			set.Normalize()
		}
		set.zone.RRsets = append(set.zone.RRsets, set.RRset)
	}
	sortZones(out.Zones)
	slices.SortFunc(out.Zones, func(a, b *DesiredZone) int { return strings.Compare(a.Zone, b.Zone) })
	for _, t := range d.Targets {
		tz := TargetZones{Target: t.Name, Kind: string(t.Kind)}
		for _, z := range t.Zones {
			tz.Zones = append(tz.Zones, schema.CanonicalName(z))
		}
		slices.Sort(tz.Zones)
		out.Targets = append(out.Targets, tz)
	}
	slices.SortFunc(out.Targets, func(a, b TargetZones) int { return strings.Compare(a.Target, b.Target) })
	return out, nil
}

// newSiteBuilder starts compiling site's DNS into out: its zones, and the
// TTL rule (the record's own, its zone's, the DNS document's, the site's).
func newSiteBuilder(site *schema.Site, out *Desired, size int) (*dnsBuilder, func(string, int) uint32) {
	d := site.DNS
	for _, z := range d.Zones {
		name := schema.CanonicalName(z.Name)
		dz := &DesiredZone{Zone: name, Reverse: strings.HasSuffix(name, ".arpa")}
		out.Zones = append(out.Zones, dz)
		out.byZone[name] = dz
	}
	b := newDNSBuilder(d.ZoneSet().Index(), out.byZone, size)
	baseTTL := firstTTL(d.TTL, site.Config.Defaults.DNSTTL, DefaultTTL)
	zoneTTL := map[string]uint32{}
	for _, z := range d.Zones {
		zoneTTL[schema.CanonicalName(z.Name)] = firstTTL(z.TTL, int(baseTTL))
	}
	ttlIn := func(name string, own int) uint32 {
		if own > 0 {
			return uint32(own)
		}
		if t, ok := zoneTTL[b.zone(name)]; ok {
			return t
		}
		return baseTTL
	}
	return b, ttlIn
}

// NodesRRsets compiles each node's own records (addresses, PTRs, primary
// name, aliases; no groups), sorted by key: what a node that leaves the
// site keeps until it is powered off.
func NodesRRsets(site *schema.Site, nodes []*schema.Node) map[string][]RRset {
	out := map[string][]RRset{}
	if site.DNS == nil {
		return out
	}
	b, ttlIn := newSiteBuilder(site, &Desired{byZone: map[string]*DesiredZone{}}, 0)
	for _, n := range nodes {
		nb := newDNSBuilder(b.zones, b.byZone, 16)
		nb.node(site, n, ttlIn)
		sets := make([]RRset, 0, len(nb.sets))
		for _, set := range nb.sets {
			if len(set.Data) > 1 {
				set.Normalize()
			}
			sets = append(sets, set.RRset)
		}
		slices.SortFunc(sets, compareRRsets)
		out[n.Name] = sets
	}
	return out
}

// sortZones sorts each zone's RRsets by key, zones in parallel.
func sortZones(zones []*DesiredZone) {
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for _, z := range zones {
		g.Go(func() error {
			slices.SortFunc(z.RRsets, compareRRsets)
			return nil
		})
	}
	_ = g.Wait() // sorting does not fail
}

func firstTTL(vals ...int) uint32 {
	for _, v := range vals {
		if v > 0 {
			return uint32(v)
		}
	}
	return DefaultTTL
}

// dnsBuilder gathers RRsets, in the order they are first added.
type dnsBuilder struct {
	zones  schema.ZoneIndex
	byZone map[string]*DesiredZone
	index  map[RRsetKey]int // into sets
	sets   []pendingSet
	sizes  map[*DesiredZone]int
	errs   []string
}

// pendingSet is an RRset being built, with its zone.
type pendingSet struct {
	RRset
	zone *DesiredZone
}

func newDNSBuilder(zones schema.ZoneIndex, byZone map[string]*DesiredZone, size int) *dnsBuilder {
	return &dnsBuilder{zones: zones, byZone: byZone, index: make(map[RRsetKey]int, size), sets: make([]pendingSet, 0, size), sizes: map[*DesiredZone]int{}}
}

// put adds a whole RRset, its zone already known.
func (b *dnsBuilder) put(set pendingSet) {
	b.index[set.Key()] = len(b.sets)
	b.sets = append(b.sets, set)
	b.sizes[set.zone]++
}

// zone is the zone a canonical name belongs to, or "".
func (b *dnsBuilder) zone(name string) string { return b.zones.FindCanonical(name) }

func (b *dnsBuilder) add(name string, t RRType, ttl uint32, data string) {
	k := RRsetKey{name, t}
	i, ok := b.index[k]
	if !ok {
		zone := b.byZone[b.zone(name)]
		if zone == nil {
			b.errs = append(b.errs, fmt.Sprintf("%s %s is in no declared zone", name, t))
			return
		}
		b.put(pendingSet{RRset: RRset{Name: name, Type: t, TTL: ttl}, zone: zone})
		i = len(b.sets) - 1
	}
	set := &b.sets[i]
	set.TTL = min(set.TTL, ttl)
	set.Data = append(set.Data, data)
}

func (b *dnsBuilder) addresses(name string, a schema.Address, ttl uint32) {
	if a.IPv4.IsValid() {
		b.add(name, TypeA, ttl, a.IPv4.String())
	}
	if a.IPv6.IsValid() {
		b.add(name, TypeAAAA, ttl, a.IPv6.String())
	}
}

func (b *dnsBuilder) ptr(ip netip.Addr, target string, ttl uint32) {
	if ip.IsValid() {
		b.add(schema.ReverseName(ip), TypePTR, ttl, mdns.Fqdn(target))
	}
}

// node adds a node's names: one per network address (with its PTR), the
// primary name, and aliases. The primary network's PTR names the primary
// name, so reverse lookups give the host's own name.
func (b *dnsBuilder) node(site *schema.Site, n *schema.Node, ttlIn func(string, int) uint32) {
	primaryNet := n.PrimaryNetwork
	for _, a := range n.Addresses {
		net := site.Network(a.Network)
		if a.FQDN == "" || net == nil || net.DNS == nil {
			continue
		}
		ttl := ttlIn(a.FQDN, net.DNS.TTL)
		b.addresses(a.FQDN, a, ttl)
		if !a.Reverse {
			continue
		}
		target := a.FQDN
		if a.Network == primaryNet && a.Interface != "bmc" {
			target = n.PrimaryFQDN
		}
		b.ptr(a.IPv4, target, ttl)
		b.ptr(a.IPv6, target, ttl)
	}
	if primaryNet == "" {
		return
	}
	if a, ok := n.Address(primaryNet); ok {
		b.addresses(n.PrimaryFQDN, a, ttlIn(n.PrimaryFQDN, 0))
	}
	for _, alias := range n.AliasFQDNs {
		b.add(alias, TypeCNAME, ttlIn(alias, 0), mdns.Fqdn(n.PrimaryFQDN))
	}
}

// retiring keeps the names of decommissioned nodes that are not powered
// off yet. They come last and yield: a name the site now gives to anything
// else (a new node on the old address or hostname) is not kept.
func (b *dnsBuilder) retiring(site *schema.Site, retiring map[string]bool, departed map[string][]RRset, ttlIn func(string, int) uint32) {
	if len(retiring) == 0 && len(departed) == 0 {
		return
	}
	taken := map[string]bool{}
	for k := range b.index {
		taken[k.Name] = true
	}
	rb := newDNSBuilder(b.zones, b.byZone, 0)
	for _, n := range site.Nodes {
		if !n.Exists() && retiring[n.Name] {
			rb.node(site, n, ttlIn)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(departed)) {
		for _, set := range departed[name] {
			if zone := b.byZone[b.zone(set.Name)]; zone != nil && !taken[set.Name] {
				if _, dup := rb.index[set.Key()]; !dup {
					rb.put(pendingSet{RRset: RRset{Name: set.Name, Type: set.Type, TTL: set.TTL, Data: slices.Clone(set.Data)}, zone: zone})
				}
			}
		}
	}
	for _, set := range rb.sets {
		if !taken[set.Name] {
			b.put(set)
		}
	}
}

// static adds an extra record, canonicalised through the DNS parser so
// that it compares equal to what a server hands back.
func (b *dnsBuilder) static(r schema.Record, ttlIn func(string, int) uint32) error {
	name := schema.CanonicalName(r.Name)
	ttl := ttlIn(name, r.TTL)
	value := r.Value
	if r.Type == "TXT" && !strings.HasPrefix(strings.TrimSpace(value), `"`) {
		value = `"` + strings.ReplaceAll(value, `"`, `\"`) + `"`
	}
	rr, err := mdns.NewRR(fmt.Sprintf("%s. %d IN %s %s", name, ttl, r.Type, value))
	if err != nil || rr == nil {
		return fmt.Errorf("compile DNS record %s %s %q: %v", name, r.Type, r.Value, err)
	}
	b.add(name, RRType(r.Type), ttl, CanonicalRData(rr))
	return nil
}
