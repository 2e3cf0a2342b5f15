package reconcile

import (
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/rollout"
)

// PlanFormatVersion is the version of the Plan JSON (`anneal plan -o json`).
const PlanFormatVersion = 1

// Plan is what it takes to converge the fleet to a commit. It is data: the
// text, markdown and JSON views are all rendered from it.
type Plan struct {
	FormatVersion int    `json:"formatVersion"`
	Site          string `json:"site"`
	// Source says where the desired state came from (a directory, later a
	// commit).
	Source string `json:"source"`
	// SiteDigest is the content digest of the site the plan was computed
	// from: a saved plan is applied only to that same content.
	SiteDigest string    `json:"siteDigest"`
	DNS        *dns.Plan `json:"dns,omitempty"`
	// Rebuilds is the rebuild layer; nil when anneal does not know the
	// live nodes (no node records to compare with).
	Rebuilds *rollout.RebuildPlan `json:"rebuilds,omitempty"`
	// Only is the layer the plan is limited to ("" or "all": every layer;
	// "dns").
	Only string `json:"only,omitempty"`
	// Guards are the changes in the plan that wait for approval.
	Guards []Guard `json:"guards,omitempty"`
	// Actions is the plan as a DAG: every action with the actions it
	// waits for (addresses → DNS → netboot → rebuild → verify; a
	// decommission runs the other way). It is what the executor runs.
	Actions []Action `json:"actions,omitempty"`
	// Digest fingerprints the plan's decisions (ComputeDigest): an
	// approval names it.
	Digest string `json:"digest,omitempty"`
}

// Counts totals a plan's changes and conflicts.
func (p *Plan) Counts() (creates, updates, deletes, conflicts int) {
	if p.DNS == nil {
		return
	}
	for _, z := range p.DNS.Zones {
		c, u, d := z.Counts()
		creates += c
		updates += u
		deletes += d
		conflicts += len(z.Conflicts)
	}
	return
}

// HasChanges reports whether the live fleet differs from the commit: there
// is something to write, or something in the way of writing it.
func (p *Plan) HasChanges() bool {
	return p.DNS != nil && (p.DNS.HasChanges() || p.DNS.HasConflicts()) || p.Rebuilds.Count() > 0
}

// HasFailures reports whether part of the fleet could not be observed.
func (p *Plan) HasFailures() bool { return p.DNS != nil && len(p.DNS.Failures) > 0 }
