package node

import (
	"testing"

	"github.com/anneal-dev/anneal/internal/sitetest"
	"github.com/anneal-dev/anneal/schema"
)

// generated loads a site of bench/sitegen's layout.
func generated(b *testing.B, nodes int) *schema.Site { return sitetest.Generated(b, nodes) }

// BenchmarkDeclaredOf records what a 10,000-node site declares of each
// node (rack, roles, BMC, own DNS records): the work the daemon does once
// per new revision so that nodes leaving the site can be decommissioned.
// Compare it with reconcile/dns BenchmarkCompileDNS.
func BenchmarkDeclaredOf(b *testing.B) {
	site := generated(b, 10000)
	b.ReportAllocs()
	for b.Loop() {
		if d := DeclaredOf(site, site.Nodes, "rev"); len(d) != len(site.Nodes) {
			b.Fatalf("%d declarations for %d nodes", len(d), len(site.Nodes))
		}
	}
}
