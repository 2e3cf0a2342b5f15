package schema_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/schema"
)

// TestCacheIsInvisible: loads through a cache give exactly what loads
// without one give: the same site, and the same diagnostics at the same
// positions, also for documents reused from the cache.
func TestCacheIsInvisible(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../examples/site-repo")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cache := schema.NewCache()
	load := func(c *schema.Cache) ([]byte, schema.Diagnostics) {
		t.Helper()
		site, diags, err := schema.LoadDir(ctx, dir, schema.LoadOptions{Cache: c})
		if err != nil && site != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(site)
		return b, diags
	}
	same := func(step string) {
		t.Helper()
		for range 2 { // a cold and a warm cache
			gotSite, gotDiags := load(cache)
			wantSite, wantDiags := load(nil)
			if string(gotSite) != string(wantSite) {
				t.Fatalf("%s: the cached load gives another site", step)
			}
			if !reflect.DeepEqual(gotDiags, wantDiags) {
				t.Fatalf("%s: diagnostics differ:\ncached:   %v\nuncached: %v", step, gotDiags, wantDiags)
			}
		}
	}
	same("example")

	// One file changes: the others come from the cache.
	p := filepath.Join(dir, "nodes/west-w1.yaml")
	b, _ := os.ReadFile(p)
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), "hostIndex: 24", "hostIndex: 30", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	same("one file changed")

	// A new file collides with a document reused from the cache: the
	// diagnostic on the cached document keeps its exact position.
	node, _ := os.ReadFile(filepath.Join(dir, "nodes/east-e1.yaml"))
	first := strings.SplitN(string(node), "---\n", 2)[0]
	dup := strings.Replace(first, "name: e1n01", "name: e1n99", 1)
	dup = strings.Replace(dup, "hostIndex: 11", "hostIndex: 99", 1)
	if err := os.WriteFile(filepath.Join(dir, "nodes/extra.yaml"), []byte(dup), 0o644); err != nil {
		t.Fatal(err)
	}
	same("a new file duplicating MACs of a cached one")
	_, diags := load(cache)
	found := false
	for _, d := range diags {
		if d.Code == "duplicate-mac" && d.Line > 0 && d.Column > 0 {
			found = true
		}
	}
	if !found {
		t.Fatalf("no positioned duplicate-mac: %v", diags)
	}
}
