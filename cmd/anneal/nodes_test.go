package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/api"
	"github.com/anneal-dev/anneal/reconcile/node"
)

// nodeRows are the first column of a nodes table, and each row's fields.
func nodeRows(t *testing.T, out string) map[string][]string {
	t.Helper()
	rows := map[string][]string{}
	for i, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if i == 0 {
			continue // the header
		}
		f := strings.Fields(l)
		rows[f[0]] = f
	}
	return rows
}

// TestNodesServer: nodes --server lists the daemon's nodes (its site, not
// a local checkout), filters them and marks those not on their desired
// build.
func TestNodesServer(t *testing.T) {
	dir := exampleWithoutDNS(t)
	// The daemon's site lacks rack w1's nodes: a local checkout's would
	// list them.
	if err := os.Remove(filepath.Join(dir, "nodes", "west-w1.yaml")); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir)
	ctx := context.Background()
	desired := map[string]string{}
	for _, v := range api.NodeViews(d.r.Site(), nil) {
		desired[v.Name] = v.BuildID
	}
	for name, build := range map[string]string{"e1n01": "0ld0ld0ld0ld", "e1n02": desired["e1n02"], "e2n01": desired["e2n01"]} {
		if err := d.store.UpdateNode(ctx, name, func(r *node.Record) error {
			r.State, r.BuildID = node.Verified, build
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.store.UpdateNode(ctx, "e1n03", func(r *node.Record) error {
		r.State, r.Reason = node.Failed, "no callback"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	srv := []string{"nodes", "--server", d.url, "--site", "/nonexistent/checkout"}
	tests := []struct {
		name    string
		args    []string
		want    []string
		onBuild map[string]string
	}{
		{"all", nil, []string{"e1n01", "e1n02", "e1n03", "e1n04", "e1n05", "e2n01", "e2n02", "e2n03", "e2n04", "e2n05"},
			map[string]string{"e1n01": "no", "e1n02": "yes", "e1n03": "?", "e1n04": "?", "e2n01": "yes"}},
		{"names", []string{"e1n02", "e1n01"}, []string{"e1n01", "e1n02"}, map[string]string{"e1n01": "no", "e1n02": "yes"}},
		{"rack", []string{"--rack", "e2"}, []string{"e2n01", "e2n02", "e2n03", "e2n04", "e2n05"}, nil},
		{"role", []string{"--role", "api"}, []string{"e1n01", "e1n02"}, nil},
		{"declared state", []string{"--state", "maintenance"}, []string{"e2n03"}, nil},
		{"live state", []string{"--state", "verified"}, []string{"e1n01", "e1n02", "e2n01"}, nil},
		{"rack and live state", []string{"--rack", "e1", "--state", "failed"}, []string{"e1n03"}, nil},
		{"live state unknown, as LIVE shows it", []string{"--state", "unknown"}, []string{"e1n04", "e1n05", "e2n02", "e2n03", "e2n04", "e2n05"}, nil},
		{"nothing matches", []string{"--rack", "e1", "--role", "storage"}, nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLI(t, append(slices.Clone(srv), tc.args...)...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errs)
			}
			if !strings.HasPrefix(out, "NODE  ") || !strings.Contains(out, "ON BUILD") {
				t.Fatalf("no header with ON BUILD:\n%s", out)
			}
			rows := nodeRows(t, out)
			var got []string
			for n := range rows {
				got = append(got, n)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("nodes %v, want %v:\n%s", got, tc.want, out)
			}
			for n, want := range tc.onBuild {
				// NODE REGION/RACK ROLES STATE BUILD LIVE LIVE-BUILD ON-BUILD ...
				if f := rows[n]; len(f) < 8 || f[7] != want {
					t.Errorf("%s: row %v, want ON BUILD %q", n, f, want)
				}
			}
		})
	}

	code, out, errs := runCLI(t, append(slices.Clone(srv), "-o", "json", "--role", "api")...)
	var views []api.NodeView
	if code != exitOK || json.Unmarshal([]byte(out), &views) != nil || len(views) != 2 || views[0].Live == nil || views[0].Live.BuildID != "0ld0ld0ld0ld" {
		t.Fatalf("-o json: exit %d %s\n%s", code, errs, out)
	}
	code, _, errs = runCLI(t, append(slices.Clone(srv), "e1n01", "w1n01")...)
	if code != exitError || !strings.Contains(errs, "anneal nodes: no node named w1n01") {
		t.Fatalf("a node the daemon does not have: exit %d: %s", code, errs)
	}

	// Without --server: the local site, filtered alike.
	code, out, errs = runCLI(t, "nodes", "--site", example, "--rack", "w1", "--role", "storage")
	if rows := nodeRows(t, out); code != exitOK || len(rows) != 2 || rows["w1n01"] == nil || rows["w1n02"] == nil {
		t.Fatalf("local nodes --rack w1 --role storage: exit %d %s\n%s", code, errs, out)
	}
}

// TestCompletion: node names from the local site or the daemon, and the
// values of flags with a fixed set, through cobra's __complete.
func TestCompletion(t *testing.T) {
	dir := exampleWithoutDNS(t)
	if err := os.Remove(filepath.Join(dir, "nodes", "west-w1.yaml")); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"nodes from the site", []string{"nodes", "--site", example, "w1"}, []string{"w1n01", "w1n02", "w1n03", "w1n04"}},
		{"nodes from the daemon", []string{"nodes", "--server", d.url, "w"}, nil},
		{"nodes from the daemon, a prefix", []string{"nodes", "--server", d.url, "e2n0"}, []string{"e2n01", "e2n02", "e2n03", "e2n04", "e2n05"}},
		{"given names are not offered again", []string{"nodes", "--site", example, "w1n01", "w1"}, []string{"w1n02", "w1n03", "w1n04"}},
		{"retry from the daemon", []string{"nodes", "retry", "--server", d.url, "e1n0"}, []string{"e1n01", "e1n02", "e1n03", "e1n04", "e1n05"}},
		{"render --node", []string{"render", "--site", example, "--node", "w1n0"}, []string{"w1n01", "w1n02", "w1n03", "w1n04"}},
		{"-o", []string{"status", "-o", ""}, []string{"text", "json"}},
		{"plan -o", []string{"plan", "--output", ""}, []string{"text", "json", "markdown"}},
		{"--only", []string{"plan", "--only", ""}, []string{"all", "dns"}},
		{"--mode", []string{"serve", "--mode", ""}, []string{"converge", "report"}},
		{"--log-format", []string{"status", "--log-format", ""}, []string{"text", "json"}},
		{"nodes --state", []string{"nodes", "--state", ""}, []string{"active", "maintenance", "decommissioned", "removed", "unknown", "enrolled",
			"pending", "provisioning", "installed", "verified", "failed", "decommissioning"}},
		{"events --kind", []string{"events", "--kind", "node.a"}, []string{"node.adopted", "node.agent-revoked"}},
		{"events --kind, the second of a list", []string{"events", "--kind", "node.adopted,node.a"}, []string{"node.adopted,node.agent-revoked"}},
		{"events --node from the daemon", []string{"events", "--server", d.url, "--node", "e1n0"}, []string{"e1n01", "e1n02", "e1n03", "e1n04", "e1n05"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLI(t, append([]string{"__complete"}, tc.args...)...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errs)
			}
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				if l != "" && !strings.HasPrefix(l, ":") {
					got = append(got, l)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("completions %q, want %q\n%s", got, tc.want, out)
			}
		})
	}
}
