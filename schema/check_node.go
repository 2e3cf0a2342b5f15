package schema

import (
	"net/netip"
)

// deviceKind is what a name on a node denotes.
type deviceKind int

const (
	devInterface deviceKind = iota + 1
	devBond
	devBridge
	devVLAN
)

func (k deviceKind) String() string {
	return [...]string{"", "interface", "bond", "bridge", "VLAN"}[k]
}

type device struct {
	kind deviceKind
	path fieldPath
	vlan int // VLAN id for devVLAN
}

func (c *checker) node(n *Node) {
	m := &n.Meta
	cfg := c.site.Config
	if n.State == "" {
		n.State = StateActive
	}
	if !c.hasRegion(n.Region) {
		c.errorf(m, fieldPath{"region"}, "unknown-region", "region %q is not declared in the Site document", n.Region)
	}
	if r, ok := c.regionOf(n.Rack); !ok {
		c.errorf(m, fieldPath{"rack"}, "unknown-rack", "rack %q is not declared in the Site document", n.Rack)
	} else if r != n.Region && c.hasRegion(n.Region) {
		c.errorf(m, fieldPath{"rack"}, "rack-region", "rack %q is in region %q, not %q", n.Rack, r, n.Region)
	}
	profile := c.site.HardwareProfile(n.HardwareProfile)
	if c.missing(KindHardwareProfile, n.HardwareProfile, profile != nil) {
		c.errorf(m, fieldPath{"hardwareProfile"}, "unknown-hardware-profile", "hardware profile %q is not declared%s", n.HardwareProfile, suggest(n.HardwareProfile, names(c.site.HardwareProfiles)))
	}
	if n.Image == "" {
		n.Image = cfg.Defaults.Image
		if n.Image == "" {
			c.errorf(m, nil, "no-image", "node has no image and the Site has no defaults.image")
		}
	} else if c.missing(KindImage, n.Image, c.site.Image(n.Image) != nil) {
		c.errorf(m, fieldPath{"image"}, "unknown-image", "image %q is not declared%s", n.Image, suggest(n.Image, names(c.site.Images)))
	}
	if n.PatchSet == "" {
		n.PatchSet = cfg.Defaults.PatchSet
	} else if c.missing(KindPatchSet, n.PatchSet, c.site.PatchSet(n.PatchSet) != nil) {
		c.errorf(m, fieldPath{"patchSet"}, "unknown-patch-set", "patch set %q is not declared%s", n.PatchSet, suggest(n.PatchSet, names(c.site.PatchSets)))
	}
	if n.PatchSet == "" && n.Image != "" {
		c.errorf(m, nil, "no-patch-set", "node has no patchSet and the Site has no defaults.patchSet")
	}
	devs := c.devices(n, profile)
	c.attachments(n, devs)
	c.bmc(n)
}

// devices checks interfaces, bonds, bridges and VLANs, returning every
// device name of the node.
func (c *checker) devices(n *Node, profile *HardwareProfile) map[string]device {
	m := &n.Meta
	devs := map[string]device{}
	declare := func(name string, d device) bool {
		if prev, dup := devs[name]; dup {
			c.errorf(m, d.path, "duplicate-device", "device name %q is already the %s at %s", name, prev.kind, prev.path)
			return false
		}
		devs[name] = d
		return true
	}
	for i, ifc := range n.Interfaces {
		p := fieldPath{"interfaces", i}
		if profile != nil && !hasNIC(profile, ifc.NIC) {
			c.errorf(m, p.with("nic"), "unknown-nic", "hardware profile %q has no NIC %q%s", profile.Name, ifc.NIC, suggest(ifc.NIC, nicNames(profile)))
		}
		declare(ifc.NIC, device{kind: devInterface, path: p.with("nic")})
		if n.Exists() {
			c.claimMAC(ifc.MAC, owner{m, p.with("mac")})
		}
	}
	if n.BMC.MAC != "" && n.Exists() {
		c.claimMAC(n.BMC.MAC, owner{m, fieldPath{"bmc", "mac"}})
	}
	enslaved := map[string]string{} // member → bond or bridge
	enslave := func(member, master string, p fieldPath, allowed ...deviceKind) {
		d, ok := devs[member]
		switch {
		case !ok:
			c.errorf(m, p, "unknown-member", "%s member %q is not a device of this node", master, member)
			return
		case !kindIn(d.kind, allowed):
			c.errorf(m, p, "bad-member", "%q is a %s and cannot be a member of %s", member, d.kind, master)
			return
		}
		if prev, used := enslaved[member]; used {
			c.errorf(m, p, "member-reused", "%q is already a member of %s; a device can be enslaved once", member, prev)
			return
		}
		enslaved[member] = master
	}
	for i, b := range n.Bonds {
		declare(b.Name, device{kind: devBond, path: fieldPath{"bonds", i, "name"}})
		for j, mem := range b.Members {
			enslave(mem, "bond "+b.Name, fieldPath{"bonds", i, "members", j}, devInterface)
		}
	}
	// VLANs before bridges: a bridge commonly sits on a VLAN (br-public on bond0.30).
	for i, v := range n.VLANs {
		declare(v.Name, device{kind: devVLAN, path: fieldPath{"vlans", i, "name"}, vlan: v.ID})
	}
	for i, b := range n.Bridges {
		declare(b.Name, device{kind: devBridge, path: fieldPath{"bridges", i, "name"}})
	}
	for i, b := range n.Bridges {
		for j, mem := range b.Members {
			enslave(mem, "bridge "+b.Name, fieldPath{"bridges", i, "members", j}, devInterface, devBond, devVLAN)
		}
	}
	for i, v := range n.VLANs {
		p := fieldPath{"vlans", i, "link"}
		link, ok := devs[v.Link]
		switch {
		case !ok:
			c.errorf(m, p, "unknown-device", "VLAN link %q is not a device of this node", v.Link)
		case link.kind == devVLAN:
			c.errorf(m, p, "bad-link", "VLAN on VLAN (%q) is not supported", v.Link)
		case enslaved[v.Link] != "":
			c.errorf(m, p, "bad-link", "%q is a member of %s and cannot carry VLANs", v.Link, enslaved[v.Link])
		}
	}
	for name, d := range devs {
		if master := enslaved[name]; master != "" {
			d.vlan = -1 // marks enslaved devices for attachment checks
			devs[name] = d
		}
	}
	return devs
}

func kindIn(k deviceKind, ks []deviceKind) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

func hasNIC(p *HardwareProfile, name string) bool {
	for _, n := range p.NICs {
		if n.Name == name {
			return true
		}
	}
	return false
}

func nicNames(p *HardwareProfile) []string {
	out := make([]string, len(p.NICs))
	for i, n := range p.NICs {
		out[i] = n.Name
	}
	return out
}

func (c *checker) claimMAC(mac string, o owner) {
	if prev, dup := c.macs[mac]; dup {
		c.errorf(o.meta, o.path, "duplicate-mac", "MAC %s is also %s", mac, prev)
		return
	}
	c.macs[mac] = o
}

func (c *checker) claimAddr(network string, a netip.Addr, o owner) {
	k := addrKey{network, a}
	if prev, dup := c.addrs[k]; dup {
		c.errorf(o.meta, o.path, "duplicate-address", "address %s on network %s is also %s", a, network, prev)
		return
	}
	c.addrs[k] = o
}

// attachments checks where networks sit and derives the node's addresses.
func (c *checker) attachments(n *Node, devs map[string]device) {
	m := &n.Meta
	seen := map[string]int{}
	untagged := map[string]string{} // device → network
	provisioned := false
	for i, at := range n.Networks {
		p := fieldPath{"networks", i}
		net := c.site.Network(at.Network)
		if net == nil {
			if !c.missing(KindNetwork, at.Network, false) {
				continue
			}
			c.errorf(m, p.with("network"), "unknown-network", "network %q is not declared%s", at.Network, suggest(at.Network, names(c.site.Networks)))
			continue
		}
		if j, dup := seen[at.Network]; dup {
			c.errorf(m, p.with("network"), "duplicate-attachment", "network %q is already attached at networks[%d]", at.Network, j)
			continue
		}
		seen[at.Network] = i
		if net.Region != "" && net.Region != n.Region {
			c.errorf(m, p.with("network"), "network-region", "network %q belongs to region %q, the node to %q", net.Name, net.Region, n.Region)
		}
		if net.Role == RoleBMC {
			c.errorf(m, p.with("network"), "bmc-attachment", "network %q is the BMC network: the BMC is reached through bmc, not through an OS interface", net.Name)
		}
		d, ok := devs[at.Interface]
		switch {
		case !ok:
			c.errorf(m, p.with("interface"), "unknown-device", "interface %q is not an interface, bond, bridge or VLAN of this node", at.Interface)
		case d.vlan < 0:
			c.errorf(m, p.with("interface"), "enslaved-device", "%q is a bond or bridge member and cannot carry network %q itself", at.Interface, net.Name)
		case d.kind == devVLAN && d.vlan != net.VLAN:
			c.errorf(m, p.with("interface"), "vlan-mismatch", "network %q is VLAN %d but %q tags VLAN %d", net.Name, net.VLAN, at.Interface, d.vlan)
		case d.kind != devVLAN:
			if other, dup := untagged[at.Interface]; dup {
				c.errorf(m, p.with("interface"), "two-untagged", "networks %q and %q are both untagged on %q; put one on a VLAN sub-interface", other, net.Name, at.Interface)
			}
			untagged[at.Interface] = net.Name
		}
		if net.Provisioning {
			provisioned = true
			if ok && d.kind == devVLAN {
				c.errorf(m, p.with("interface"), "provisioning-tagged", "the provisioning network must be untagged: PXE firmware does not send VLAN tags")
			}
		}
		addr := Address{Network: net.Name, Interface: at.Interface}
		if net.IPv4 != nil && net.IPv4.Prefix.IsValid() {
			addr.IPv4 = c.hostAddr(n, p, "ipv4", at.IPv4, net.Name, net.IPv4.Prefix, net.IPv4.GW)
		} else if at.IPv4 != "" {
			c.errorf(m, p.with("ipv4"), "no-ipv4", "network %q has no IPv4 prefix", net.Name)
		}
		if net.IPv6 != nil && net.IPv6.NetPrefix.IsValid() {
			addr.IPv6 = c.hostAddr(n, p, "ipv6", at.IPv6, net.Name, net.IPv6.NetPrefix, net.IPv6.GW)
		} else if at.IPv6 != "" {
			c.errorf(m, p.with("ipv6"), "no-ipv6", "network %q has no IPv6 prefix", net.Name)
		}
		n.Addresses = append(n.Addresses, addr)
	}
	if !provisioned && n.Exists() {
		c.errorf(m, fieldPath{"networks"}, "no-provisioning", "node is not attached to a provisioning network: it could never be rebuilt")
	}
}

// hostAddr derives (or parses the override of) one address and claims it.
func (c *checker) hostAddr(n *Node, at fieldPath, field, override, network string, p netip.Prefix, gw netip.Addr) netip.Addr {
	m := &n.Meta
	var a netip.Addr
	if override != "" {
		var err error
		a, err = netip.ParseAddr(override)
		switch {
		case err != nil || a.Is4() != p.Addr().Is4():
			c.errorf(m, at.with(field), "bad-address", "%q is not an %s address", override, field)
			return netip.Addr{}
		case !p.Contains(a):
			c.errorf(m, at.with(field), "address-outside", "%s is outside network %s (%s)", a, network, p)
			return netip.Addr{}
		case a == p.Addr() || a.Is4() && a == lastAddr4(p):
			c.errorf(m, at.with(field), "address-reserved", "%s is the network or broadcast address of %s", a, p)
			return netip.Addr{}
		}
	} else {
		var err error
		if p.Addr().Is4() {
			a, err = HostAddress4(p, n.HostIndex)
		} else {
			a, err = HostAddress6(p, n.HostIndex)
		}
		if err != nil {
			c.errorf(m, fieldPath{"hostIndex"}, "host-index-range", "on network %s: %v", network, err)
			return netip.Addr{}
		}
	}
	// A derived address is the hostIndex's doing: point there.
	path := at.with(field)
	if override == "" {
		path = fieldPath{"hostIndex"}
	}
	if a == gw {
		c.errorf(m, path, "address-is-gateway", "%s is the gateway of network %s", a, network)
		return netip.Addr{}
	}
	if n.Exists() {
		c.claimAddr(network, a, owner{m, path})
	}
	return a
}

// bmc resolves the BMC address: explicit, or hostIndex on the bmc network.
func (c *checker) bmc(n *Node) {
	m := &n.Meta
	net := c.networkFor(n.Region, func(x *Network) bool { return x.Role == RoleBMC })
	if n.BMC.Address != "" {
		a, err := netip.ParseAddr(n.BMC.Address)
		if err != nil {
			if !validHostname(n.BMC.Address) {
				c.errorf(m, fieldPath{"bmc", "address"}, "bad-address", "%q is neither an IP address nor a host name", n.BMC.Address)
			}
			return
		}
		if a.Zone() != "" {
			// The zone picks the interface a link-local address is reached
			// on: not the site's to choose.
			c.errorf(m, fieldPath{"bmc", "address"}, "bad-address", "%q: a BMC address takes no IPv6 zone", n.BMC.Address)
			return
		}
		if net != nil && n.Exists() && (net.IPv4 != nil && net.IPv4.Prefix.Contains(a) || net.IPv6 != nil && net.IPv6.NetPrefix.Contains(a)) {
			c.claimAddr(net.Name, a, owner{m, fieldPath{"bmc", "address"}})
			addr := Address{Network: net.Name, Interface: "bmc"}
			if a.Is4() {
				addr.IPv4 = a
			} else {
				addr.IPv6 = a
			}
			n.Addresses = append(n.Addresses, addr)
		}
		return
	}
	if net == nil {
		c.errorf(m, fieldPath{"bmc"}, "no-bmc-address", "bmc has no address and there is no network with role bmc for region %q", n.Region)
		return
	}
	addr := Address{Network: net.Name, Interface: "bmc"}
	if net.IPv4 != nil && net.IPv4.Prefix.IsValid() {
		addr.IPv4 = c.hostAddr(n, fieldPath{"bmc"}, "address", "", net.Name, net.IPv4.Prefix, net.IPv4.GW)
	}
	if net.IPv6 != nil && net.IPv6.NetPrefix.IsValid() {
		addr.IPv6 = c.hostAddr(n, fieldPath{"bmc"}, "address", "", net.Name, net.IPv6.NetPrefix, net.IPv6.GW)
	}
	switch {
	case addr.IPv4.IsValid():
		n.BMC.Address = addr.IPv4.String()
	case addr.IPv6.IsValid():
		n.BMC.Address = addr.IPv6.String()
	}
	n.Addresses = append(n.Addresses, addr)
}
