package boot

import (
	"bytes"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// Netplan v2 documents (netplan.io/reference). Field order is output order;
// maps (devices by name) are written sorted by yaml.v3.

type netplanDoc struct {
	Network *netplanNetwork `yaml:"network"`
}

type netplanNetwork struct {
	Version   int                       `yaml:"version"`
	Ethernets map[string]*netplanDevice `yaml:"ethernets,omitempty"`
	Bonds     map[string]*netplanDevice `yaml:"bonds,omitempty"`
	VLANs     map[string]*netplanDevice `yaml:"vlans,omitempty"`
	Bridges   map[string]*netplanDevice `yaml:"bridges,omitempty"`
}

type netplanDevice struct {
	Match       *netplanMatch  `yaml:"match,omitempty"`
	SetName     string         `yaml:"set-name,omitempty"`
	Interfaces  []string       `yaml:"interfaces,omitempty"` // bond and bridge members
	ID          int            `yaml:"id,omitempty"`         // VLAN id
	Link        string         `yaml:"link,omitempty"`       // VLAN parent
	Parameters  *netplanParams `yaml:"parameters,omitempty"`
	MTU         int            `yaml:"mtu,omitempty"`
	DHCP4       *bool          `yaml:"dhcp4,omitempty"`
	Optional    bool           `yaml:"optional,omitempty"`
	Addresses   []quoted       `yaml:"addresses,omitempty"`
	Routes      []netplanRoute `yaml:"routes,omitempty"`
	Nameservers *netplanDNS    `yaml:"nameservers,omitempty"`
}

type netplanMatch struct {
	MACAddress quoted `yaml:"macaddress"`
}

type netplanParams struct {
	Mode               string `yaml:"mode,omitempty"`                 // bond
	MIIMonitorInterval int    `yaml:"mii-monitor-interval,omitempty"` // bond, ms
	STP                *bool  `yaml:"stp,omitempty"`                  // bridge
}

type netplanRoute struct {
	To  string `yaml:"to"`
	Via quoted `yaml:"via"`
}

type netplanDNS struct {
	Addresses []quoted `yaml:"addresses,omitempty"`
	Search    []string `yaml:"search,omitempty"`
}

// quoted is a string always written double-quoted, so a MAC or an address
// can never be read back as a number (YAML 1.1 sexagesimals) or anything
// but a string.
type quoted string

// MarshalYAML implements yaml.Marshaler.
func (q quoted) MarshalYAML() (any, error) {
	return &yaml.Node{Kind: yaml.ScalarNode, Style: yaml.DoubleQuotedStyle, Value: string(q)}, nil
}

// netplanOf is the build's network as a netplan v2 "network" mapping:
// ethernets bound to their MAC and named, bonds, VLANs and bridges, static
// addresses, one default route per family, DNS on the device carrying the
// default route, and dhcp4 off on bond and bridge members.
func netplanOf(t *topology) *netplanNetwork {
	nw := &netplanNetwork{Version: 2}
	put := func(m *map[string]*netplanDevice, name string, nd *netplanDevice) {
		if *m == nil {
			*m = map[string]*netplanDevice{}
		}
		(*m)[name] = nd
	}
	for _, d := range t.devices {
		nd := &netplanDevice{MTU: d.mtu}
		switch d.kind {
		case devEther:
			nd.Match, nd.SetName = &netplanMatch{MACAddress: quoted(d.mac)}, d.name
			nd.Optional = d.unused() // do not hold boot waiting for a spare port
			put(&nw.Ethernets, d.name, nd)
		case devBond:
			nd.Interfaces = d.members
			nd.Parameters = &netplanParams{Mode: d.mode, MIIMonitorInterval: bondMIIMonitor}
			put(&nw.Bonds, d.name, nd)
		case devVLAN:
			nd.ID, nd.Link = d.vlanID, d.link
			put(&nw.VLANs, d.name, nd)
		case devBridge:
			stp := d.stp
			nd.Interfaces = d.members
			nd.Parameters = &netplanParams{STP: &stp}
			put(&nw.Bridges, d.name, nd)
		}
		if d.master != "" && !d.addressed() {
			off := false
			nd.DHCP4 = &off
		}
		for _, p := range append(d.v4, d.v6...) {
			nd.Addresses = append(nd.Addresses, quoted(p.String()))
		}
		for _, gw := range []string{addrString(d.gw4), addrString(d.gw6)} {
			if gw != "" {
				nd.Routes = append(nd.Routes, netplanRoute{To: "default", Via: quoted(gw)})
			}
		}
		if d.nameserver && (len(t.resolvers) > 0 || len(t.search) > 0) {
			nd.Nameservers = &netplanDNS{Search: t.search}
			for _, r := range t.resolvers {
				nd.Nameservers.Addresses = append(nd.Nameservers.Addresses, quoted(r.String()))
			}
		}
	}
	return nw
}

// renderNetplan writes a netplan configuration file: the top-level
// "network:" key over netplanOf.
func renderNetplan(t *topology) (string, error) {
	return marshalYAML(netplanDoc{Network: netplanOf(t)})
}

// marshalYAML writes v as YAML with two-space indentation.
func marshalYAML(v any) (string, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return "", fmt.Errorf("encode YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return "", fmt.Errorf("encode YAML: %w", err)
	}
	return buf.String(), nil
}
