package lab

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// Phase is what a virtual node is doing.
type Phase string

// Phases.
const (
	PhaseOff        Phase = "off"
	PhasePOST       Phase = "post"       // powered on, in firmware (the boot delay)
	PhaseNetboot    Phase = "netboot"    // fetching its iPXE script
	PhaseInstalling Phase = "installing" // fetching its install files, posting the callback
	PhaseHung       Phase = "install-hung"
	PhaseRunning    Phase = "running" // its installed system is up
	PhaseNoOS       Phase = "no-os"   // booted from a disk with nothing installed
)

// Redfish boot override values.
const (
	overrideDisabled   = "Disabled"
	overrideOnce       = "Once"
	overrideContinuous = "Continuous"
	targetNone         = "None"
	targetPxe          = "Pxe"
	targetHdd          = "Hdd"
)

// Override is a BMC's boot source override, as Redfish names it.
type Override struct {
	Target  string `json:"target"`  // None, Pxe, Hdd, ...
	Enabled string `json:"enabled"` // Disabled, Once, Continuous
	Mode    string `json:"mode"`    // Legacy, UEFI
}

// AgentConfig is agent.json: where and as whom `anneal agent` reports.
type AgentConfig struct {
	URL   string `json:"url"`
	Node  string `json:"node"`
	Token string `json:"token"`
}

// Disk is what a node has installed: it survives power cycles and, under
// Config.StateDir, lab restarts.
type Disk struct {
	BuildID     string       `json:"buildId,omitempty"`
	InstalledAt time.Time    `json:"installedAt,omitzero"`
	Facts       *node.Facts  `json:"facts,omitempty"`
	Agent       *AgentConfig `json:"agent,omitempty"`
}

// NodeStatus is a virtual node as the control API lists it.
type NodeStatus struct {
	Name string `json:"name"`
	// BMC is the BMC's address from the site.
	BMC   string          `json:"bmc"`
	MAC   string          `json:"mac"`
	Power node.PowerState `json:"power"`
	// BootOverride is the pending override target ("Pxe") and
	// BootOverrideEnabled whether it is Once or Continuous; both empty when
	// there is none.
	BootOverride        string    `json:"bootOverride,omitempty"`
	BootOverrideEnabled string    `json:"bootOverrideEnabled,omitempty"`
	Phase               Phase     `json:"phase"`
	BuildID             string    `json:"buildId,omitempty"`
	InstalledAt         time.Time `json:"installedAt,omitzero"`
	Boots               int       `json:"boots"`
	Installs            int       `json:"installs"`
	Callbacks           int       `json:"callbacks"` // install callbacks answered 2xx
	AgentReports        int       `json:"agentReports"`
	LastError           string    `json:"lastError,omitempty"`
}

// Node is one virtual server: its BMC's state (power, boot override,
// sessions) and its disk. It implements node.BMC in process too,
// faults included, for tests that need no HTTP.
type Node struct {
	f         *Fleet
	name      string
	bmcAddr   string
	user      string
	password  string
	mac       string // the first interface's, lower case
	nics      []schema.Interface
	profileFW node.Firmware
	vendor    string
	model     string
	rf        rfPaths // its BMC's Redfish Ids, by vendor
	rack      string  // region/rack: its DHCP relay
	// provAddrs are its IPv4 addresses on provisioning networks: what a
	// DHCP ACK must give it.
	provAddrs []netip.Addr
	// imageSums are the SHA-256 its image declares (kernel, initrd,
	// rootfs, disk): what a netboot server's /artifacts/ copy must match.
	imageSums map[string]bool

	mu        sync.Mutex
	power     node.PowerState
	override  Override
	disk      Disk
	phase     Phase
	boots     int
	installs  int
	callbacks int
	reports   int
	lastErr   string
	// gen counts power transitions: a boot goroutine whose generation is
	// no longer current stops and changes nothing.
	gen  uint64
	stop context.CancelFunc
	// bootWaiters are woken on every phase change (tests, WaitPhase).
	changed chan struct{}

	sessions  map[string]*session // by token
	sessionID int
}

var _ node.BMC = (*Node)(nil)

func newNode(f *Fleet, site *schema.Site, sn *schema.Node, bmcAddr, password string) *Node {
	n := &Node{
		f:        f,
		name:     sn.Name,
		bmcAddr:  bmcAddr,
		user:     sn.BMC.Username,
		password: password,
		nics:     sn.Interfaces,
		power:    node.PowerOff,
		override: Override{Target: targetNone, Enabled: overrideDisabled, Mode: "Legacy"},
		phase:    PhaseOff,
		changed:  make(chan struct{}),
		sessions: map[string]*session{},
	}
	if len(sn.Interfaces) > 0 {
		if hw, err := net.ParseMAC(sn.Interfaces[0].MAC); err == nil {
			n.mac = hw.String()
		} else {
			n.mac = strings.ToLower(sn.Interfaces[0].MAC)
		}
	}
	if p := site.HardwareProfile(sn.HardwareProfile); p != nil {
		n.profileFW = node.Firmware{BIOS: p.Firmware.BIOS, BMC: p.Firmware.BMC}
		n.vendor, n.model = p.Vendor, p.Model
	}
	n.rf = redfishPaths(n.vendor)
	n.rack = sn.Region + "/" + sn.Rack
	for _, a := range sn.Addresses {
		if nw := site.Network(a.Network); nw != nil && nw.Provisioning && a.IPv4.Is4() {
			n.provAddrs = append(n.provAddrs, a.IPv4)
		}
	}
	n.imageSums = map[string]bool{}
	if img := site.Image(sn.Image); img != nil {
		arts := []*schema.Artifact{&img.Kernel, &img.Initrd, img.Rootfs}
		if img.Disk != nil {
			arts = append(arts, &img.Disk.Artifact)
		}
		for _, a := range arts {
			if a != nil && a.SHA256 != "" {
				n.imageSums[strings.ToLower(a.SHA256)] = true
			}
		}
	}
	return n
}

// Name is the node's name.
func (n *Node) Name() string { return n.name }

// Status is a snapshot of the node.
func (n *Node) Status() NodeStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := NodeStatus{
		Name: n.name, BMC: n.bmcAddr, MAC: n.mac, Power: n.power, Phase: n.phase,
		BuildID: n.disk.BuildID, InstalledAt: n.disk.InstalledAt,
		Boots: n.boots, Installs: n.installs, Callbacks: n.callbacks, AgentReports: n.reports, LastError: n.lastErr,
	}
	if n.override.Enabled != overrideDisabled && n.override.Target != targetNone {
		s.BootOverride, s.BootOverrideEnabled = n.override.Target, n.override.Enabled
	}
	return s
}

// Disk returns a copy of the node's disk.
func (n *Node) Disk() Disk {
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.disk
	if d.Facts != nil {
		f := cloneFacts(*d.Facts)
		d.Facts = &f
	}
	if d.Agent != nil {
		a := *d.Agent
		d.Agent = &a
	}
	return d
}

// Facts returns the installed system's facts, as its agent reports them;
// false when nothing is installed.
func (n *Node) Facts() (node.Facts, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.disk.Facts == nil {
		return node.Facts{}, false
	}
	return cloneFacts(*n.disk.Facts), true
}

// SetFacts edits the installed system by hand: fn changes its facts (add a
// VLAN, change an address), which the agent reports from its next report
// on, and which last until the next install. It fails when nothing is
// installed.
func (n *Node) SetFacts(fn func(*node.Facts)) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.disk.Facts == nil {
		return fmt.Errorf("lab node %s: nothing installed: no facts to edit", n.name)
	}
	facts := cloneFacts(*n.disk.Facts)
	fn(&facts)
	n.disk.Facts = &facts
	n.markDirty()
	return nil
}

// WaitFor waits until cond holds for the node's status (checked at once and
// on every change), or ctx ends.
func (n *Node) WaitFor(ctx context.Context, cond func(NodeStatus) bool) (NodeStatus, error) {
	for {
		n.mu.Lock()
		ch := n.changed
		n.mu.Unlock()
		s := n.Status()
		if cond(s) {
			return s, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return s, fmt.Errorf("lab node %s: waiting (phase %s, power %s): %w", n.name, s.Phase, s.Power, ctx.Err())
		}
	}
}

// notifyLocked wakes WaitFor.
func (n *Node) notifyLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

func (n *Node) setPhaseLocked(p Phase) {
	n.phase = p
	n.notifyLocked()
}

// setPhase changes the phase if gen is still current.
func (n *Node) setPhase(gen uint64, p Phase) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gen != gen {
		return false
	}
	n.setPhaseLocked(p)
	return true
}

// fail records why a boot went wrong.
func (n *Node) fail(gen uint64, err error) {
	n.f.log.Warn("lab: node boot", "node", n.name, "err", err)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.gen == gen {
		n.lastErr = err.Error()
		n.notifyLocked()
	}
}

// --- power, as the BMC drives it ---

// resetTypes are the ComputerSystem.Reset types the virtual BMC accepts.
var resetTypes = []string{"On", "ForceOn", "ForceOff", "GracefulShutdown", "GracefulRestart",
	"ForceRestart", "PowerCycle", "PushPowerButton", "Nmi"}

// reset performs a Redfish ComputerSystem.Reset.
func (n *Node) reset(resetType string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	on := n.power == node.PowerOn
	switch resetType {
	case "On", "ForceOn":
		if !on {
			n.powerOnLocked()
		}
	case "ForceOff", "GracefulShutdown":
		if on {
			n.powerOffLocked()
		}
	case "ForceRestart", "GracefulRestart", "PowerCycle":
		if on {
			n.powerOffLocked()
		}
		n.powerOnLocked()
	case "PushPowerButton":
		if on {
			n.powerOffLocked()
		} else {
			n.powerOnLocked()
		}
	case "Nmi":
		return nil
	default:
		return fmt.Errorf("reset type %q not supported", resetType)
	}
	n.markDirty()
	return nil
}

func (n *Node) powerOffLocked() {
	n.power = node.PowerOff
	n.gen++
	if n.stop != nil {
		n.stop()
		n.stop = nil
	}
	n.setPhaseLocked(PhaseOff)
}

// powerOnLocked powers on and boots: a pending override decides the boot
// device (a Once override is consumed by this boot).
func (n *Node) powerOnLocked() {
	n.power = node.PowerOn
	n.gen++
	n.boots++
	pxe := n.override.Enabled != overrideDisabled && n.override.Target == targetPxe
	if n.override.Enabled == overrideOnce {
		n.override.Enabled, n.override.Target = overrideDisabled, targetNone
	}
	n.lastErr = ""
	n.setPhaseLocked(PhasePOST)
	n.startLocked(pxe)
}

func (n *Node) startLocked(pxe bool) {
	gen := n.gen
	ctx, cancel := context.WithCancel(n.f.ctx)
	n.stop = cancel
	if !n.f.spawn(func() { defer cancel(); n.boot(ctx, gen, pxe) }) {
		cancel()
	}
}

// resume boots a node that was on when the lab stopped.
func (n *Node) resume() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.power != node.PowerOn || n.stop != nil {
		return
	}
	n.power = node.PowerOff
	n.powerOnLocked()
	n.markDirty()
}

// setOverride applies a Redfish Boot PATCH.
func (n *Node) setOverride(o Override) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if o.Target != "" {
		n.override.Target = o.Target
	}
	if o.Enabled != "" {
		n.override.Enabled = o.Enabled
	}
	if o.Mode != "" {
		n.override.Mode = o.Mode
	}
	n.notifyLocked()
	n.markDirty()
}

// --- node.BMC, in process ---

// hang blocks while the node's BMC timeout fault holds, until ctx ends.
func (n *Node) hang(ctx context.Context) error {
	if !n.f.bmcTimeout(n.name) {
		return nil
	}
	select {
	case <-ctx.Done():
		return fmt.Errorf("lab node %s: bmc does not answer: %w", n.name, ctx.Err())
	case <-n.f.ctx.Done():
		return fmt.Errorf("lab node %s: bmc does not answer: the lab stopped", n.name)
	}
}

// PowerState reports the node's power.
func (n *Node) PowerState(ctx context.Context) (node.PowerState, error) {
	if err := n.hang(ctx); err != nil {
		return node.PowerUnknown, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.power, nil
}

// SetPower powers on, off, or cycles (on when off).
func (n *Node) SetPower(ctx context.Context, a node.PowerAction) error {
	if err := n.hang(ctx); err != nil {
		return err
	}
	t := map[node.PowerAction]string{node.ActionOn: "On", node.ActionOff: "ForceOff", node.ActionCycle: "PowerCycle"}[a]
	if t == "" {
		return fmt.Errorf("lab node %s: power action %q not supported", n.name, a)
	}
	if err := n.reset(t); err != nil {
		return fmt.Errorf("lab node %s: %w", n.name, err)
	}
	return nil
}

// BootOnce sets a one-time boot override.
func (n *Node) BootOnce(ctx context.Context, d node.BootDevice) error {
	if err := n.hang(ctx); err != nil {
		return err
	}
	t := map[node.BootDevice]string{node.BootPXE: targetPxe, node.BootDisk: targetHdd}[d]
	if t == "" {
		return fmt.Errorf("lab node %s: boot device %q not supported", n.name, d)
	}
	n.setOverride(Override{Target: t, Enabled: overrideOnce, Mode: "Legacy"})
	return nil
}

// Firmware reports the node's firmware: its hardware profile's, or a
// fault's override.
func (n *Node) Firmware(ctx context.Context) (node.Firmware, error) {
	if err := n.hang(ctx); err != nil {
		return node.Firmware{}, err
	}
	return n.f.firmwareOf(n), nil
}

func cloneFacts(f node.Facts) node.Facts {
	out := f
	out.OSRelease = maps.Clone(f.OSRelease)
	out.Interfaces = slices.Clone(f.Interfaces)
	for i := range out.Interfaces {
		out.Interfaces[i].Addresses = slices.Clone(out.Interfaces[i].Addresses)
	}
	out.Resolvers = slices.Clone(f.Resolvers)
	out.Routes = slices.Clone(f.Routes)
	return out
}
