package rollout

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// RebuildPlan is the rebuild layer of a plan: which nodes are rebuilt and
// why, which are held back, which are decommissioned.
type RebuildPlan struct {
	Rebuilds     []NodeRebuild `json:"rebuilds,omitempty"`
	Held         []HeldNode    `json:"held,omitempty"`
	Decommission []string      `json:"decommission,omitempty"`
	// Removed are the nodes of Decommission that left the site (no
	// document declares them): decommissioned from their records.
	Removed  []string        `json:"removed,omitempty"`
	Firmware []FirmwareDrift `json:"firmware,omitempty"`
}

// NodeRebuild is one node to rebuild.
type NodeRebuild struct {
	Node   string   `json:"node"`
	Region string   `json:"region"`
	Rack   string   `json:"rack"`
	Roles  []string `json:"roles,omitempty"`
	// From is the live build ("" when never built), To the desired one.
	From    string               `json:"from,omitempty"`
	To      string               `json:"to"`
	Reasons []node.RebuildReason `json:"reasons"`
	Changes []node.FieldChange   `json:"changes,omitempty"`
	// Drift lists live facts that differ from the build.
	Drift []string `json:"drift,omitempty"`
	// Canary nodes go first; a failed canary halts the rollout.
	Canary bool `json:"canary,omitempty"`
	// Resume: the node is already installing To (an interrupted apply);
	// it is waited for, not power-cycled again.
	Resume bool `json:"resume,omitempty"`
	// Unobserved: anneal lost its state while the node was in the site and
	// has not heard from it since; rebuilding it waits for approval.
	Unobserved bool `json:"unobserved,omitempty"`
}

// HeldNode would be rebuilt but is held back, with why.
type HeldNode struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
	// Failed: held because its rebuild failed (needs a retry).
	Failed bool `json:"failed,omitempty"`
}

// FirmwareDrift is a BMC's firmware that differs from its hardware
// profile. It is reported; anneal does not flash firmware.
type FirmwareDrift struct {
	Node  string        `json:"node"`
	Want  node.Firmware `json:"want"`
	Found node.Firmware `json:"found"`
}

// Count is the number of nodes the plan rebuilds or decommissions.
func (p *RebuildPlan) Count() int {
	if p == nil {
		return 0
	}
	return len(p.Rebuilds) + len(p.Decommission)
}

// PlanRebuilds compares each node's desired build with what anneal knows
// of the live node and lists the rebuilds, in name order. It is a pure
// function of the site, the records and now.
func PlanRebuilds(site *schema.Site, records map[string]*node.Record, now time.Time) *RebuildPlan {
	return PlanRebuildsWith(site, records, RebuildOptions{Now: now})
}

// RebuildOptions are the inputs of a rebuild plan besides the site and
// the records.
type RebuildOptions struct {
	Now time.Time
	// ObserveUntil ends the observation of a lost or fresh state: until
	// then a node anneal has no build of is held (its agent may yet report
	// that it runs its desired build), never rebuilt.
	ObserveUntil time.Time
	// Lost: the empty state was lost, not new (the netboot key predates
	// it): a node found off may be a built one powered down, so rebuilding
	// it waits for approval too.
	Lost bool
}

// PlanRebuildsWith is PlanRebuilds with options. Nodes that left the site
// (records no document declares any more) are decommissioned too.
func PlanRebuildsWith(site *schema.Site, records map[string]*node.Record, o RebuildOptions) *RebuildPlan {
	now := o.Now
	p := &RebuildPlan{}
	nodes := slices.Clone(site.Nodes)
	slices.SortFunc(nodes, func(a, b *schema.Node) int { return cmp.Compare(a.Name, b.Name) })
	maxAge := site.Config.Policies.MaxBuildAge.Duration
	for _, n := range nodes {
		rec := records[n.Name]
		if !n.Exists() {
			if rec != nil && rec.State != node.Retired {
				p.Decommission = append(p.Decommission, n.Name)
			}
			continue
		}
		if rec != nil && rec.Firmware != nil {
			if prof := site.HardwareProfile(n.HardwareProfile); prof != nil {
				want := node.Firmware{BIOS: prof.Firmware.BIOS, BMC: prof.Firmware.BMC}
				if want.BIOS != "" && want.BIOS != rec.Firmware.BIOS || want.BMC != "" && want.BMC != rec.Firmware.BMC {
					p.Firmware = append(p.Firmware, FirmwareDrift{Node: n.Name, Want: want, Found: *rec.Firmware})
				}
			}
		}
		if n.State == schema.StateMaintenance {
			if needsBuild(site, n, rec, now, maxAge) {
				p.Held = append(p.Held, HeldNode{Node: n.Name, Reason: "in maintenance: rebuilt when it is active again"})
			}
			continue
		}
		spec := node.BuildSpecOf(site, n)
		id := spec.ID()
		nr := NodeRebuild{Node: n.Name, Region: n.Region, Rack: n.Rack, Roles: n.Roles, To: id}
		if rec != nil {
			nr.From = rec.BuildID
		}
		switch {
		case rec != nil && rec.Target == id && (rec.State == node.Provisioning || rec.State == node.Installed):
			nr.Resume = true
			nr.Reasons = []node.RebuildReason{node.ReasonNew}
			if rec.Spec != nil {
				nr.Reasons, nr.Changes = node.DiffBuilds(*rec.Spec, spec)
			}
		case rec != nil && (rec.State == node.Provisioning || rec.State == node.Installed):
			// Installing another build: the revision moved on (a revert
			// during a rollout). It is re-armed for this one.
			nr.Reasons = []node.RebuildReason{node.ReasonSuperseded}
			nr.Drift = []string{fmt.Sprintf("it was installing build %s", rec.Target)}
		case rec != nil && rec.State == node.Pending:
			// A rollout took it out of service, then stopped before arming it.
			nr.Reasons = []node.RebuildReason{node.ReasonInterrupted}
			if rec.Spec != nil && rec.BuildID != id {
				nr.Reasons, nr.Changes = node.DiffBuilds(*rec.Spec, spec)
			}
		case rec != nil && rec.State == node.Failed && rec.Target == id:
			p.Held = append(p.Held, HeldNode{Node: n.Name, Failed: true,
				Reason: fmt.Sprintf("its rebuild to %s failed (%s): retry it with `anneal nodes retry %s` or POST /api/v1/nodes/%s/retry", id, rec.Reason, n.Name, n.Name)})
			continue
		case rec != nil && rec.State == node.Failed:
			// It failed a rebuild to another build (since reverted): what
			// is on its disk is unknown.
			nr.Reasons = []node.RebuildReason{node.ReasonRecover}
			nr.Drift = []string{fmt.Sprintf("its rebuild to %s failed (%s)", rec.Target, rec.Reason)}
		case rec != nil && (rec.State == node.Retired || rec.State == node.Retiring):
			// Decommissioned (powered off), now back in the fleet.
			nr.Reasons = []node.RebuildReason{node.ReasonNew}
			nr.Drift = []string{"it was decommissioned and powered off"}
		case rec.EnrolledHeld():
			// Enrolled (anneal enroll): a machine anneal did not install,
			// adopted when its agent reports its build with matching
			// facts. Never rebuilt on its own: a retry releases it.
			p.Held = append(p.Held, HeldNode{Node: n.Name, Reason: enrolledReason(n.Name, rec)})
			continue
		case rec != nil && rec.Unobserved && rec.BuildID == "" && rec.Power != node.PowerOff && rec.State == node.Unknown && now.Before(o.ObserveUntil):
			p.Held = append(p.Held, HeldNode{Node: n.Name,
				Reason: fmt.Sprintf("observing: anneal has no record of its build; waiting until %s for its agent to report (a lost or fresh state)", o.ObserveUntil.UTC().Format(time.RFC3339))})
			continue
		case rec == nil || rec.BuildID == "":
			nr.Reasons = []node.RebuildReason{node.ReasonNew}
			if rec != nil && rec.Unobserved && (rec.Power != node.PowerOff || o.Lost) {
				nr.Unobserved = true
				nr.Drift = []string{fmt.Sprintf("anneal lost its state while the node was in the site, its agent did not report its build, and its BMC says power %s", cmp.Or(string(rec.Power), "unknown"))}
			}
		case rec.BuildID != id:
			if rec.Spec != nil {
				nr.Reasons, nr.Changes = node.DiffBuilds(*rec.Spec, spec)
			}
			if len(nr.Reasons) == 0 {
				nr.Reasons = []node.RebuildReason{node.ReasonUnknownBuild}
			}
		case maxAge > 0 && !rec.BuiltAt.IsZero() && now.Sub(rec.BuiltAt) > maxAge:
			nr.Reasons = []node.RebuildReason{node.ReasonExpired}
			nr.Drift = []string{fmt.Sprintf("built %s ago, policy maxBuildAge is %s", now.Sub(rec.BuiltAt).Round(time.Hour), maxAge)}
		case rec.Facts != nil:
			drift := node.VerifyFacts(spec, *rec.Facts)
			if len(drift) == 0 {
				continue
			}
			nr.Reasons, nr.Drift = []node.RebuildReason{node.ReasonLiveDrift}, drift
		default:
			continue
		}
		p.Rebuilds = append(p.Rebuilds, nr)
	}
	bmcOf := map[string]string{}
	for _, n := range site.Nodes {
		bmcOf[n.BMC.Address] = n.Name
	}
	for _, rec := range node.Departed(site, records) {
		if other, ok := bmcOf[rec.Declared.BMC.Address]; ok && rec.Declared.BMC.Address != "" {
			// A renamed node, or the address given to another: powering
			// it off would power off a node of the site.
			p.Held = append(p.Held, HeldNode{Node: rec.Name,
				Reason: fmt.Sprintf("left the site, but its BMC address %s is now %s's: not powered off; if the old machine still runs, power it off by hand", rec.Declared.BMC.Address, other)})
			continue
		}
		p.Decommission = append(p.Decommission, rec.Name)
		p.Removed = append(p.Removed, rec.Name)
	}
	for _, name := range node.Unreachable(site, records) {
		p.Held = append(p.Held, HeldNode{Node: name, Reason: "left the site, but its record predates anneal keeping each node's BMC: power it off by hand"})
	}
	slices.Sort(p.Decommission)
	pickCanaries(p.Rebuilds, site.Config.Policies.Canaries)
	return p
}

// errEnrolled refuses to arm a node enrolled after the plan that
// rebuilds it was made.
var errEnrolled = errors.New("enrolled (anneal enroll) after this rollout was planned: not rebuilt; it is adopted when its agent reports its build, or rebuilt after anneal nodes retry")

// enrolledReason is why enrolled node name is held.
func enrolledReason(name string, rec *node.Record) string {
	why := cmp.Or(rec.Reason, "enrolled, awaiting its agent's first report")
	return fmt.Sprintf("%s (enrolled at %s; held, never rebuilt on its own: adopted once its agent reports its desired build with matching facts, or `anneal nodes retry %s` has anneal rebuild it)",
		why, rec.Enrolled.UTC().Format(time.RFC3339), name)
}

// needsBuild reports whether a node's live build differs from its desired
// one (without the reasons).
func needsBuild(site *schema.Site, n *schema.Node, rec *node.Record, now time.Time, maxAge time.Duration) bool {
	if rec == nil || rec.BuildID == "" {
		return true
	}
	if rec.BuildID != node.BuildSpecOf(site, n).ID() {
		return true
	}
	return maxAge > 0 && !rec.BuiltAt.IsZero() && now.Sub(rec.BuiltAt) > maxAge
}

// pickCanaries marks n canaries among the fresh rebuilds (not resumed
// ones), spread over racks: the first node of each rack in turn, racks in
// name order. A rollout that resumes keeps no canary phase for nodes
// already installing.
func pickCanaries(rebuilds []NodeRebuild, n int) {
	if n <= 0 {
		return
	}
	byRack := map[string][]int{}
	var racks []string
	for i, r := range rebuilds {
		if r.Resume {
			continue
		}
		key := r.Region + "/" + r.Rack
		if _, ok := byRack[key]; !ok {
			racks = append(racks, key)
		}
		byRack[key] = append(byRack[key], i)
	}
	slices.Sort(racks)
	for round := 0; n > 0; round++ {
		picked := false
		for _, rack := range racks {
			if n == 0 {
				break
			}
			if idx := byRack[rack]; round < len(idx) {
				rebuilds[idx[round]].Canary = true
				n--
				picked = true
			}
		}
		if !picked {
			return
		}
	}
}
