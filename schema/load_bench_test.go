package schema_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/schema"
)

// BenchmarkLoad loads and validates generated sites of growing size (the
// layout of bench/sitegen: 40 nodes a rack, 25 racks a region):
//
//	go test ./schema -run '^$' -bench BenchmarkLoad -benchmem
//	go test ./schema -run '^$' -bench 'BenchmarkLoad/10000' -cpuprofile cpu.out
func BenchmarkLoad(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			loadGenerated(b, n)
			b.ReportMetric(float64(n), "nodes")
		})
	}
	// Warm: every file in the parse cache, as the daemon loads a commit
	// that changed one file; what is left is assembling and the checks.
	b.Run("10000-cached", func(b *testing.B) {
		dir := filepath.Join(b.TempDir(), "site")
		if _, err := gen.Generate(dir, gen.Options{Nodes: 10000, Seed: 1}); err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		opts := schema.LoadOptions{Cache: schema.NewCache()}
		if _, _, err := schema.LoadDir(ctx, dir, opts); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := schema.LoadDir(ctx, dir, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkLoadWideMapping loads one PatchSet whose packages mapping has
// 10,000 and 40,000 keys (the key limit raised): time per key should stay
// flat, i.e. the 40k run about 4 times the 10k one, not 16 times.
//
//	go test ./schema -run '^$' -bench BenchmarkLoadWideMapping
func BenchmarkLoadWideMapping(b *testing.B) {
	for _, n := range []int{10_000, 40_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var doc strings.Builder
			doc.WriteString("apiVersion: anneal.dev/v1alpha1\nkind: PatchSet\nname: p\nkernel: k\npackages:\n")
			for i := range n {
				fmt.Fprintf(&doc, "  pkg%d: \"1.%d\"\n", i, i)
			}
			fsys := fstest.MapFS{"patches.yaml": {Data: []byte(doc.String())}}
			opts := schema.LoadOptions{Workers: 1, Limits: schema.Limits{Keys: 100_000}}
			ctx := context.Background()
			for b.Loop() {
				_, diags, _ := schema.Load(ctx, fsys, opts)
				for _, d := range diags {
					if d.Code != "missing-site" {
						b.Fatal(d)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/key")
		})
	}
}

// BenchmarkLoadScale loads generated sites of 5,000 and 20,000 nodes and
// reports the time and the bytes allocated per node at each: a load that
// grows linearly with the site keeps ns/node flat, so a regression to
// superlinear shows up as the ratio it reports on the 20k line
// (x-ns/node-of-smallest: 20k's ns/node over 5k's), not as a timed assertion. The 10k/30k/100k figures of bench/README.md come
// from `anneal validate` on sites of bench/sitegen.
//
//	go test ./schema -run '^$' -bench BenchmarkLoadScale -benchtime 3x
func BenchmarkLoadScale(b *testing.B) {
	sizes := []int{5000, 20000}
	perNode := make([]float64, len(sizes))
	for i, n := range sizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			loadGenerated(b, n)
			perNode[i] = float64(b.Elapsed().Nanoseconds()) / float64(b.N) / float64(n)
			b.ReportMetric(perNode[i], "ns/node")
			if i > 0 && perNode[0] > 0 {
				// 1.00 is linear; 2.00 would mean quadratic over this 4x.
				b.ReportMetric(perNode[i]/perNode[0], "x-ns/node-of-smallest")
			}
		})
	}
}

// loadGenerated generates a site of n nodes and times loading it.
func loadGenerated(b *testing.B, n int) {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "site")
	if _, err := gen.Generate(dir, gen.Options{Nodes: n, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		site, _, err := schema.LoadDir(ctx, dir, schema.LoadOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if len(site.Nodes) != n {
			b.Fatalf("loaded %d nodes, want %d", len(site.Nodes), n)
		}
	}
}
