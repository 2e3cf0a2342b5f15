package main

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/schema"
)

// TestGeneratedSitesAreValid loads generated sites with the real loader.
func TestGeneratedSitesAreValid(t *testing.T) {
	for _, n := range []int{1, 50, 1000} {
		dir := filepath.Join(t.TempDir(), "site")
		res, err := gen.Generate(dir, gen.Options{Nodes: n, Seed: 1})
		if err != nil {
			t.Fatalf("generate %d: %v", n, err)
		}
		site, diags, err := schema.LoadDir(context.Background(), dir, schema.LoadOptions{})
		if err != nil {
			t.Fatalf("%d nodes: site does not load: %v", n, err)
		}
		if len(diags) > 0 {
			t.Errorf("%d nodes: %d diagnostics, want none; first: %v", n, len(diags), diags[0])
		}
		if len(site.Nodes) != n || res.Nodes != n {
			t.Errorf("loaded %d nodes (generator says %d), want %d", len(site.Nodes), res.Nodes, n)
		}
		if len(site.Networks) != res.Networks || len(site.Config.Regions) != res.Regions || len(site.DNS.Zones) != res.Zones {
			t.Errorf("%d nodes: loaded %d networks, %d regions, %d zones; generator says %d, %d, %d",
				n, len(site.Networks), len(site.Config.Regions), len(site.DNS.Zones), res.Networks, res.Regions, res.Zones)
		}
		// Every node has a derived address on each attached network and on bmc.
		for _, node := range site.Nodes {
			if len(node.Addresses) != len(node.Networks)+1 {
				t.Fatalf("node %s: %d addresses for %d networks + bmc", node.Name, len(node.Addresses), len(node.Networks))
			}
		}
		// Files hold one kind each, nodes one file per rack.
		racks := 0
		for _, r := range site.Config.Regions {
			racks += len(r.Racks)
		}
		if got := len(res.Files[schema.KindNode]); got != racks {
			t.Errorf("%d node files for %d racks", got, racks)
		}
		for _, f := range res.Files[schema.KindNode] {
			if !strings.HasPrefix(f, "nodes/") {
				t.Errorf("node file %s is not under nodes/", f)
			}
		}
	}
}

// TestRegionsAndGroupsScale checks the layout of a multi-region site: the
// ratio of regions to nodes, and round-robin groups at or under the
// rfc2136 target's 100 records a name.
func TestRegionsAndGroupsScale(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "site")
	res, err := gen.Generate(dir, gen.Options{Nodes: 2600, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if res.Regions != 3 || res.Racks != 65 || res.Networks != 15 {
		t.Errorf("2600 nodes: %d regions, %d racks, %d networks; want 3, 65, 15", res.Regions, res.Racks, res.Networks)
	}
	site, _, err := schema.LoadDir(context.Background(), dir, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range site.DNS.Groups {
		members := 0
		for _, n := range site.Nodes {
			if n.InGroup(&g) {
				if _, ok := n.Address(g.Network); ok {
					members++
				}
			}
		}
		if members == 0 || members > schema.DefaultMaxRecordsPerType {
			t.Errorf("group %s has %d members", g.Name, members)
		}
	}
}

// TestDeterministic: the same flags write the same bytes; another seed does not.
func TestDeterministic(t *testing.T) {
	read := func(dir string) map[string][]byte {
		out := map[string][]byte{}
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			rel, _ := filepath.Rel(dir, p)
			out[rel] = b
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	gen3 := func(seed uint64) map[string][]byte {
		dir := filepath.Join(t.TempDir(), "site")
		if code := run([]string{"-nodes", "120", "-out", dir, "-seed", strconv.FormatUint(seed, 10)}, &bytes.Buffer{}, &bytes.Buffer{}); code != 0 {
			t.Fatalf("sitegen exited %d", code)
		}
		return read(dir)
	}
	a, b, c := gen3(1), gen3(1), gen3(2)
	if len(a) != len(b) {
		t.Fatalf("%d files, then %d", len(a), len(b))
	}
	same := true
	for name, data := range a {
		if !bytes.Equal(data, b[name]) {
			t.Errorf("%s differs between two runs with the same seed", name)
		}
		same = same && bytes.Equal(data, c[name])
	}
	if same {
		t.Error("seeds 1 and 2 wrote identical sites")
	}
}

func TestRefusesNonEmptyDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "keep.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := run([]string{"-nodes", "3", "-out", dir}, &bytes.Buffer{}, &stderr); code == 0 {
		t.Fatal("sitegen wrote into a non-empty directory")
	}
	// -force removes only what sitegen writes: keep.txt stays, so it still refuses.
	if code := run([]string{"-nodes", "3", "-out", dir, "-force"}, &bytes.Buffer{}, &stderr); code == 0 {
		t.Fatal("sitegen -force wrote into a directory with foreign files")
	}
	if _, err := os.Stat(filepath.Join(dir, "keep.txt")); err != nil {
		t.Fatal("-force removed a file sitegen did not write")
	}
	// -force over a previous, bigger site leaves only the new one.
	out := filepath.Join(t.TempDir(), "site")
	for _, n := range []string{"200", "50"} {
		if code := run([]string{"-nodes", n, "-out", out, "-force"}, &bytes.Buffer{}, &stderr); code != 0 {
			t.Fatalf("sitegen -force -nodes %s exited %d: %s", n, code, stderr.String())
		}
	}
	site, _, err := schema.LoadDir(context.Background(), out, schema.LoadOptions{})
	if err != nil || len(site.Nodes) != 50 {
		t.Fatalf("after -force: err %v", err)
	}
	if _, err := gen.Generate(filepath.Join(t.TempDir(), "x"), gen.Options{Nodes: gen.MaxNodes + 1}); err == nil {
		t.Error("more than MaxNodes accepted")
	}
}
