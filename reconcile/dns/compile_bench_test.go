package dns

import (
	"slices"
	"testing"

	"github.com/anneal-dev/anneal/internal/sitetest"
	"github.com/anneal-dev/anneal/schema"
)

// generated loads a site of bench/sitegen's layout.
func generated(b *testing.B, nodes int) *schema.Site { return sitetest.Generated(b, nodes) }

// BenchmarkCompileDNS compiles the DNS of a generated 10,000-node site.
func BenchmarkCompileDNS(b *testing.B) {
	site := generated(b, 10000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(site); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConsistency checks forward-confirmed reverse DNS over every
// zone of a 10,000-node site, as a target serving them all would hold them.
func BenchmarkConsistency(b *testing.B) {
	d, err := Compile(generated(b, 10000))
	if err != nil {
		b.Fatal(err)
	}
	zones := func(fresh bool) []*ZoneContent {
		var out []*ZoneContent
		for _, z := range d.Zones {
			zc := &ZoneContent{Zone: z.Zone, Serial: 1, RRsets: z.RRsets}
			if !fresh {
				zc.desired = z
			}
			out = append(out, zc)
		}
		return out
	}
	// From scratch, as `anneal plan` does: every zone read from a server.
	b.Run("scratch", func(b *testing.B) {
		all := zones(true)
		b.ReportAllocs()
		for b.Loop() {
			consistency("all", all)
		}
	})
	// As the daemon does after a one-line commit: its index kept, the
	// zones in sync but one, read from the server (it alternates between
	// two contents).
	b.Run("one-zone-changed", func(b *testing.B) {
		var c Consistency
		all := zones(false)
		c.Findings("all", all)
		big := slices.IndexFunc(all, func(z *ZoneContent) bool { return z.Zone == "r01.example.net" })
		before := all[big].RRsets
		after := append(slices.Clone(before[:len(before)-1]), RRset{Name: "zz.r01.example.net", Type: TypeA, TTL: 300, Data: []string{"10.1.2.3"}})
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			all[big] = &ZoneContent{Zone: "r01.example.net", RRsets: [][]RRset{before, after}[i%2]}
			c.Findings("all", all)
		}
	})
}
