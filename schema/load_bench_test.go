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
