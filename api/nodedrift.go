package api

import (
	"strings"

	"github.com/anneal-dev/anneal/reconcile"
)

// annotateDrift sets each view's Drift from the daemon's last plan: why
// it is to be rebuilt, held or decommissioned ("" when the plan leaves it
// alone, or there is no plan).
func annotateDrift(views []NodeView, p *reconcile.Plan) {
	if p == nil || p.Rebuilds == nil {
		return
	}
	why := map[string]string{}
	for _, rb := range p.Rebuilds.Rebuilds {
		parts := make([]string, 0, len(rb.Reasons)+len(rb.Drift))
		for _, r := range rb.Reasons {
			parts = append(parts, string(r))
		}
		parts = append(parts, rb.Drift...)
		why[rb.Node] = "rebuild: " + strings.Join(parts, ", ")
	}
	for _, h := range p.Rebuilds.Held {
		why[h.Node] = "held: " + h.Reason
	}
	for _, n := range p.Rebuilds.Decommission {
		why[n] = "decommission"
	}
	for i := range views {
		views[i].Drift = why[views[i].Name]
	}
}
