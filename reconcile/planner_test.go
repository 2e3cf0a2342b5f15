package reconcile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/rollout"
	"github.com/anneal-dev/anneal/schema"
)

// verifiedRecords has every active node of site verified on its build,
// with its declaration.
func verifiedRecords(site *schema.Site) map[string]*node.Record {
	recs := map[string]*node.Record{}
	decl := node.DeclaredOf(site, site.Nodes, "A")
	for _, n := range site.Nodes {
		if n.State != schema.StateActive {
			continue
		}
		spec := node.BuildSpecOf(site, n)
		recs[n.Name] = &node.Record{Name: n.Name, State: node.Verified, BuildID: spec.ID(), Spec: &spec, Declared: decl[n.Name], Power: node.PowerOn}
	}
	return recs
}

// variant loads the example site with the named nodes' documents deleted
// and the site's policies edited.
func variant(t *testing.T, policies string, drop ...string) *schema.Site {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../examples/site-repo")); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "nodes", "*.yaml"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var keep []string
		for doc := range strings.SplitSeq(string(b), "---\n") {
			if !slices.ContainsFunc(drop, func(n string) bool { return strings.Contains(doc, "\nname: "+n+"\n") }) {
				keep = append(keep, doc)
			}
		}
		out := strings.Join(keep, "---\n")
		if strings.TrimSpace(out) == "" {
			err = os.Remove(f)
		} else {
			err = os.WriteFile(f, []byte(out), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if policies != "" {
		p := filepath.Join(dir, "site.yaml")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(strings.Replace(string(b), "policies:\n", "policies:\n"+policies, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, _, err := schema.LoadDir(context.Background(), dir, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDepartedNodes(t *testing.T) {
	site := exampleSite(t)
	recs := verifiedRecords(site)
	gone := variant(t, "", "w1n04")
	p := rollout.PlanRebuildsWith(gone, recs, rollout.RebuildOptions{Now: time.Now()})
	if !slices.Equal(p.Decommission, []string{"w1n04"}) || !slices.Equal(p.Removed, []string{"w1n04"}) || len(p.Rebuilds) != 0 {
		t.Fatalf("plan for w1n04 leaving: decommission %v removed %v rebuilds %d", p.Decommission, p.Removed, len(p.Rebuilds))
	}
	// Until it is powered off, it keeps its own names (not its groups).
	av := rollout.AvailabilityOf(gone, recs)
	d, err := dns.CompileWith(gone, av)
	if err != nil {
		t.Fatal(err)
	}
	has := func(d *dns.Desired, name string) bool {
		for _, z := range d.Zones {
			for _, s := range z.RRsets {
				if s.Name == name {
					return true
				}
			}
		}
		return false
	}
	if !has(d, "w1n04.west.example.net") {
		t.Error("w1n04 lost its name before it was powered off")
	}
	recs["w1n04"].State = node.Retired
	d, err = dns.CompileWith(gone, rollout.AvailabilityOf(gone, recs))
	if err != nil {
		t.Fatal(err)
	}
	if has(d, "w1n04.west.example.net") {
		t.Error("w1n04 kept its name once decommissioned")
	}
	if p := rollout.PlanRebuildsWith(gone, recs, rollout.RebuildOptions{Now: time.Now()}); len(p.Decommission) != 0 {
		t.Errorf("a decommissioned node that left is decommissioned again: %v", p.Decommission)
	}
	// Back in the site: rebuilt (it was powered off).
	p = rollout.PlanRebuildsWith(site, recs, rollout.RebuildOptions{Now: time.Now()})
	if len(p.Rebuilds) != 1 || p.Rebuilds[0].Node != "w1n04" {
		t.Errorf("w1n04 back in the site: rebuilds %+v", p.Rebuilds)
	}
	// A record from before declarations cannot be powered off: held.
	recs = verifiedRecords(site)
	recs["w1n04"].Declared = nil
	p = rollout.PlanRebuildsWith(gone, recs, rollout.RebuildOptions{Now: time.Now()})
	if len(p.Decommission) != 0 || !slices.ContainsFunc(p.Held, func(h rollout.HeldNode) bool { return h.Node == "w1n04" && strings.Contains(h.Reason, "by hand") }) {
		t.Errorf("an undeclared departed node: decommission %v held %+v", p.Decommission, p.Held)
	}
}

func TestObservationHolds(t *testing.T) {
	site := exampleSite(t)
	now := time.Now()
	until := now.Add(time.Minute)
	tests := []struct {
		name   string
		rec    *node.Record
		until  time.Time
		held   bool
		unobs  bool
		reason node.RebuildReason
	}{
		{"on, unobserved, in the window", &node.Record{Unobserved: true, Power: node.PowerOn}, until, true, false, ""},
		{"power unknown, in the window", &node.Record{Unobserved: true, Power: node.PowerUnknown}, until, true, false, ""},
		{"off and never built: installed", &node.Record{Unobserved: true, Power: node.PowerOff}, until, false, false, node.ReasonNew},
		{"on, after the window: guarded", &node.Record{Unobserved: true, Power: node.PowerOn}, now.Add(-time.Second), false, true, node.ReasonNew},
		{"added after the state was found empty", &node.Record{}, until, false, false, node.ReasonNew},
		{"no record", nil, until, false, false, node.ReasonNew},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs := map[string]*node.Record{}
			if tc.rec != nil {
				tc.rec.Name = "e1n01"
				recs["e1n01"] = tc.rec
			}
			p := rollout.PlanRebuildsWith(site, recs, rollout.RebuildOptions{Now: now, ObserveUntil: tc.until})
			held := slices.ContainsFunc(p.Held, func(h rollout.HeldNode) bool { return h.Node == "e1n01" })
			i := slices.IndexFunc(p.Rebuilds, func(r rollout.NodeRebuild) bool { return r.Node == "e1n01" })
			if held != tc.held {
				t.Errorf("held %v, want %v", held, tc.held)
			}
			if tc.reason == "" {
				if i >= 0 {
					t.Errorf("rebuilt: %+v", p.Rebuilds[i])
				}
				return
			}
			if i < 0 {
				t.Fatal("not rebuilt")
			}
			if r := p.Rebuilds[i]; r.Unobserved != tc.unobs || !slices.Contains(r.Reasons, tc.reason) {
				t.Errorf("rebuild %+v, want unobserved %v reason %s", r, tc.unobs, tc.reason)
			}
		})
	}
}

func TestGuards(t *testing.T) {
	site := exampleSite(t)
	recs := verifiedRecords(site)
	kinds := func(g []Guard) []string {
		var out []string
		for _, x := range g {
			out = append(out, x.Kind)
		}
		return out
	}
	plan := func(s *schema.Site, recs map[string]*node.Record) *Plan {
		return &Plan{Rebuilds: rollout.PlanRebuildsWith(s, recs, rollout.RebuildOptions{Now: time.Now()})}
	}
	// One node leaving never waits; a rack (5 of 13) does.
	if g := Guards(site, plan(variant(t, "", "w1n04"), recs), recs, nil); len(g) != 0 {
		t.Errorf("one node leaving: guards %v", kinds(g))
	}
	rack := variant(t, "", "e2n01", "e2n02", "e2n03", "e2n04", "e2n05")
	g := Guards(rack, plan(rack, recs), recs, nil)
	if !slices.Equal(kinds(g), []string{GuardMassRemove}) || len(g[0].Items) != 4 {
		t.Errorf("a rack leaving: guards %+v", g)
	}
	// A policy that allows it.
	lenient := variant(t, "  maxRemovePercent: 50\n", "e2n01", "e2n02", "e2n03", "e2n04", "e2n05")
	if g := Guards(lenient, plan(lenient, recs), recs, nil); len(g) != 0 {
		t.Errorf("maxRemovePercent 50: guards %v", kinds(g))
	}
	// ...but not in the commit that removes the rack: the applied
	// revision's stricter policy holds.
	if g := Guards(lenient, plan(lenient, recs), recs, &site.Config.Policies); !slices.Equal(kinds(g), []string{GuardMassRemove}) {
		t.Errorf("maxRemovePercent raised to 50 in the commit that removes a rack: guards %v", kinds(g))
	}
	// The names the rack's nodes lose once powered off count against the
	// DNS threshold in this plan, not one node's sync at a time.
	withDNS := plan(lenient, recs)
	withDNS.DNS = &dns.Plan{MassDelete: []dns.MassDelete{{Target: "bind", Owned: 120, Limit: 20}}}
	if g := Guards(lenient, withDNS, recs, nil); !slices.Equal(kinds(g), []string{GuardDNSMassDelete}) || !strings.Contains(g[0].Reason, "decommissioned nodes") {
		t.Errorf("a rack's names against dnsMassDeletePercent: guards %+v", g)
	}
	// Rebuilds of built nodes over maxRebuildPercent.
	stale := map[string]*node.Record{}
	for name, r := range recs {
		c := *r
		c.BuildID = "0000000000000000"
		c.Spec = nil
		stale[name] = &c
	}
	strict := variant(t, "  maxRebuildPercent: 25\n")
	if g := Guards(strict, plan(strict, stale), stale, nil); !slices.Equal(kinds(g), []string{GuardMassRebuild}) {
		t.Errorf("every node rebuilt, maxRebuildPercent 25: guards %v", kinds(g))
	}
	if g := Guards(site, plan(site, stale), stale, nil); len(g) != 0 {
		t.Errorf("every node rebuilt, no rebuild policy: guards %v", kinds(g))
	}
	// A rebuild of a node anneal lost track of always waits.
	lost := map[string]*node.Record{"e1n01": {Name: "e1n01", Unobserved: true, Power: node.PowerOn}}
	if g := Guards(site, plan(site, lost), lost, nil); !slices.Contains(kinds(g), GuardUnobserved) {
		t.Errorf("an unobserved rebuild: guards %v", kinds(g))
	}
}

func TestApprovalAllows(t *testing.T) {
	guarded := &Plan{Digest: "d1", Guards: []Guard{{Kind: GuardMassRemove, Items: []string{"decommission:a", "decommission:b"}}}}
	later := &Plan{Digest: "d2", Guards: []Guard{{Kind: GuardMassRemove, Items: []string{"decommission:b"}}}}
	more := &Plan{Digest: "d3", Guards: []Guard{{Kind: GuardMassRemove, Items: []string{"decommission:b", "decommission:c"}}}}
	approved := &Approval{Revision: "r1", PlanDigest: "d1", Items: []string{"decommission:a", "decommission:b"}}
	started := *approved
	started.Started = true
	tests := []struct {
		name string
		a    *Approval
		rev  string
		plan *Plan
		want bool
	}{
		{"none", nil, "r1", guarded, false},
		{"that plan", approved, "r1", guarded, true},
		{"another revision", approved, "r2", guarded, false},
		{"another plan, not started", approved, "r1", later, false},
		{"the rest of a started plan", &started, "r1", later, true},
		{"a started plan, with more", &started, "r1", more, false},
	}
	for _, tc := range tests {
		if got := tc.a.Allows(tc.rev, tc.plan); got != tc.want {
			t.Errorf("%s: Allows = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPlanDigest(t *testing.T) {
	mk := func(serial uint32, data string) *Plan {
		return &Plan{Site: "s", SiteDigest: "x", DNS: &dns.Plan{Zones: []dns.ZoneDiff{{Target: "bind", Zone: "example.net", Serial: serial, Owned: int(serial),
			Changes: []dns.RRsetChange{{Op: dns.OpCreate, New: &dns.RRset{Name: "a.example.net", Type: dns.TypeA, TTL: 300, Data: []string{data}}}}}}}}
	}
	a, b, c := mk(1, "10.0.0.1").ComputeDigest(), mk(2, "10.0.0.1").ComputeDigest(), mk(1, "10.0.0.2").ComputeDigest()
	if a != b {
		t.Error("the digest changed with the SOA serial only")
	}
	if a == c {
		t.Error("the digest did not change with what is written")
	}
	if len(a) != 64 {
		t.Errorf("digest %q", a)
	}
}

// TestReviewGuards: the review of a change says it waits for approval,
// with the stricter of the base's and the head's policies, and flags a
// guard policy the change loosens.
func TestReviewGuards(t *testing.T) {
	base := exampleSite(t)
	rack := []string{"e2n01", "e2n02", "e2n03", "e2n04", "e2n05"}
	hits := func(r *Review) []string {
		var out []string
		for _, h := range r.Policies {
			if h.Policy == "maxRemovePercent" {
				out = append(out, fmt.Sprintf("%v %s", h.Blocking, h.Detail))
			}
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		policies string
		drop     []string
		want     []string // substrings of the maxRemovePercent hits, in order
	}{
		{"one node", "", []string{"w1n04"}, nil},
		{"a rack", "", rack, []string{"true 5 of 14"}},
		{"a rack, the policy loosened in the same commit", "  maxRemovePercent: 50\n", rack, []string{"true 5 of 14", "false loosened from 10% to 50%"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ReviewRange(base, variant(t, tc.policies, tc.drop...), "base", "head")
			if err != nil {
				t.Fatal(err)
			}
			got := hits(r)
			if len(got) != len(tc.want) {
				t.Fatalf("maxRemovePercent hits %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("hit %q, want it to contain %q", got[i], tc.want[i])
				}
			}
		})
	}
}
