package api

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/rollout"
)

// TestNodesDrift: GET /api/v1/nodes says why the last plan rebuilds,
// holds or decommissions each node; a node it leaves alone has none.
func TestNodesDrift(t *testing.T) {
	s := loadExample(t)
	a, b, c, d := s.Nodes[0].Name, s.Nodes[1].Name, s.Nodes[2].Name, s.Nodes[3].Name
	f := &fakeReconciler{site: s, plan: &reconcile.Plan{Rebuilds: &rollout.RebuildPlan{
		Rebuilds:     []rollout.NodeRebuild{{Node: a, Reasons: []node.RebuildReason{node.ReasonImageChanged, node.ReasonPatchSetChanged}, Drift: []string{"kernel 6.1 != 6.8"}}},
		Held:         []rollout.HeldNode{{Node: b, Reason: "its rebuild failed: no callback", Failed: true}},
		Decommission: []string{c},
	}}}
	w := do(t, New(Config{Reconciler: f}), http.MethodGet, "/api/v1/nodes", "", nil)
	var views []NodeView
	if err := json.Unmarshal(w.Body.Bytes(), &views); w.Code != http.StatusOK || err != nil {
		t.Fatalf("%d %v", w.Code, err)
	}
	want := map[string]string{
		a: "rebuild: image-changed, patch-set-changed, kernel 6.1 != 6.8",
		b: "held: its rebuild failed: no callback",
		c: "decommission",
		d: "",
	}
	for _, v := range views {
		if w, ok := want[v.Name]; ok && v.Drift != w {
			t.Errorf("%s: drift %q, want %q", v.Name, v.Drift, w)
		}
	}
	// No plan yet: no drift, and no failure.
	f.plan = nil
	if w := do(t, New(Config{Reconciler: f}), http.MethodGet, "/api/v1/nodes", "", nil); w.Code != http.StatusOK {
		t.Fatalf("without a plan: %d", w.Code)
	}
}
