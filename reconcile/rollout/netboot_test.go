package rollout

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// TestRolloutVerifiesOnTheAgentsReport: the install callback alone (what
// anyone holding the install token can post) never verifies a node; the
// first report of its new agent, with the build and facts of the build,
// does; an agent reporting another build or other facts fails it.
func TestRolloutVerifiesOnTheAgentsReport(t *testing.T) {
	site := siteWith(t, nil)
	tests := []struct {
		name string
		// agent is what the node's agent reports after the callback (nil:
		// nothing).
		agent func(build string, facts node.Facts) (string, node.Facts)
		want  string // "" verified, else a substring of the failure
	}{
		{name: "callback alone", want: "its agent did not report within"},
		{name: "agent confirms", agent: func(b string, f node.Facts) (string, node.Facts) { return b, f }},
		{name: "agent reports another build", want: `its agent reports build "0123456789abcdef"`,
			agent: func(_ string, f node.Facts) (string, node.Facts) { return "0123456789abcdef", f }},
		{name: "agent reports other facts", want: "facts differ from the build",
			agent: func(b string, f node.Facts) (string, node.Facts) { f.Interfaces = f.Interfaces[1:]; return b, f }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f, ro := newFleet(t, site)
			f.mute["e1n01"] = true // the fleet's own agent stays silent: the test reports
			ro.InstallTimeout = 300 * time.Millisecond
			plan := PlanRebuilds(site, nil, time.Now())
			var one NodeRebuild
			for _, r := range plan.Rebuilds {
				if r.Node == "e1n01" {
					one = r
				}
			}
			plan.Rebuilds = []NodeRebuild{one}
			// Once the callback is stored, report as the agent would (or
			// not): the rollout must still be waiting then.
			installed := make(chan struct{})
			ro.Progress = func(e Event) {
				if e.Step == StepInstalled {
					close(installed)
				}
			}
			done := make(chan *Result, 1)
			go func() {
				res, err := ro.Run(ctx, plan)
				if err != nil {
					t.Error(err)
				}
				done <- res
			}()
			<-installed
			if rec, _ := f.store.NodeRecord(ctx, "e1n01"); rec.State != node.Installed || rec.BuildID != "" {
				t.Fatalf("after the callback alone: state %q build %q, want installed and no build", rec.State, rec.BuildID)
			}
			if tc.agent != nil {
				n := site.Node("e1n01")
				build, facts := tc.agent(one.To, node.FactsOfBuild(node.BuildSpecOf(site, n)))
				_ = f.store.UpdateNode(ctx, "e1n01", func(r *node.Record) error {
					r.Facts, r.FactsAt, r.FactsFrom, r.FactsBuild = &facts, time.Now(), node.ReportAgent, build
					return nil
				})
				f.wake.Notify("e1n01")
			}
			res := <-done
			rec, _ := f.store.NodeRecord(ctx, "e1n01")
			if tc.want == "" {
				if len(res.Verified) != 1 || rec.State != node.Verified || rec.BuildID != one.To {
					t.Fatalf("result %+v, record state %q build %q: want verified on %s", res, rec.State, rec.BuildID, one.To)
				}
				return
			}
			if !strings.Contains(res.Failed["e1n01"], tc.want) || rec.State != node.Failed || rec.BuildID != "" {
				t.Fatalf("result %+v, record state %q build %q: want failed with %q", res, rec.State, rec.BuildID, tc.want)
			}
		})
	}
}

// TestArmingRotatesTheAgentToken: every arming draws a new agent token
// generation and forgets the files fetched in the previous one.
func TestArmingRotatesTheAgentToken(t *testing.T) {
	ctx := context.Background()
	site := siteWith(t, nil)
	f, ro := newFleet(t, site)
	_ = f.store.UpdateNode(ctx, "e1n01", func(r *node.Record) error {
		r.AgentGen, r.Fetched = "old-generation", []string{"user-data"}
		return nil
	})
	var gens []string
	ro.Progress = func(e Event) {
		if e.Node == "e1n01" && e.Step == StepArm {
			rec, _ := f.store.NodeRecord(ctx, "e1n01")
			gens = append(gens, rec.AgentGen)
			if len(rec.Fetched) != 0 {
				t.Errorf("armed with files already fetched: %v", rec.Fetched)
			}
		}
	}
	for range 2 {
		plan := PlanRebuilds(site, nil, time.Now())
		if _, err := ro.Run(ctx, plan); err != nil {
			t.Fatal(err)
		}
	}
	if len(gens) != 2 || gens[0] == "old-generation" || gens[0] == "" || gens[1] == gens[0] || len(gens[0]) < 32 {
		t.Fatalf("agent generations at the two armings: %q", gens)
	}
}
