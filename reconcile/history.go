package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/events"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/rollout"
)

// The reconciler's history: what it saw, decided and did, emitted to
// r.Events (stored, logged once, streamed). Each event is emitted from a
// one-line call site in the loop; the helpers here keep what makes an
// event once-only (a blocked revision is refused once, not every pass).

// history is the reconciler's memory of the events it emitted, for those
// emitted once per revision or plan.
type history struct {
	mu sync.Mutex
	// refused is the last revision and class refused; failed the last
	// failure (revision, class, error); plan the last plan digest seen;
	// halted the last halted rollout (revision and reason).
	refused, failed, plan, halted string
	// queued are events decided under r.mu, emitted by flush.
	queued []events.Event
}

type actorKey struct{}

// WithActor says who asks in ctx (the API: "api"), for the events of
// operator actions (suspend, resume, approve, retry, revoke).
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

func actorOf(ctx context.Context) string {
	a, _ := ctx.Value(actorKey{}).(string)
	return a
}

// recorder is r.Events, or without one a recorder that only logs: the
// log states each event once either way.
func (r *Reconciler) recorder() *events.Recorder {
	if r.Events != nil {
		return r.Events
	}
	return events.NewRecorder(nil, r.log())
}

func (r *Reconciler) emit(ctx context.Context, evs ...events.Event) {
	r.recorder().Emit(ctx, evs...)
}

// swap sets *field to key and says whether it changed (under h.mu).
func (h *history) swap(field *string, key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if *field == key {
		return false
	}
	*field = key
	return true
}

// noteSeen emits RevisionSeen for a revision other than the last
// attempted one (a revision seen again after another is refused again).
func (r *Reconciler) noteSeen(ctx context.Context, last string, rev Revision) {
	if rev.ID == last {
		return
	}
	r.hist.swap(&r.hist.refused, "")
	r.emit(ctx, events.Event{Kind: events.RevisionSeen, Revision: rev.ID, Summary: rev.Summary, Message: "revision fetched"})
}

// noteValidated emits RevisionValidated for a revision newly found valid.
func (r *Reconciler) noteValidated(ctx context.Context, lastGood, rev string) {
	if rev == lastGood {
		return // reloaded after a restart: validated before
	}
	r.emit(ctx, events.Event{Kind: events.RevisionValidated, Revision: rev, Message: "revision validated"})
}

// refusedError is a pass's error that an event already stated (a
// RevisionRefused, or the halt of the revision's rollout):
// the pass does not state it again.
type refusedError struct{ error }

func (e refusedError) Unwrap() error { return e.error }

// noteRefused emits RevisionRefused once per revision and class (the
// pass's error then wraps refusedError, not to be stated again).
func (r *Reconciler) noteRefused(ctx context.Context, rev, class, why string, cause error) {
	if r.hist.swap(&r.hist.refused, rev+"\x00"+class) {
		r.emit(ctx, events.Event{Kind: events.RevisionRefused, Revision: rev, Class: class,
			Message: "revision refused: it " + why, Error: cause.Error()})
	}
}

// passFailed states a failed pass: ApplyFailed once per revision, class
// and error (a pass that fails the same way again logs at debug only),
// nothing for a refusal (its event said it). A pass that succeeds resets
// it (passFailed with a nil err).
func (r *Reconciler) passFailed(ctx context.Context, st *Status, class string, err error) {
	if err == nil {
		r.hist.swap(&r.hist.failed, "")
		return
	}
	if errors.As(err, new(refusedError)) {
		return
	}
	rev := st.LastAttemptedRevision
	if class == FailSource {
		rev = "" // the fetch failed: no revision of it
	}
	if !r.hist.swap(&r.hist.failed, rev+"\x00"+class+"\x00"+err.Error()) {
		r.log().Debug("reconcile failed again, as before", "class", class, "err", err)
		return
	}
	r.emit(ctx, events.Event{Kind: events.ApplyFailed, Revision: rev, Class: class, Message: "reconcile failed", Error: err.Error()})
}

// planCounts are a plan's figures, the nonzero ones.
func planCounts(d Drift) map[string]int {
	c := map[string]int{}
	for k, v := range map[string]int{"creates": d.Creates, "updates": d.Updates, "deletes": d.Deletes, "conflicts": d.Conflicts,
		"rebuilds": d.Rebuilds, "decommissions": d.Decommissions, "held": d.Held} {
		if v != 0 {
			c[k] = v
		}
	}
	return c
}

// notePlan emits PlanComputed when the plan's digest changed and it has
// changes.
func (r *Reconciler) notePlan(ctx context.Context, rev string, plan *Plan, d Drift) {
	if !r.hist.swap(&r.hist.plan, plan.Digest) || !plan.HasChanges() {
		return
	}
	r.emit(ctx, events.Event{Kind: events.PlanComputed, Revision: rev, Plan: plan.Digest, Counts: planCounts(d),
		Message: "plan computed"})
}

// queue keeps an event decided under r.mu for flush.
func (r *Reconciler) queue(e events.Event) {
	r.hist.mu.Lock()
	defer r.hist.mu.Unlock()
	r.hist.queued = append(r.hist.queued, e)
}

// flush emits the queued events (outside r.mu).
func (r *Reconciler) flush(ctx context.Context) {
	r.hist.mu.Lock()
	q := r.hist.queued
	r.hist.queued = nil
	r.hist.mu.Unlock()
	r.emit(ctx, q...)
}

// noteApplied emits Applied with the pass's figures by layer.
func (r *Reconciler) noteApplied(ctx context.Context, rev string, plan *Plan, d Drift) {
	c := planCounts(d)
	delete(c, "held") // held nodes are not changes applied
	if n := d.Creates + d.Updates + d.Deletes; n > 0 {
		c["dns"] = n
	}
	c["actions"] = len(plan.Actions)
	r.emit(ctx, events.Event{Kind: events.Applied, Revision: rev, Plan: plan.Digest, Counts: c, Message: "revision applied"})
}

// noteHalted emits RolloutHalted once per revision and reason.
func (r *Reconciler) noteHalted(ctx context.Context, rev string, res *rollout.Result) {
	if res == nil || res.Halted == "" || !r.hist.swap(&r.hist.halted, rev+"\x00"+res.Halted) {
		return
	}
	c := map[string]int{"verified": len(res.Verified), "failed": len(res.Failed), "notStarted": len(res.NotStarted)}
	r.emit(ctx, events.Event{Kind: events.RolloutHalted, Revision: rev, Counts: c, Message: "rollout halted", Error: res.Halted})
}

// nodeStep emits one step of a node's rebuild or decommission.
func (r *Reconciler) nodeStep(ctx context.Context, rev string, e rollout.Event) {
	ev := events.Event{Kind: events.NodeStep, Revision: rev, Node: e.Node, Step: e.Step, Message: e.Detail}
	if ev.Message == "" {
		ev.Message = e.Step
	}
	if e.Step == rollout.StepFailed {
		ev.Message, ev.Error = "rebuild failed", e.Detail
	}
	if e.Total > 0 {
		ev.Counts = map[string]int{"done": e.Done, "total": e.Total}
	}
	r.emit(ctx, ev)
}

// dnsWritten emits one DNSWritten per zone the apply wrote to.
func (r *Reconciler) dnsWritten(ctx context.Context, rev string, res *dns.Result) {
	if res == nil {
		return
	}
	var evs []events.Event
	for _, z := range res.Zones {
		c := map[string]int{}
		for k, v := range map[string]int{"created": z.Created, "updated": z.Updated, "deleted": z.Deleted, "adopted": z.Adopted, "conflicts": z.Conflict} {
			if v != 0 {
				c[k] = v
			}
		}
		if z.Error != "" || len(c) == 0 {
			continue // a failed zone fails the pass (ApplyFailed)
		}
		evs = append(evs, events.Event{Kind: events.DNSWritten, Revision: rev, Step: z.Target + "/" + z.Zone, Counts: c,
			Message: fmt.Sprintf("DNS zone %s written on %s", z.Zone, z.Target)})
	}
	r.emit(ctx, evs...)
}

// noteSuspended emits Suspended or Resumed.
func (r *Reconciler) noteSuspended(ctx context.Context, v bool) {
	e := events.Event{Kind: events.Resumed, Actor: actorOf(ctx), Message: "reconciling resumed"}
	if v {
		e.Kind, e.Message = events.Suspended, "reconciling suspended"
	}
	r.emit(ctx, e)
}

// pendingEvent is the ApprovalPending event of a.
func pendingEvent(a *Approval) events.Event {
	return events.Event{Kind: events.ApprovalPending, Revision: a.Revision, Plan: a.PlanDigest,
		Message: "the plan awaits approval: nothing of it runs until `anneal approve` names it (" + strings.Join(a.Reasons, "; ") + ")"}
}

// noteApproved emits Approved.
func (r *Reconciler) noteApproved(ctx context.Context, a *Approval) {
	r.emit(ctx, events.Event{Kind: events.Approved, Revision: a.Revision, Plan: a.PlanDigest, Actor: actorOf(ctx),
		Message: "plan approved (" + strings.Join(a.Reasons, "; ") + ")"})
}

// noteAdopted emits NodeAdopted.
func (r *Reconciler) noteAdopted(ctx context.Context, name, build string, enrolled bool) {
	msg := "adopted a node that runs its desired build"
	if enrolled {
		msg = "adopted an enrolled node that runs its desired build"
	}
	r.emit(ctx, events.Event{Kind: events.NodeAdopted, Node: name, Step: build, Message: msg})
}

// noteRetry emits NodeRetry.
func (r *Reconciler) noteRetry(ctx context.Context, name string, was node.State) {
	// A retry is a new attempt: a halt or failure like the last one is
	// stated again.
	r.hist.swap(&r.hist.halted, "")
	r.hist.swap(&r.hist.failed, "")
	r.emit(ctx, events.Event{Kind: events.NodeRetry, Node: name, Actor: actorOf(ctx), Message: "retry: the node was " + string(was)})
}
