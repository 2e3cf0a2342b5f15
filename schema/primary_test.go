package schema_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/schema"
)

// TestPrimaryNameByRole: primaryName picks each node's network by role, for
// sites whose networks are per region.
func TestPrimaryNameByRole(t *testing.T) {
	tests := []struct {
		name     string
		primary  string
		wantCode string // "" for valid
		wantNet  string
	}{
		{"by network", "  network: internal\n", "", "internal"},
		{"by role", "  role: internal\n", "", "internal"},
		{"both", "  network: internal\n  role: internal\n", "primary-network", ""},
		{"neither", "", "primary-network", ""},
		{"role some nodes lack", "  role: public\n", "no-primary-address", ""},
	}
	src, err := os.ReadFile("../examples/site-repo/dns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const orig = "primaryName:\n  pattern: \"{node}.{region}.{domain}\"\n  network: internal\n"
	if !strings.Contains(string(src), orig) {
		t.Fatal("example dns.yaml changed: update this test")
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.CopyFS(dir, os.DirFS("../examples/site-repo")); err != nil {
				t.Fatal(err)
			}
			dns := strings.Replace(string(src), orig, "primaryName:\n  pattern: \"{node}.{region}.{domain}\"\n"+tc.primary, 1)
			if err := os.WriteFile(filepath.Join(dir, "dns.yaml"), []byte(dns), 0o644); err != nil {
				t.Fatal(err)
			}
			site, diags, err := schema.LoadDir(context.Background(), dir, schema.LoadOptions{})
			if tc.wantCode == "" {
				if err != nil {
					t.Fatal(err)
				}
				n := site.Node("e1n01")
				if n.PrimaryNetwork != tc.wantNet || n.PrimaryFQDN != "e1n01.east.example.net" {
					t.Fatalf("primary %q %q", n.PrimaryNetwork, n.PrimaryFQDN)
				}
				return
			}
			var inv *schema.InvalidError
			if !errors.As(err, &inv) {
				t.Fatalf("want invalid, got %v", err)
			}
			for _, d := range diags {
				if d.Code == tc.wantCode {
					return
				}
			}
			t.Fatalf("no %s in %v", tc.wantCode, diags)
		})
	}
}
