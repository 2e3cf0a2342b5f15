package rollout

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// TestPlanHoldsEnrolledNodes: a node enrolled and not adopted is held
// (never rebuilt), with why, whether it awaits its first report or
// reported a mismatch, during or after an observation, even when anneal
// lost track of it; a non-enrolled node in the same situation is rebuilt
// (or, unobserved, rebuilt with approval) as before.
func TestPlanHoldsEnrolledNodes(t *testing.T) {
	site := siteWith(t, nil)
	now := time.Now()
	enrolled := now.Add(-time.Hour)
	tests := []struct {
		name     string
		rec      *node.Record
		observe  time.Time
		held     string // "" = rebuilt
		rebuilds bool
	}{
		{name: "enrolled, awaiting its report", rec: &node.Record{Enrolled: enrolled}, held: "awaiting its agent's first report"},
		{name: "enrolled, not adopted", rec: &node.Record{Enrolled: enrolled, Reason: "enrolled, not adopted: facts differ from the build: x"}, held: "facts differ from the build: x"},
		{name: "enrolled, unobserved, observation over", rec: &node.Record{Enrolled: enrolled, Unobserved: true, Power: node.PowerOn}, held: "enrolled at", observe: now.Add(-time.Minute)},
		{name: "enrolled, unobserved, observing", rec: &node.Record{Enrolled: enrolled, Unobserved: true, Power: node.PowerOn}, held: "enrolled at", observe: now.Add(time.Minute)},
		{name: "not enrolled, no record", rebuilds: true},
		{name: "enrolled, then retried", rec: &node.Record{Enrolled: enrolled, State: node.Pending}, rebuilds: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recs := map[string]*node.Record{}
			for _, n := range site.Nodes {
				if n.Exists() {
					spec := node.BuildSpecOf(site, n)
					f := node.FactsOfBuild(spec)
					recs[n.Name] = &node.Record{Name: n.Name, State: node.Verified, BuildID: spec.ID(), Spec: &spec, BuiltAt: now, Facts: &f}
				}
			}
			delete(recs, "w1n01")
			if tc.rec != nil {
				rec := *tc.rec
				rec.Name = "w1n01"
				recs["w1n01"] = &rec
			}
			p := PlanRebuildsWith(site, recs, RebuildOptions{Now: now, ObserveUntil: tc.observe})
			rebuilt := slices.ContainsFunc(p.Rebuilds, func(r NodeRebuild) bool { return r.Node == "w1n01" })
			i := slices.IndexFunc(p.Held, func(h HeldNode) bool { return h.Node == "w1n01" })
			if rebuilt != tc.rebuilds {
				t.Fatalf("rebuilt %v, want %v; plan %+v", rebuilt, tc.rebuilds, p)
			}
			if tc.held == "" {
				if i >= 0 {
					t.Errorf("held: %+v", p.Held[i])
				}
				return
			}
			if i < 0 || !strings.Contains(p.Held[i].Reason, tc.held) || !strings.Contains(p.Held[i].Reason, "anneal nodes retry w1n01") {
				t.Errorf("held %+v, want w1n01 held saying %q and how to release it", p.Held, tc.held)
			}
			if len(p.Rebuilds) != 0 {
				t.Errorf("other rebuilds: %+v", p.Rebuilds)
			}
		})
	}
}

// TestRolloutSkipsANodeEnrolledAfterThePlan: a node enrolled between the
// plan and its arming is not taken out of service, armed nor
// power-cycled; the rollout reports it as not started (not failed), its
// record stays enrolled, and the other nodes are rebuilt.
func TestRolloutSkipsANodeEnrolledAfterThePlan(t *testing.T) {
	site := siteWith(t, nil)
	f, ro := newFleet(t, site)
	plan := PlanRebuilds(site, nil, time.Now())
	enrolled := time.Now()
	if err := f.store.UpdateNode(t.Context(), "w1n01", func(rec *node.Record) error {
		rec.Enrolled, rec.AgentGen = enrolled, "g-enrolled"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	res, err := ro.Run(t.Context(), plan)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.NotStarted, "w1n01") || res.Failed["w1n01"] != "" || slices.Contains(res.Verified, "w1n01") {
		t.Errorf("w1n01: not started %v, failed %q, verified %v; want not rebuilt (not started, not failed)", res.NotStarted, res.Failed["w1n01"], res.Verified)
	}
	if f.cycles["w1n01"] != 0 {
		t.Errorf("w1n01 power-cycled %d times", f.cycles["w1n01"])
	}
	rec, err := f.store.NodeRecord(t.Context(), "w1n01")
	if err != nil || rec.State != node.Unknown || rec.AgentGen != "g-enrolled" || !rec.Enrolled.Equal(enrolled) {
		t.Errorf("w1n01's record %+v (%v): want it as enroll left it", rec, err)
	}
	if len(res.Verified) == 0 {
		t.Error("no other node was rebuilt")
	}
}
