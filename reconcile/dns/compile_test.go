package dns

import (
	"context"
	"reflect"
	"slices"
	"testing"

	"github.com/anneal-dev/anneal/schema"
)

func exampleSite(t testing.TB) *schema.Site {
	t.Helper()
	s, _, err := schema.LoadDir(context.Background(), "../../examples/site-repo", schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func findSet(d *Desired, name string, typ RRType) *RRset {
	for _, z := range d.Zones {
		for i := range z.RRsets {
			if z.RRsets[i].Name == name && z.RRsets[i].Type == typ {
				return &z.RRsets[i]
			}
		}
	}
	return nil
}

func TestCompileDNSExample(t *testing.T) {
	d, err := Compile(exampleSite(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		typ  RRType
		want []string // nil: must be absent
	}{
		{"e1n01.prov.east.example.net", TypeA, []string{"10.10.1.11"}},
		{"e1n01.prov.east.example.net", TypeAAAA, []string{"fd00:a:0:110::b"}},
		{"e1n01.east.example.net", TypeA, []string{"10.10.2.11"}},
		{"e1n01.bmc.east.example.net", TypeA, []string{"10.10.0.11"}},
		// The primary network's PTR names the primary name; others their own.
		{"11.2.10.10.in-addr.arpa", TypePTR, []string{"e1n01.east.example.net."}},
		{"11.1.10.10.in-addr.arpa", TypePTR, []string{"e1n01.prov.east.example.net."}},
		{"11.0.10.10.in-addr.arpa", TypePTR, []string{"e1n01.bmc.east.example.net."}},
		{"b.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.1.0.0.0.0.0.a.0.0.0.0.0.d.f.ip6.arpa", TypePTR, []string{"e1n01.east.example.net."}},
		{"db1.east.example.net", TypeCNAME, []string{"e1n01.east.example.net."}},
		{"backup.west.example.net", TypeCNAME, []string{"w1n01.west.example.net."}},
		{"*.apps.east.example.net", TypeCNAME, []string{"ingress.east.example.net."}},
		// Round robin: the api role's public addresses, in service only.
		{"api.example.net", TypeA, []string{"203.0.113.11", "203.0.113.12", "203.0.113.24"}},
		{"ingress.east.example.net", TypeA, []string{"203.0.113.15", "203.0.113.19"}},
		// e2n03 is in maintenance: it keeps its names.
		{"e2n03.east.example.net", TypeA, []string{"10.10.2.18"}},
		{"example.net", TypeMX, []string{"10 mail.example.net."}},
		{"example.net", TypeTXT, []string{`"v=spf1 mx -all"`}},
		{"_ldap._tcp.example.net", TypeSRV, []string{"0 100 389 e1n01.east.example.net."}},
	}
	for _, tc := range tests {
		got := findSet(d, tc.name, tc.typ)
		if tc.want == nil {
			if got != nil {
				t.Errorf("%s %s: want absent, got %v", tc.name, tc.typ, got.Data)
			}
			continue
		}
		if got == nil {
			t.Errorf("%s %s: missing", tc.name, tc.typ)
			continue
		}
		if !slices.Equal(got.Data, tc.want) {
			t.Errorf("%s %s: got %v, want %v", tc.name, tc.typ, got.Data, tc.want)
		}
	}
	if ttl := findSet(d, "api.example.net", TypeA).TTL; ttl != 60 {
		t.Errorf("group TTL %d, want 60", ttl)
	}
	if len(d.Targets) != 2 || d.Targets[0].Target != "bind" || len(d.Targets[1].Zones) != 5 {
		t.Errorf("targets: %+v", d.Targets)
	}
	again, _ := Compile(exampleSite(t))
	if !reflect.DeepEqual(d.Zones, again.Zones) {
		t.Error("two compiles of the same site differ")
	}
}

func TestCompileDNSMaintenanceLeavesGroups(t *testing.T) {
	s := exampleSite(t)
	s.Node("e1n05").State = schema.StateMaintenance
	d, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	if got := findSet(d, "ingress.east.example.net", TypeA).Data; !slices.Equal(got, []string{"203.0.113.19"}) {
		t.Errorf("ingress group with e1n05 in maintenance: %v", got)
	}
	if findSet(d, "e1n05.east.example.net", TypeA) == nil {
		t.Error("a node in maintenance lost its own name")
	}
}

func TestCompileDNSDecommission(t *testing.T) {
	s := exampleSite(t)
	n := s.Node("e1n02")
	n.State = schema.StateDecommissioned
	d, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"e1n02.east.example.net", "e1n02.prov.east.example.net"} {
		if findSet(d, name, TypeA) != nil {
			t.Errorf("%s still has an A record", name)
		}
	}
	if findSet(d, "12.2.10.10.in-addr.arpa", TypePTR) != nil {
		t.Error("PTR of a decommissioned node remains")
	}
	if got := findSet(d, "api.example.net", TypeA).Data; slices.Contains(got, "203.0.113.12") {
		t.Errorf("decommissioned node still in group: %v", got)
	}
}
