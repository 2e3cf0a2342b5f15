package reconcile

import (
	"context"
	"testing"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/schema"
)

// BenchmarkCompileDNS compiles the DNS of a generated 10,000-node site.
func BenchmarkCompileDNS(b *testing.B) {
	dir := b.TempDir()
	if _, err := gen.Generate(dir, gen.Options{Nodes: 10000}); err != nil {
		b.Fatal(err)
	}
	site, _, err := schema.LoadDir(context.Background(), dir, schema.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CompileDNS(site); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConsistency checks forward-confirmed reverse DNS over every
// zone of a 10,000-node site, as a target serving them all would hold them.
func BenchmarkConsistency(b *testing.B) {
	dir := b.TempDir()
	if _, err := gen.Generate(dir, gen.Options{Nodes: 10000}); err != nil {
		b.Fatal(err)
	}
	site, _, err := schema.LoadDir(context.Background(), dir, schema.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	d, err := CompileDNS(site)
	if err != nil {
		b.Fatal(err)
	}
	// Cold: every zone read from the server; in sync: every zone's
	// content is the desired one, parsed once per compile.
	for _, parsed := range []bool{false, true} {
		var zones []*ZoneContent
		for _, z := range d.Zones {
			zc := &ZoneContent{Zone: z.Zone, Serial: 1, RRsets: z.RRsets}
			if parsed {
				zc.facts = z.facts()
			}
			zones = append(zones, zc)
		}
		b.Run(map[bool]string{false: "cold", true: "in-sync"}[parsed], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				consistency("all", zones)
			}
		})
	}
}
