package rollout

import (
	"slices"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// TestEnrolledAfterThePlanDoesNotHalt: a node enrolled between the plan
// and its arming is skipped, not failed: whether it is the canary or not,
// enrolling a machine does not halt the fleet's rollout (nor count
// against maxFailures or hold a maxUnavailable slot), and the other nodes
// are rebuilt. Its record stays as enroll left it, nothing power-cycles it.
func TestEnrolledAfterThePlanDoesNotHalt(t *testing.T) {
	for _, tc := range []struct {
		name   string
		canary bool
	}{{"the canary", true}, {"another node", false}} {
		t.Run(tc.name, func(t *testing.T) {
			site := siteWith(t, nil)
			f, ro := newFleet(t, site)
			plan := PlanRebuilds(site, nil, time.Now())
			i := slices.IndexFunc(plan.Rebuilds, func(r NodeRebuild) bool { return r.Canary == tc.canary })
			if i < 0 {
				t.Fatalf("no rebuild with canary %v in %+v", tc.canary, plan.Rebuilds)
			}
			name := plan.Rebuilds[i].Node
			if err := f.store.UpdateNode(t.Context(), name, func(rec *node.Record) error {
				rec.Enrolled, rec.AgentGen = time.Now(), "g-enrolled"
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			res, err := ro.Run(t.Context(), plan)
			if err != nil {
				t.Fatal(err)
			}
			if res.Halted != "" || len(res.Verified) != len(plan.Rebuilds)-1 {
				t.Errorf("enrolling %s: halted %q, %d of %d other nodes verified (failed %v, not started %v)",
					name, res.Halted, len(res.Verified), len(plan.Rebuilds)-1, res.Failed, res.NotStarted)
			}
			if f.cycles[name] != 0 {
				t.Errorf("%s power-cycled %d times", name, f.cycles[name])
			}
		})
	}
}
