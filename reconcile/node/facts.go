package node

import (
	"fmt"
	"slices"
	"strings"
)

// VerifyFacts checks what a node reports against the build it should run
// and returns every difference in plain words, sorted; none means the node
// runs its build. Devices the build does not declare are differences too
// when they are bonds, VLANs or bridges (made by hand); a spare NIC is not.
func VerifyFacts(spec BuildSpec, f Facts) []string {
	var out []string
	add := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }
	if f.Hostname != spec.Hostname && !strings.HasPrefix(f.Hostname, spec.Hostname+".") {
		add("hostname is %q, build says %q", f.Hostname, spec.Hostname)
	}
	if k := spec.PatchSet.Kernel; k != "" && f.Kernel != k {
		add("kernel is %q, patch set %s pins %q", f.Kernel, spec.PatchSet.Name, k)
	}
	if v := f.OSRelease["VERSION_ID"]; v != "" && spec.Image.Version != "" && !strings.HasPrefix(spec.Image.Version, v) {
		add("OS version is %q, image %s is %q", v, spec.Image.Name, spec.Image.Version)
	}
	dev := make(map[string]FactInterface, len(f.Interfaces))
	for _, i := range f.Interfaces {
		dev[i.Name] = i
	}
	declared := map[string]bool{}
	want := func(name, kind string) (FactInterface, bool) {
		declared[name] = true
		d, ok := dev[name]
		switch {
		case !ok:
			add("%s %s is missing", kindLabel(kind), name)
			return d, false
		case d.Kind != kind:
			add("%s is a %s, build says %s", name, kindLabel(d.Kind), kindLabel(kind))
			return d, false
		}
		return d, true
	}
	for _, i := range spec.Network.Interfaces {
		if d, ok := want(i.NIC, KindEther); ok && !strings.EqualFold(d.MAC, i.MAC) {
			add("interface %s has MAC %s, build says %s", i.NIC, d.MAC, i.MAC)
		}
	}
	enslaved := func(member, master string) {
		if d, ok := dev[member]; ok && d.Master != master {
			if d.Master == "" {
				add("%s is not a member of %s", member, master)
			} else {
				add("%s is a member of %s, build says %s", member, d.Master, master)
			}
		}
	}
	for _, b := range spec.Network.Bonds {
		if d, ok := want(b.Name, KindBond); ok && d.BondMode != b.Mode {
			add("bond %s mode is %q, build says %q", b.Name, d.BondMode, b.Mode)
		}
		for _, m := range b.Members {
			enslaved(m, b.Name)
		}
	}
	for _, br := range spec.Network.Bridges {
		want(br.Name, KindBridge)
		for _, m := range br.Members {
			enslaved(m, br.Name)
		}
	}
	for _, v := range spec.Network.VLANs {
		if d, ok := want(v.Name, KindVLAN); ok && (d.VLANID != v.ID || d.Link != v.Link) {
			add("VLAN %s is id %d on %s, build says id %d on %s", v.Name, d.VLANID, d.Link, v.ID, v.Link)
		}
	}
	for _, i := range f.Interfaces {
		if !declared[i.Name] && i.Kind != KindEther {
			add("%s %s is not in the build (made by hand?)", kindLabel(i.Kind), i.Name)
		}
	}
	routes := map[string]string{}
	for _, r := range f.Routes {
		routes[r.Gateway] = r.Device
	}
	for _, a := range spec.Network.Addresses {
		d, ok := dev[a.Device]
		if !ok {
			if declared[a.Device] {
				continue // already reported missing
			}
			add("device %s for network %s is missing", a.Device, a.Network)
			continue
		}
		for _, ip := range []string{a.IPv4, a.IPv6} {
			if ip != "" && !slices.Contains(d.Addresses, ip) {
				add("%s lacks address %s (network %s)", a.Device, ip, a.Network)
			}
		}
		if a.MTU != 0 && d.MTU != 0 && d.MTU != a.MTU {
			add("%s MTU is %d, network %s says %d", a.Device, d.MTU, a.Network, a.MTU)
		}
		for _, gw := range []string{a.Gateway4, a.Gateway6} {
			if gw == "" {
				continue
			}
			if got, ok := routes[gw]; !ok {
				add("no default route via %s (network %s)", gw, a.Network)
			} else if got != a.Device {
				add("default route via %s leaves by %s, build says %s", gw, got, a.Device)
			}
		}
	}
	for _, r := range spec.Network.Resolvers {
		if !slices.Contains(f.Resolvers, r) {
			add("resolver %s is not configured", r)
		}
	}
	slices.Sort(out)
	return out
}

func kindLabel(kind string) string {
	switch kind {
	case KindEther:
		return "interface"
	case KindVLAN:
		return "VLAN"
	}
	return kind
}

// FactsOfBuild is what a node that runs spec exactly reports: the
// reference VerifyFacts compares live facts with, and what simulated
// fleets (tests, benchmarks) report. OSRelease is left empty: the image
// names no os-release.
func FactsOfBuild(spec BuildSpec) Facts {
	f := Facts{Hostname: spec.Hostname, Kernel: spec.PatchSet.Kernel, Resolvers: spec.Network.Resolvers}
	idx := map[string]int{}
	add := func(i FactInterface) {
		idx[i.Name] = len(f.Interfaces)
		f.Interfaces = append(f.Interfaces, i)
	}
	for _, i := range spec.Network.Interfaces {
		add(FactInterface{Name: i.NIC, Kind: KindEther, MAC: i.MAC})
	}
	for _, b := range spec.Network.Bonds {
		add(FactInterface{Name: b.Name, Kind: KindBond, BondMode: b.Mode})
	}
	for _, b := range spec.Network.Bridges {
		add(FactInterface{Name: b.Name, Kind: KindBridge})
	}
	for _, v := range spec.Network.VLANs {
		add(FactInterface{Name: v.Name, Kind: KindVLAN, VLANID: v.ID, Link: v.Link})
	}
	// Every device is in place: pointers into f.Interfaces are stable now.
	dev := map[string]*FactInterface{}
	for name, i := range idx {
		dev[name] = &f.Interfaces[i]
	}
	for _, b := range spec.Network.Bonds {
		for _, m := range b.Members {
			dev[m].Master = b.Name
		}
	}
	for _, b := range spec.Network.Bridges {
		for _, m := range b.Members {
			dev[m].Master = b.Name
		}
	}
	for _, a := range spec.Network.Addresses {
		d := dev[a.Device]
		for _, ip := range []string{a.IPv4, a.IPv6} {
			if ip != "" {
				d.Addresses = append(d.Addresses, ip)
			}
		}
		d.MTU = a.MTU
		for _, gw := range []string{a.Gateway4, a.Gateway6} {
			if gw != "" {
				f.Routes = append(f.Routes, FactRoute{Gateway: gw, Device: a.Device})
			}
		}
	}
	return f
}
