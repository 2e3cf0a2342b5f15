package reconcile

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/node/nodetest"
	"github.com/anneal-dev/anneal/reconcile/rollout"
	"github.com/anneal-dev/anneal/schema"
)

// enrollFixture is a Reconciler on the example site (as its last good
// revision) with an in-memory node store and an AgentSetup that records
// the generations it was asked for.
func enrollFixture(t *testing.T) (*Reconciler, *nodetest.Store, *[]string) {
	t.Helper()
	nodes := &nodetest.Store{Recs: map[string]*node.Record{}}
	var gens []string
	r := &Reconciler{Rebuild: &RebuildConfig{Nodes: nodes,
		AgentSetup: func(name, gen, build string) (node.AgentSetup, error) {
			gens = append(gens, gen)
			return node.AgentSetup{Files: []node.AgentFile{{Name: "agent.json", Content: name + "/" + gen + "/" + build}}}, nil
		}}}
	r.goodSite = exampleSite(t)
	return r, nodes, &gens
}

// TestEnroll: a node of the site that anneal never built (no record, or an
// unknown one) is enrolled: a new token generation, the enrolled mark,
// the desired build; everything else is refused with ErrEnrollRefused and
// leaves the record as it was.
func TestEnroll(t *testing.T) {
	const name = "w1n01"
	tests := []struct {
		name    string
		setup   func(r *Reconciler, recs map[string]*node.Record)
		node    string
		refused string // "" = enrolled
	}{
		{name: "no record", node: name},
		{name: "unknown, observed after a lost state", node: name, setup: func(_ *Reconciler, recs map[string]*node.Record) {
			recs[name] = &node.Record{Name: name, Unobserved: true, Power: node.PowerOn, AgentGen: "old"}
		}},
		{name: "enrolled before, not adopted", node: name, setup: func(_ *Reconciler, recs map[string]*node.Record) {
			recs[name] = &node.Record{Name: name, Enrolled: time.Now(), AgentGen: "old", Reason: "enrolled, not adopted: x"}
		}},
		{name: "not in the site", node: "ghost", refused: "not in the site"},
		{name: "decommissioned in the site", node: name, refused: "decommissioned", setup: func(r *Reconciler, _ map[string]*node.Record) {
			r.goodSite.Node(name).State = schema.StateDecommissioned
		}},
		{name: "verified", node: name, refused: "is verified", setup: func(_ *Reconciler, recs map[string]*node.Record) {
			recs[name] = &node.Record{Name: name, State: node.Verified, BuildID: "b1", AgentGen: "old"}
		}},
		{name: "provisioning", node: name, refused: "is provisioning", setup: func(_ *Reconciler, recs map[string]*node.Record) {
			recs[name] = &node.Record{Name: name, State: node.Provisioning, Target: "b1", AgentGen: "old"}
		}},
		{name: "failed", node: name, refused: "is failed", setup: func(_ *Reconciler, recs map[string]*node.Record) {
			recs[name] = &node.Record{Name: name, State: node.Failed, Target: "b1", AgentGen: "old"}
		}},
		{name: "in the running rollout", node: name, refused: "running rollout", setup: func(r *Reconciler, _ map[string]*node.Record) {
			r.status.Rollout = &RolloutStatus{Running: true}
			r.plan = &Plan{Rebuilds: &rollout.RebuildPlan{Rebuilds: []rollout.NodeRebuild{{Node: name}}}}
		}},
		{name: "another node in the running rollout", node: name, setup: func(r *Reconciler, _ map[string]*node.Record) {
			r.status.Rollout = &RolloutStatus{Running: true}
			r.plan = &Plan{Rebuilds: &rollout.RebuildPlan{Rebuilds: []rollout.NodeRebuild{{Node: "e1n01"}}}}
		}},
		{name: "no site loaded", node: name, refused: "no valid revision", setup: func(r *Reconciler, _ map[string]*node.Record) {
			r.goodSite = nil
		}},
		{name: "no netboot server", node: name, refused: "--netboot-listen", setup: func(r *Reconciler, _ map[string]*node.Record) {
			r.Rebuild.AgentSetup = nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, nodes, gens := enrollFixture(t)
			if tc.setup != nil {
				tc.setup(r, nodes.Recs)
			}
			var before node.Record
			if rec := nodes.Recs[tc.node]; rec != nil {
				before = *rec
			}
			e, err := r.Enroll(context.Background(), tc.node)
			rec := nodes.Recs[tc.node]
			if tc.refused != "" {
				if !errors.Is(err, ErrEnrollRefused) || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("err %v, want a refusal naming %q", err, tc.refused)
				}
				if rec != nil && (rec.AgentGen != before.AgentGen || !rec.Enrolled.Equal(before.Enrolled)) {
					t.Errorf("a refused enroll changed the record: %+v", rec)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := node.BuildSpecOf(r.goodSite, r.goodSite.Node(tc.node)).ID()
			if e.Node != tc.node || e.BuildID != want || len(*gens) != 1 || e.Files[0].Content != tc.node+"/"+(*gens)[0]+"/"+want {
				t.Errorf("enrollment %+v (gens %v), want build %s and the files of the drawn generation", e, *gens, want)
			}
			if rec == nil || rec.State != node.Unknown || rec.AgentGen != (*gens)[0] || rec.AgentGen == before.AgentGen ||
				rec.Enrolled.IsZero() || rec.Reason != "" || rec.Unobserved != before.Unobserved {
				t.Errorf("record %+v: want unknown, enrolled, the new generation, no reason", rec)
			}
		})
	}
}

// TestReportEnrolled: an enrolled node's report adopts it (verified, its
// build recorded) only with its desired build and matching facts;
// otherwise it stays unknown with the differences as its reason. A node
// anneal built is not touched by a report that does not match.
func TestReportEnrolled(t *testing.T) {
	const name = "w1n01"
	tests := []struct {
		name       string
		rec        node.Record
		report     func(build string, f node.Facts) (string, node.Facts)
		wantState  node.State
		wantReason []string
	}{
		{name: "matches", rec: node.Record{Enrolled: time.Now()}, wantState: node.Verified,
			report: func(b string, f node.Facts) (string, node.Facts) { return b, f }},
		{name: "matches after a mismatch", rec: node.Record{Enrolled: time.Now(), Reason: "enrolled, not adopted: x"}, wantState: node.Verified,
			report: func(b string, f node.Facts) (string, node.Facts) { return b, f }},
		{name: "facts differ", rec: node.Record{Enrolled: time.Now()}, wantState: node.Unknown,
			wantReason: []string{"enrolled, not adopted", "facts differ", "hostname is \"w1n01-old\""},
			report:     func(b string, f node.Facts) (string, node.Facts) { f.Hostname = "w1n01-old"; return b, f }},
		{name: "another build", rec: node.Record{Enrolled: time.Now()}, wantState: node.Unknown,
			wantReason: []string{"reports build 0123456789abcdef, the site wants"},
			report:     func(_ string, f node.Facts) (string, node.Facts) { return "0123456789abcdef", f }},
		{name: "no build id", rec: node.Record{Enrolled: time.Now()}, wantState: node.Unknown,
			wantReason: []string{"reports no build id"},
			report:     func(_ string, f node.Facts) (string, node.Facts) { return "", f }},
		{name: "built by anneal, drifted: untouched", rec: node.Record{State: node.Verified, BuildID: "b0", Reason: "kept"},
			wantState: node.Verified, wantReason: []string{"kept"},
			report: func(b string, f node.Facts) (string, node.Facts) { f.Hostname = "x"; return b, f }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, nodes, _ := enrollFixture(t)
			rec := tc.rec
			rec.Name = name
			nodes.Recs[name] = &rec
			spec := node.BuildSpecOf(r.goodSite, r.goodSite.Node(name))
			build, facts := tc.report(spec.ID(), node.FactsOfBuild(spec))
			r.Report(context.Background(), node.Report{Node: name, Kind: node.ReportAgent, BuildID: build, Facts: facts, Time: time.Now()})
			got := nodes.Recs[name]
			if got.State != tc.wantState {
				t.Fatalf("state %q, want %q (reason %q)", got.State, tc.wantState, got.Reason)
			}
			for _, w := range tc.wantReason {
				if !strings.Contains(got.Reason, w) {
					t.Errorf("reason %q does not say %q", got.Reason, w)
				}
			}
			if tc.wantState == node.Verified && tc.rec.State == node.Unknown && (got.Reason != "" || got.BuildID != spec.ID()) {
				t.Errorf("adopted record %+v: want the build recorded and no reason", got)
			}
		})
	}
}

// TestRetryReleasesAnEnrolledNode: retry lets anneal rebuild an enrolled
// node that was not adopted (the planner holds it until then).
func TestRetryReleasesAnEnrolledNode(t *testing.T) {
	r, nodes, _ := enrollFixture(t)
	nodes.Recs["w1n01"] = &node.Record{Name: "w1n01", Enrolled: time.Now(), Reason: "enrolled, not adopted: x"}
	nodes.Recs["w1n02"] = &node.Record{Name: "w1n02"}
	if err := r.Retry(context.Background(), "w1n01"); err != nil {
		t.Fatal(err)
	}
	if rec := nodes.Recs["w1n01"]; rec.State != node.Pending {
		t.Errorf("after retry: %+v, want pending", rec)
	}
	if err := r.Retry(context.Background(), "w1n02"); err == nil {
		t.Error("retry of an unknown node that was not enrolled: no error")
	}
}

// TestReportWithARevokedGenerationAdoptsNothing: a report whose token was
// accepted before a re-enroll (or revoke) drew a new generation does not
// adopt the node, even with the desired build and matching facts.
func TestReportWithARevokedGenerationAdoptsNothing(t *testing.T) {
	const name = "w1n01"
	for _, tc := range []struct {
		reportGen string
		want      node.State
	}{
		{reportGen: "gen-2", want: node.Verified},
		{reportGen: "gen-1", want: node.Unknown},
		{reportGen: "", want: node.Unknown},
	} {
		r, nodes, _ := enrollFixture(t)
		nodes.Recs[name] = &node.Record{Name: name, Enrolled: time.Now(), AgentGen: "gen-2"}
		spec := node.BuildSpecOf(r.goodSite, r.goodSite.Node(name))
		r.Report(context.Background(), node.Report{Node: name, Kind: node.ReportAgent, BuildID: spec.ID(),
			Facts: node.FactsOfBuild(spec), Time: time.Now(), AgentGen: tc.reportGen})
		if got := nodes.Recs[name].State; got != tc.want {
			t.Errorf("report at generation %q: state %q, want %q", tc.reportGen, got, tc.want)
		}
	}
}
