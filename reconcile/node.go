package reconcile

import (
	"context"
	"time"
)

// Facts are what an installed node says about itself: in its install
// callback, and on an interval from `anneal agent`. The live fleet is the
// truth for drift; facts are how anneal sees it.
type Facts struct {
	Hostname string `json:"hostname"`
	// OSRelease holds /etc/os-release keys (ID, VERSION_ID, PRETTY_NAME).
	OSRelease map[string]string `json:"osRelease,omitempty"`
	// Kernel is the running kernel release (uname -r).
	Kernel     string          `json:"kernel"`
	Interfaces []FactInterface `json:"interfaces"`
	// Resolvers are the DNS servers the node uses.
	Resolvers []string `json:"resolvers,omitempty"`
	// Routes are the node's default routes ("default via GW dev DEV").
	Routes []FactRoute `json:"routes,omitempty"`
}

// Interface kinds in facts.
const (
	KindEther  = "ether"
	KindBond   = "bond"
	KindVLAN   = "vlan"
	KindBridge = "bridge"
)

// FactInterface is one network device of an installed node.
type FactInterface struct {
	Name string `json:"name"`
	// Kind is ether, bond, vlan or bridge.
	Kind string `json:"kind"`
	MAC  string `json:"mac,omitempty"`
	MTU  int    `json:"mtu,omitempty"`
	// Master is the bond or bridge this device is enslaved to.
	Master   string `json:"master,omitempty"`
	BondMode string `json:"bondMode,omitempty"`
	// VLANID and Link describe a VLAN device and its parent.
	VLANID int    `json:"vlanId,omitempty"`
	Link   string `json:"link,omitempty"`
	// Addresses are global addresses in CIDR notation (10.0.0.5/24).
	Addresses []string `json:"addresses,omitempty"`
}

// FactRoute is a default route.
type FactRoute struct {
	Gateway string `json:"gateway"`
	Device  string `json:"device"`
}

// Report kinds.
const (
	ReportInstalled = "installed" // the install callback
	ReportAgent     = "agent"     // a periodic report from anneal agent
)

// Report is one report from a node.
type Report struct {
	Node    string    `json:"node"`
	Kind    string    `json:"kind"`
	BuildID string    `json:"buildId"`
	Facts   Facts     `json:"facts"`
	Time    time.Time `json:"time"`
}

// NodeState is where a node is in its build lifecycle.
type NodeState string

// Node states: pending → provisioning → installed → verified, or failed.
const (
	NodeUnknown      NodeState = ""             // anneal has never built or heard from it
	NodePending      NodeState = "pending"      // a rebuild is planned, not started
	NodeProvisioning NodeState = "provisioning" // netboot armed, power cycled, install running
	NodeInstalled    NodeState = "installed"    // the install callback arrived
	NodeVerified     NodeState = "verified"     // facts match the build: ready
	NodeFailed       NodeState = "failed"
	NodeRetired      NodeState = "decommissioned"
)

// NodeRecord is what anneal remembers of a node: what it did to it and
// what the node last reported.
type NodeRecord struct {
	Name  string    `json:"name"`
	State NodeState `json:"state"`
	// Since is when the node entered State; each state has a timeout.
	Since  time.Time `json:"since"`
	Reason string    `json:"reason,omitempty"` // why it failed
	// BuildID is the build the node runs, as last verified or reported;
	// BuiltAt when it was installed.
	BuildID string    `json:"buildId,omitempty"`
	BuiltAt time.Time `json:"builtAt,omitzero"`
	// Spec is the build spec of BuildID, for field diffs of the next
	// rebuild.
	Spec *BuildSpec `json:"spec,omitempty"`
	// Target is the build being installed while provisioning.
	Target string `json:"target,omitempty"`
	// Nonce is the single-use install token's nonce while provisioning;
	// empty once the token has been used. TokenExpires bounds it.
	Nonce        string    `json:"nonce,omitempty"`
	TokenExpires time.Time `json:"tokenExpires,omitzero"`
	Attempts     int       `json:"attempts,omitempty"`
	// Netbooted is when the netboot server served the armed install
	// script, and InstallFetched when the installer fetched its files
	// (after that the node is served "boot from disk", so a machine that
	// netboots first does not install twice). Both are cleared at arming.
	Netbooted      time.Time `json:"netbooted,omitzero"`
	InstallFetched time.Time `json:"installFetched,omitzero"`
	// PowerCycles counts power cycles of the current arming.
	PowerCycles int `json:"powerCycles,omitempty"`
	// Facts are the last reported facts and FactsAt when they came.
	Facts   *Facts    `json:"facts,omitempty"`
	FactsAt time.Time `json:"factsAt,omitzero"`
	// Firmware is what the BMC last reported, at FirmwareAt.
	Firmware   *Firmware `json:"firmware,omitempty"`
	FirmwareAt time.Time `json:"firmwareAt,omitzero"`
}

// Armed reports whether the node's next netboot installs its target.
func (r *NodeRecord) Armed(now time.Time) bool {
	return r != nil && r.State == NodeProvisioning && r.Nonce != "" && now.Before(r.TokenExpires)
}

// NodeStore keeps node records. Update is a read-modify-write under the
// store's lock, so the rebuild engine and the install callback never
// overwrite each other.
type NodeStore interface {
	NodeRecords(ctx context.Context) (map[string]*NodeRecord, error)
	NodeRecord(ctx context.Context, name string) (*NodeRecord, error)
	// UpdateNode calls fn with the stored record (a new one with Name set
	// when none is stored) and stores what it leaves, unless fn fails.
	UpdateNode(ctx context.Context, name string, fn func(*NodeRecord) error) error
}
