package reconcile

import (
	"context"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/dns/dnstest"
	"github.com/anneal-dev/anneal/schema"
)

// TestDriftAfterApplyIsTheDriftNow: once a pass has written the DNS
// changes, the published plan (GET /api/v1/drift, anneal status) and the
// status's drift counts are the drift left, not the plan just applied.
func TestDriftAfterApplyIsTheDriftNow(t *testing.T) {
	zones := map[string]*dnstest.Memory{}
	r := &Reconciler{Source: dirSource{dir: "../examples/site-repo"}, State: &ownState{}, Mode: ModeConverge, Interval: time.Hour,
		Targets: func(s *schema.Site) (map[string]dns.Target, error) {
			out := map[string]dns.Target{}
			for _, tg := range s.DNS.Targets {
				if zones[tg.Name] == nil {
					zones[tg.Name] = &dnstest.Memory{TargetName: tg.Name}
				}
				out[tg.Name] = zones[tg.Name]
			}
			return out, nil
		}}
	ctx := context.Background()
	r.ReconcileOnce(ctx)
	st := r.Status()
	if st.LastError != "" || st.AppliedRevision != "r1" {
		t.Fatalf("the first pass did not apply: %+v", st)
	}
	written := 0
	for _, z := range zones {
		written += z.Count()
	}
	if written == 0 {
		t.Fatal("the first pass wrote nothing: the test applies no change")
	}
	p := r.LastPlan()
	if p == nil {
		t.Fatal("no plan published")
	}
	if p.DNS.HasChanges() || st.Drift.Creates+st.Drift.Updates+st.Drift.Deletes != 0 {
		c, u, d, _ := p.Counts()
		t.Fatalf("after the apply of %d RRsets the published drift is %d creates, %d updates, %d deletes (status %+v): the plan applied, not the drift now", written, c, u, d, st.Drift)
	}
	if _, ok := st.Steps["replan"]; !ok {
		t.Errorf("the pass that applied did not plan again: steps %v", st.Steps)
	}

	// A pass with nothing to do plans once.
	r.ReconcileOnce(ctx)
	if st := r.Status(); st.LastError != "" || st.Steps["replan"] != 0 {
		t.Fatalf("a pass with no change: last error %q, steps %v", st.LastError, st.Steps)
	}
}
