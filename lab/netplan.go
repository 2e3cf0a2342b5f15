package lab

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// netplan is the part of a netplan v2 network configuration the lab
// applies. Keys it does not model are ignored.
type netplan struct {
	Version   int                   `yaml:"version"`
	Ethernets map[string]npEthernet `yaml:"ethernets"`
	Bonds     map[string]npBond     `yaml:"bonds"`
	VLANs     map[string]npVLAN     `yaml:"vlans"`
	Bridges   map[string]npBridge   `yaml:"bridges"`
}

// npCommon are the keys every device type has.
type npCommon struct {
	Addresses   []string  `yaml:"addresses"`
	Routes      []npRoute `yaml:"routes"`
	Gateway4    string    `yaml:"gateway4"`
	Gateway6    string    `yaml:"gateway6"`
	Nameservers struct {
		Addresses []string `yaml:"addresses"`
		Search    []string `yaml:"search"`
	} `yaml:"nameservers"`
	MTU        int    `yaml:"mtu"`
	MACAddress string `yaml:"macaddress"`
}

type npRoute struct {
	To  string `yaml:"to"`
	Via string `yaml:"via"`
}

type npEthernet struct {
	npCommon `yaml:",inline"`
	Match    struct {
		MACAddress string `yaml:"macaddress"`
		Name       string `yaml:"name"`
	} `yaml:"match"`
	SetName string `yaml:"set-name"`
}

type npBond struct {
	npCommon   `yaml:",inline"`
	Interfaces []string `yaml:"interfaces"`
	Parameters struct {
		Mode string `yaml:"mode"`
	} `yaml:"parameters"`
}

type npVLAN struct {
	npCommon `yaml:",inline"`
	ID       *int   `yaml:"id"`
	Link     string `yaml:"link"`
}

type npBridge struct {
	npCommon   `yaml:",inline"`
	Interfaces []string `yaml:"interfaces"`
	Parameters struct {
		STP *bool `yaml:"stp"`
	} `yaml:"parameters"`
}

// defaultMTU is a Linux device's MTU when nothing sets it.
const defaultMTU = 1500

// parseNetplan reads a netplan document, with or without the top-level
// "network:" key.
func parseNetplan(data []byte) (*netplan, error) {
	var top map[string]yaml.Node
	if err := yaml.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("network-config: %w", err)
	}
	var np netplan
	if body, ok := top["network"]; ok {
		if err := body.Decode(&np); err != nil {
			return nil, fmt.Errorf("network-config: %w", err)
		}
	} else if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&np); err != nil {
		return nil, fmt.Errorf("network-config: %w", err)
	}
	if np.Version != 2 {
		return nil, fmt.Errorf("network-config: version %d: want netplan version 2", np.Version)
	}
	return &np, nil
}

// physNIC is a port of the virtual server.
type physNIC struct {
	name, mac string
}

// applyNetplan configures the server's ports as netplan (and the kernel)
// would and returns the devices, default routes and resolvers the
// installed system then has. A configuration netplan would refuse (an
// address that is not a prefix, a bond member or VLAN link that does not
// exist) is an error: the installed system would have no network.
func applyNetplan(np *netplan, nics []physNIC) (ifaces []node.FactInterface, routes []node.FactRoute, resolvers []string, err error) {
	devs := map[string]*node.FactInterface{} // by device name
	var order []string
	ids := map[string]string{} // netplan id → device name
	add := func(fi node.FactInterface) *node.FactInterface {
		devs[fi.Name] = &fi
		order = append(order, fi.Name)
		return &fi
	}
	for _, p := range nics {
		add(node.FactInterface{Name: p.name, Kind: node.KindEther, MAC: p.mac, MTU: defaultMTU})
	}
	type configured struct {
		dev string
		c   npCommon
	}
	var confs []configured

	// Ethernets: match a port by MAC or name (else the id is its name),
	// rename it with set-name.
	for _, id := range sortedKeys(np.Ethernets) {
		e := np.Ethernets[id]
		var port string
		switch {
		case e.Match.MACAddress != "":
			want, perr := net.ParseMAC(e.Match.MACAddress)
			if perr != nil {
				return nil, nil, nil, fmt.Errorf("ethernets.%s: match.macaddress %q: %w", id, e.Match.MACAddress, perr)
			}
			for _, p := range nics {
				if p.mac == want.String() {
					port = p.name
				}
			}
		case e.Match.Name != "":
			port = portNamed(nics, e.Match.Name)
		default:
			port = portNamed(nics, id)
		}
		if port == "" {
			continue // netplan configures only devices that exist
		}
		d := devs[port]
		if e.SetName != "" && e.SetName != port {
			if devs[e.SetName] != nil {
				return nil, nil, nil, fmt.Errorf("ethernets.%s: set-name %s: a device of that name exists", id, e.SetName)
			}
			delete(devs, port)
			order[slices.Index(order, port)] = e.SetName
			d.Name = e.SetName
			devs[e.SetName] = d
		}
		ids[id] = d.Name
		confs = append(confs, configured{d.Name, e.npCommon})
	}

	// Bonds: members are enslaved and take the bond's MTU.
	for _, id := range sortedKeys(np.Bonds) {
		b := np.Bonds[id]
		if devs[id] != nil {
			return nil, nil, nil, fmt.Errorf("bonds.%s: a device of that name exists", id)
		}
		mode := b.Parameters.Mode
		if mode == "" {
			mode = "balance-rr"
		}
		bond := add(node.FactInterface{Name: id, Kind: node.KindBond, BondMode: mode, MTU: defaultMTU})
		for _, m := range b.Interfaces {
			dev, ok := ids[m]
			if !ok {
				return nil, nil, nil, fmt.Errorf("bonds.%s: interface %s is not a configured ethernet", id, m)
			}
			member := devs[dev]
			if member.Master != "" {
				return nil, nil, nil, fmt.Errorf("bonds.%s: interface %s is already in %s", id, m, member.Master)
			}
			member.Master = id
			if bond.MAC == "" {
				bond.MAC = member.MAC
			}
		}
		ids[id] = id
		confs = append(confs, configured{id, b.npCommon})
	}

	// VLANs and bridges may stand on each other: create what can be
	// created until nothing more can.
	vlans, bridges := sortedKeys(np.VLANs), sortedKeys(np.Bridges)
	for len(vlans)+len(bridges) > 0 {
		progress := false
		for i := 0; i < len(vlans); i++ {
			id := vlans[i]
			v := np.VLANs[id]
			if v.ID == nil || v.Link == "" {
				return nil, nil, nil, fmt.Errorf("vlans.%s: id and link are required", id)
			}
			if *v.ID < 0 || *v.ID > 4094 {
				return nil, nil, nil, fmt.Errorf("vlans.%s: id %d out of range", id, *v.ID)
			}
			link, ok := ids[v.Link]
			if !ok {
				continue
			}
			if devs[id] != nil {
				return nil, nil, nil, fmt.Errorf("vlans.%s: a device of that name exists", id)
			}
			add(node.FactInterface{Name: id, Kind: node.KindVLAN, VLANID: *v.ID, Link: link})
			ids[id] = id
			confs = append(confs, configured{id, v.npCommon})
			vlans = slices.Delete(vlans, i, i+1)
			i--
			progress = true
		}
		for i := 0; i < len(bridges); i++ {
			id := bridges[i]
			b := np.Bridges[id]
			ready := true
			for _, m := range b.Interfaces {
				if _, ok := ids[m]; !ok {
					ready = false
				}
			}
			if !ready {
				continue
			}
			if devs[id] != nil {
				return nil, nil, nil, fmt.Errorf("bridges.%s: a device of that name exists", id)
			}
			br := add(node.FactInterface{Name: id, Kind: node.KindBridge, MTU: defaultMTU})
			for _, m := range b.Interfaces {
				member := devs[ids[m]]
				if member.Master != "" {
					return nil, nil, nil, fmt.Errorf("bridges.%s: interface %s is already in %s", id, m, member.Master)
				}
				member.Master = id
				if br.MAC == "" {
					br.MAC = member.MAC
				}
			}
			ids[id] = id
			confs = append(confs, configured{id, b.npCommon})
			bridges = slices.Delete(bridges, i, i+1)
			i--
			progress = true
		}
		if !progress {
			var stuck []string
			for _, id := range vlans {
				stuck = append(stuck, fmt.Sprintf("vlans.%s (link %s)", id, np.VLANs[id].Link))
			}
			for _, id := range bridges {
				stuck = append(stuck, fmt.Sprintf("bridges.%s (interfaces %s)", id, strings.Join(np.Bridges[id].Interfaces, ",")))
			}
			return nil, nil, nil, fmt.Errorf("%s: no such device", strings.Join(stuck, ", "))
		}
	}

	// MTUs, MACs and addresses, in creation order: a bond's MTU reaches its
	// members; a VLAN's MTU defaults to its link's and cannot exceed it.
	for _, c := range confs {
		d := devs[c.dev]
		if c.c.MACAddress != "" {
			hw, perr := net.ParseMAC(c.c.MACAddress)
			if perr != nil {
				return nil, nil, nil, fmt.Errorf("%s: macaddress %q: %w", c.dev, c.c.MACAddress, perr)
			}
			d.MAC = hw.String()
		}
		if c.c.MTU < 0 {
			return nil, nil, nil, fmt.Errorf("%s: mtu %d", c.dev, c.c.MTU)
		}
		if c.c.MTU > 0 {
			d.MTU = c.c.MTU
		}
		switch d.Kind {
		case node.KindBond:
			for _, o := range devs {
				if o.Master == d.Name && o.Kind == node.KindEther {
					o.MTU = d.MTU
				}
			}
		case node.KindVLAN:
			link := devs[d.Link]
			if d.MAC == "" {
				d.MAC = link.MAC
			}
			if c.c.MTU == 0 || c.c.MTU > link.MTU {
				d.MTU = link.MTU // the kernel refuses a VLAN larger than its link
			}
		}
		for _, a := range c.c.Addresses {
			p, perr := netip.ParsePrefix(a)
			if perr != nil {
				return nil, nil, nil, fmt.Errorf("%s: address %q: %w", c.dev, a, perr)
			}
			d.Addresses = append(d.Addresses, p.String())
		}
	}

	// Default routes and resolvers, in device order.
	for _, c := range confs {
		gws := []string{}
		for _, r := range c.c.Routes {
			switch r.To {
			case "default", "0.0.0.0/0", "::/0":
				gws = append(gws, r.Via)
			}
		}
		for _, g := range []string{c.c.Gateway4, c.c.Gateway6} {
			if g != "" {
				gws = append(gws, g)
			}
		}
		for _, g := range gws {
			ip, perr := netip.ParseAddr(g)
			if perr != nil {
				return nil, nil, nil, fmt.Errorf("%s: route via %q: %w", c.dev, g, perr)
			}
			routes = append(routes, node.FactRoute{Gateway: ip.String(), Device: c.dev})
		}
		for _, ns := range c.c.Nameservers.Addresses {
			ip, perr := netip.ParseAddr(ns)
			if perr != nil {
				return nil, nil, nil, fmt.Errorf("%s: nameserver %q: %w", c.dev, ns, perr)
			}
			if !slices.Contains(resolvers, ip.String()) {
				resolvers = append(resolvers, ip.String())
			}
		}
	}
	for _, name := range order {
		ifaces = append(ifaces, *devs[name])
	}
	return ifaces, routes, resolvers, nil
}

func portNamed(nics []physNIC, name string) string {
	for _, p := range nics {
		if p.name == name {
			return p.name
		}
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// factsOf is what the installed system says about itself: its hostname,
// kernel and OS from the build, its network as the netplan configured its
// ports.
func (n *Node) factsOf(b node.BuildSpec, netcfg []byte) (node.Facts, error) {
	np, err := parseNetplan(netcfg)
	if err != nil {
		return node.Facts{}, err
	}
	nics := make([]physNIC, 0, len(n.nics))
	for _, i := range n.nics {
		mac := strings.ToLower(i.MAC)
		if hw, err := net.ParseMAC(i.MAC); err == nil {
			mac = hw.String()
		}
		nics = append(nics, physNIC{name: i.NIC, mac: mac})
	}
	ifaces, routes, resolvers, err := applyNetplan(np, nics)
	if err != nil {
		return node.Facts{}, fmt.Errorf("network-config: %w", err)
	}
	if b.Hostname == "" {
		return node.Facts{}, errors.New("build.json: no hostname")
	}
	return node.Facts{
		Hostname:   b.Hostname,
		OSRelease:  osRelease(b.Image),
		Kernel:     b.PatchSet.Kernel,
		Interfaces: ifaces,
		Resolvers:  resolvers,
		Routes:     routes,
	}, nil
}

// osRelease is /etc/os-release as the image installs it: ID from the
// image name's prefix (ubuntu-22.04 → ubuntu), VERSION_ID its version.
func osRelease(img node.ImageSpec) map[string]string {
	id, _, _ := strings.Cut(img.Name, "-")
	id = strings.ToLower(id)
	pretty := strings.TrimSpace(strings.ToUpper(id[:min(1, len(id))]) + id[min(1, len(id)):] + " " + img.Version)
	return map[string]string{"ID": id, "VERSION_ID": img.Version, "PRETTY_NAME": pretty}
}
