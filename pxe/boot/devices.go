package boot

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// devKind is what a network device is.
type devKind int

const (
	devEther devKind = iota
	devBond
	devVLAN
	devBridge
)

// bondMIIMonitor is the link monitoring interval (ms) every bond gets, so an
// active-backup bond notices a dead link.
const bondMIIMonitor = 100

// device is one network device of a build, with everything the netplan,
// kickstart and ifupdown renderers need.
type device struct {
	name    string
	kind    devKind
	mac     string   // ether: the MAC it is bound to
	members []string // bond, bridge
	mode    string   // bond mode
	stp     bool     // bridge
	link    string   // vlan: parent device
	vlanID  int      // vlan
	master  string   // the bond or bridge this device is enslaved to
	mtu     int      // effective MTU (0: leave the default)
	// The addresses on this device (CIDR) and its default gateways.
	v4, v6     []netip.Prefix
	gw4, gw6   netip.Addr
	nameserver bool // carries the resolvers and search domains
	parentOf   bool // some VLAN sits on it
}

// addressed reports whether the device carries an address.
func (d *device) addressed() bool { return len(d.v4) > 0 || len(d.v6) > 0 }

// unused reports whether nothing is configured on the device.
func (d *device) unused() bool { return !d.addressed() && d.master == "" && !d.parentOf }

// topology is a build's network as devices, ordered ethernets (in interface
// order), bonds, VLANs, bridges: the order each can be created in.
type topology struct {
	devices   []*device
	byName    map[string]*device
	resolvers []netip.Addr
	search    []string
}

// topologyOf checks a build's network and resolves it into devices: every
// member, link and address device must be declared, names must be safe to
// write into configuration files and shell commands, and MTUs are raised
// along links and memberships so that a VLAN's MTU fits its parent.
func topologyOf(n node.NetworkSpec) (*topology, error) {
	t := &topology{byName: map[string]*device{}}
	add := func(d *device) error {
		if !safeName(d.name) {
			return fmt.Errorf("device name %q is not a plain interface name", d.name)
		}
		if t.byName[d.name] != nil {
			return fmt.Errorf("device %s is declared twice", d.name)
		}
		t.byName[d.name] = d
		t.devices = append(t.devices, d)
		return nil
	}
	for _, i := range n.Interfaces {
		hw, err := net.ParseMAC(i.MAC)
		if err != nil {
			return nil, fmt.Errorf("interface %s: MAC %q: %w", i.NIC, i.MAC, err)
		}
		if err := add(&device{name: i.NIC, kind: devEther, mac: hw.String()}); err != nil {
			return nil, err
		}
	}
	for _, b := range n.Bonds {
		if !safeName(b.Mode) {
			return nil, fmt.Errorf("bond %s: mode %q is not a plain word", b.Name, b.Mode)
		}
		if err := add(&device{name: b.Name, kind: devBond, mode: b.Mode, members: b.Members}); err != nil {
			return nil, err
		}
	}
	for _, v := range n.VLANs {
		if err := add(&device{name: v.Name, kind: devVLAN, link: v.Link, vlanID: v.ID}); err != nil {
			return nil, err
		}
	}
	for _, b := range n.Bridges {
		if err := add(&device{name: b.Name, kind: devBridge, members: b.Members, stp: b.STP}); err != nil {
			return nil, err
		}
	}
	for _, d := range t.devices {
		for _, m := range d.members {
			md := t.byName[m]
			switch {
			case md == nil:
				return nil, fmt.Errorf("%s: member %s is not declared", d.name, m)
			case md.master != "":
				return nil, fmt.Errorf("%s: member %s is already a member of %s", d.name, m, md.master)
			case d.kind == devBond && md.kind != devEther:
				return nil, fmt.Errorf("bond %s: member %s is not an ethernet interface", d.name, m)
			}
			md.master = d.name
		}
		if d.kind == devVLAN {
			p := t.byName[d.link]
			if p == nil {
				return nil, fmt.Errorf("VLAN %s: link %s is not declared", d.name, d.link)
			}
			if d.vlanID < 1 || d.vlanID > 4094 {
				return nil, fmt.Errorf("VLAN %s: id %d is not in 1..4094", d.name, d.vlanID)
			}
			p.parentOf = true
		}
	}
	if err := t.addresses(n.Addresses); err != nil {
		return nil, err
	}
	t.raiseMTUs()
	for _, r := range n.Resolvers {
		a, err := netip.ParseAddr(r)
		if err != nil {
			return nil, fmt.Errorf("resolver %q: %w", r, err)
		}
		t.resolvers = append(t.resolvers, a)
	}
	for _, s := range n.Search {
		if !safeName(s) {
			return nil, fmt.Errorf("search domain %q is not a plain domain name", s)
		}
	}
	t.search = n.Search
	return t, nil
}

// addresses places each network's addresses and gateways on its device and
// picks the device that carries the DNS configuration: the one with the
// IPv4 default route, else the IPv6 one, else the first addressed device.
func (t *topology) addresses(as []node.AddressSpec) error {
	var dns4, dns6, first *device
	for _, a := range as {
		d := t.byName[a.Device]
		if d == nil {
			return fmt.Errorf("network %s: device %s is not declared", a.Network, a.Device)
		}
		if d.master != "" {
			return fmt.Errorf("network %s: device %s is a member of %s and cannot carry an address", a.Network, a.Device, d.master)
		}
		for _, ip := range []struct {
			cidr string
			list *[]netip.Prefix
		}{{a.IPv4, &d.v4}, {a.IPv6, &d.v6}} {
			if ip.cidr == "" {
				continue
			}
			p, err := netip.ParsePrefix(ip.cidr)
			if err != nil {
				return fmt.Errorf("network %s: address %q: %w", a.Network, ip.cidr, err)
			}
			*ip.list = append(*ip.list, p)
		}
		if a.Gateway4 != "" {
			gw, err := netip.ParseAddr(a.Gateway4)
			if err != nil || !gw.Is4() {
				return fmt.Errorf("network %s: IPv4 gateway %q is not an IPv4 address", a.Network, a.Gateway4)
			}
			d.gw4, dns4 = gw, cmpOr(dns4, d)
		}
		if a.Gateway6 != "" {
			gw, err := netip.ParseAddr(a.Gateway6)
			if err != nil || !gw.Is6() {
				return fmt.Errorf("network %s: IPv6 gateway %q is not an IPv6 address", a.Network, a.Gateway6)
			}
			d.gw6, dns6 = gw, cmpOr(dns6, d)
		}
		if d.addressed() {
			first = cmpOr(first, d)
		}
		d.mtu = max(d.mtu, a.MTU)
	}
	if d := cmpOr(dns4, dns6, first); d != nil {
		d.nameserver = true
	}
	return nil
}

// raiseMTUs makes every parent fit its children: a VLAN's link and a bond's
// or bridge's members get at least the MTU of the device on top of them.
func (t *topology) raiseMTUs() {
	for changed := true; changed; {
		changed = false
		raise := func(name string, mtu int) {
			if d := t.byName[name]; d != nil && d.mtu < mtu {
				d.mtu, changed = mtu, true
			}
		}
		for _, d := range t.devices {
			if d.mtu == 0 {
				continue
			}
			if d.kind == devVLAN {
				raise(d.link, d.mtu)
			}
			for _, m := range d.members {
				raise(m, d.mtu)
			}
		}
	}
}

// ofKind lists the devices of one kind, in declaration order.
func (t *topology) ofKind(k devKind) []*device {
	return slices.DeleteFunc(slices.Clone(t.devices), func(d *device) bool { return d.kind != k })
}

// cmpOr returns the first non-nil device.
func cmpOr(ds ...*device) *device {
	for _, d := range ds {
		if d != nil {
			return d
		}
	}
	return nil
}

// netmask is an IPv4 prefix's dotted netmask.
func netmask(p netip.Prefix) string {
	return net.IP(net.CIDRMask(p.Bits(), 32)).String()
}
