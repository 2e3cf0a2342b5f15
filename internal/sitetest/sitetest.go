// Package sitetest loads sites for tests: the example site with edits,
// and generated sites of bench/sitegen's layout.
package sitetest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/schema"
)

// ExampleWith loads a copy of the site in dir (the example site, seen from
// the test's package) with edits applied to its files; an edit that
// changes nothing fails the test.
func ExampleWith(t testing.TB, dir string, edits map[string]func(string) string) *schema.Site {
	t.Helper()
	tmp := t.TempDir()
	if err := os.CopyFS(tmp, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	for file, f := range edits {
		p := filepath.Join(tmp, file)
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
	s, _, err := schema.LoadDir(context.Background(), tmp, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Generated loads a generated site of nodes nodes.
func Generated(t testing.TB, nodes int) *schema.Site {
	t.Helper()
	dir := t.TempDir()
	if _, err := gen.Generate(dir, gen.Options{Nodes: nodes}); err != nil {
		t.Fatal(err)
	}
	site, _, err := schema.LoadDir(context.Background(), dir, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return site
}
