package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
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
	// AgentGen is the agent token generation the netboot server accepted
	// the report with: a node is adopted only while its record still has
	// it (a revoke or re-enroll since then wins).
	AgentGen string `json:"agentGen,omitempty"`
}

// State is where a node is in its build lifecycle.
type State string

// Node states: pending → provisioning → installed → verified, or failed.
//
// The install callback alone never verifies a node: it moves it to
// installed ("installed, awaiting its agent's confirmation"), and the node
// is verified by the first report of its agent, with the agent token of
// this install, whose build and facts (read by the agent on the running
// system) match the build (see Record.Confirmed).
const (
	Unknown      State = ""             // anneal has never built or heard from it
	Pending      State = "pending"      // a rebuild is planned, not started
	Provisioning State = "provisioning" // netboot armed, power cycled, install running
	Installed    State = "installed"    // the install callback arrived; awaiting the agent's confirmation
	Verified     State = "verified"     // the agent's facts match the build: ready
	Failed       State = "failed"
	Retired      State = "decommissioned"
	// Retiring: its decommission began (out of its groups, power-off
	// sent or about to be); a node back in the site from here is rebuilt.
	Retiring State = "decommissioning"
)

// Record is what anneal remembers of a node: what it did to it and
// what the node last reported.
type Record struct {
	Name  string `json:"name"`
	State State  `json:"state"`
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
	// Fetched lists the install files served in the current arming: each
	// is served once. Cleared at arming.
	Fetched []string `json:"fetched,omitempty"`
	// PowerCycles counts power cycles of the current arming.
	PowerCycles int `json:"powerCycles,omitempty"`
	// AgentGen is the generation of the node's agent token, a random value
	// drawn at every arming (each install gets a new agent token) and by
	// RevokeAgent: a token of any other generation is refused. "" only on
	// records written before generations existed: their agents keep the
	// token they have until the node's next install or a revoke.
	AgentGen string `json:"agentGen,omitempty"`
	// Enrolled is when `anneal enroll` last gave the node an agent token
	// of a new generation: a machine anneal did not install. It is
	// adopted (verified, not rebuilt) once its agent reports its desired
	// build with facts that match the build; until then it is held, never
	// power-cycled, and Reason says why it was not adopted.
	Enrolled time.Time `json:"enrolled,omitzero"`
	// Facts are the last reported facts and FactsAt when they came;
	// FactsFrom says who reported them (ReportInstalled: the install
	// callback; ReportAgent: the node's agent) and FactsBuild the build id
	// that report named.
	Facts      *Facts    `json:"facts,omitempty"`
	FactsAt    time.Time `json:"factsAt,omitzero"`
	FactsFrom  string    `json:"factsFrom,omitempty"`
	FactsBuild string    `json:"factsBuild,omitempty"`
	// Firmware is what the BMC last reported, at FirmwareAt.
	Firmware   *Firmware `json:"firmware,omitempty"`
	FirmwareAt time.Time `json:"firmwareAt,omitzero"`
	// Declared is what the last revision that declared the node said of
	// it (rack, roles, BMC, own DNS records): a node that leaves the site
	// is decommissioned with it.
	Declared *Declared `json:"declared,omitempty"`
	// Power is the server's power as its BMC reported it at PowerAt: read
	// when anneal does not know what a node runs (a lost or fresh state).
	Power   PowerState `json:"power,omitempty"`
	PowerAt time.Time  `json:"powerAt,omitzero"`
	// Unobserved: the node was in the site when anneal's state had no
	// record of any node, and it has not been heard from since. Rebuilding
	// it is a change nobody reviewed: it waits for approval.
	Unobserved bool `json:"unobserved,omitempty"`
	// Deploy is the progress anneal's deploy environment (installer
	// image) last reported in the current arming. Cleared at arming.
	Deploy *DeployProgress `json:"deploy,omitempty"`
}

// DeployProgress is a deploy environment's report: its phase, the bytes
// of the disk image written so far and the image's size (0: unknown).
type DeployProgress struct {
	Phase string    `json:"phase"`
	Bytes int64     `json:"bytes,omitempty"`
	Total int64     `json:"total,omitempty"`
	At    time.Time `json:"at"`
}

// Armed reports whether the node's next netboot installs its target.
func (r *Record) Armed(now time.Time) bool {
	return r != nil && r.State == Provisioning && r.Nonce != "" && now.Before(r.TokenExpires)
}

// Confirmed reports whether the node's agent has reported since the
// installer of the current arming fetched its files: the report that
// confirms (or refutes) an install. Only the agent of this install holds a
// token of the current generation, so such a report comes from the
// installed system.
func (r *Record) Confirmed() bool {
	return r != nil && r.FactsFrom == ReportAgent && r.Facts != nil &&
		!r.InstallFetched.IsZero() && !r.FactsAt.Before(r.InstallFetched)
}

// Store keeps node records. Update is a read-modify-write under the
// store's lock, so the rebuild engine and the install callback never
// overwrite each other.
type Store interface {
	NodeRecords(ctx context.Context) (map[string]*Record, error)
	NodeRecord(ctx context.Context, name string) (*Record, error)
	// UpdateNode calls fn with the stored record (a new one with Name set
	// when none is stored) and stores what it leaves, unless fn fails.
	UpdateNode(ctx context.Context, name string, fn func(*Record) error) error
}

// NewNonce draws a random nonce: install tokens, agent token generations.
func NewNonce() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random nonce: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Batch is a Store that can update many records in one
// transaction.
type Batch interface {
	UpdateNodes(ctx context.Context, names []string, fn func(*Record) error) error
}
