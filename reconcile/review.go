package reconcile

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// Review is what a commit range changes in the desired state. It needs no
// live fleet and no credentials, so it runs in CI on untrusted pull
// requests: which nodes would be rebuilt and exactly why, which DNS
// records change, and which policies the change runs into.
type Review struct {
	FormatVersion int            `json:"formatVersion"`
	Site          string         `json:"site"`
	Base          string         `json:"base"`
	Head          string         `json:"head"`
	Nodes         []NodeReview   `json:"nodes"`
	DNS           []dns.ZoneDiff `json:"dns"`
	Policies      []PolicyHit    `json:"policies"`
}

// NodeChangeKind says what happens to a node.
type NodeChangeKind string

// Node change kinds.
const (
	NodeAdded          NodeChangeKind = "added"
	NodeRemoved        NodeChangeKind = "removed"
	NodeChanged        NodeChangeKind = "changed"
	NodeDecommissioned NodeChangeKind = "decommissioned"
)

// NodeReview is one node that the range changes.
type NodeReview struct {
	Node    string               `json:"node"`
	Region  string               `json:"region"`
	Rack    string               `json:"rack"`
	Roles   []string             `json:"roles"`
	Change  NodeChangeKind       `json:"change"`
	Rebuild bool                 `json:"rebuild"`
	Reasons []node.RebuildReason `json:"reasons,omitempty"`
	// BuildFields are the build-defining fields that changed.
	BuildFields []node.FieldChange `json:"buildFields,omitempty"`
	// OtherFields changed without a rebuild (roles, groups, state, ...).
	OtherFields []node.FieldChange `json:"otherFields,omitempty"`
	BaseBuild   string             `json:"baseBuild,omitempty"`
	HeadBuild   string             `json:"headBuild,omitempty"`
}

// PolicyHit is a site policy the change runs into.
type PolicyHit struct {
	Policy string `json:"policy"`
	Scope  string `json:"scope"`
	Detail string `json:"detail"`
	// Blocking hits stop an apply until overridden (mass delete) or make
	// a rollout impossible (maxUnavailable 0).
	Blocking bool `json:"blocking"`
}

// HasChanges reports whether the range changes anything.
func (r *Review) HasChanges() bool {
	return len(r.Nodes) > 0 || slices.ContainsFunc(r.DNS, func(z dns.ZoneDiff) bool { return len(z.Changes) > 0 })
}

// Rebuilds counts the nodes the range rebuilds.
func (r *Review) Rebuilds() int {
	n := 0
	for _, x := range r.Nodes {
		if x.Rebuild {
			n++
		}
	}
	return n
}

// ReviewRange compares the desired state of two commits of a site.
func ReviewRange(base, head *schema.Site, baseRev, headRev string) (*Review, error) {
	r := &Review{FormatVersion: PlanFormatVersion, Site: head.Config.Name, Base: baseRev, Head: headRev}
	r.Nodes = reviewNodes(base, head)
	bd, err := dns.Compile(base)
	if err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	hd, err := dns.Compile(head)
	if err != nil {
		return nil, fmt.Errorf("head: %w", err)
	}
	r.DNS = reviewDNS(bd, hd)
	r.Policies = append(reviewRollout(head, r.Nodes), reviewMassDelete(bd, hd, r.DNS)...)
	r.Policies = append(r.Policies, reviewGuards(base, head, r.Nodes)...)
	return r, nil
}

// reviewGuards reports the changes the daemon will hold for approval
// (anneal approve): more nodes decommissioned or removed than
// maxRemovePercent, more rebuilt than maxRebuildPercent (each the stricter
// of the base's and the head's: a change cannot loosen its own guard), and
// the loosening of a guard policy itself.
func reviewGuards(base, head *schema.Site, nodes []NodeReview) []PolicyHit {
	bp, hp := base.Config.Policies, head.Config.Policies
	removePct := min(cmp0(bp.MaxRemovePercent, DefaultMaxRemovePercent), cmp0(hp.MaxRemovePercent, DefaultMaxRemovePercent))
	rebuildPct := min(cmp0(bp.MaxRebuildPercent, DefaultMaxRebuildPercent), cmp0(hp.MaxRebuildPercent, DefaultMaxRebuildPercent))
	fleet := 0
	for _, n := range base.Nodes {
		if n.Exists() {
			fleet++
		}
	}
	removed, rebuilt := 0, 0
	for _, n := range nodes {
		switch {
		case n.Change == NodeRemoved || n.Change == NodeDecommissioned:
			removed++
		case n.Rebuild && n.Change == NodeChanged:
			rebuilt++
		}
	}
	var out []PolicyHit
	if limit := share(fleet, removePct); removed > limit {
		out = append(out, PolicyHit{Policy: "maxRemovePercent", Scope: "site", Blocking: true,
			Detail: fmt.Sprintf("%d of %d nodes removed or decommissioned, over %d%% (%s): the daemon waits for anneal approve", removed, fleet, removePct, nodeCount(limit))})
	}
	if limit := share(fleet, rebuildPct); rebuildPct < 100 && rebuilt > limit {
		out = append(out, PolicyHit{Policy: "maxRebuildPercent", Scope: "site", Blocking: true,
			Detail: fmt.Sprintf("%d of %d nodes rebuilt, over %d%% (%s): the daemon waits for anneal approve", rebuilt, fleet, rebuildPct, nodeCount(limit))})
	}
	loosened := func(name string, b, h, def int) {
		if cmp0(h, def) > cmp0(b, def) {
			out = append(out, PolicyHit{Policy: name, Scope: "site",
				Detail: fmt.Sprintf("loosened from %d%% to %d%%: it bounds the changes of the revisions after this one, not this one", cmp0(b, def), cmp0(h, def))})
		}
	}
	loosened("maxRemovePercent", bp.MaxRemovePercent, hp.MaxRemovePercent, DefaultMaxRemovePercent)
	loosened("maxRebuildPercent", bp.MaxRebuildPercent, hp.MaxRebuildPercent, DefaultMaxRebuildPercent)
	loosened("dnsMassDeletePercent", bp.DNSMassDeletePercent, hp.DNSMassDeletePercent, dns.DefaultMassDeletePercent)
	return out
}

func reviewNodes(base, head *schema.Site) []NodeReview {
	var out []NodeReview
	for _, h := range head.Nodes {
		b := base.Node(h.Name)
		nr := NodeReview{Node: h.Name, Region: h.Region, Rack: h.Rack, Roles: h.Roles}
		hb := node.BuildSpecOf(head, h)
		switch {
		case b == nil || !b.Exists() && h.Exists():
			if !h.Exists() {
				continue
			}
			nr.Change, nr.Rebuild, nr.Reasons, nr.HeadBuild = NodeAdded, true, []node.RebuildReason{node.ReasonNew}, hb.ID()
		case b.Exists() && !h.Exists():
			nr.Change, nr.BaseBuild = NodeDecommissioned, node.BuildSpecOf(base, b).ID()
			nr.OtherFields = otherFields(b, h)
		default:
			if !h.Exists() {
				continue // decommissioned in both
			}
			bb := node.BuildSpecOf(base, b)
			nr.Reasons, nr.BuildFields = node.DiffBuilds(bb, hb)
			nr.OtherFields = otherFields(b, h)
			if len(nr.BuildFields)+len(nr.OtherFields) == 0 {
				continue
			}
			nr.Change, nr.Rebuild = NodeChanged, len(nr.BuildFields) > 0
			nr.BaseBuild, nr.HeadBuild = bb.ID(), hb.ID()
		}
		out = append(out, nr)
	}
	for _, b := range base.Nodes {
		if head.Node(b.Name) == nil && b.Exists() {
			out = append(out, NodeReview{Node: b.Name, Region: b.Region, Rack: b.Rack, Roles: b.Roles, Change: NodeRemoved, BaseBuild: node.BuildSpecOf(base, b).ID()})
		}
	}
	slices.SortFunc(out, func(a, b NodeReview) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// otherFields lists node fields that change without a rebuild.
func otherFields(b, h *schema.Node) []node.FieldChange {
	var out []node.FieldChange
	cmpField := func(path, old, new string) {
		if old != new {
			out = append(out, node.FieldChange{Path: path, Old: old, New: new})
		}
	}
	cmpField("state", string(b.State), string(h.State))
	cmpField("region", b.Region, h.Region)
	cmpField("rack", b.Rack, h.Rack)
	cmpField("hardwareProfile", b.HardwareProfile, h.HardwareProfile)
	cmpField("roles", strings.Join(b.Roles, ","), strings.Join(h.Roles, ","))
	cmpField("groups", strings.Join(b.Groups, ","), strings.Join(h.Groups, ","))
	cmpField("aliases", strings.Join(b.Aliases, ","), strings.Join(h.Aliases, ","))
	cmpField("bmc.address", b.BMC.Address, h.BMC.Address)
	cmpField("bmc.username", b.BMC.Username, h.BMC.Username)
	cmpField("bmc.password", string(b.BMC.Password), string(h.BMC.Password)) // a reference, never a secret
	return out
}

// reviewDNS diffs the desired records of two commits zone by zone, as if
// the base's records were live and all anneal's.
func reviewDNS(bd, hd *dns.Desired) []dns.ZoneDiff {
	zones := map[string]bool{}
	for _, z := range bd.Zones {
		zones[z.Zone] = true
	}
	for _, z := range hd.Zones {
		zones[z.Zone] = true
	}
	all := func(dns.RRsetKey) bool { return true }
	var out []dns.ZoneDiff
	for _, name := range slices.Sorted(maps.Keys(zones)) {
		want := hd.Zone(name)
		if want == nil {
			want = &dns.DesiredZone{Zone: name, Reverse: strings.HasSuffix(name, ".arpa")}
		}
		live := &dns.ZoneContent{Zone: name}
		if b := bd.Zone(name); b != nil {
			live.RRsets = b.RRsets
		}
		zd := dns.DiffZone("", want, live, all)
		if len(zd.Changes) > 0 {
			out = append(out, zd)
		}
	}
	return out
}

// reviewRollout reports how the rebuilds meet maxUnavailable per rack and
// per role: how many waves a rack needs, and roles that can never roll.
func reviewRollout(head *schema.Site, nodes []NodeReview) []PolicyHit {
	pol := head.Config.Policies
	perRack := map[string]int{}
	perRole := map[string]int{}
	rackSize := map[string]int{}
	roleSize := map[string]int{}
	for _, n := range head.Nodes {
		if !n.Exists() {
			continue
		}
		rackSize[n.Rack]++
		for _, r := range n.Roles {
			roleSize[r]++
		}
	}
	rebuilds := 0
	for _, n := range nodes {
		if !n.Rebuild {
			continue
		}
		rebuilds++
		perRack[n.Rack]++
		for _, r := range n.Roles {
			perRole[r]++
		}
	}
	var out []PolicyHit
	if rebuilds == 0 {
		return nil
	}
	if pol.Canaries > 0 {
		out = append(out, PolicyHit{Policy: "canaries", Scope: "site",
			Detail: fmt.Sprintf("%d of %d rebuilds go first as canaries; a failed canary halts the rollout", min(pol.Canaries, rebuilds), rebuilds)})
	}
	for _, rack := range slices.Sorted(maps.Keys(perRack)) {
		n := perRack[rack]
		limit := n
		if pol.MaxUnavailable.PerRack != (schema.IntOrPercent{}) {
			limit = pol.MaxUnavailable.PerRack.Of(rackSize[rack])
		}
		out = append(out, waves("maxUnavailable.perRack", "rack "+rack, n, limit))
	}
	for _, role := range slices.Sorted(maps.Keys(perRole)) {
		p, ok := pol.MaxUnavailable.PerRole[role]
		if !ok {
			continue
		}
		out = append(out, waves("maxUnavailable.perRole", "role "+role, perRole[role], p.Of(roleSize[role])))
	}
	return out
}

func waves(policy, scope string, n, limit int) PolicyHit {
	if limit <= 0 {
		return PolicyHit{Policy: policy, Scope: scope, Blocking: true,
			Detail: fmt.Sprintf("%d rebuild(s) but at most 0 may be down at once: the rollout cannot proceed", n)}
	}
	w := (n + limit - 1) / limit
	return PolicyHit{Policy: policy, Scope: scope,
		Detail: fmt.Sprintf("%d rebuild(s), at most %d down at once: %d wave(s)", n, limit, w)}
}

// reviewMassDelete finds targets whose deletes would exceed the site's
// threshold, as apply would refuse them.
func reviewMassDelete(bd, hd *dns.Desired, zones []dns.ZoneDiff) []PolicyHit {
	byZone := map[string]dns.ZoneDiff{}
	for _, z := range zones {
		byZone[z.Zone] = z
	}
	var out []PolicyHit
	for _, tz := range hd.Targets {
		deletes, owned := 0, 0
		for _, zone := range tz.Zones {
			if b := bd.Zone(zone); b != nil {
				owned += len(b.RRsets)
			}
			z := byZone[zone]
			_, _, d := z.Counts()
			deletes += d
		}
		if deletes == 0 || owned == 0 {
			continue
		}
		pct := (deletes*100 + owned - 1) / owned
		if limit := min(hd.MassDeletePercent, bd.MassDeletePercent); pct > limit {
			out = append(out, PolicyHit{Policy: "dnsMassDeletePercent", Scope: "dns target " + tz.Target, Blocking: true,
				Detail: fmt.Sprintf("deletes %d of %d RRsets (%d%% > %d%%): the daemon waits for anneal approve, apply needs --allow-mass-delete", deletes, owned, pct, limit)})
		}
	}
	slices.SortFunc(out, func(a, b PolicyHit) int { return cmp.Compare(a.Scope, b.Scope) })
	return out
}

// nodeCount is "1 node" or "N nodes".
func nodeCount(n int) string {
	if n == 1 {
		return "1 node"
	}
	return fmt.Sprintf("%d nodes", n)
}
