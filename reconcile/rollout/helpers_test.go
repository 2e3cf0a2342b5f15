package rollout

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/schema"
)

// siteWith loads a copy of the example site with edits applied to files.
func siteWith(t *testing.T, edits map[string]func(string) string) *schema.Site {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../../examples/site-repo")); err != nil {
		t.Fatal(err)
	}
	for file, f := range edits {
		p := filepath.Join(dir, file)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out := f(string(b))
		if out == string(b) {
			t.Fatalf("edit of %s changed nothing", file)
		}
		if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, _, err := schema.LoadDir(context.Background(), dir, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// generated loads a site of bench/sitegen's layout.
func generated(b *testing.B, nodes int) *schema.Site {
	b.Helper()
	dir := b.TempDir()
	if _, err := gen.Generate(dir, gen.Options{Nodes: nodes}); err != nil {
		b.Fatal(err)
	}
	site, _, err := schema.LoadDir(context.Background(), dir, schema.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return site
}
