// Package gen writes synthetic anneal site repos of any size, in the format
// and spirit of examples/site-repo, for scale tests and benchmarks.
//
// The layout grows with the node count: about 40 nodes a rack and 25 racks a
// region. Every region has its own five networks (bmc, provisioning,
// internal, public, storage) with region set, VLAN ids repeated across
// regions, one /20 per network and region (10.R.0.0/16 holds a region's
// private networks, public networks come from 100.64.0.0/10) and one /64 per
// network and region (fd00:a:R::/48 and 2001:db8:R::/48). DNS has a forward
// zone per region, an in-addr.arpa zone per /16 and an ip6.arpa zone per /48,
// so every address has a reverse zone; round-robin groups stay at or under
// 100 members (one ingress node a rack, 25 racks a region).
//
// Every file holds documents of one kind (nodes: one multi-document file per
// rack under nodes/), so a tool that checks one kind at a time, such as
// `cue vet -d '#Node'`, can be given the files of each kind.
//
// The output depends only on the Options: the same flags give the same bytes.
package gen

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Limits of the generator.
const (
	MaxNodes = 100_000
	// maxRegions: a region's private networks live in 10.R.0.0/16.
	maxRegions = 256
	// firstHost is the hostIndex of a region's first node (.1 is the gateway).
	firstHost = 11
)

// Options size and vary the site.
type Options struct {
	// Nodes is the number of nodes, 1 to MaxNodes.
	Nodes int
	// Seed varies roles, hardware, bridges and pins; the layout (names,
	// addresses, zones) depends only on the node count.
	Seed uint64
	// NodesPerRack defaults to 40, RacksPerRegion to 25.
	NodesPerRack   int
	RacksPerRegion int
	// Domain defaults to example.net.
	Domain string
	// Policies, when set, replaces the rollout policies the site declares;
	// nil writes the defaults: canaries 2, maxUnavailable perRack 2 and
	// perRole compute 10%, storage, ingress and api 1,
	// maxConcurrentInstalls 50.
	Policies *Policies
}

// Policies are the rollout policies of a generated site. A bound is a
// count ("2") or a percentage ("10%"); "" leaves it out.
type Policies struct {
	Canaries int
	PerRack  string
	// PerRole bounds the roles named (compute, storage, ingress, api);
	// a role not named has no bound of its own.
	PerRole               map[string]string
	MaxConcurrentInstalls int
}

// validBound reports whether s is a count or a percentage.
func validBound(s string) bool {
	d := strings.TrimSuffix(s, "%")
	if d == "" || len(d) > 9 {
		return false
	}
	for _, c := range d {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Result says what was written.
type Result struct {
	Nodes, Regions, Racks, Networks, Zones int
	// Files maps each document kind (Site, Network, HardwareProfile, Image,
	// PatchSet, Node, DNS) to the files holding it, slash-separated and
	// relative to the site directory, sorted.
	Files map[string][]string
	// Bytes is the total size of the YAML written.
	Bytes int64
}

// AllFiles lists every file written, sorted.
func (r *Result) AllFiles() []string {
	var out []string
	for _, fs := range r.Files {
		out = append(out, fs...)
	}
	slices.Sort(out)
	return out
}

const apiVersion = "anneal.dev/v1alpha1"

// Grants are the operator's secret grants (anneal --secrets) for a
// generated site: its BMC networks (10.R.0.0/20 in 10.0.0.0/8) and its DNS
// servers on loopback, the values from the environment variables the lab
// and the benchmarks set. Never write it into the site's folder: every
// YAML file there is a site document.
const Grants = `secrets:
  bmc-password:
    from: env:ANNEAL_BMC_PASSWORD
    bmc: [10.0.0.0/8, "fd00::/8"]
  tsig-key:
    from: env:ANNEAL_TSIG_SECRET
    dns: [127.0.0.1]
  pdns-api-key:
    from: env:ANNEAL_PDNS_API_KEY
    dns: [127.0.0.1]
`

// network kinds of a region, with their VLAN and the /20 they take.
var netKinds = []struct {
	role, short string
	vlan        int
	block       int // index of the /20 inside 10.R.0.0/16; -1 for public
	gateway     bool
	mtu         int
}{
	{"bmc", "bmc", 100, 0, true, 0},
	{"provisioning", "prov", 110, 1, true, 1500},
	{"internal", "int", 120, 2, true, 9000},
	{"public", "pub", 130, -1, true, 0},
	{"storage", "stor", 140, 3, false, 9000},
}

type profile struct {
	name, vendor, model, bmc, bios, bmcFW, oui string
	nics                                       []nic
	disks                                      []disk
}

type nic struct {
	name, speed string
	pxe         bool
}

type disk struct{ name, size, typ string }

var profiles = []profile{
	{
		name: "dell-r650", vendor: "Dell", model: "PowerEdge R650", bmc: "redfish", bios: "1.13.2", bmcFW: "7.10.50.00", oui: "b0:7b:25",
		nics: []nic{
			{"eno1", "1G", true}, {"eno2", "1G", false},
			{"ens1f0", "25G", false}, {"ens1f1", "25G", false}, {"ens2f0", "25G", false},
		},
		disks: []disk{{"nvme0n1", "960G", "nvme"}, {"nvme1n1", "960G", "nvme"}},
	},
	{
		name: "supermicro-sys-620u", vendor: "Supermicro", model: "SYS-620U-TNR", bmc: "ipmi", bios: "1.9", bmcFW: "01.04.08", oui: "3c:ec:ef",
		nics: []nic{
			{"eno1", "1G", true}, {"eno2", "1G", false},
			{"enp65s0f0", "100G", false}, {"enp65s0f1", "100G", false}, {"enp66s0f0", "100G", false},
		},
		disks: []disk{{"sda", "480G", "ssd"}, {"sdb", "16T", "hdd"}, {"sdc", "16T", "hdd"}},
	},
}

// layout is the shape derived from the node count.
type layout struct {
	opts    Options
	regions []region
}

type region struct {
	index int
	name  string
	racks []rack
}

type rack struct {
	name    string
	first   int // global index of the rack's first node
	nodes   int
	storage bool // a storage rack (supermicro); otherwise compute (dell)
}

func (o *Options) defaults() error {
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		return fmt.Errorf("nodes must be 1 to %d, got %d", MaxNodes, o.Nodes)
	}
	if o.NodesPerRack == 0 {
		o.NodesPerRack = 40
	}
	if o.RacksPerRegion == 0 {
		o.RacksPerRegion = 25
	}
	if o.Domain == "" {
		o.Domain = "example.net"
	}
	if o.NodesPerRack < 1 || o.RacksPerRegion < 1 {
		return errors.New("nodes per rack and racks per region must be positive")
	}
	if p := o.Policies; p != nil {
		if p.Canaries < 0 || p.MaxConcurrentInstalls < 0 {
			return errors.New("canaries and maxConcurrentInstalls must not be negative")
		}
		if p.PerRack != "" && !validBound(p.PerRack) {
			return fmt.Errorf("perRack %q: want a count or a percentage", p.PerRack)
		}
		for role, v := range p.PerRole {
			if !validBound(v) {
				return fmt.Errorf("perRole %s %q: want a count or a percentage", role, v)
			}
		}
	}
	perRegion := o.NodesPerRack * o.RacksPerRegion
	if perRegion+firstHost > 4000 {
		return fmt.Errorf("%d nodes a region do not fit a /20 per network", perRegion)
	}
	if regions := (o.Nodes + perRegion - 1) / perRegion; regions > maxRegions {
		return fmt.Errorf("%d regions needed; at most %d fit 10.0.0.0/8 (raise nodes per rack or racks per region)", regions, maxRegions)
	}
	return nil
}

func plan(o Options, rng *rand.Rand) *layout {
	l := &layout{opts: o}
	for i := 0; i < o.Nodes; {
		r := len(l.regions)
		reg := region{index: r, name: fmt.Sprintf("r%02d", r+1)}
		for k := 0; k < o.RacksPerRegion && i < o.Nodes; k++ {
			n := min(o.NodesPerRack, o.Nodes-i)
			// About one rack in five holds storage servers.
			reg.racks = append(reg.racks, rack{
				name:    fmt.Sprintf("%s-k%02d", reg.name, k+1),
				first:   i,
				nodes:   n,
				storage: rng.IntN(5) == 0,
			})
			i += n
		}
		l.regions = append(l.regions, reg)
	}
	return l
}

// Generate writes a site of opts.Nodes nodes into dir, which must be empty
// or not exist yet.
func Generate(dir string, opts Options) (*Result, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s is not empty", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 0x616e6e65616c)) // "anneal"
	l := plan(opts, rng)
	w := &writer{dir: dir, res: &Result{Nodes: opts.Nodes, Files: map[string][]string{}}}
	w.file("Site", "site.yaml", l.site)
	w.file("Network", "networks.yaml", l.networks)
	for i := range profiles {
		p := &profiles[i]
		w.file("HardwareProfile", "hardware/"+p.name+".yaml", func(b *bufio.Writer) { writeProfile(b, p) })
	}
	w.file("Image", "images/images.yaml", writeImages)
	w.file("PatchSet", "images/patch-sets.yaml", writePatchSets)
	w.file("DNS", "dns.yaml", l.dns)
	for _, reg := range l.regions {
		for _, rk := range reg.racks {
			w.file("Node", "nodes/"+rk.name+".yaml", func(b *bufio.Writer) { l.rackNodes(b, reg, rk, rng) })
		}
	}
	if w.err != nil {
		return nil, w.err
	}
	res := w.res
	res.Regions = len(l.regions)
	for _, r := range l.regions {
		res.Racks += len(r.racks)
	}
	res.Networks = len(l.regions) * len(netKinds)
	res.Zones = len(l.zones())
	for k := range res.Files {
		slices.Sort(res.Files[k])
	}
	return res, nil
}

type writer struct {
	dir string
	res *Result
	err error
}

func (w *writer) file(kind, rel string, body func(*bufio.Writer)) {
	if w.err != nil {
		return
	}
	p := filepath.Join(w.dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.err = err
		return
	}
	f, err := os.Create(p)
	if err != nil {
		w.err = err
		return
	}
	cw := &countWriter{w: f}
	b := bufio.NewWriterSize(cw, 64<<10)
	body(b)
	if err := b.Flush(); err != nil {
		f.Close()
		w.err = fmt.Errorf("write %s: %w", p, err)
		return
	}
	if err := f.Close(); err != nil {
		w.err = fmt.Errorf("write %s: %w", p, err)
		return
	}
	w.res.Bytes += cw.n
	w.res.Files[kind] = append(w.res.Files[kind], rel)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func header(b *bufio.Writer, kind, name string) {
	fmt.Fprintf(b, "apiVersion: %s\nkind: %s\nname: %s\n", apiVersion, kind, name)
}

func (l *layout) site(b *bufio.Writer) {
	fmt.Fprintf(b, "# Generated by bench/sitegen: %d nodes in %d regions.\n", l.opts.Nodes, len(l.regions))
	header(b, "Site", fmt.Sprintf("gen-%d", l.opts.Nodes))
	fmt.Fprintf(b, "domain: %s\nregions:\n", l.opts.Domain)
	for _, r := range l.regions {
		fmt.Fprintf(b, "  - name: %s\n    racks:\n", r.name)
		for _, rk := range r.racks {
			fmt.Fprintf(b, "      - name: %s\n", rk.name)
		}
	}
	b.WriteString(`defaults:
  image: ubuntu-22.04
  patchSet: "2026-11"
  dnsTTL: 300
`)
	if l.opts.Policies != nil {
		writePolicies(b, l.opts.Policies)
		return
	}
	b.WriteString(`policies:
  canaries: 2
  maxUnavailable:
    perRack: 2
    perRole:
      compute: "10%"
      storage: 1
      ingress: 1
      api: 1
  maxBuildAge: 90d
  dnsMassDeletePercent: 20
  maxConcurrentInstalls: 50
`)
}

// writePolicies writes Options.Policies (maxBuildAge and
// dnsMassDeletePercent as the defaults).
func writePolicies(b *bufio.Writer, p *Policies) {
	bound := func(v string) string {
		if strings.HasSuffix(v, "%") {
			return `"` + v + `"`
		}
		return v
	}
	fmt.Fprintf(b, "policies:\n  canaries: %d\n", p.Canaries)
	if p.PerRack != "" || len(p.PerRole) > 0 {
		b.WriteString("  maxUnavailable:\n")
		if p.PerRack != "" {
			fmt.Fprintf(b, "    perRack: %s\n", bound(p.PerRack))
		}
		if len(p.PerRole) > 0 {
			b.WriteString("    perRole:\n")
			roles := make([]string, 0, len(p.PerRole))
			for r := range p.PerRole {
				roles = append(roles, r)
			}
			slices.Sort(roles)
			for _, r := range roles {
				fmt.Fprintf(b, "      %s: %s\n", r, bound(p.PerRole[r]))
			}
		}
	}
	b.WriteString("  maxBuildAge: 90d\n  dnsMassDeletePercent: 20\n")
	if p.MaxConcurrentInstalls > 0 {
		fmt.Fprintf(b, "  maxConcurrentInstalls: %d\n", p.MaxConcurrentInstalls)
	}
}

// private4 is the /20 of a private network of region r: 10.r.(16*block).0/20.
func private4(r, block int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(r), byte(16 * block), 0}), 20)
}

// public4 is region r's public /20 in 100.64.0.0/10.
func public4(r int) netip.Prefix {
	v := uint32(100)<<24 | uint32(64)<<16 | uint32(r)<<12
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], v)
	return netip.PrefixFrom(netip.AddrFrom4(a), 20)
}

// ula48 and public48 are region r's IPv6 /48s; a network's /64 is the /48
// with the VLAN id (as hex digits, like the example) in the fourth group.
func ula48(r int) string    { return fmt.Sprintf("fd00:a:%x", r) }
func public48(r int) string { return fmt.Sprintf("2001:db8:%x", r) }

// hostAddr is the address index hosts into p (the caller keeps it inside).
func hostAddr(p netip.Prefix, index uint32) netip.Addr {
	a := p.Addr().As4()
	binary.BigEndian.PutUint32(a[:], binary.BigEndian.Uint32(a[:])+index)
	return netip.AddrFrom4(a)
}

func prefix4(r int, k int) netip.Prefix {
	if netKinds[k].block < 0 {
		return public4(r)
	}
	return private4(r, netKinds[k].block)
}

func prefix6(r int, k int) string {
	base := ula48(r)
	if netKinds[k].role == "public" {
		base = public48(r)
	}
	return fmt.Sprintf("%s:%d::", base, netKinds[k].vlan)
}

func netName(region string, k int) string { return region + "-" + netKinds[k].role }

func (l *layout) networks(b *bufio.Writer) {
	b.WriteString("# Five networks a region; VLAN ids repeat across regions (each network is\n# limited to its region), prefixes do not.\n")
	first := true
	for _, reg := range l.regions {
		for k, nk := range netKinds {
			if !first {
				b.WriteString("---\n")
			}
			first = false
			header(b, "Network", netName(reg.name, k))
			fmt.Fprintf(b, "role: %s\n", nk.role)
			if nk.role == "provisioning" {
				b.WriteString("provisioning: true\n")
			}
			fmt.Fprintf(b, "vlan: %d\nregion: %s\n", nk.vlan, reg.name)
			if nk.mtu != 0 {
				fmt.Fprintf(b, "mtu: %d\n", nk.mtu)
			}
			p4 := prefix4(reg.index, k)
			p6 := prefix6(reg.index, k)
			fmt.Fprintf(b, "ipv4:\n  cidr: %s\n", p4)
			if nk.gateway {
				fmt.Fprintf(b, "  gateway: %s\n", p4.Addr().Next())
			}
			fmt.Fprintf(b, "ipv6:\n  prefix: %s/64\n", p6)
			if nk.gateway {
				fmt.Fprintf(b, "  gateway: %s1\n", p6)
			}
			fmt.Fprintf(b, "dns:\n  pattern: \"{node}.%s.{region}.{domain}\"\n", nk.short)
		}
	}
}

func writeProfile(b *bufio.Writer, p *profile) {
	header(b, "HardwareProfile", p.name)
	fmt.Fprintf(b, "vendor: %s\nmodel: %s\nbmc: %s\nfirmware:\n  bios: %q\n  bmc: %q\nnics:\n", p.vendor, p.model, p.bmc, p.bios, p.bmcFW)
	for _, n := range p.nics {
		if n.pxe {
			fmt.Fprintf(b, "  - {name: %s, speed: %s, pxe: true}\n", n.name, n.speed)
		} else {
			fmt.Fprintf(b, "  - {name: %s, speed: %s}\n", n.name, n.speed)
		}
	}
	b.WriteString("disks:\n")
	for _, d := range p.disks {
		fmt.Fprintf(b, "  - {name: %s, size: %s, type: %s}\n", d.name, d.size, d.typ)
	}
}

func writeImages(b *bufio.Writer) {
	b.WriteString(`apiVersion: anneal.dev/v1alpha1
kind: Image
name: ubuntu-22.04
version: 22.04.4
arch: amd64
installer: autoinstall
kernel:
  url: http://boot.example.net/images/ubuntu-22.04.4/vmlinuz
  sha256: 3b4c0a1e6d1f2c5e8a9b7d6c4e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f
initrd:
  url: http://boot.example.net/images/ubuntu-22.04.4/initrd
  sha256: 8f7e6d5c4b3a29180f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3b2
rootfs:
  url: http://boot.example.net/images/ubuntu-22.04.4/rootfs.squashfs
  sha256: a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90
kernelArgs:
  - console=ttyS0,115200n8
  - ip=dhcp
---
apiVersion: anneal.dev/v1alpha1
kind: Image
name: rocky-9
version: "9.4"
arch: amd64
installer: kickstart
kernel:
  url: http://boot.example.net/images/rocky-9.4/vmlinuz
  sha256: 0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0
initrd:
  url: http://boot.example.net/images/rocky-9.4/initrd.img
  sha256: 1234567890abcdef1234567890abcdef1234567890abcdef1234567890abcdef
kernelArgs:
  - console=ttyS0,115200n8
  - inst.text
`)
}

func writePatchSets(b *bufio.Writer) {
	b.WriteString(`apiVersion: anneal.dev/v1alpha1
kind: PatchSet
name: "2026-10"
kernel: 5.15.0-124-generic
packages:
  openssl: 3.0.2-0ubuntu1.18
  openssh-server: 1:8.9p1-3ubuntu0.10
---
apiVersion: anneal.dev/v1alpha1
kind: PatchSet
name: "2026-11"
kernel: 5.15.0-126-generic
packages:
  openssl: 3.0.2-0ubuntu1.19
  openssh-server: 1:8.9p1-3ubuntu0.11
  systemd: 249.11-0ubuntu3.14
`)
}

// reverse4 is the in-addr.arpa zone of the /16 holding p.
func reverse4(p netip.Prefix) string {
	a := p.Addr().As4()
	return fmt.Sprintf("%d.%d.in-addr.arpa", a[1], a[0])
}

// reverse6 is the ip6.arpa zone of a /48 written as three groups.
func reverse6(p48 string) string {
	a := netip.MustParseAddr(p48 + "::").As16()
	const hex = "0123456789abcdef"
	var s strings.Builder
	for i := 5; i >= 0; i-- {
		s.WriteByte(hex[a[i]&0xf])
		s.WriteByte('.')
		s.WriteByte(hex[a[i]>>4])
		s.WriteByte('.')
	}
	s.WriteString("ip6.arpa")
	return s.String()
}

type zone struct {
	name    string
	forward bool
	public  bool
}

// zones lists every zone: the domain, one per region, then the reverse
// zones covering every address.
func (l *layout) zones() []zone {
	d := l.opts.Domain
	out := []zone{{name: d, forward: true, public: true}}
	for _, r := range l.regions {
		out = append(out, zone{name: r.name + "." + d, forward: true, public: true})
	}
	seen := map[string]bool{}
	for _, r := range l.regions {
		z := reverse4(private4(r.index, 0))
		out = append(out, zone{name: z})
		if p := reverse4(public4(r.index)); !seen[p] {
			seen[p] = true
			out = append(out, zone{name: p, public: true})
		}
		out = append(out, zone{name: reverse6(ula48(r.index))}, zone{name: reverse6(public48(r.index)), public: true})
	}
	return out
}

func (l *layout) dns(b *bufio.Writer) {
	d := l.opts.Domain
	b.WriteString("# Zones: the domain, one per region, in-addr.arpa per /16 and ip6.arpa per /48.\n")
	header(b, "DNS", "dns")
	b.WriteString("ttl: 300\n")
	// Primary names by role: each node's own internal network, whatever
	// its region.
	b.WriteString("primaryName:\n  pattern: \"{node}.{region}.{domain}\"\n  role: internal\n")
	b.WriteString("zones:\n")
	zones := l.zones()
	for _, z := range zones {
		fmt.Fprintf(b, "  - name: %s\n", z.name)
	}
	b.WriteString("wildcards:\n")
	for _, r := range l.regions {
		fmt.Fprintf(b, "  - name: \"*.apps.%s.%s\"\n    target: ingress.%s.%s\n", r.name, d, r.name, d)
	}
	// One ingress group a region (one ingress node a compute rack: at most
	// RacksPerRegion members) and a site-wide api group on the first
	// region's public network.
	b.WriteString("groups:\n")
	for _, r := range l.regions {
		fmt.Fprintf(b, "  - name: ingress-%s\n    fqdn: ingress.%s.%s\n    network: %s\n    roles: [ingress]\n    ttl: 60\n", r.name, r.name, d, netName(r.name, 3))
	}
	fmt.Fprintf(b, "  - name: api\n    fqdn: api.%s\n    network: %s\n    roles: [api]\n    ttl: 60\n", d, netName(l.regions[0].name, 3))
	// mail sits in the first region's public /20, above every hostIndex.
	mail := hostAddr(public4(0), 4000)
	fmt.Fprintf(b, `records:
  - {name: ntp.%[1]s, type: A, value: 10.0.32.2}
  - {name: %[1]s, type: MX, value: "10 mail.%[1]s."}
  - {name: mail.%[1]s, type: A, value: %[2]s}
  - {name: %[1]s, type: TXT, value: "v=spf1 mx -all"}
  - {name: _ldap._tcp.%[1]s, type: SRV, value: "0 100 389 ldap.%[1]s."}
`, d, mail)
	b.WriteString(`targets:
  - name: bind
    kind: rfc2136
    server: 127.0.0.1:5301
    tsig:
      name: anneal
      algorithm: hmac-sha256
      secret: secret:tsig-key
    zones:
`)
	for _, z := range zones {
		fmt.Fprintf(b, "      - %s\n", z.name)
	}
	b.WriteString(`  - name: pdns
    kind: powerdns
    api: http://127.0.0.1:8081
    apiKey: secret:pdns-api-key
    server: 127.0.0.1:5302
    zones:
`)
	for _, z := range zones {
		if z.public {
			fmt.Fprintf(b, "      - %s\n", z.name)
		}
	}
}

func mac(oui string, node, port int) string {
	v := node<<3 | port
	return fmt.Sprintf("%s:%02x:%02x:%02x", oui, v>>16&0xff, v>>8&0xff, v&0xff)
}

// rackNodes writes one rack's nodes as a multi-document file.
func (l *layout) rackNodes(b *bufio.Writer, reg region, rk rack, rng *rand.Rand) {
	fmt.Fprintf(b, "# Rack %s in region %s.\n", rk.name, reg.name)
	p := &profiles[0]
	if rk.storage {
		p = &profiles[1]
	}
	perRegion := l.opts.NodesPerRack * l.opts.RacksPerRegion
	for slot := range rk.nodes {
		g := rk.first + slot
		if slot > 0 {
			b.WriteString("---\n")
		}
		header(b, "Node", fmt.Sprintf("%s-n%02d", rk.name, slot+1))
		fmt.Fprintf(b, "region: %s\nrack: %s\nhardwareProfile: %s\nhostIndex: %d\n", reg.name, rk.name, p.name, firstHost+g%perRegion)
		fmt.Fprintf(b, "bmc:\n  mac: %s\n  username: anneal\n  password: secret:bmc-password\ninterfaces:\n", mac(p.oui, g, 0))
		for i, n := range p.nics {
			fmt.Fprintf(b, "  - {nic: %s, mac: \"%s\"}\n", n.name, mac(p.oui, g, i+1))
		}
		net := func(k int) string { return netName(reg.name, k) }
		if rk.storage {
			fmt.Fprintf(b, `bonds:
  - name: bond0
    mode: active-backup
    members: [enp65s0f0, enp65s0f1]
vlans:
  - {name: bond0.120, link: bond0, id: 120}
  - {name: bond0.140, link: bond0, id: 140}
networks:
  - {network: %s, interface: eno1}
  - {network: %s, interface: bond0.120}
  - {network: %s, interface: bond0.140}
roles: [storage]
image: rocky-9
`, net(1), net(2), net(4))
		} else {
			role := "compute"
			switch {
			case slot == 0:
				role = "ingress" // one a rack: the region's ingress group stays small
			case slot == 1 && reg.index == 0:
				role = "api"
			}
			// Half the compute nodes are hypervisors whose VMs share the
			// public VLAN through a bridge.
			bridge := role == "compute" && rng.IntN(2) == 0
			b.WriteString(`bonds:
  - name: bond0
    mode: 802.3ad
    members: [ens1f0, ens1f1]
vlans:
  - {name: bond0.120, link: bond0, id: 120}
  - {name: bond0.130, link: bond0, id: 130}
  - {name: ens2f0.140, link: ens2f0, id: 140}
`)
			public := "bond0.130"
			if bridge {
				b.WriteString("bridges:\n  - {name: br-public, members: [bond0.130], stp: false}\n")
				public = "br-public"
			}
			fmt.Fprintf(b, `networks:
  - {network: %s, interface: eno1}
  - {network: %s, interface: bond0.120}
  - {network: %s, interface: %s}
  - {network: %s, interface: ens2f0.140}
roles: [%s]
`, net(1), net(2), net(3), public, net(4), role)
			// The first region's third node of its first rack joins the
			// api group by name rather than by role.
			if reg.index == 0 && g == 2 {
				b.WriteString("groups: [api]\n")
			}
			// One compute node in fifty carries a service alias.
			if role == "compute" && g%50 == 7 {
				fmt.Fprintf(b, "aliases: [svc-%d]\n", g)
			}
			if rng.IntN(10) == 0 {
				b.WriteString("patchSet: \"2026-10\"\n")
			}
		}
		if rng.IntN(100) == 0 {
			b.WriteString("state: maintenance\n")
		}
	}
}
