package dhcp

import (
	"net"
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
// address on that network; mask and router come from the network. The
// hostname is the node's name and the domain the rest of its primary FQDN
// (the site's domain when the node has none). A MAC claimed twice keeps
// its first reservation, in site order.
func LeasesFromSite(site *schema.Site) map[string]Lease {
	leases := map[string]Lease{}
	if site == nil {
		return leases
	}
	domain := ""
	if site.Config != nil {
		domain = site.Config.Domain
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
				Hostname: n.Name,
				Domain:   nodeDomain(n, domain),
			}
			if nw.IPv4.GW.Is4() {
				l.Router = net.IP(nw.IPv4.GW.AsSlice())
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
