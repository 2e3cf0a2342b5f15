package api

import (
	"maps"
	"slices"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// NodeView is one node as GET /api/v1/nodes and `anneal nodes -o json`
// show it.
type NodeView struct {
	Name            string           `json:"name"`
	Region          string           `json:"region"`
	Rack            string           `json:"rack"`
	State           string           `json:"state"`
	HardwareProfile string           `json:"hardwareProfile"`
	Image           string           `json:"image"`
	PatchSet        string           `json:"patchSet"`
	Roles           []string         `json:"roles"`
	BMC             string           `json:"bmc"`
	PrimaryFQDN     string           `json:"primaryFqdn,omitempty"`
	Addresses       []schema.Address `json:"addresses"`
	// BuildID is the desired build: a hash of the node's build spec.
	BuildID string `json:"buildId"`
	// Drift is why the daemon's last plan rebuilds, holds or
	// decommissions the node (GET /api/v1/nodes only; "" when it leaves
	// it alone).
	Drift string `json:"drift,omitempty"`
	// Live is what anneal knows of the running node (from the daemon's
	// records: its builds and the facts it reported); nil when unknown.
	Live *LiveView `json:"live,omitempty"`
}

// LiveView is a node's live state.
type LiveView struct {
	State    string    `json:"state"`
	BuildID  string    `json:"buildId,omitempty"`
	Since    time.Time `json:"since,omitzero"`
	Reason   string    `json:"reason,omitempty"`
	Target   string    `json:"target,omitempty"`
	BuiltAt  time.Time `json:"builtAt,omitzero"`
	FactsAt  time.Time `json:"factsAt,omitzero"`
	UpToDate bool      `json:"upToDate"`
	// Enrolled is when `anneal enroll` gave the node an agent token (a
	// machine anneal did not install); Reason says why it was not adopted.
	Enrolled time.Time `json:"enrolled,omitzero"`
	// Deploy is the image installer's last progress report while the
	// node provisions, is installed or failed: phase and bytes written.
	Deploy *node.DeployProgress `json:"deploy,omitempty"`
}

// NodeViews lists a site's nodes, each with its live state when records
// holds one.
func NodeViews(s *schema.Site, records map[string]*node.Record) []NodeView {
	views := make([]NodeView, 0, len(s.Nodes))
	for _, n := range s.Nodes {
		roles := n.Roles
		if roles == nil {
			roles = []string{}
		}
		views = append(views, NodeView{
			Name: n.Name, Region: n.Region, Rack: n.Rack, State: string(n.State),
			HardwareProfile: n.HardwareProfile, Image: n.Image, PatchSet: n.PatchSet,
			Roles: roles, BMC: n.BMC.Address, PrimaryFQDN: n.PrimaryFQDN, Addresses: n.Addresses,
			BuildID: node.BuildSpecOf(s, n).ID(),
		})
		if rec := records[n.Name]; rec != nil {
			v := &views[len(views)-1]
			v.Live = &LiveView{State: string(rec.State), BuildID: rec.BuildID, Since: rec.Since, Reason: rec.Reason, Target: rec.Target,
				BuiltAt: rec.BuiltAt, FactsAt: rec.FactsAt, UpToDate: rec.State == node.Verified && rec.BuildID == v.BuildID,
				Enrolled: rec.Enrolled}
			switch rec.State {
			case node.Provisioning, node.Installed, node.Failed:
				v.Live.Deploy = rec.Deploy // the current (or failed) install's, not an old one
			}
		}
	}
	// Nodes that left the site: "removed" until decommissioned, then
	// "removed, decommissioned" (their records are kept).
	for _, name := range slices.Sorted(maps.Keys(records)) {
		rec := records[name]
		if s.Node(name) != nil || rec.Declared == nil {
			continue
		}
		d := rec.Declared
		v := NodeView{Name: name, Region: d.Region, Rack: d.Rack, State: StateRemoved, Roles: d.Roles, BMC: d.BMC.Address, Addresses: []schema.Address{},
			Live: &LiveView{State: string(rec.State), BuildID: rec.BuildID, Since: rec.Since, Reason: rec.Reason, BuiltAt: rec.BuiltAt, FactsAt: rec.FactsAt}}
		if v.Roles == nil {
			v.Roles = []string{}
		}
		views = append(views, v)
	}
	return views
}

// StateRemoved is the state of a node no document declares any more.
const StateRemoved = "removed"
