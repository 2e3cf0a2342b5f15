package reconcile

import (
	"context"
	"time"
)

// changedBy reports whether executing plan changed something: DNS writes,
// or nodes rebuilt or decommissioned.
func changedBy(plan *Plan) bool {
	if plan.DNS != nil && (plan.DNS.HasChanges() || plan.DNS.Interrupted != nil) {
		return true
	}
	return plan.Rebuilds != nil && len(plan.Rebuilds.Rebuilds)+len(plan.Rebuilds.Decommission) > 0
}

// replan publishes the drift as it is once a plan with changes has run:
// the plan made again from the live state the apply left (the records
// read anew). The plan just executed is not the drift any more: shown, it
// would list every change just made as still to make. A plan that cannot
// be made now leaves the executed one published, and is logged.
func (r *Reconciler) replan(ctx context.Context, st *Status, in PlanInput) {
	in.Now, in.Records = time.Now(), nil
	t0 := time.Now()
	plan, _, err := r.pl.Plan(ctx, in)
	st.Steps["replan"] = time.Since(t0).Seconds()
	if err != nil {
		r.log().Warn("plan after the apply failed: the drift shown is the plan applied", "revision", in.Source, "err", err)
		return
	}
	c, u, d, conf := plan.Counts()
	st.Drift = Drift{Creates: c, Updates: u, Deletes: d, Conflicts: conf, Failures: len(plan.DNS.Failures)}
	if plan.Rebuilds != nil {
		st.Drift.Rebuilds, st.Drift.Decommissions, st.Drift.Held = len(plan.Rebuilds.Rebuilds), len(plan.Rebuilds.Decommission), len(plan.Rebuilds.Held)
	}
	r.mu.Lock()
	r.plan = plan
	r.mu.Unlock()
}
