package reconcile

import (
	"slices"

	"github.com/anneal-dev/anneal/reconcile/dns"
)

// Action kinds of a plan's DAG.
const (
	ActAddresses = "addresses"  // derive every address from the commit
	ActDNSZone   = "dns-zone"   // converge one target's zone
	ActNetboot   = "netboot"    // publish netboot profiles and reservations
	ActLeave     = "dns-leave"  // take a node out of its DNS groups
	ActRebuild   = "rebuild"    // arm netboot, next boot PXE, power cycle, install
	ActVerify    = "verify"     // facts against the build; rejoin groups
	ActPowerOff  = "power-off"  // decommission: power the node off
	ActRetire    = "retire"     // decommission: drop netboot and DNS names
	ActDNSRejoin = "dns-rejoin" // verified nodes back into their groups
)

// Action is one node of a plan's DAG: it runs after every action in After.
type Action struct {
	ID     string   `json:"id"`
	Kind   string   `json:"kind"`
	Target string   `json:"target,omitempty"`
	After  []string `json:"after,omitempty"`
	// Canary rebuilds go first: every other rebuild waits for them.
	Canary bool `json:"canary,omitempty"`
}

// PlanActions lays a plan out as a DAG with explicit dependencies:
// addresses → DNS (forward zones before reverse ones of a target) →
// netboot → leave groups → rebuild → verify → rejoin groups, canaries
// before the rest; a decommission runs the other way (leave groups →
// power off → retire its netboot profile and names). The apply engine runs
// the layers in this order; it is deterministic for the same plan.
func PlanActions(p *Plan) []Action {
	out := []Action{{ID: ActAddresses, Kind: ActAddresses}}
	var dnsIDs []string
	if p.DNS != nil {
		forward := map[string][]string{}
		zones := slices.Clone(p.DNS.Zones)
		slices.SortStableFunc(zones, func(a, b dns.ZoneDiff) int {
			if a.Reverse != b.Reverse {
				if a.Reverse {
					return 1
				}
				return -1
			}
			return 0
		})
		for _, z := range zones {
			if len(z.Changes) == 0 {
				continue
			}
			id := "dns:" + z.Target + "/" + z.Zone
			after := []string{ActAddresses}
			if z.Reverse {
				after = append(after, forward[z.Target]...)
			} else {
				forward[z.Target] = append(forward[z.Target], id)
			}
			out = append(out, Action{ID: id, Kind: ActDNSZone, Target: z.Target + "/" + z.Zone, After: after})
			dnsIDs = append(dnsIDs, id)
		}
	}
	rp := p.Rebuilds
	if rp.Count() == 0 {
		return out
	}
	netbootAfter := append([]string{ActAddresses}, dnsIDs...)
	out = append(out, Action{ID: ActNetboot, Kind: ActNetboot, After: netbootAfter})
	var canaryVerified []string
	for _, r := range rp.Rebuilds {
		if r.Canary {
			canaryVerified = append(canaryVerified, "verify:"+r.Node)
		}
	}
	var verified []string
	for _, r := range rp.Rebuilds {
		leave := "leave:" + r.Node
		after := []string{ActNetboot}
		if !r.Canary && !r.Resume {
			after = append(after, canaryVerified...)
		}
		out = append(out,
			Action{ID: leave, Kind: ActLeave, Target: r.Node, After: after, Canary: r.Canary},
			Action{ID: "rebuild:" + r.Node, Kind: ActRebuild, Target: r.Node, After: []string{leave}, Canary: r.Canary},
			Action{ID: "verify:" + r.Node, Kind: ActVerify, Target: r.Node, After: []string{"rebuild:" + r.Node}, Canary: r.Canary})
		verified = append(verified, "verify:"+r.Node)
	}
	if len(verified) > 0 {
		out = append(out, Action{ID: ActDNSRejoin, Kind: ActDNSRejoin, After: verified})
	}
	for _, n := range rp.Decommission {
		leave := "leave:" + n
		out = append(out,
			Action{ID: leave, Kind: ActLeave, Target: n, After: []string{ActAddresses}},
			Action{ID: "power-off:" + n, Kind: ActPowerOff, Target: n, After: []string{leave}},
			Action{ID: "retire:" + n, Kind: ActRetire, Target: n, After: []string{"power-off:" + n}})
	}
	return out
}
