package reconcile

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/rollout"
	"github.com/anneal-dev/anneal/schema"
)

// Layers a plan can be limited to.
const (
	LayerAll = "all"
	LayerDNS = "dns"
)

// Planner computes the one plan every path shows and executes: `plan`,
// `apply`, a saved plan, and the daemon. Its inputs are the site at a
// revision, the state store (DNS ownership and journal; node records when
// anneal rebuilds nodes) and the live observations (the DNS targets; the
// node records hold what agents and BMCs reported).
type Planner struct {
	Targets map[string]dns.Target
	State   dns.State
	// Nodes, when set, adds the rebuild layer (rebuilds, decommissions,
	// holds) and makes DNS follow the nodes' availability. Without it the
	// plan is DNS only.
	Nodes node.Store
	Log   *slog.Logger
	// Declared and Consistency: see dns.Planner.
	Declared    map[string]map[dns.RRsetKey]bool
	Consistency *dns.Consistency

	// compiled is the last site and availability compiled and the result.
	mu       sync.Mutex
	compiled struct {
		site    *schema.Site
		av      dns.Availability
		desired *dns.Desired
	}
}

// PlanInput is what one plan is of.
type PlanInput struct {
	Site *schema.Site
	// Source names where the site came from: a revision, or a directory.
	Source string
	// Only limits the plan to a layer (LayerDNS); "" or LayerAll is all.
	Only string
	Now  time.Time
	// ObserveUntil and ObserveLost: see RebuildOptions.
	ObserveUntil time.Time
	ObserveLost  bool
	// Records are the node records when the caller has read them already
	// this pass (nil: the planner reads them from Nodes).
	Records map[string]*node.Record
	// Applied are the policies of the revision applied last: each guard's
	// limit is the stricter of the site's and these, so a commit cannot
	// loosen the guard of the change it makes (nil: the site's alone).
	Applied *schema.Policies
}

// PlanError is a plan that could not be made, with its class (FailInvalid
// when the site does not compile, FailApply when the state cannot be
// read).
type PlanError struct {
	Class string
	Err   error
}

func (e *PlanError) Error() string { return e.Err.Error() }
func (e *PlanError) Unwrap() error { return e.Err }

// Plan observes the live fleet and computes the plan, with its guards, its
// action DAG and its digest. desired is the DNS it converges to.
func (p *Planner) Plan(ctx context.Context, in PlanInput) (plan *Plan, desired *dns.Desired, err error) {
	site := in.Site
	if in.Only == LayerAll {
		in.Only = ""
	}
	var records map[string]*node.Record
	var av dns.Availability
	if p.Nodes != nil {
		records = in.Records
		if records == nil {
			records, err = p.Nodes.NodeRecords(ctx)
		}
		if err != nil {
			return nil, nil, &PlanError{Class: FailApply, Err: fmt.Errorf("read node records: %w", err)}
		}
		av = rollout.AvailabilityOf(site, records)
	}
	desired, err = p.compile(site, av)
	if err != nil {
		return nil, nil, &PlanError{Class: FailInvalid, Err: err}
	}
	planner := dns.Planner{Targets: p.Targets, State: p.State, Log: p.Log, Declared: p.Declared, Consistency: p.Consistency}
	dp, err := planner.Plan(ctx, desired)
	if err != nil {
		return nil, nil, &PlanError{Class: FailApply, Err: err}
	}
	plan = &Plan{FormatVersion: PlanFormatVersion, Site: site.Config.Name, Source: in.Source, SiteDigest: site.Digest, DNS: dp, Only: in.Only}
	if p.Nodes != nil {
		plan.Rebuilds = rollout.PlanRebuildsWith(site, records, rollout.RebuildOptions{Now: in.Now, ObserveUntil: in.ObserveUntil, Lost: in.ObserveLost})
	}
	// The guards are those of the whole change, even when the plan is
	// limited to DNS: its DNS part is the same change.
	plan.Guards = Guards(site, plan, records, in.Applied)
	if in.Only == LayerDNS {
		plan.Rebuilds = nil
	}
	plan.Actions = PlanActions(plan)
	plan.Digest = plan.ComputeDigest()
	return plan, desired, nil
}

// Compile is dns.CompileWith, remembered for the last site and availability
// (a pure function of them; its result is immutable).
func (p *Planner) Compile(site *schema.Site, av dns.Availability) (*dns.Desired, error) {
	return p.compile(site, av)
}

func (p *Planner) compile(site *schema.Site, av dns.Availability) (*dns.Desired, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := &p.compiled
	if c.site == site && c.desired != nil && maps.Equal(c.av.OutOfService, av.OutOfService) && maps.Equal(c.av.Retiring, av.Retiring) &&
		slices.Equal(slices.Sorted(maps.Keys(c.av.Departed)), slices.Sorted(maps.Keys(av.Departed))) {
		return c.desired, nil
	}
	desired, err := dns.CompileWith(site, av)
	if err != nil {
		return nil, err
	}
	c.site, c.av, c.desired = site, av, desired
	return desired, nil
}

// Guard kinds: changes that wait for approval.
const (
	GuardDNSMassDelete = "dns-mass-delete" // a target loses more than dnsMassDeletePercent of its records
	GuardMassRemove    = "mass-remove"     // more than maxRemovePercent of the nodes leave or are decommissioned
	GuardMassRebuild   = "mass-rebuild"    // more than maxRebuildPercent of the built nodes are rebuilt
	GuardUnobserved    = "unobserved"      // a rebuild of a node anneal lost track of and has not heard from
)

// Default guard shares of the fleet.
const (
	DefaultMaxRemovePercent  = 10
	DefaultMaxRebuildPercent = 100
)

// Guard is a change in a plan that nobody may have meant: the plan waits
// for an approval of exactly it (anneal approve). The operator's
// --allow-mass-delete lifts the DNS one.
type Guard struct {
	Kind   string `json:"kind"`
	Reason string `json:"reason"`
	// Items are what the guard covers (dns-mass-delete:TARGET,
	// decommission:NODE, rebuild:NODE): once a plan is approved, later
	// plans of the same revision whose guarded items it covered go on (a
	// rollout in progress is not approved again at every pass).
	Items []string `json:"items"`
}

// share is a policy's share of n, never below one node.
func share(n, percent int) int { return max(1, n*percent/100) }

// Guards lists what in plan waits for approval. applied, when not nil,
// are the policies of the revision applied last: each limit is the
// stricter of the site's and these.
func Guards(site *schema.Site, plan *Plan, records map[string]*node.Record, applied *schema.Policies) []Guard {
	var out []Guard
	if plan.DNS != nil {
		// The names decommissioned nodes keep until they are powered off
		// go in the same plan: they count against the threshold now, not
		// one node's sync at a time.
		later := decommissionDeletes(site, plan.Rebuilds, records)
		for _, m := range plan.DNS.MassDelete {
			limit := m.Limit
			if applied != nil {
				limit = min(limit, cmp0(applied.DNSMassDeletePercent, dns.DefaultMassDeletePercent))
			}
			deletes, percent := m.Deletes, m.Percent
			if n := later[m.Target]; n > 0 && m.Owned > 0 {
				deletes += n
				percent = deletes * 100 / m.Owned
			}
			if deletes > 0 && percent > limit {
				out = append(out, Guard{Kind: GuardDNSMassDelete, Items: []string{GuardDNSMassDelete + ":" + m.Target},
					Reason: fmt.Sprintf("DNS target %s: %d of its %d records would be deleted (%d%%, %d of them the names of decommissioned nodes), over dnsMassDeletePercent %d%%", m.Target, deletes, m.Owned, percent, later[m.Target], limit)})
			}
		}
	}
	rp := plan.Rebuilds
	if rp == nil {
		return out
	}
	pol := site.Config.Policies
	fleet, built := 0, 0
	for _, n := range site.Nodes {
		if n.Exists() {
			fleet++
		}
		if rec := records[n.Name]; rec != nil && rec.BuildID != "" {
			built++
		}
	}
	fleet += len(rp.Removed)
	removePct := cmp0(pol.MaxRemovePercent, DefaultMaxRemovePercent)
	rebuildPct := cmp0(pol.MaxRebuildPercent, DefaultMaxRebuildPercent)
	if applied != nil {
		removePct = min(removePct, cmp0(applied.MaxRemovePercent, DefaultMaxRemovePercent))
		rebuildPct = min(rebuildPct, cmp0(applied.MaxRebuildPercent, DefaultMaxRebuildPercent))
	}
	if limit := share(fleet, removePct); len(rp.Decommission) > limit {
		g := Guard{Kind: GuardMassRemove,
			Reason: fmt.Sprintf("%d of the fleet's %d nodes would be decommissioned (%d left the site), over maxRemovePercent %d%% (%s)", len(rp.Decommission), fleet, len(rp.Removed), removePct, nodeCount(limit))}
		for _, n := range rp.Decommission {
			g.Items = append(g.Items, "decommission:"+n)
		}
		out = append(out, g)
	}
	// A rebuild's item names its build: an approval covers rebuilding a
	// node to that build, not to whatever the node is later rebuilt to.
	var unobserved, rebuiltBuilt []string
	build := map[string]string{}
	for _, r := range rp.Rebuilds {
		build[r.Node] = r.To
		if r.Unobserved {
			unobserved = append(unobserved, r.Node)
		}
		if r.From != "" && !r.Resume {
			rebuiltBuilt = append(rebuiltBuilt, r.Node)
		}
	}
	var unobservedGone []string
	for _, n := range rp.Removed {
		if rec := records[n]; rec != nil && rec.Unobserved && rec.Power != node.PowerOff {
			unobservedGone = append(unobservedGone, n)
		}
	}
	if len(unobservedGone) > 0 {
		g := Guard{Kind: GuardUnobserved,
			Reason: fmt.Sprintf("%d node(s) that left the site would be powered off that anneal lost track of (its state was lost; only the site's history declares them): %s", len(unobservedGone), summarize(unobservedGone))}
		for _, n := range unobservedGone {
			g.Items = append(g.Items, "decommission:"+n)
		}
		out = append(out, g)
	}
	if len(unobserved) > 0 {
		g := Guard{Kind: GuardUnobserved,
			Reason: fmt.Sprintf("%d node(s) would be rebuilt that anneal lost track of (its state had no record of any node) and that did not report their build: %s", len(unobserved), summarize(unobserved))}
		for _, n := range unobserved {
			g.Items = append(g.Items, "rebuild:"+n+"@"+build[n])
		}
		out = append(out, g)
	}
	if limit := share(built, rebuildPct); rebuildPct < 100 && len(rebuiltBuilt) > limit {
		g := Guard{Kind: GuardMassRebuild,
			Reason: fmt.Sprintf("%d of the fleet's %d built nodes would be rebuilt, over maxRebuildPercent %d%% (%s)", len(rebuiltBuilt), built, rebuildPct, nodeCount(limit))}
		for _, n := range rebuiltBuilt {
			g.Items = append(g.Items, "rebuild:"+n+"@"+build[n])
		}
		out = append(out, g)
	}
	return out
}

// decommissionDeletes counts, per DNS target, the records the plan's
// decommissions delete once their nodes are powered off: their own names
// (from their records when they left the site).
func decommissionDeletes(site *schema.Site, rp *rollout.RebuildPlan, records map[string]*node.Record) map[string]int {
	out := map[string]int{}
	if rp == nil || len(rp.Decommission) == 0 || site.DNS == nil {
		return out
	}
	var inSite []*schema.Node
	var sets []dns.RRset
	for _, name := range rp.Decommission {
		if n := site.Node(name); n != nil {
			inSite = append(inSite, n)
		} else if rec := records[name]; rec != nil && rec.Declared != nil {
			sets = append(sets, rec.Declared.RRsets...)
		}
	}
	for _, own := range dns.NodesRRsets(site, inSite) {
		sets = append(sets, own...)
	}
	index := site.DNS.ZoneSet().Index()
	servedBy := map[string][]string{}
	for _, t := range site.DNS.Targets {
		for _, z := range t.Zones {
			zone := schema.CanonicalName(z)
			servedBy[zone] = append(servedBy[zone], t.Name)
		}
	}
	for _, s := range sets {
		for _, t := range servedBy[index.FindCanonical(s.Name)] {
			out[t]++
		}
	}
	return out
}

func cmp0(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// summarize names up to five items.
func summarize(names []string) string {
	if len(names) <= 5 {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:5], ", ") + fmt.Sprintf(" and %d more", len(names)-5)
}

// ComputeDigest fingerprints what the plan would do: the site's content,
// every DNS change (target, zone, operation, RRset before and after),
// every rebuild (node, build, reasons), every decommission and every guard.
// Observation details that do not change what runs (SOA serials, counts)
// are left out, so the same decisions on the same live state give the
// same digest; an approval names it.
func (p *Plan) ComputeDigest() string {
	type zone struct {
		Target, Zone string
		Changes      []dns.RRsetChange
		Adopt        []dns.RRsetKey
	}
	type rebuild struct {
		Node, To string
		Reasons  []node.RebuildReason
		Resume   bool
	}
	d := struct {
		Site, SiteDigest, Only string
		Zones                  []zone
		Rebuilds               []rebuild
		Decommission, Removed  []string
		Guards                 []Guard
	}{Site: p.Site, SiteDigest: p.SiteDigest, Only: p.Only, Guards: p.Guards}
	if p.DNS != nil {
		for _, z := range p.DNS.Zones {
			if len(z.Changes) == 0 && len(z.Adopt) == 0 {
				continue
			}
			d.Zones = append(d.Zones, zone{Target: z.Target, Zone: z.Zone, Changes: z.Changes, Adopt: z.Adopt})
		}
	}
	if rp := p.Rebuilds; rp != nil {
		for _, r := range rp.Rebuilds {
			d.Rebuilds = append(d.Rebuilds, rebuild{Node: r.Node, To: r.To, Reasons: r.Reasons, Resume: r.Resume})
		}
		d.Decommission, d.Removed = rp.Decommission, rp.Removed
	}
	// Streamed into the hash: a first convergence's plan holds every
	// record of the site.
	h := sha256.New()
	if err := json.NewEncoder(h).Encode(d); err != nil {
		panic(fmt.Sprintf("plan digest: %v", err)) // plain data: cannot fail
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Approval is a plan that waits for approval, or one that was approved.
type Approval struct {
	Revision   string    `json:"revision"`
	PlanDigest string    `json:"planDigest"`
	Reasons    []string  `json:"reasons,omitempty"`
	Since      time.Time `json:"since,omitzero"`
	// Items are the guarded items the plan covers.
	Items []string `json:"items,omitempty"`
	// At is when it was approved; Started once the daemon began executing
	// it (from then, later plans of the revision whose guarded items it
	// covers go on: the rollout's progress changes the plan, not intent).
	At      time.Time `json:"at,omitzero"`
	Started bool      `json:"started,omitempty"`
}

// Allows reports whether the approval lets plan, of revision rev, run:
// it is that exact plan, or the approved plan started and covered every
// item plan's guards hold.
func (a *Approval) Allows(rev string, plan *Plan) bool {
	if a == nil || a.Revision != rev {
		return false
	}
	return a.PlanDigest == plan.Digest || a.Started && a.covers(plan.Guards)
}

func (a *Approval) covers(guards []Guard) bool {
	approved := make(map[string]bool, len(a.Items))
	for _, it := range a.Items {
		approved[it] = true
	}
	for _, g := range guards {
		for _, it := range g.Items {
			if !approved[it] {
				return false
			}
		}
	}
	return true
}

// Approve's errors when what it names is not what waits: no plan waits,
// or another revision or plan does.
var (
	ErrNothingToApprove = errors.New("no plan awaits approval")
	ErrNotPending       = errors.New("not the plan that awaits approval")
)

func guardItems(guards []Guard) []string {
	var out []string
	for _, g := range guards {
		out = append(out, g.Items...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func guardReasons(guards []Guard) []string {
	out := make([]string, len(guards))
	for i, g := range guards {
		out[i] = g.Reason
	}
	return out
}
