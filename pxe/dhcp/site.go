package dhcp

import (
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/anneal-dev/anneal/schema"
)

// LeasesFromSite builds the static reservations of a site, keyed by MAC in
// net.HardwareAddr.String() form (lower-case, colon-separated).
//
// Every node that exists (not decommissioned) gets one reservation per MAC
// that sits on a provisioning network with IPv4: the MAC of the interface
// carrying the attachment or, when the attachment is on a bond or a bridge,
// of every physical interface under it. The address is the node's derived
// address on that network; mask, router and MTU come from the network.
// The resolvers are the provisioning network's IPv4 resolvers or, when it
// declares none, the IPv4 resolvers of the node's other networks in
// attachment order (those its installed system gets, see
// reconcile/node.BuildSpecOf). The hostname is the node's name and the
// domain the rest of its primary FQDN (the site's domain when the node has
// none); the search list is the site's domain, as in the installed system.
// Only what the site declares is in a lease: a network without resolvers
// or MTU, a site without a domain, gives none, and a domain that is not a
// valid DNS name is left out. A MAC claimed twice keeps its first
// reservation, in site order.
func LeasesFromSite(site *schema.Site) map[string]Lease {
	leases := map[string]Lease{}
	if site == nil {
		return leases
	}
	domain := ""
	var search []string
	if site.Config != nil {
		domain = site.Config.Domain
		if d, ok := dnsName(domain); ok {
			search = []string{d}
		}
	}
	for _, n := range site.Nodes {
		if !n.Exists() {
			continue
		}
		for _, a := range n.Addresses {
			nw := site.Network(a.Network)
			if nw == nil || !nw.Provisioning || nw.IPv4 == nil || !a.IPv4.Is4() || !nw.IPv4.Prefix.IsValid() {
				continue
			}
			l := Lease{
				IP:       net.IP(a.IPv4.AsSlice()),
				Mask:     net.CIDRMask(nw.IPv4.Prefix.Bits(), 32),
				DNS:      resolvers(site, n, nw),
				Hostname: n.Name,
				Search:   search,
			}
			if d, ok := dnsName(nodeDomain(n, domain)); ok {
				l.Domain = d
			}
			if nw.IPv4.GW.Is4() {
				l.Router = net.IP(nw.IPv4.GW.AsSlice())
			}
			if nw.MTU >= minMTU && nw.MTU <= maxMTU {
				l.MTU = nw.MTU
			}
			for _, mac := range macsUnder(n, a.Interface) {
				if _, dup := leases[mac]; !dup {
					leases[mac] = l
				}
			}
		}
	}
	return leases
}

// LookupFrom returns a Config.Lookup over a reservation map (from
// LeasesFromSite). The map must not change afterwards: swap in a new
// Lookup (behind the caller's own snapshot) when the site changes.
func LookupFrom(leases map[string]Lease) func(net.HardwareAddr) (Lease, bool) {
	return func(mac net.HardwareAddr) (Lease, bool) {
		l, ok := leases[mac.String()]
		return l, ok
	}
}

// Option 26's bounds: RFC 2132 section 5.1 (at least 68) and its two bytes.
const (
	minMTU = 68
	maxMTU = 65535
)

// resolvers are the IPv4 resolvers a node gets on the provisioning network
// prov: prov's own, else those of the node's networks in attachment order,
// without repeats. Option 6 carries IPv4 addresses only.
func resolvers(site *schema.Site, n *schema.Node, prov *schema.Network) []net.IP {
	if own := ipv4s(prov.Resolvers); len(own) > 0 {
		return own
	}
	var out []net.IP
	for _, a := range n.Addresses {
		nw := site.Network(a.Network)
		if nw == nil {
			continue
		}
		for _, ip := range ipv4s(nw.Resolvers) {
			if !slices.ContainsFunc(out, ip.Equal) {
				out = append(out, ip)
			}
		}
	}
	return out
}

// ipv4s parses the IPv4 addresses among rs, in order, without repeats;
// IPv6 addresses and anything unparsable are skipped.
func ipv4s(rs []string) []net.IP {
	var out []net.IP
	for _, r := range rs {
		a, err := netip.ParseAddr(strings.TrimSpace(r))
		if err != nil || !a.Is4() || a.IsUnspecified() {
			continue
		}
		ip := net.IP(a.AsSlice())
		if !slices.ContainsFunc(out, ip.Equal) {
			out = append(out, ip)
		}
	}
	return out
}

// dnsName returns s without its trailing dot if it is a DNS name a DHCP
// client can take as a domain (options 15 and 119): dot-separated labels
// of 1 to 63 letters, digits, hyphens or underscores, not starting or
// ending with a hyphen, at most 253 bytes in all. "" is not a name.
func dnsName(s string) (string, bool) {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return "", false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", false
			}
		}
	}
	return s, true
}

// nodeDomain is the domain part of the node's primary FQDN, or def.
func nodeDomain(n *schema.Node, def string) string {
	fqdn := strings.TrimSuffix(n.PrimaryFQDN, ".")
	if rest, ok := strings.CutPrefix(fqdn, n.Name+"."); ok && rest != "" {
		return rest
	}
	return strings.TrimSuffix(def, ".")
}

// macsUnder returns the MACs of the physical interfaces a device stands on:
// the interface itself, or the members of a bond or bridge (recursively).
// VLAN sub-interfaces are not followed: PXE firmware does not tag.
func macsUnder(n *schema.Node, dev string) []string {
	var out []string
	seen := map[string]bool{}
	var walk func(string)
	walk = func(dev string) {
		if seen[dev] {
			return
		}
		seen[dev] = true
		for _, i := range n.Interfaces {
			if i.NIC == dev {
				if hw, err := net.ParseMAC(i.MAC); err == nil {
					out = append(out, hw.String())
				}
				return
			}
		}
		for _, b := range n.Bonds {
			if b.Name == dev {
				for _, m := range b.Members {
					walk(m)
				}
				return
			}
		}
		for _, b := range n.Bridges {
			if b.Name == dev {
				for _, m := range b.Members {
					walk(m)
				}
				return
			}
		}
	}
	walk(dev)
	return out
}
