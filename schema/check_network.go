package schema

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
)

// addrKey identifies an address on a network, for uniqueness.
type addrKey struct {
	network string
	addr    netip.Addr
}

var placeholders = []string{"{node}", "{network}", "{region}", "{rack}", "{domain}"}

func (c *checker) networks() {
	for _, n := range c.site.Networks {
		m := &n.Meta
		if n.Region != "" && !c.hasRegion(n.Region) {
			c.errorf(m, fieldPath{"region"}, "unknown-region", "region %q is not declared in the Site document", n.Region)
		}
		if n.IPv4 == nil && n.IPv6 == nil {
			c.errorf(m, nil, "network-without-prefix", "network has neither ipv4 nor ipv6: declare at least one")
		}
		if v4 := n.IPv4; v4 != nil {
			v4.Prefix, v4.GW = c.prefix(m, fieldPath{"ipv4"}, "cidr", v4.CIDR, v4.Gateway, true)
		}
		if v6 := n.IPv6; v6 != nil {
			v6.NetPrefix, v6.GW = c.prefix(m, fieldPath{"ipv6"}, "prefix", v6.Prefix, v6.Gateway, false)
		}
		for i, r := range n.Resolvers {
			if a, err := netip.ParseAddr(r); err != nil || a.Zone() != "" {
				c.errorf(m, fieldPath{"resolvers", i}, "bad-resolver", "resolver %q is not an IP address", r)
			}
		}
		if n.DNS != nil {
			c.pattern(m, fieldPath{"dns", "pattern"}, n.DNS.Pattern)
		}
	}
	c.networkPairs()
	c.singletonRoles()
}

// prefix parses and checks a network prefix and its gateway.
func (c *checker) prefix(m *Meta, at fieldPath, field, cidr, gateway string, v4 bool) (netip.Prefix, netip.Addr) {
	family, maxBits := "IPv6", 126
	if v4 {
		family, maxBits = "IPv4", 30
	}
	p, err := netip.ParsePrefix(cidr)
	switch {
	case err != nil:
		c.errorf(m, at.with(field), "bad-prefix", "%q is not an %s prefix in CIDR notation", cidr, family)
		return netip.Prefix{}, netip.Addr{}
	case p.Addr().Is4() != v4 || p.Addr().Is4In6():
		c.errorf(m, at.with(field), "bad-prefix", "%q is not an %s prefix", cidr, family)
		return netip.Prefix{}, netip.Addr{}
	case p.Masked() != p:
		c.errorf(m, at.with(field), "bad-prefix", "%q has host bits set; did you mean %s?", cidr, p.Masked())
		return netip.Prefix{}, netip.Addr{}
	case p.Bits() > maxBits:
		c.errorf(m, at.with(field), "bad-prefix", "%s is too small for hosts (longest allowed: /%d)", cidr, maxBits)
		return netip.Prefix{}, netip.Addr{}
	}
	if gateway == "" {
		return p, netip.Addr{}
	}
	gw, err := netip.ParseAddr(gateway)
	switch {
	case err != nil:
		c.errorf(m, at.with("gateway"), "bad-address", "gateway %q is not an IP address", gateway)
	case !p.Contains(gw):
		c.errorf(m, at.with("gateway"), "gateway-outside", "gateway %s is outside %s", gw, p)
	case gw == p.Addr() || v4 && gw == lastAddr4(p):
		c.errorf(m, at.with("gateway"), "gateway-reserved", "gateway %s is the network or broadcast address of %s", gw, p)
	default:
		return p, gw
	}
	return p, netip.Addr{}
}

// pattern checks a DNS naming pattern's placeholders.
func (c *checker) pattern(m *Meta, at fieldPath, pat string) {
	rest := pat
	for _, ph := range placeholders {
		rest = strings.ReplaceAll(rest, ph, "x")
	}
	if i := strings.IndexAny(rest, "{}"); i >= 0 {
		c.errorf(m, at, "bad-pattern", "pattern %q has an unknown placeholder; known: %s", pat, strings.Join(placeholders, " "))
		return
	}
	if !strings.Contains(pat, "{node}") {
		c.errorf(m, at, "bad-pattern", "pattern %q does not contain {node}: every node would get the same name", pat)
	}
}

// networkPairs finds overlapping prefixes and VLAN ids reused in one scope.
func (c *checker) networkPairs() {
	nets := c.site.Networks
	for i, a := range nets {
		for _, b := range nets[i+1:] {
			if a.IPv4 != nil && b.IPv4 != nil && a.IPv4.Prefix.IsValid() && b.IPv4.Prefix.IsValid() && a.IPv4.Prefix.Overlaps(b.IPv4.Prefix) {
				c.errorf(&b.Meta, fieldPath{"ipv4", "cidr"}, "overlapping-prefix", "%s overlaps %s of %s", b.IPv4.Prefix, a.IPv4.Prefix, where(&a.Meta))
			}
			if a.IPv6 != nil && b.IPv6 != nil && a.IPv6.NetPrefix.IsValid() && b.IPv6.NetPrefix.IsValid() && a.IPv6.NetPrefix.Overlaps(b.IPv6.NetPrefix) {
				c.errorf(&b.Meta, fieldPath{"ipv6", "prefix"}, "overlapping-prefix", "%s overlaps %s of %s", b.IPv6.NetPrefix, a.IPv6.NetPrefix, where(&a.Meta))
			}
			if a.VLAN == b.VLAN && scopesMeet(a, b) {
				c.errorf(&b.Meta, fieldPath{"vlan"}, "duplicate-vlan", "VLAN %d is also %s in the same scope", b.VLAN, where(&a.Meta))
			}
		}
	}
}

func scopesMeet(a, b *Network) bool { return a.Region == "" || b.Region == "" || a.Region == b.Region }

// singletonRoles: at most one provisioning and one bmc network per scope,
// so that a node's netboot and BMC addresses are unambiguous.
func (c *checker) singletonRoles() {
	nets := c.site.Networks
	for i, a := range nets {
		for _, b := range nets[i+1:] {
			if !scopesMeet(a, b) {
				continue
			}
			if a.Provisioning && b.Provisioning {
				c.errorf(&b.Meta, fieldPath{"provisioning"}, "duplicate-provisioning", "a second provisioning network in the same scope as %s", where(&a.Meta))
			}
			if a.Role == RoleBMC && b.Role == RoleBMC {
				c.errorf(&b.Meta, fieldPath{"role"}, "duplicate-bmc-network", "a second bmc network in the same scope as %s", where(&a.Meta))
			}
		}
	}
}

// networkFor finds the network with a property in a region's scope.
func (c *checker) networkFor(region string, want func(*Network) bool) *Network {
	for _, n := range c.site.Networks {
		if (n.Region == "" || n.Region == region) && want(n) {
			return n
		}
	}
	return nil
}

func lastAddr4(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

// HostAddress4 is the address hostIndex in p: network base + index. It fails
// when the index is the network address, the broadcast address or outside.
func HostAddress4(p netip.Prefix, index int) (netip.Addr, error) {
	host := 32 - p.Bits()
	if index < 1 || uint64(index) >= uint64(1)<<host-1 {
		return netip.Addr{}, fmt.Errorf("hostIndex %d does not fit %s (hosts 1 to %d)", index, p, uint64(1)<<host-2)
	}
	a := p.Addr().As4()
	binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(a[:])+uint32(index))
	return netip.AddrFrom4(a), nil
}

// HostAddress6 is prefix + index in p.
func HostAddress6(p netip.Prefix, index int) (netip.Addr, error) {
	host := 128 - p.Bits()
	if index < 1 || host < 63 && uint64(index) >= uint64(1)<<host {
		return netip.Addr{}, fmt.Errorf("hostIndex %d does not fit %s", index, p)
	}
	a := p.Addr().As16()
	lo := binary.BigEndian.Uint64(a[8:]) + uint64(index)
	binary.BigEndian.PutUint64(a[8:], lo)
	return netip.AddrFrom16(a), nil
}
