package reconcile

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/dns/dnstest"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/node/nodetest"
	"github.com/anneal-dev/anneal/reconcile/rollout"
	"github.com/anneal-dev/anneal/schema"
)

// TestRetryDuringAPassLiftsTheHalt: a retry that lands while a pass is
// under way, after that pass read the node records, must not spend its
// lift of the halt on that pass's plan (made while the node was still
// failed, so without it): that plan would start the next node of the
// rack, find the retried node down, halt on maxUnavailable, and the
// rollout would stay halted for good. The next pass, whose plan has the
// retried node, is the one that goes on, with it as the canary.
func TestRetryDuringAPassLiftsTheHalt(t *testing.T) {
	site := exampleSite(t)
	const failed = "e1n01"
	var rack *schema.Node
	nodes := &nodetest.Store{Recs: map[string]*node.Record{}}
	now := time.Now()
	for _, n := range site.Nodes {
		if n.Name == failed {
			rack = n
		}
	}
	if rack == nil {
		t.Fatalf("the example site has no %s", failed)
	}
	// Every node is verified on its build, but rack e1 is on an older
	// patch set: its rollout is the one that halted on e1n01's failure.
	for _, n := range site.Nodes {
		if !n.Exists() {
			continue
		}
		spec := node.BuildSpecOf(site, n)
		if n.Region == rack.Region && n.Rack == rack.Rack {
			spec.PatchSet.Name = "older"
		}
		rec := &node.Record{Name: n.Name, State: node.Verified, Since: now, BuildID: spec.ID(), Spec: &spec, BuiltAt: now}
		if n.Name == failed {
			rec.State, rec.Target, rec.Reason = node.Failed, node.BuildSpecOf(site, n).ID(), "facts differ"
		}
		nodes.Recs[n.Name] = rec
	}

	var mu sync.Mutex
	var started []string // nodes the rollouts took out of service
	retried := false
	var r *Reconciler
	r = &Reconciler{Source: dirSource{dir: "../examples/site-repo"}, State: &memState{}, Mode: ModeConverge, Interval: time.Hour,
		Targets: func(s *schema.Site) (map[string]dns.Target, error) {
			out := map[string]dns.Target{}
			for _, tg := range s.DNS.Targets {
				out[tg.Name] = &dnstest.Memory{TargetName: tg.Name}
			}
			return out, nil
		},
		Rebuild: &RebuildConfig{Nodes: nodes, FirmwareEvery: -1,
			BMC: func(node.BMCAccess) (node.BMC, error) { return nil, errors.New("no BMC in this test") },
			// The netboot profiles are published after the plan and
			// before the rollout: the operator's retry lands there.
			Publish: func(ctx context.Context, _ *schema.Site) error {
				if !retried {
					retried = true
					if err := r.Retry(ctx, failed); err != nil {
						t.Errorf("retry: %v", err)
					}
				}
				return nil
			},
			Progress: func(e rollout.Event) {
				if e.Step == rollout.StepLeave {
					mu.Lock()
					started = append(started, e.Node)
					mu.Unlock()
				}
			}}}
	r.status.LastGoodRevision = "r1"
	r.status.Rollout = &RolloutStatus{Revision: "r1", Result: rollout.Result{Halted: "canary " + failed + " failed", Failed: map[string]string{failed: "facts differ"}}}

	ctx := context.Background()
	r.ReconcileOnce(ctx) // the retry lands in this pass
	if !retried {
		t.Fatal("the first pass published no netboot profiles: the test did not retry during it")
	}
	if len(started) > 0 {
		t.Fatalf("the pass whose plan predates the retry started %v", started)
	}
	if st := r.Status(); !strings.Contains(st.LastError, "halted (canary "+failed+" failed)") {
		t.Fatalf("after the pass the retry interrupted: last error %q, rollout %+v; want the canary's halt held", st.LastError, st.Rollout)
	}

	r.ReconcileOnce(ctx) // its plan has the retried node
	st := r.Status()
	if len(started) != 1 || started[0] != failed {
		t.Fatalf("the pass after the retry took %v out of service, want only %s (the canary); last error %q", started, failed, st.LastError)
	}
	if st.Rollout == nil || !strings.Contains(st.Rollout.Halted, "canary "+failed+" failed") {
		t.Fatalf("rollout after the retry %+v (last error %q): want %s rebuilt as the canary (and failing: no BMC)", st.Rollout, st.LastError, failed)
	}

	// That retry is spent: the halt of its rollout holds until the next.
	r.ReconcileOnce(ctx)
	if st := r.Status(); len(started) != 1 || !strings.Contains(st.LastError, "halted (canary "+failed+" failed)") {
		t.Fatalf("a pass after the canary failed again: started %v, last error %q; want the halt held", started, st.LastError)
	}
}
