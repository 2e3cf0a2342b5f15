package node

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/anneal-dev/anneal/schema"
)

// BuildSpec is everything that defines a node's installed system, compiled
// from the commit. Nodes are never patched in place: when the spec changes,
// the node is rebuilt. Its hash is the build id.
type BuildSpec struct {
	Hostname string      `json:"hostname"`
	Image    ImageSpec   `json:"image"`
	PatchSet PatchSpec   `json:"patchSet"`
	Network  NetworkSpec `json:"network"`
}

// ImageSpec is the installed image, by content, not only by name.
type ImageSpec struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Arch      string `json:"arch"`
	Installer string `json:"installer"`
	Kernel    string `json:"kernel"`
	Initrd    string `json:"initrd"`
	Rootfs    string `json:"rootfs,omitempty"`
	// Disk is installer image's whole-disk image: its artifact, format and
	// root partition ("URL#sha256=HEX;format=raw.gz;root=1").
	Disk       string   `json:"disk,omitempty"`
	KernelArgs []string `json:"kernelArgs,omitempty"`
}

// PatchSpec is the pinned kernel and packages.
type PatchSpec struct {
	Name     string            `json:"name"`
	Kernel   string            `json:"kernel"`
	Packages map[string]string `json:"packages,omitempty"`
}

// NetworkSpec is the node's rendered network configuration.
type NetworkSpec struct {
	Interfaces []schema.Interface `json:"interfaces"`
	Bonds      []schema.Bond      `json:"bonds,omitempty"`
	Bridges    []schema.Bridge    `json:"bridges,omitempty"`
	VLANs      []schema.VLAN      `json:"vlans,omitempty"`
	Addresses  []AddressSpec      `json:"addresses"`
	// Resolvers are the DNS servers of the node's networks, in order of
	// attachment, without repeats; Search is the site's domain.
	Resolvers []string `json:"resolvers,omitempty"`
	Search    []string `json:"search,omitempty"`
}

// AddressSpec is one configured network on one device.
type AddressSpec struct {
	Network string `json:"network"`
	Device  string `json:"device"`
	VLAN    int    `json:"vlan"`
	MTU     int    `json:"mtu,omitempty"`
	IPv4    string `json:"ipv4,omitempty"` // address/prefix length
	IPv6    string `json:"ipv6,omitempty"`
	// Gateway4 and Gateway6 are set on the one network per family that
	// carries the node's default route (see defaultRoute); a node has one
	// default route per family, not one per network.
	Gateway4 string `json:"gateway4,omitempty"`
	Gateway6 string `json:"gateway6,omitempty"`
}

// BuildSpecOf compiles a node's build spec from its (valid) site.
func BuildSpecOf(site *schema.Site, n *schema.Node) BuildSpec {
	spec := BuildSpec{Hostname: n.Name}
	if img := site.Image(n.Image); img != nil {
		spec.Image = ImageSpec{Name: img.Name, Version: img.Version, Arch: img.Arch, Installer: string(img.Installer),
			Kernel: artifact(img.Kernel), Initrd: artifact(img.Initrd), KernelArgs: img.KernelArgs}
		if img.Rootfs != nil {
			spec.Image.Rootfs = artifact(*img.Rootfs)
		}
		if d := img.Disk; d != nil {
			spec.Image.Disk = fmt.Sprintf("%s;format=%s;root=%d", artifact(d.Artifact), d.FormatOrDefault(), d.Root())
		}
	}
	if ps := site.PatchSet(n.PatchSet); ps != nil {
		spec.PatchSet = PatchSpec{Name: ps.Name, Kernel: ps.Kernel, Packages: ps.Packages}
	}
	spec.Network = NetworkSpec{Interfaces: n.Interfaces, Bonds: n.Bonds, Bridges: n.Bridges, VLANs: n.VLANs}
	if site.Config != nil && site.Config.Domain != "" {
		spec.Network.Search = []string{strings.TrimSuffix(site.Config.Domain, ".")}
	}
	gw4, gw6 := defaultRoute(site, n)
	for _, a := range n.Addresses {
		if a.Interface == "bmc" {
			continue // the BMC is not configured by the installed system
		}
		net := site.Network(a.Network)
		as := AddressSpec{Network: a.Network, Device: a.Interface}
		if net != nil {
			as.VLAN, as.MTU = net.VLAN, net.MTU
			if a.IPv4.IsValid() && net.IPv4 != nil {
				as.IPv4 = fmt.Sprintf("%s/%d", a.IPv4, net.IPv4.Prefix.Bits())
				if net.Name == gw4 {
					as.Gateway4 = net.IPv4.GW.String()
				}
			}
			if a.IPv6.IsValid() && net.IPv6 != nil {
				as.IPv6 = fmt.Sprintf("%s/%d", a.IPv6, net.IPv6.NetPrefix.Bits())
				if net.Name == gw6 {
					as.Gateway6 = net.IPv6.GW.String()
				}
			}
			for _, r := range net.Resolvers {
				if !slices.Contains(spec.Network.Resolvers, r) {
					spec.Network.Resolvers = append(spec.Network.Resolvers, r)
				}
			}
		}
		spec.Network.Addresses = append(spec.Network.Addresses, as)
	}
	return spec
}

// defaultRoutePreference orders network roles for the default route.
var defaultRoutePreference = []schema.NetworkRole{schema.RolePublic, schema.RoleInternal, schema.RoleAdmin,
	schema.RoleManagement, schema.RoleStorage, schema.RoleProvisioning}

// defaultRoute picks, per family, the network that carries the node's
// default route: among its attached networks with a gateway, the first by
// role (public, internal, admin, management, storage, provisioning), then
// by attachment order.
func defaultRoute(site *schema.Site, n *schema.Node) (v4, v6 string) {
	best4, best6 := len(defaultRoutePreference), len(defaultRoutePreference)
	for _, a := range n.Addresses {
		net := site.Network(a.Network)
		if a.Interface == "bmc" || net == nil {
			continue
		}
		rank := slices.Index(defaultRoutePreference, net.Role)
		if rank < 0 {
			continue
		}
		if a.IPv4.IsValid() && net.IPv4 != nil && net.IPv4.GW.IsValid() && rank < best4 {
			v4, best4 = net.Name, rank
		}
		if a.IPv6.IsValid() && net.IPv6 != nil && net.IPv6.GW.IsValid() && rank < best6 {
			v6, best6 = net.Name, rank
		}
	}
	return v4, v6
}

func artifact(a schema.Artifact) string { return a.URL + "#sha256=" + a.SHA256 }

// ID is the build id: a hash of the spec's canonical JSON.
func (b BuildSpec) ID() string {
	data, err := json.Marshal(b) // maps marshal with sorted keys: canonical
	if err != nil {
		panic("build spec does not marshal: " + err.Error())
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// RebuildReason says why a node must be rebuilt.
type RebuildReason string

// Rebuild reasons.
const (
	ReasonNew             RebuildReason = "new-node"
	ReasonImageChanged    RebuildReason = "image-changed"
	ReasonPatchSetChanged RebuildReason = "patch-set-changed"
	ReasonNetworkChanged  RebuildReason = "network-changed"
	ReasonHostnameChanged RebuildReason = "hostname-changed"
)

// More rebuild reasons: the build is older than the site's maxBuildAge,
// or the live node differs from its build (changed by hand).
const (
	ReasonExpired   RebuildReason = "build-expired"
	ReasonLiveDrift RebuildReason = "live-drift"
	// ReasonUnknownBuild: anneal has the node's build id but not its spec
	// (the state was written by an older anneal or lost).
	ReasonUnknownBuild RebuildReason = "build-changed"
	// ReasonRecover: the node failed a rebuild to another build.
	ReasonRecover RebuildReason = "failed-rebuild"
	// ReasonSuperseded: the node was installing a build the site no
	// longer wants.
	ReasonSuperseded RebuildReason = "superseded"
	// ReasonInterrupted: a rollout took the node out of service and
	// stopped before rebuilding it.
	ReasonInterrupted RebuildReason = "interrupted"
)

// FieldChange is one field that differs, by path.
type FieldChange struct {
	Path string `json:"path"`
	Old  string `json:"old,omitempty"`
	New  string `json:"new,omitempty"`
}

func (f FieldChange) String() string {
	switch {
	case f.Old == "":
		return fmt.Sprintf("%s: added %s", f.Path, f.New)
	case f.New == "":
		return fmt.Sprintf("%s: removed %s", f.Path, f.Old)
	}
	return fmt.Sprintf("%s: %s → %s", f.Path, f.Old, f.New)
}

// DiffBuilds compares two build specs field by field and names the
// reasons to rebuild.
func DiffBuilds(old, new BuildSpec) ([]RebuildReason, []FieldChange) {
	a, b := flattenSpec(old), flattenSpec(new)
	var changes []FieldChange
	for k, v := range a {
		if b[k] != v {
			changes = append(changes, FieldChange{Path: k, Old: v, New: b[k]})
		}
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			changes = append(changes, FieldChange{Path: k, New: v})
		}
	}
	slices.SortFunc(changes, func(x, y FieldChange) int { return strings.Compare(x.Path, y.Path) })
	var reasons []RebuildReason
	add := func(r RebuildReason) {
		if !slices.Contains(reasons, r) {
			reasons = append(reasons, r)
		}
	}
	for _, c := range changes {
		switch {
		case strings.HasPrefix(c.Path, "image"):
			add(ReasonImageChanged)
		case strings.HasPrefix(c.Path, "patchSet"):
			add(ReasonPatchSetChanged)
		case strings.HasPrefix(c.Path, "network"):
			add(ReasonNetworkChanged)
		case c.Path == "hostname":
			add(ReasonHostnameChanged)
		}
	}
	slices.Sort(reasons)
	return reasons, changes
}

// flattenSpec renders a spec as path → value, lists keyed by name so that
// adding one VLAN reads as one added path, not a shifted list.
func flattenSpec(s BuildSpec) map[string]string {
	m := map[string]string{"hostname": s.Hostname}
	im := s.Image
	for k, v := range map[string]string{"name": im.Name, "version": im.Version, "arch": im.Arch, "installer": im.Installer,
		"kernel": im.Kernel, "initrd": im.Initrd, "rootfs": im.Rootfs, "disk": im.Disk, "kernelArgs": strings.Join(im.KernelArgs, " ")} {
		if v != "" {
			m["image."+k] = v
		}
	}
	m["patchSet.name"] = s.PatchSet.Name
	m["patchSet.kernel"] = s.PatchSet.Kernel
	for p, v := range s.PatchSet.Packages {
		m["patchSet.packages["+p+"]"] = v
	}
	for _, i := range s.Network.Interfaces {
		m["network.interfaces["+i.NIC+"].mac"] = i.MAC
	}
	for _, b := range s.Network.Bonds {
		m["network.bonds["+b.Name+"].mode"] = b.Mode
		m["network.bonds["+b.Name+"].members"] = strings.Join(b.Members, ",")
	}
	for _, b := range s.Network.Bridges {
		m["network.bridges["+b.Name+"].members"] = strings.Join(b.Members, ",")
		m["network.bridges["+b.Name+"].stp"] = fmt.Sprint(b.STP)
	}
	for _, v := range s.Network.VLANs {
		m["network.vlans["+v.Name+"]"] = fmt.Sprintf("VLAN %d on %s", v.ID, v.Link)
	}
	if len(s.Network.Resolvers) > 0 {
		m["network.resolvers"] = strings.Join(s.Network.Resolvers, ",")
	}
	if len(s.Network.Search) > 0 {
		m["network.search"] = strings.Join(s.Network.Search, ",")
	}
	for _, a := range s.Network.Addresses {
		p := "network.addresses[" + a.Network + "]."
		m[p+"device"] = a.Device
		m[p+"vlan"] = fmt.Sprint(a.VLAN)
		for k, v := range map[string]string{"mtu": mtu(a.MTU), "ipv4": a.IPv4, "gateway4": a.Gateway4, "ipv6": a.IPv6, "gateway6": a.Gateway6} {
			if v != "" {
				m[p+k] = v
			}
		}
	}
	return m
}

func mtu(v int) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprint(v)
}
