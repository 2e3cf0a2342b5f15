package reconcile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/reconcile/events"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/rollout"
)

// Enrollment is what `anneal enroll` hands the operator for a machine
// anneal did not install: the build id its agent must report, and the
// files that make it report as its node. The agent token in agent.json is
// a credential.
type Enrollment struct {
	Node     string    `json:"node"`
	BuildID  string    `json:"buildId"`
	Enrolled time.Time `json:"enrolled"`
	node.AgentSetup
}

// ErrEnrollRefused wraps every refusal of Enroll (the node is not one
// anneal may enroll now); other errors are the daemon's.
var ErrEnrollRefused = errors.New("enroll refused")

func refuseEnroll(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrEnrollRefused}, a...)...)
}

// Enroll gives a machine the site declares, and anneal did not build, an
// agent token: it draws a new token generation for the node (an earlier
// enrollment's token is refused from now on), marks the record enrolled,
// and returns the agent's files (RebuildConfig.AgentSetup). Nothing is
// powered or rebuilt: the node's agent reports, and Report adopts it
// (verified) when it reports its desired build with matching facts, or
// records why not; meanwhile the planner holds it. A node anneal built,
// is building or failed to build, one in the running rollout, and one not
// in the site are refused (ErrEnrollRefused). The token is never logged.
func (r *Reconciler) Enroll(ctx context.Context, name string) (*Enrollment, error) {
	rb := r.Rebuild
	if rb == nil || rb.AgentSetup == nil {
		return nil, refuseEnroll("rebuilds are not enabled (serve --netboot-listen): there is no netboot server for an agent to report to")
	}
	site := r.Site()
	if site == nil {
		return nil, refuseEnroll("no valid revision loaded yet")
	}
	n := site.Node(name)
	switch {
	case n == nil:
		return nil, refuseEnroll("node %s is not in the site: declare it first (with state: maintenance, so that anneal holds it until it is adopted)", name)
	case !n.Exists():
		return nil, refuseEnroll("node %s is decommissioned in the site", name)
	case r.inRollout(name):
		return nil, refuseEnroll("node %s is in the running rollout: anneal is rebuilding it", name)
	}
	build := node.BuildSpecOf(site, n).ID()
	gen, err := node.NewNonce()
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", name, err)
	}
	setup, err := rb.AgentSetup(name, gen, build)
	if err != nil {
		return nil, fmt.Errorf("enroll %s: %w", name, err)
	}
	now := time.Now().UTC()
	again := false
	var refused error // the refusal as said, without the store's "update node" wrapping
	err = rb.Nodes.UpdateNode(ctx, name, func(rec *node.Record) error {
		if rec.State != node.Unknown || rec.BuildID != "" {
			refused = refuseEnroll("node %s is %s (build %s): anneal built it, is building it or failed to; enroll is for machines anneal did not install",
				name, rec.State, cmp.Or(rec.BuildID, rec.Target, "none"))
			return refused
		}
		again = !rec.Enrolled.IsZero()
		rec.AgentGen, rec.Enrolled, rec.Reason = gen, now, ""
		return nil
	})
	if err != nil {
		if refused != nil && errors.Is(err, ErrEnrollRefused) {
			return nil, refused
		}
		if errors.Is(err, ErrEnrollRefused) {
			return nil, err
		}
		return nil, fmt.Errorf("enroll %s: record its agent token: %w", name, err)
	}
	msg := "node enrolled: agent token issued; adopted once its agent reports its build with matching facts, never rebuilt meanwhile"
	if again {
		msg = "node enrolled again: a new agent token issued, the previous one revoked; adopted once its agent reports its build with matching facts, never rebuilt meanwhile"
	}
	r.emit(ctx, events.Event{Kind: events.NodeEnrolled, Node: name, Step: build, Actor: actorOf(ctx), Message: msg})
	return &Enrollment{Node: name, BuildID: build, Enrolled: now, AgentSetup: setup}, nil
}

// inRollout reports whether the running rollout rebuilds node name.
func (r *Reconciler) inRollout(name string) bool {
	st, p := r.Status(), r.LastPlan()
	if st.Rollout == nil || !st.Rollout.Running || p == nil || p.Rebuilds == nil {
		return false
	}
	return slices.ContainsFunc(p.Rebuilds.Rebuilds, func(nr rollout.NodeRebuild) bool { return nr.Node == name })
}

// adoptionRefused says why a report does not adopt its node: "" when it
// names the build's id and its facts match the build.
func adoptionRefused(spec node.BuildSpec, rep node.Report) string {
	var why []string
	switch id := spec.ID(); {
	case rep.BuildID == "":
		why = append(why, fmt.Sprintf("its agent reports no build id (the site wants %s)", id))
	case rep.BuildID != id:
		why = append(why, fmt.Sprintf("its agent reports build %s, the site wants %s", rep.BuildID, id))
	}
	if diffs := node.VerifyFacts(spec, rep.Facts); len(diffs) > 0 {
		why = append(why, "facts differ from the build: "+strings.Join(diffs, "; "))
	}
	return strings.Join(why, "; ")
}

// errUnchanged leaves a record as it is.
var errUnchanged = errors.New("unchanged")

// notAdopted records on an enrolled node, still unknown, why its agent's
// report did not adopt it, for /api/v1/nodes and the plan's held list;
// logged when the reason changes. Nothing else changes: the node is held,
// not rebuilt.
func (r *Reconciler) notAdopted(ctx context.Context, name, why string) {
	reason := "enrolled, not adopted: " + why
	// Read first: most reports that adopt nothing are of nodes anneal
	// built (drift), and a read costs no write transaction.
	if rec, err := r.Rebuild.Nodes.NodeRecord(ctx, name); err != nil || !rec.EnrolledHeld() || rec.Reason == reason {
		return
	}
	err := r.Rebuild.Nodes.UpdateNode(ctx, name, func(rec *node.Record) error {
		if !rec.EnrolledHeld() || rec.Reason == reason {
			return errUnchanged
		}
		rec.Reason = reason
		return nil
	})
	switch {
	case errors.Is(err, errUnchanged):
	case err != nil:
		r.log().Warn("record why an enrolled node was not adopted", "node", name, "err", err)
	default:
		r.log().Warn("enrolled node not adopted: it is held, not rebuilt; make the machine or the site match, or have anneal rebuild it (anneal nodes retry)",
			"node", name, "why", why)
	}
}
