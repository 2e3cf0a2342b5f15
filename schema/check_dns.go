package schema

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// CanonicalName lower-cases a domain name and drops its trailing dot.
func CanonicalName(s string) string { return strings.TrimSuffix(strings.ToLower(s), ".") }

// validHostname reports whether s is an RFC 1123 host name.
func validHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !validLabel(l) {
			return false
		}
	}
	return true
}

func validLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		ch := l[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-') {
			return false
		}
	}
	return true
}

// ExpandPattern fills a naming pattern for one node on one network.
// Unknown placeholders are left as written (validation reports them).
func ExpandPattern(pattern, node, network, region, rack, domain string) string {
	var b strings.Builder
	b.Grow(len(pattern) + len(node) + len(domain) + 16)
	rest := pattern
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:i])
		rest = rest[i:]
		j := strings.IndexByte(rest, '}')
		if j < 0 {
			b.WriteString(rest)
			break
		}
		switch rest[:j+1] {
		case "{node}":
			b.WriteString(node)
		case "{network}":
			b.WriteString(network)
		case "{region}":
			b.WriteString(region)
		case "{rack}":
			b.WriteString(rack)
		case "{domain}":
			b.WriteString(CanonicalName(domain))
		default:
			b.WriteString(rest[:j+1])
		}
		rest = rest[j+1:]
	}
	return CanonicalName(b.String())
}

// Zones finds the zone a name belongs to: the longest declared zone it is
// at or below (label-wise, never a plain suffix match).
type Zones map[string]bool

// Find returns the zone of name, or "".
func (z Zones) Find(name string) string { return z.FindCanonical(CanonicalName(name)) }

// FindCanonical is Find for a name already canonical (lower case, no
// trailing dot), as every name the compiler builds is.
func (z Zones) FindCanonical(name string) string {
	for {
		if z[name] {
			return name
		}
		i := strings.IndexByte(name, '.')
		if i < 0 {
			return ""
		}
		name = name[i+1:]
	}
}

// ZoneIndex finds the zone a name belongs to, as Zones does, but looks up
// only the suffixes as deep as some zone is: an ip6.arpa name of 34
// labels costs a lookup or two, not 20. Build it once the zones are all
// known; it does not follow later changes to them.
type ZoneIndex struct {
	zones  Zones
	depths []int // the zones' label counts, deepest first
}

// Index returns the zones' index.
func (z Zones) Index() ZoneIndex {
	x := ZoneIndex{zones: z}
	for zone := range z {
		d := strings.Count(zone, ".") + 1
		if !slices.Contains(x.depths, d) {
			x.depths = append(x.depths, d)
		}
	}
	slices.Sort(x.depths)
	slices.Reverse(x.depths)
	return x
}

// Find returns the zone of name, or "".
func (x ZoneIndex) Find(name string) string { return x.FindCanonical(CanonicalName(name)) }

// FindCanonical is Find for a name already canonical.
func (x ZoneIndex) FindCanonical(name string) string {
	var dots [128]int // a DNS name has at most 127 labels
	n := 0
	for i := 0; i < len(name); i++ {
		if name[i] == '.' {
			if n == len(dots) {
				return x.zones.FindCanonical(name)
			}
			dots[n] = i
			n++
		}
	}
	labels := n + 1
	for _, d := range x.depths {
		if d > labels {
			continue
		}
		suffix := name
		if d < labels {
			suffix = name[dots[labels-d-1]+1:]
		}
		if x.zones[suffix] {
			return suffix
		}
	}
	return ""
}

// ZoneSet indexes the declared zones.
func (d *DNS) ZoneSet() Zones {
	z := make(Zones, len(d.Zones))
	for _, zone := range d.Zones {
		z[CanonicalName(zone.Name)] = true
	}
	return z
}

// nameUse records what sits at a DNS name, for RFC 1034 collision checks.
type nameUse struct {
	rtype  string // A/AAAA are "address"; CNAME; or a static record type
	who    string // the owning source, e.g. Node/x, group api, records[3]
	owner  owner
	static bool // a static record of the DNS document
}

type dnsChecker struct {
	*checker
	d     *DNS
	zones Zones
	index ZoneIndex // of zones, once they are all declared
	names map[string][]nameUse
}

func (c *checker) dns(d *DNS) {
	dc := &dnsChecker{checker: c, d: d, zones: Zones{}, names: make(map[string][]nameUse, 12*len(c.site.Nodes))}
	m := &d.Meta
	for i, z := range d.Zones {
		name := CanonicalName(z.Name)
		if dc.zones[name] {
			c.errorf(m, fieldPath{"zones", i, "name"}, "duplicate-zone", "zone %q is declared twice", z.Name)
		}
		if strings.HasPrefix(name, "*") {
			c.errorf(m, fieldPath{"zones", i, "name"}, "bad-zone", "a zone name cannot be a wildcard")
		}
		if isReverse(name) {
			if msg := checkReverseZone(name); msg != "" {
				c.errorf(m, fieldPath{"zones", i, "name"}, "bad-reverse-zone", "%s", msg)
			}
		}
		dc.zones[name] = true
	}
	dc.index = dc.zones.Index()
	dc.targets()
	if pn := d.PrimaryName; pn != nil {
		c.pattern(m, fieldPath{"primaryName", "pattern"}, pn.Pattern)
		switch {
		case (pn.Network == "") == (pn.Role == ""):
			c.errorf(m, fieldPath{"primaryName"}, "primary-network", "give exactly one of network (a network's name) and role (each node's network of that role)")
			d.PrimaryName = nil // reported; do not cascade into every node
		case pn.Network != "" && c.missing(KindNetwork, pn.Network, c.site.Network(pn.Network) != nil):
			c.errorf(m, fieldPath{"primaryName", "network"}, "unknown-network", "network %q is not declared", pn.Network)
			d.PrimaryName = nil
		}
	}
	groups := dc.groups()
	dc.nodeNames(groups)
	dc.wildcards()
	dc.records()
	dc.collisions()
}

func isReverse(z string) bool {
	return z == "in-addr.arpa" || z == "ip6.arpa" || strings.HasSuffix(z, ".in-addr.arpa") || strings.HasSuffix(z, ".ip6.arpa")
}

func checkReverseZone(z string) string {
	if strings.HasSuffix(z, ".in-addr.arpa") {
		labels := strings.Split(strings.TrimSuffix(z, ".in-addr.arpa"), ".")
		if len(labels) > 4 {
			return fmt.Sprintf("%q has more than 4 octets", z)
		}
		for _, l := range labels {
			if n, err := strconv.Atoi(l); err != nil || n < 0 || n > 255 || strconv.Itoa(n) != l {
				return fmt.Sprintf("%q: label %q is not an octet (0-255)", z, l)
			}
		}
	}
	if strings.HasSuffix(z, ".ip6.arpa") {
		labels := strings.Split(strings.TrimSuffix(z, ".ip6.arpa"), ".")
		if len(labels) > 32 {
			return fmt.Sprintf("%q has more than 32 nibbles", z)
		}
		for _, l := range labels {
			if len(l) != 1 || !strings.Contains("0123456789abcdef", l) {
				return fmt.Sprintf("%q: label %q is not a hex nibble", z, l)
			}
		}
	}
	return ""
}

func (dc *dnsChecker) targets() {
	m := &dc.d.Meta
	served := map[string]bool{}
	seen := map[string]bool{}
	for i, t := range dc.d.Targets {
		p := fieldPath{"targets", i}
		if seen[t.Name] {
			dc.errorf(m, p.with("name"), "duplicate-target", "target %q is declared twice", t.Name)
		}
		seen[t.Name] = true
		for j, z := range t.Zones {
			name := CanonicalName(z)
			if !dc.zones[name] {
				dc.errorf(m, p.with("zones", j), "unknown-zone", "zone %q is not declared in zones", z)
			}
			served[name] = true
		}
	}
	for i, z := range dc.d.Zones {
		if !served[CanonicalName(z.Name)] {
			dc.errorf(m, fieldPath{"zones", i, "name"}, "zone-unserved", "zone %q is not served by any target", z.Name)
		}
	}
}

// use registers a record type at a name.
func (dc *dnsChecker) use(name, rtype, who string, o owner) {
	dc.names[name] = append(dc.names[name], nameUse{rtype: rtype, who: who, owner: o})
}

// forward checks that a name is valid and inside a declared zone.
func (dc *dnsChecker) forward(name string, o owner) bool {
	check := strings.TrimPrefix(name, "*.")
	if !validHostname(check) {
		dc.errorf(o.meta, o.path, "bad-dns-name", "%q is not a valid DNS name (RFC 1123: labels of a-z, 0-9 and '-', at most 63 characters)", name)
		return false
	}
	if dc.index.Find(name) == "" {
		dc.errorf(o.meta, o.path, "name-outside-zones", "%q is in no zone declared in the DNS document", name)
		return false
	}
	return true
}

// groups checks round-robin groups and counts their members.
func (dc *dnsChecker) groups() map[string]*Group {
	m := &dc.d.Meta
	out := map[string]*Group{}
	for i := range dc.d.Groups {
		g := &dc.d.Groups[i]
		p := fieldPath{"groups", i}
		if _, dup := out[g.Name]; dup {
			dc.errorf(m, p.with("name"), "duplicate-group", "group %q is declared twice", g.Name)
			continue
		}
		out[g.Name] = g
		if dc.missing(KindNetwork, g.Network, dc.site.Network(g.Network) != nil) {
			dc.errorf(m, p.with("network"), "unknown-network", "network %q is not declared", g.Network)
		}
		name := CanonicalName(g.FQDN)
		if dc.forward(name, owner{m, p.with("fqdn")}) {
			dc.use(name, "address", "group "+g.Name, owner{m, p.with("fqdn")})
		}
	}
	members := map[string]int{}
	for _, n := range dc.site.Nodes {
		for j, gname := range n.Groups {
			g := out[gname]
			if g == nil {
				dc.errorf(&n.Meta, fieldPath{"groups", j}, "unknown-group", "DNS group %q is not declared%s", gname, suggest(gname, groupNames(dc.d)))
				continue
			}
			if !n.attached(g.Network) {
				dc.errorf(&n.Meta, fieldPath{"groups", j}, "group-network", "node is in group %q but has no address on its network %q", gname, g.Network)
			}
		}
		if n.Exists() {
			for _, g := range dc.d.Groups {
				if n.InGroup(&g) && n.attached(g.Network) {
					members[g.Name]++
				}
			}
		}
	}
	for i, g := range dc.d.Groups {
		zone := dc.index.Find(g.FQDN)
		for _, t := range dc.d.Targets {
			limit := t.RecordLimit()
			if limit == 0 || !t.Serves(zone) {
				continue
			}
			if n := members[g.Name]; n > limit {
				dc.errorf(m, fieldPath{"groups", i}, "group-over-limit",
					"group %q has %d members, more than target %q accepts for one name and type (maxRecordsPerType %d; BIND 9.18.28+ answers SERVFAIL past its max-records-per-type, default 100): split the group or raise the target's limit",
					g.Name, n, t.Name, limit)
			}
		}
	}
	return out
}

func groupNames(d *DNS) []string {
	out := make([]string, len(d.Groups))
	for i, g := range d.Groups {
		out[i] = g.Name
	}
	return out
}

// InGroup reports whether the node belongs to a group, by listing it or by role.
func (n *Node) InGroup(g *Group) bool {
	for _, x := range n.Groups {
		if x == g.Name {
			return true
		}
	}
	for _, r := range g.Roles {
		for _, nr := range n.Roles {
			if r == nr {
				return true
			}
		}
	}
	return false
}

// attachment is the index of the node's first attachment to a network, or -1.
func (n *Node) attachment(network string) int {
	for i, a := range n.Networks {
		if a.Network == network {
			return i
		}
	}
	return -1
}

func (n *Node) attached(network string) bool {
	for _, a := range n.Networks {
		if a.Network == network {
			return true
		}
	}
	return false
}

// primaryNetwork is the network carrying the node's primary name, or "".
func (n *Node) primaryNetwork(s *Site, pn *PrimaryName) string {
	for _, a := range n.Addresses {
		if a.Interface == "bmc" {
			continue
		}
		if pn.Network != "" && a.Network == pn.Network {
			return a.Network
		}
		if net := s.Network(a.Network); pn.Role != "" && net != nil && net.Role == pn.Role {
			return a.Network
		}
	}
	return ""
}

// Address returns the node's address on a network.
func (n *Node) Address(network string) (Address, bool) {
	for _, a := range n.Addresses {
		if a.Network == network {
			return a, true
		}
	}
	return Address{}, false
}

// Serves reports whether the target serves a zone.
func (t *Target) Serves(zone string) bool {
	for _, z := range t.Zones {
		if CanonicalName(z) == zone {
			return true
		}
	}
	return false
}

// nodeNames expands every node's names and checks their reverse zones.
func (dc *dnsChecker) nodeNames(groups map[string]*Group) {
	domain := dc.site.Config.Domain
	pn := dc.d.PrimaryName
	for _, n := range dc.site.Nodes {
		if !n.Exists() {
			// Derived but not claimed: a decommissioned node keeps its
			// names only until anneal has powered it off, and yields them
			// to any node the site now gives them to.
			retiredNames(dc.site, n, pn, domain)
			continue
		}
		m := &n.Meta
		who := "Node/" + n.Name
		for i := range n.Addresses {
			a := &n.Addresses[i]
			net := dc.site.Network(a.Network)
			if net == nil || net.DNS == nil {
				continue
			}
			// Addresses skip attachments that failed (unknown network,
			// duplicate): find the attachment by network, not by index.
			p := fieldPath{"networks", n.attachment(a.Network)}
			if a.Interface == "bmc" {
				p = fieldPath{"bmc"}
			}
			a.FQDN = ExpandPattern(net.DNS.Pattern, n.Name, net.Name, n.Region, n.Rack, domain)
			a.Reverse = net.DNS.PublishReverse()
			if dc.forward(a.FQDN, owner{m, p}) {
				dc.use(a.FQDN, "address", who, owner{m, p})
			}
			if !a.Reverse {
				continue
			}
			for _, ip := range []netip.Addr{a.IPv4, a.IPv6} {
				if ip.IsValid() && dc.index.Find(ReverseName(ip)) == "" {
					dc.errorf(m, p, "no-reverse-zone", "address %s on network %s has no reverse zone: declare one such as %s (or set dns.reverse: false on the network)", ip, net.Name, suggestReverseZone(ip, net))
				}
			}
		}
		if pn == nil {
			if len(n.Aliases) > 0 {
				dc.errorf(m, fieldPath{"aliases"}, "alias-without-primary", "aliases point at the node's primary name, but the DNS document has no primaryName")
			}
			continue
		}
		if primary := n.primaryNetwork(dc.site, pn); primary == "" {
			what := fmt.Sprintf("network %q", pn.Network)
			if pn.Role != "" {
				what = fmt.Sprintf("a network of role %s", pn.Role)
			}
			dc.errorf(m, fieldPath{"networks"}, "no-primary-address", "node has no address on %s, which carries primary names", what)
		} else {
			n.PrimaryNetwork = primary
			n.PrimaryFQDN = ExpandPattern(pn.Pattern, n.Name, primary, n.Region, n.Rack, domain)
			if dc.forward(n.PrimaryFQDN, owner{m, fieldPath{"name"}}) {
				dc.use(n.PrimaryFQDN, "address", who, owner{m, fieldPath{"name"}})
			}
		}
		for j, alias := range n.Aliases {
			name := AliasFQDN(alias, n.Region, domain)
			o := owner{m, fieldPath{"aliases", j}}
			if dc.forward(name, o) {
				n.AliasFQDNs = append(n.AliasFQDNs, name)
				dc.use(name, "CNAME", who+" alias", o)
			}
		}
	}
}

// retiredNames derives a decommissioned node's address names and primary
// name, without checks.
func retiredNames(site *Site, n *Node, pn *PrimaryName, domain string) {
	for i := range n.Addresses {
		a := &n.Addresses[i]
		if net := site.Network(a.Network); net != nil && net.DNS != nil {
			a.FQDN = ExpandPattern(net.DNS.Pattern, n.Name, net.Name, n.Region, n.Rack, domain)
			a.Reverse = net.DNS.PublishReverse()
		}
	}
	if pn != nil {
		if primary := n.primaryNetwork(site, pn); primary != "" {
			n.PrimaryNetwork = primary
			n.PrimaryFQDN = ExpandPattern(pn.Pattern, n.Name, primary, n.Region, n.Rack, domain)
		}
	}
}

// AliasFQDN resolves an alias: absolute with a trailing dot, otherwise
// relative to the node's region sub-domain (db1 → db1.east.example.net).
func AliasFQDN(alias, region, domain string) string {
	if strings.HasSuffix(alias, ".") {
		return CanonicalName(alias)
	}
	return CanonicalName(alias + "." + region + "." + CanonicalName(domain))
}

// ReverseName is the in-addr.arpa or ip6.arpa name of an address.
func ReverseName(ip netip.Addr) string {
	if ip.Is4() {
		b := ip.As4()
		buf := make([]byte, 0, 29)
		for i := 3; i >= 0; i-- {
			buf = strconv.AppendUint(buf, uint64(b[i]), 10)
			buf = append(buf, '.')
		}
		return string(append(buf, "in-addr.arpa"...))
	}
	const hex = "0123456789abcdef"
	b := ip.As16()
	var s strings.Builder
	s.Grow(72)
	for i := 15; i >= 0; i-- {
		s.WriteByte(hex[b[i]&0xf])
		s.WriteByte('.')
		s.WriteByte(hex[b[i]>>4])
		s.WriteByte('.')
	}
	s.WriteString("ip6.arpa")
	return s.String()
}

func suggestReverseZone(ip netip.Addr, net *Network) string {
	if ip.Is4() && net.IPv4 != nil {
		bits := net.IPv4.Prefix.Bits() / 8 * 8
		p := netip.PrefixFrom(ip, bits).Masked()
		parts := strings.Split(ReverseName(p.Addr()), ".")
		return strings.Join(parts[4-bits/8:], ".")
	}
	if net.IPv6 != nil {
		nibbles := net.IPv6.NetPrefix.Bits() / 4
		parts := strings.Split(ReverseName(ip), ".")
		return strings.Join(parts[32-nibbles:], ".")
	}
	return "a reverse zone"
}

func (dc *dnsChecker) wildcards() {
	m := &dc.d.Meta
	for i, w := range dc.d.Wildcards {
		p := fieldPath{"wildcards", i}
		name := CanonicalName(w.Name)
		if !strings.HasPrefix(name, "*.") || strings.Contains(name[2:], "*") {
			dc.errorf(m, p.with("name"), "bad-wildcard", "%q is not a wildcard name: it must start with \"*.\"", w.Name)
			continue
		}
		if !validHostname(w.Target) {
			dc.errorf(m, p.with("target"), "bad-dns-name", "%q is not a valid DNS name", w.Target)
		}
		if dc.forward(name, owner{m, p.with("name")}) {
			dc.use(name, "CNAME", fmt.Sprintf("wildcards[%d]", i), owner{m, p.with("name")})
		}
	}
}

func (dc *dnsChecker) records() {
	m := &dc.d.Meta
	for i, r := range dc.d.Records {
		p := fieldPath{"records", i}
		name := CanonicalName(r.Name)
		if msg := checkRData(r.Type, r.Value); msg != "" {
			dc.errorf(m, p.with("value"), "bad-record", "%s record: %s", r.Type, msg)
		}
		if r.Type == "PTR" {
			if !isReverse(dc.index.Find(name)) {
				dc.errorf(m, p.with("name"), "bad-record", "a PTR record belongs in a reverse zone")
			}
			continue
		}
		o := owner{m, p.with("name")}
		if !dc.forwardRecordName(name, o) {
			continue
		}
		rtype := r.Type
		if rtype == "A" || rtype == "AAAA" {
			rtype = "address"
		}
		dc.names[name] = append(dc.names[name], nameUse{rtype: rtype, who: fmt.Sprintf("records[%d]", i), owner: o, static: true})
	}
}

// forwardRecordName allows underscore labels (_sip._tcp) in static records.
func (dc *dnsChecker) forwardRecordName(name string, o owner) bool {
	check := strings.ReplaceAll(strings.TrimPrefix(name, "*."), "_", "x")
	if !validHostname(check) {
		dc.errorf(o.meta, o.path, "bad-dns-name", "%q is not a valid DNS name", name)
		return false
	}
	if dc.index.Find(name) == "" {
		dc.errorf(o.meta, o.path, "name-outside-zones", "%q is in no zone declared in the DNS document", name)
		return false
	}
	return true
}

func checkRData(rtype, v string) string {
	f := strings.Fields(v)
	switch rtype {
	case "A":
		if a, err := netip.ParseAddr(v); err != nil || !a.Is4() {
			return fmt.Sprintf("%q is not an IPv4 address", v)
		}
	case "AAAA":
		if a, err := netip.ParseAddr(v); err != nil || !a.Is6() || a.Is4In6() {
			return fmt.Sprintf("%q is not an IPv6 address", v)
		}
	case "CNAME", "NS", "PTR":
		if !validHostname(strings.ReplaceAll(v, "_", "x")) {
			return fmt.Sprintf("%q is not a DNS name", v)
		}
	case "MX":
		if len(f) != 2 || !isUint(f[0], 65535) || !validHostname(f[1]) {
			return fmt.Sprintf("%q: want \"PREFERENCE HOST\"", v)
		}
	case "SRV":
		if len(f) != 4 || !isUint(f[0], 65535) || !isUint(f[1], 65535) || !isUint(f[2], 65535) || !validHostname(f[3]) {
			return fmt.Sprintf("%q: want \"PRIORITY WEIGHT PORT TARGET\"", v)
		}
	case "CAA":
		if len(f) < 3 || !isUint(f[0], 255) {
			return fmt.Sprintf("%q: want \"FLAGS TAG VALUE\"", v)
		}
	}
	return ""
}

func isUint(s string, max int) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0 && n <= max
}

// collisions: a CNAME stands alone at its name (RFC 1034 §3.6.2), and one
// name's addresses come from one owner (or a round-robin group, not both).
func (dc *dnsChecker) collisions() {
	for name, uses := range dc.names {
		if len(uses) < 2 {
			continue
		}
		first := uses[0]
		for _, u := range uses[1:] {
			switch {
			case u.who == first.who && u.rtype == first.rtype:
				continue // the same node naming the same address twice
			case u.rtype == "CNAME" || first.rtype == "CNAME":
				// Point at the CNAME, whichever was declared first: it is
				// the record that must stand alone.
				at, other := u, first
				if u.rtype != "CNAME" {
					at, other = first, u
				}
				dc.errorf(at.owner.meta, at.owner.path, "cname-collision", "%q: a CNAME cannot share its name with other records (RFC 1034); %s also uses it (%s)", name, other.who, other.owner)
			case u.static && first.static:
				continue // static A/AAAA records at one name: a round robin, or dual stack
			case u.rtype == "address" && first.rtype == "address":
				dc.errorf(u.owner.meta, u.owner.path, "name-collision", "%q is also the name of %s (%s)", name, first.who, first.owner)
			}
		}
	}
}
