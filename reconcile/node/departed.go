package node

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/schema"
)

// Declared is what the last revision that declared a node said about how
// to reach it and what it was called. It is kept in the node's record so
// that a node that leaves the site can still be decommissioned in order:
// out of its groups, powered off through its BMC, its netboot profile and
// reservation gone, then its names.
type Declared struct {
	// Revision is the revision that last declared the node.
	Revision string   `json:"revision,omitempty"`
	Region   string   `json:"region"`
	Rack     string   `json:"rack"`
	Roles    []string `json:"roles,omitempty"`
	// BMCKind and BMC are how the node's BMC is reached; the password is
	// a reference to the operator's grants, never a secret.
	BMCKind schema.BMCKind `json:"bmcKind"`
	BMC     schema.NodeBMC `json:"bmc"`
	// RRsets are the node's own records (addresses, PTRs, primary name,
	// aliases; never its groups'), kept until it is powered off.
	RRsets []dns.RRset `json:"rrsets,omitempty"`
}

// BMCAccess is how to reach one node's BMC: from the site, or for a node
// that left it, from its record.
type BMCAccess struct {
	Node string
	Kind schema.BMCKind
	BMC  schema.NodeBMC
}

// SecretDest is where the BMC's password goes (checked against the
// operator's grants).
func (a BMCAccess) SecretDest() schema.SecretDest {
	return schema.SecretDest{Use: schema.UseBMC, Host: a.BMC.Address, Port: a.BMC.Port}
}

// AccessOf is how the site says to reach n's BMC.
func AccessOf(site *schema.Site, n *schema.Node) (BMCAccess, error) {
	p := site.HardwareProfile(n.HardwareProfile)
	if p == nil {
		return BMCAccess{}, fmt.Errorf("bmc %s: hardware profile %q not in the site", n.Name, n.HardwareProfile)
	}
	return BMCAccess{Node: n.Name, Kind: p.BMC, BMC: n.BMC}, nil
}

// Access is how to reach the departed node's BMC.
func (d *Declared) Access(node string) BMCAccess {
	return BMCAccess{Node: node, Kind: d.BMCKind, BMC: d.BMC}
}

// DeclaredOf is what site at rev declares of each of nodes, for their
// records.
func DeclaredOf(site *schema.Site, nodes []*schema.Node, rev string) map[string]*Declared {
	own := dns.NodesRRsets(site, nodes)
	out := make(map[string]*Declared, len(nodes))
	for _, n := range nodes {
		d := &Declared{Revision: rev, Region: n.Region, Rack: n.Rack, Roles: slices.Clone(n.Roles), BMC: n.BMC, RRsets: own[n.Name]}
		if p := site.HardwareProfile(n.HardwareProfile); p != nil {
			d.BMCKind = p.BMC
		}
		out[n.Name] = d
	}
	return out
}

// SameDeclared compares two declarations, ignoring the revision.
func SameDeclared(a, b *Declared) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Region != b.Region || a.Rack != b.Rack || a.BMCKind != b.BMCKind || a.BMC != b.BMC ||
		!slices.Equal(a.Roles, b.Roles) || len(a.RRsets) != len(b.RRsets) {
		return false
	}
	for i := range a.RRsets {
		x, y := a.RRsets[i], b.RRsets[i]
		if x.Name != y.Name || x.Type != y.Type || x.TTL != y.TTL || !slices.Equal(x.Data, y.Data) {
			return false
		}
	}
	return true
}

// Departed lists the records of nodes that left the site (no document
// declares them any more) and are not decommissioned yet, by name.
func Departed(site *schema.Site, records map[string]*Record) []*Record {
	var out []*Record
	for name, rec := range records {
		if rec.State == Retired || site.Node(name) != nil {
			continue
		}
		if rec.Declared == nil {
			continue // from before anneal kept declarations: see Unreachable
		}
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b *Record) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Unreachable lists the nodes that left the site that anneal cannot
// decommission: it built or knew them, but their records predate
// declarations, so it does not know their BMCs.
func Unreachable(site *schema.Site, records map[string]*Record) []string {
	var out []string
	for name, rec := range records {
		if rec.State != Retired && rec.Declared == nil && site.Node(name) == nil && (rec.BuildID != "" || rec.State != Unknown) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// StandIn is a stand-in schema.Node for a node that left the site,
// from its record: enough for the rollout's decommission (name, rack,
// roles, BMC). It is decommissioned: in no group, never built.
func StandIn(rec *Record) *schema.Node {
	n := &schema.Node{State: schema.StateDecommissioned}
	n.Name = rec.Name
	if d := rec.Declared; d != nil {
		n.Region, n.Rack, n.Roles, n.BMC = d.Region, d.Rack, d.Roles, d.BMC
	}
	return n
}
