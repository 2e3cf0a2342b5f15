package reconcile

import (
	"slices"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/internal/sitetest"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// siteWith loads a copy of the example site with edits applied to files.
func siteWith(t *testing.T, edits map[string]func(string) string) *schema.Site {
	return sitetest.ExampleWith(t, "../examples/site-repo", edits)
}

func TestReviewRange(t *testing.T) {
	base := siteWith(t, nil)
	tests := []struct {
		name     string
		edits    map[string]func(string) string
		node     string
		change   NodeChangeKind
		rebuild  bool
		reasons  []node.RebuildReason
		field    string // a FieldChange.String() the node must show
		policy   string // a PolicyHit scope that must appear
		blocking bool
		dns      string // a change line that must appear in the DNS diff
	}{
		{name: "patch set bump on one node",
			edits: map[string]func(string) string{"nodes/east-e1.yaml": func(s string) string {
				return strings.Replace(s, `patchSet: "2026-10"`, `patchSet: "2026-11"`, 1)
			}},
			node: "e1n03", change: NodeChanged, rebuild: true, reasons: []node.RebuildReason{node.ReasonPatchSetChanged},
			field: "patchSet.kernel: 5.15.0-124-generic → 5.15.0-126-generic", policy: "rack e1"},
		{name: "image version bump rebuilds every node on it",
			edits: map[string]func(string) string{"images/ubuntu-22.04.yaml": func(s string) string {
				return strings.Replace(s, "version: 22.04.4", "version: 22.04.5", 1)
			}},
			node: "e2n01", change: NodeChanged, rebuild: true, reasons: []node.RebuildReason{node.ReasonImageChanged},
			field: "image.version: 22.04.4 → 22.04.5", policy: "role compute"},
		{name: "VLAN added to bond0",
			edits: map[string]func(string) string{"nodes/west-w1.yaml": func(s string) string {
				return strings.Replace(s, "  - {name: bond0.140, link: bond0, id: 140}\n", "  - {name: bond0.140, link: bond0, id: 140}\n  - {name: bond0.150, link: bond0, id: 150}\n", 1)
			}},
			node: "w1n01", change: NodeChanged, rebuild: true, reasons: []node.RebuildReason{node.ReasonNetworkChanged},
			field: "network.vlans[bond0.150]: added VLAN 150 on bond0"},
		{name: "role change is not a rebuild",
			edits: map[string]func(string) string{"nodes/east-e1.yaml": func(s string) string {
				return strings.Replace(s, "roles: [ingress]", "roles: [api]", 1)
			}},
			node: "e1n05", change: NodeChanged, rebuild: false, field: "roles: ingress → api",
			dns: "+ api.example.net"},
		{name: "decommissioning a rack hits the mass-delete threshold",
			edits: map[string]func(string) string{"nodes/east-e2.yaml": func(s string) string {
				s = strings.ReplaceAll(s, "state: maintenance\n", "")
				return strings.ReplaceAll(s, "rack: e2\n", "rack: e2\nstate: decommissioned\n")
			}},
			node: "e2n01", change: NodeDecommissioned, policy: "dns target bind", blocking: true,
			dns: "- e2n01.east.example.net A"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			head := siteWith(t, tc.edits)
			r, err := ReviewRange(base, head, "base", "head")
			if err != nil {
				t.Fatal(err)
			}
			if !r.HasChanges() {
				t.Fatal("no changes")
			}
			i := slices.IndexFunc(r.Nodes, func(n NodeReview) bool { return n.Node == tc.node })
			if i < 0 {
				t.Fatalf("node %s not in review: %+v", tc.node, r.Nodes)
			}
			n := r.Nodes[i]
			if n.Change != tc.change || n.Rebuild != tc.rebuild || !slices.Equal(n.Reasons, tc.reasons) && tc.reasons != nil {
				t.Fatalf("node %s: %+v", tc.node, n)
			}
			if tc.rebuild && (n.BaseBuild == n.HeadBuild) && tc.change == NodeChanged {
				t.Errorf("build id did not change: %s", n.BaseBuild)
			}
			var fields []string
			for _, f := range append(n.BuildFields, n.OtherFields...) {
				fields = append(fields, f.String())
			}
			if tc.field != "" && !slices.Contains(fields, tc.field) {
				t.Errorf("fields %q lack %q", fields, tc.field)
			}
			if tc.policy != "" {
				j := slices.IndexFunc(r.Policies, func(p PolicyHit) bool { return p.Scope == tc.policy })
				if j < 0 || r.Policies[j].Blocking != tc.blocking {
					t.Errorf("policies %+v lack %s (blocking %v)", r.Policies, tc.policy, tc.blocking)
				}
			}
			if tc.dns != "" {
				found := false
				for _, z := range r.DNS {
					for _, c := range z.Changes {
						line := ""
						switch c.Op {
						case dns.OpCreate:
							line = "+ " + c.New.Name + " " + string(c.New.Type)
						case dns.OpDelete:
							line = "- " + c.Old.Name + " " + string(c.Old.Type)
						default:
							line = "~ " + c.New.Name + " " + string(c.New.Type)
						}
						if strings.HasPrefix(line, tc.dns) || strings.HasPrefix(tc.dns, "+ ") && strings.HasPrefix(line, "~ "+strings.TrimPrefix(tc.dns, "+ ")) {
							found = true
						}
					}
				}
				if !found {
					t.Errorf("DNS diff lacks %q", tc.dns)
				}
			}
		})
	}
}

func TestReviewNoChange(t *testing.T) {
	a, b := siteWith(t, nil), siteWith(t, nil)
	r, err := ReviewRange(a, b, "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	if r.HasChanges() || len(r.Policies) != 0 {
		t.Fatalf("identical sites differ: %+v", r)
	}
}

func TestBuildIDStable(t *testing.T) {
	s, again := siteWith(t, nil), siteWith(t, nil)
	n := s.Node("e1n01")
	if node.BuildSpecOf(s, n).ID() != node.BuildSpecOf(again, again.Node("e1n01")).ID() {
		t.Fatal("build id differs between two loads of the same site")
	}
	if node.BuildSpecOf(s, n).ID() == node.BuildSpecOf(s, s.Node("e1n02")).ID() {
		t.Fatal("two nodes share a build id")
	}
}
