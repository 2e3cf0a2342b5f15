package schema

import (
	"net/netip"
	"time"
)

// APIVersion is the only document version this build of anneal reads.
const APIVersion = "anneal.dev/v1alpha1"

// Kinds of documents, in the order their checks run.
const (
	KindSite            = "Site"
	KindNetwork         = "Network"
	KindHardwareProfile = "HardwareProfile"
	KindImage           = "Image"
	KindPatchSet        = "PatchSet"
	KindNode            = "Node"
	KindDNS             = "DNS"
)

// Kinds lists every document kind, sorted.
func Kinds() []string {
	return []string{KindDNS, KindHardwareProfile, KindImage, KindNetwork, KindNode, KindPatchSet, KindSite}
}

// Source is where a document was declared.
type Source struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Column int    `json:"column"`
}

// Meta is common to every document.
type Meta struct {
	APIVersion string `yaml:"apiVersion" json:"-"`
	Kind       string `yaml:"kind" json:"-"`
	Name       string `yaml:"name" json:"name"`
	Source     Source `yaml:"-" json:"-"`

	doc *document // only while loading: field positions for diagnostics
}

func (m *Meta) meta() *Meta { return m }

// Site is the whole declared site: every document of one commit, checked and
// resolved. It is immutable once loaded and safe to share between goroutines.
type Site struct {
	// Digest identifies the site's content: a hash over every site file's
	// path and bytes. The same files give the same digest, from a
	// directory or from any commit that holds them.
	Digest           string             `json:"digest"`
	Config           *SiteConfig        `json:"site"`
	Networks         []*Network         `json:"networks"`
	HardwareProfiles []*HardwareProfile `json:"hardwareProfiles"`
	Images           []*Image           `json:"images"`
	PatchSets        []*PatchSet        `json:"patchSets"`
	Nodes            []*Node            `json:"nodes"`
	DNS              *DNS               `json:"dns,omitempty"`

	networks  map[string]*Network
	profiles  map[string]*HardwareProfile
	images    map[string]*Image
	patchSets map[string]*PatchSet
	nodes     map[string]*Node
	rejected  map[rejected]bool // only while loading
}

// SiteConfig is the Site document: identity, topology and policies.
type SiteConfig struct {
	Meta     `yaml:",inline"`
	Domain   string   `yaml:"domain" json:"domain"`
	Regions  []Region `yaml:"regions" json:"regions"`
	Defaults Defaults `yaml:"defaults" json:"defaults"`
	Policies Policies `yaml:"policies" json:"policies"`
}

// Region groups racks.
type Region struct {
	Name  string `yaml:"name" json:"name"`
	Racks []Rack `yaml:"racks" json:"racks"`
}

// Rack belongs to one region.
type Rack struct {
	Name string `yaml:"name" json:"name"`
}

// Defaults apply to nodes that do not say otherwise.
type Defaults struct {
	Image    string `yaml:"image" json:"image,omitempty"`
	PatchSet string `yaml:"patchSet" json:"patchSet,omitempty"`
	DNSTTL   int    `yaml:"dnsTTL" json:"dnsTTL,omitempty"`
}

// Policies bound what one apply may do to the fleet.
type Policies struct {
	Canaries              int            `yaml:"canaries" json:"canaries"`
	MaxUnavailable        MaxUnavailable `yaml:"maxUnavailable" json:"maxUnavailable"`
	MaxBuildAge           Duration       `yaml:"maxBuildAge" json:"maxBuildAge,omitempty"`
	DNSMassDeletePercent  int            `yaml:"dnsMassDeletePercent" json:"dnsMassDeletePercent"`
	MaxConcurrentInstalls int            `yaml:"maxConcurrentInstalls" json:"maxConcurrentInstalls"`
	MaxFailures           IntOrPercent   `yaml:"maxFailures" json:"maxFailures"`
	// MaxRemovePercent and MaxRebuildPercent bound, as shares of the
	// fleet, the nodes one revision removes or rebuilds without approval
	// (0: the default).
	MaxRemovePercent  int `yaml:"maxRemovePercent" json:"maxRemovePercent,omitempty"`
	MaxRebuildPercent int `yaml:"maxRebuildPercent" json:"maxRebuildPercent,omitempty"`
}

// MaxUnavailable caps nodes down at once, per rack and per role.
type MaxUnavailable struct {
	PerRack IntOrPercent            `yaml:"perRack" json:"perRack"`
	PerRole map[string]IntOrPercent `yaml:"perRole" json:"perRole,omitempty"`
}

// Duration is a time.Duration written as 90d, 12h, 1w2d, ...
type Duration struct{ time.Duration }

// IntOrPercent is a count of nodes or a percentage of a population.
type IntOrPercent struct {
	Value   int  `json:"value"`
	Percent bool `json:"percent,omitempty"`
}

// Of resolves the bound against a population of total nodes. A percentage
// rounds down but never below one, so a rollout always makes progress.
func (p IntOrPercent) Of(total int) int {
	if !p.Percent {
		return p.Value
	}
	n := total * p.Value / 100
	if n < 1 && p.Value > 0 && total > 0 {
		n = 1
	}
	return n
}

// NetworkRole says what a network carries.
type NetworkRole string

// Network roles.
const (
	RoleBMC          NetworkRole = "bmc"
	RoleProvisioning NetworkRole = "provisioning"
	RoleAdmin        NetworkRole = "admin"
	RoleInternal     NetworkRole = "internal"
	RolePublic       NetworkRole = "public"
	RoleStorage      NetworkRole = "storage"
	RoleManagement   NetworkRole = "management"
)

// Network is an L2 segment with its IP prefixes and DNS naming.
type Network struct {
	Meta         `yaml:",inline"`
	Role         NetworkRole `yaml:"role" json:"role"`
	VLAN         int         `yaml:"vlan" json:"vlan"`
	Provisioning bool        `yaml:"provisioning" json:"provisioning,omitempty"`
	Region       string      `yaml:"region" json:"region,omitempty"`
	MTU          int         `yaml:"mtu" json:"mtu,omitempty"`
	IPv4         *IPv4Net    `yaml:"ipv4" json:"ipv4,omitempty"`
	IPv6         *IPv6Net    `yaml:"ipv6" json:"ipv6,omitempty"`
	Resolvers    []string    `yaml:"resolvers" json:"resolvers,omitempty"`
	DNS          *NetworkDNS `yaml:"dns" json:"dns,omitempty"`
}

// IPv4Net is a network's IPv4 side.
type IPv4Net struct {
	CIDR    string       `yaml:"cidr" json:"cidr"`
	Gateway string       `yaml:"gateway" json:"gateway,omitempty"`
	Prefix  netip.Prefix `yaml:"-" json:"-"`
	GW      netip.Addr   `yaml:"-" json:"-"`
}

// IPv6Net is a network's IPv6 side.
type IPv6Net struct {
	Prefix    string       `yaml:"prefix" json:"prefix"`
	Gateway   string       `yaml:"gateway" json:"gateway,omitempty"`
	NetPrefix netip.Prefix `yaml:"-" json:"-"`
	GW        netip.Addr   `yaml:"-" json:"-"`
}

// NetworkDNS says how addresses on a network are named.
type NetworkDNS struct {
	Pattern string `yaml:"pattern" json:"pattern"`
	Reverse *bool  `yaml:"reverse" json:"reverse,omitempty"`
	TTL     int    `yaml:"ttl" json:"ttl,omitempty"`
}

// PublishReverse reports whether PTR records are published (default yes).
func (d *NetworkDNS) PublishReverse() bool { return d.Reverse == nil || *d.Reverse }

// HardwareProfile describes one server model.
type HardwareProfile struct {
	Meta     `yaml:",inline"`
	Vendor   string   `yaml:"vendor" json:"vendor"`
	Model    string   `yaml:"model" json:"model"`
	BMC      BMCKind  `yaml:"bmc" json:"bmc"`
	Firmware Firmware `yaml:"firmware" json:"firmware"`
	NICs     []NIC    `yaml:"nics" json:"nics"`
	Disks    []Disk   `yaml:"disks" json:"disks,omitempty"`
}

// BMCKind is the management protocol a BMC speaks.
type BMCKind string

// BMC kinds.
const (
	BMCRedfish BMCKind = "redfish"
	BMCIPMI    BMCKind = "ipmi"
)

// Firmware lists expected firmware versions.
type Firmware struct {
	BIOS string `yaml:"bios" json:"bios,omitempty"`
	BMC  string `yaml:"bmc" json:"bmc,omitempty"`
}

// NIC is a network port of a hardware profile.
type NIC struct {
	Name  string `yaml:"name" json:"name"`
	Speed string `yaml:"speed" json:"speed"`
	PXE   bool   `yaml:"pxe" json:"pxe,omitempty"`
}

// Disk is a disk of a hardware profile.
type Disk struct {
	Name string `yaml:"name" json:"name"`
	Size string `yaml:"size" json:"size"`
	Type string `yaml:"type" json:"type"`
}

// Image is an installable operating system.
type Image struct {
	Meta      `yaml:",inline"`
	Version   string        `yaml:"version" json:"version"`
	Arch      string        `yaml:"arch" json:"arch"`
	Installer InstallerKind `yaml:"installer" json:"installer"`
	Kernel    Artifact      `yaml:"kernel" json:"kernel"`
	Initrd    Artifact      `yaml:"initrd" json:"initrd"`
	Rootfs    *Artifact     `yaml:"rootfs" json:"rootfs,omitempty"`
	// Disk is the whole-disk image of installer "image".
	Disk       *DiskImage `yaml:"disk" json:"disk,omitempty"`
	KernelArgs []string   `yaml:"kernelArgs" json:"kernelArgs,omitempty"`
	// Mirror is where the installer fetches packages (an archive's base
	// URL, or for kickstart the BaseOS repository); "" leaves the
	// installer's default.
	Mirror string `yaml:"mirror" json:"mirror,omitempty"`
}

// InstallerKind selects the install configuration format.
type InstallerKind string

// Installer kinds.
const (
	InstallerCloudInit   InstallerKind = "cloud-init"
	InstallerAutoinstall InstallerKind = "autoinstall"
	InstallerKickstart   InstallerKind = "kickstart"
	InstallerPreseed     InstallerKind = "preseed"
	// InstallerImage writes Image.Disk to the node's install disk from
	// anneal's own deploy environment.
	InstallerImage InstallerKind = "image"
)

// DiskImage is a whole-disk image: the artifact (compressed or not) and
// where its root file system is.
type DiskImage struct {
	Artifact `yaml:",inline"`
	// Format is "raw" (default), "raw.gz" or "raw.zst".
	Format string `yaml:"format" json:"format,omitempty"`
	// RootPartition is the root file system's partition number (0: 1).
	RootPartition int `yaml:"rootPartition" json:"rootPartition,omitempty"`
}

// Disk image formats.
const (
	DiskRaw     = "raw"
	DiskRawGzip = "raw.gz"
	DiskRawZstd = "raw.zst"
)

// FormatOrDefault is the image's format, "raw" when not given.
func (d *DiskImage) FormatOrDefault() string {
	if d.Format == "" {
		return DiskRaw
	}
	return d.Format
}

// Root is the root partition's number, 1 when not given.
func (d *DiskImage) Root() int {
	if d.RootPartition <= 0 {
		return 1
	}
	return d.RootPartition
}

// Artifact is a downloadable file with its checksum and, optionally, its
// length in bytes (0: not declared).
type Artifact struct {
	URL    string `yaml:"url" json:"url"`
	SHA256 string `yaml:"sha256" json:"sha256"`
	Size   int64  `yaml:"size" json:"size,omitempty"`
}

// PatchSet pins a kernel and packages on top of an image.
type PatchSet struct {
	Meta     `yaml:",inline"`
	Kernel   string            `yaml:"kernel" json:"kernel"`
	Packages map[string]string `yaml:"packages" json:"packages,omitempty"`
}

// LifecycleState is where a node is in its life.
type LifecycleState string

// Lifecycle states.
const (
	StateActive         LifecycleState = "active"
	StateMaintenance    LifecycleState = "maintenance"
	StateDecommissioned LifecycleState = "decommissioned"
)

// Node is one physical server.
type Node struct {
	Meta            `yaml:",inline"`
	Region          string         `yaml:"region" json:"region"`
	Rack            string         `yaml:"rack" json:"rack"`
	HardwareProfile string         `yaml:"hardwareProfile" json:"hardwareProfile"`
	HostIndex       int            `yaml:"hostIndex" json:"hostIndex"`
	BMC             NodeBMC        `yaml:"bmc" json:"bmc"`
	Interfaces      []Interface    `yaml:"interfaces" json:"interfaces"`
	Bonds           []Bond         `yaml:"bonds" json:"bonds,omitempty"`
	Bridges         []Bridge       `yaml:"bridges" json:"bridges,omitempty"`
	VLANs           []VLAN         `yaml:"vlans" json:"vlans,omitempty"`
	Networks        []Attachment   `yaml:"networks" json:"networks"`
	Image           string         `yaml:"image" json:"image"`
	PatchSet        string         `yaml:"patchSet" json:"patchSet"`
	Roles           []string       `yaml:"roles" json:"roles,omitempty"`
	Aliases         []string       `yaml:"aliases" json:"aliases,omitempty"`
	Groups          []string       `yaml:"groups" json:"groups,omitempty"`
	State           LifecycleState `yaml:"state" json:"state"`

	// Addresses are derived at load: one per attachment, in declaration
	// order, then the BMC's when it sits on a bmc network.
	Addresses []Address `yaml:"-" json:"addresses"`
	// PrimaryFQDN is the node's own name ("" without DNS primaryName) and
	// PrimaryNetwork the network whose address it carries.
	PrimaryFQDN    string `yaml:"-" json:"primaryFqdn,omitempty"`
	PrimaryNetwork string `yaml:"-" json:"primaryNetwork,omitempty"`
	// AliasFQDNs are the CNAMEs pointing at PrimaryFQDN.
	AliasFQDNs []string `yaml:"-" json:"aliasFqdns,omitempty"`
}

// InService reports whether the node should carry traffic (DNS groups).
func (n *Node) InService() bool { return n.State == StateActive }

// Exists reports whether the node is part of the fleet (not decommissioned).
func (n *Node) Exists() bool { return n.State != StateDecommissioned }

// NodeBMC is how anneal reaches a node's BMC.
type NodeBMC struct {
	// Address is the BMC's IP or host name; when the site leaves it out it
	// is derived at load from the bmc network and the node's hostIndex.
	Address  string `yaml:"address" json:"address"`
	Port     int    `yaml:"port" json:"port,omitempty"`
	MAC      string `yaml:"mac" json:"mac,omitempty"`
	Username string `yaml:"username" json:"username"`
	// Password names a granted secret (secret:NAME), never a secret.
	Password SecretRef `yaml:"password" json:"password"`
}

// Interface is a physical port of a node.
type Interface struct {
	NIC string `yaml:"nic" json:"nic"`
	MAC string `yaml:"mac" json:"mac"`
}

// Bond aggregates interfaces.
type Bond struct {
	Name    string   `yaml:"name" json:"name"`
	Mode    string   `yaml:"mode" json:"mode"`
	Members []string `yaml:"members" json:"members"`
}

// Bridge is a software switch over interfaces, bonds or VLANs.
type Bridge struct {
	Name    string   `yaml:"name" json:"name"`
	Members []string `yaml:"members" json:"members"`
	STP     bool     `yaml:"stp" json:"stp"`
}

// VLAN is a tagged sub-interface.
type VLAN struct {
	Name string `yaml:"name" json:"name"`
	Link string `yaml:"link" json:"link"`
	ID   int    `yaml:"id" json:"id"`
}

// Attachment puts a network on one of a node's devices.
type Attachment struct {
	Network   string `yaml:"network" json:"network"`
	Interface string `yaml:"interface" json:"interface"`
	IPv4      string `yaml:"ipv4" json:"ipv4,omitempty"`
	IPv6      string `yaml:"ipv6" json:"ipv6,omitempty"`
}

// Address is a node's derived address on one network.
type Address struct {
	Network   string     `json:"network"`
	Interface string     `json:"interface"`
	IPv4      netip.Addr `json:"ipv4,omitzero"`
	IPv6      netip.Addr `json:"ipv6,omitzero"`
	// FQDN is the name from the network's naming pattern ("" when the
	// network has no DNS); Reverse says whether PTRs are published.
	FQDN    string `json:"fqdn,omitempty"`
	Reverse bool   `json:"reverse,omitempty"`
}

// DNS declares zones, names and where they are served.
type DNS struct {
	Meta        `yaml:",inline"`
	TTL         int          `yaml:"ttl" json:"ttl,omitempty"`
	PrimaryName *PrimaryName `yaml:"primaryName" json:"primaryName,omitempty"`
	Zones       []Zone       `yaml:"zones" json:"zones"`
	Wildcards   []Wildcard   `yaml:"wildcards" json:"wildcards,omitempty"`
	Groups      []Group      `yaml:"groups" json:"groups,omitempty"`
	Records     []Record     `yaml:"records" json:"records,omitempty"`
	Targets     []Target     `yaml:"targets" json:"targets"`
}

// PrimaryName names each node once, on one network: the named one, or the
// node's network of a role.
type PrimaryName struct {
	Pattern string      `yaml:"pattern" json:"pattern"`
	Network string      `yaml:"network" json:"network,omitempty"`
	Role    NetworkRole `yaml:"role" json:"role,omitempty"`
}

// Zone is a DNS zone anneal manages (forward or reverse).
type Zone struct {
	Name string `yaml:"name" json:"name"`
	TTL  int    `yaml:"ttl" json:"ttl,omitempty"`
}

// Wildcard is a wildcard CNAME.
type Wildcard struct {
	Name   string `yaml:"name" json:"name"`
	Target string `yaml:"target" json:"target"`
	TTL    int    `yaml:"ttl" json:"ttl,omitempty"`
}

// Group is a round-robin name over its members' addresses on one network.
type Group struct {
	Name    string   `yaml:"name" json:"name"`
	FQDN    string   `yaml:"fqdn" json:"fqdn"`
	Network string   `yaml:"network" json:"network"`
	Roles   []string `yaml:"roles" json:"roles,omitempty"`
	TTL     int      `yaml:"ttl" json:"ttl,omitempty"`
}

// Record is an extra static record.
type Record struct {
	Name  string `yaml:"name" json:"name"`
	Type  string `yaml:"type" json:"type"`
	Value string `yaml:"value" json:"value"`
	TTL   int    `yaml:"ttl" json:"ttl,omitempty"`
}

// TargetKind is the protocol a DNS target speaks.
type TargetKind string

// DNS target kinds.
const (
	TargetRFC2136  TargetKind = "rfc2136"
	TargetPowerDNS TargetKind = "powerdns"
)

// DefaultMaxRecordsPerType is BIND 9.18.28+'s max-records-per-type.
const DefaultMaxRecordsPerType = 100

// Target is a DNS server anneal writes zones to.
type Target struct {
	Name              string     `yaml:"name" json:"name"`
	Kind              TargetKind `yaml:"kind" json:"kind"`
	Zones             []string   `yaml:"zones" json:"zones"`
	MaxRecordsPerType int        `yaml:"maxRecordsPerType" json:"maxRecordsPerType,omitempty"`
	Server            string     `yaml:"server" json:"server,omitempty"`
	TSIG              *TSIG      `yaml:"tsig" json:"tsig,omitempty"`
	API               string     `yaml:"api" json:"api,omitempty"`
	APIKey            SecretRef  `yaml:"apiKey" json:"apiKey,omitempty"`
	ServerID          string     `yaml:"serverId" json:"serverId,omitempty"`
}

// RecordLimit is the records-per-type limit of the target; 0 means none.
func (t *Target) RecordLimit() int {
	if t.MaxRecordsPerType > 0 {
		return t.MaxRecordsPerType
	}
	if t.Kind == TargetRFC2136 {
		return DefaultMaxRecordsPerType
	}
	return 0
}

// TSIG is a transaction signature key, by reference.
type TSIG struct {
	Name      string    `yaml:"name" json:"name"`
	Algorithm string    `yaml:"algorithm" json:"algorithm"`
	Secret    SecretRef `yaml:"secret" json:"secret"`
}
