package dns

import (
	"reflect"
	"testing"
)

func rr(name string, typ RRType, data ...string) RRset {
	return RRset{Name: name, Type: typ, TTL: 300, Data: data}
}

func TestDiffZone(t *testing.T) {
	const zone = "example.net"
	type change struct {
		op  ChangeOp
		key string
	}
	tests := []struct {
		name      string
		desired   []RRset
		live      []RRset
		owned     []string // RRset keys as "name TYPE"
		marked    []string
		changes   []change
		conflicts []string
		adopt     []string
		foreign   int
	}{
		{name: "empty zone gets everything",
			desired: []RRset{rr("a.example.net", TypeA, "10.0.0.1"), rr("b.example.net", TypeA, "10.0.0.2")},
			changes: []change{{OpCreate, "a.example.net A"}, {OpCreate, "b.example.net A"}}},
		{name: "owned drift is repaired",
			desired: []RRset{rr("a.example.net", TypeA, "10.0.0.1")},
			live:    []RRset{rr("a.example.net", TypeA, "10.0.0.9")},
			owned:   []string{"a.example.net A"},
			changes: []change{{OpUpdate, "a.example.net A"}}},
		{name: "foreign data with other values is a conflict, not overwritten",
			desired:   []RRset{rr("a.example.net", TypeA, "10.0.0.1")},
			live:      []RRset{rr("a.example.net", TypeA, "10.0.0.9")},
			conflicts: []string{"a.example.net A"}},
		{name: "foreign data equal to the desired is adopted",
			desired: []RRset{rr("a.example.net", TypeA, "10.0.0.1")},
			live:    []RRset{rr("a.example.net", TypeA, "10.0.0.1")},
			adopt:   []string{"a.example.net A"}},
		{name: "stale owned deleted, foreign kept",
			live:    []RRset{rr("old.example.net", TypeA, "10.0.0.3"), rr("foreign.example.net", TypeA, "10.0.0.4")},
			owned:   []string{"old.example.net A"},
			changes: []change{{OpDelete, "old.example.net A"}},
			foreign: 1},
		{name: "a PowerDNS comment mark counts as owned",
			live:    []RRset{rr("old.example.net", TypeA, "10.0.0.3")},
			marked:  []string{"old.example.net A"},
			changes: []change{{OpDelete, "old.example.net A"}}},
		{name: "apex NS and SOA are the server's",
			live:    []RRset{rr("example.net", TypeNS, "localhost."), rr("example.net", TypeSOA, "x")},
			owned:   []string{"example.net NS"},
			foreign: 0},
		{name: "foreign CNAME blocks data at its name",
			desired:   []RRset{rr("www.example.net", TypeA, "10.0.0.1")},
			live:      []RRset{rr("www.example.net", TypeCNAME, "elsewhere.example.org.")},
			conflicts: []string{"www.example.net A"}, foreign: 1},
		{name: "owned CNAME replaced by data: delete first, then create",
			desired: []RRset{rr("www.example.net", TypeA, "10.0.0.1")},
			live:    []RRset{rr("www.example.net", TypeCNAME, "old.example.net.")},
			owned:   []string{"www.example.net CNAME"},
			changes: []change{{OpDelete, "www.example.net CNAME"}, {OpCreate, "www.example.net A"}}},
		{name: "CNAME cannot join foreign data",
			desired:   []RRset{rr("db.example.net", TypeCNAME, "n1.example.net.")},
			live:      []RRset{rr("db.example.net", TypeTXT, `"hello"`)},
			conflicts: []string{"db.example.net CNAME"}, foreign: 1},
		{name: "TTL change is an update",
			desired: []RRset{{Name: "a.example.net", Type: TypeA, TTL: 60, Data: []string{"10.0.0.1"}}},
			live:    []RRset{rr("a.example.net", TypeA, "10.0.0.1")},
			owned:   []string{"a.example.net A"},
			changes: []change{{OpUpdate, "a.example.net A"}}},
		{name: "in sync: nothing",
			desired: []RRset{rr("a.example.net", TypeA, "10.0.0.1")},
			live:    []RRset{rr("a.example.net", TypeA, "10.0.0.1")},
			owned:   []string{"a.example.net A"}},
	}
	keyset := func(keys []string) map[RRsetKey]bool {
		m := map[RRsetKey]bool{}
		for _, k := range keys {
			for i := len(k) - 1; i >= 0; i-- {
				if k[i] == ' ' {
					m[RRsetKey{k[:i], RRType(k[i+1:])}] = true
					break
				}
			}
		}
		return m
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			owned := keyset(tc.owned)
			live := &ZoneContent{Zone: zone, RRsets: tc.live, Marked: keyset(tc.marked)}
			zd := DiffZone("t", &DesiredZone{Zone: zone, RRsets: tc.desired}, live, func(k RRsetKey) bool { return owned[k] })
			var got []change
			for _, c := range zd.Changes {
				got = append(got, change{c.Op, c.Key().String()})
			}
			if !reflect.DeepEqual(got, tc.changes) {
				t.Errorf("changes %v, want %v", got, tc.changes)
			}
			var conf []string
			for _, c := range zd.Conflicts {
				conf = append(conf, c.Key.String())
			}
			if !reflect.DeepEqual(conf, tc.conflicts) {
				t.Errorf("conflicts %v, want %v", conf, tc.conflicts)
			}
			var adopt []string
			for _, k := range zd.Adopt {
				adopt = append(adopt, k.String())
			}
			if !reflect.DeepEqual(adopt, tc.adopt) {
				t.Errorf("adopt %v, want %v", adopt, tc.adopt)
			}
			if zd.Foreign != tc.foreign {
				t.Errorf("foreign %d, want %d", zd.Foreign, tc.foreign)
			}
		})
	}
}

func TestZoneSnapshotRoundTrip(t *testing.T) {
	z := &ZoneContent{Zone: "example.net", Serial: 42, RRsets: []RRset{
		rr("a.example.net", TypeA, "10.0.0.1", "10.0.0.2"),
		rr("example.net", TypeTXT, `"a b\009c"`),
	}, Marked: map[RRsetKey]bool{{"a.example.net", TypeA}: true}}
	got, err := DecodeZone(EncodeZone(z))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, z) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, z)
	}
}

func TestConsistency(t *testing.T) {
	zones := []*ZoneContent{
		{Zone: "example.net", RRsets: []RRset{rr("a.example.net", TypeA, "10.0.0.1"), rr("b.example.net", TypeA, "10.0.0.2")}},
		{Zone: "0.0.10.in-addr.arpa", RRsets: []RRset{
			rr("1.0.0.10.in-addr.arpa", TypePTR, "a.example.net."),
			rr("3.0.0.10.in-addr.arpa", TypePTR, "gone.example.net."),
		}},
	}
	got := consistency("t", zones)
	if len(got) != 2 || got[0].Kind != FindingMissingPTR || got[0].Address != "10.0.0.2" || got[1].Kind != FindingOrphanPTR || got[1].Name != "gone.example.net" {
		t.Fatalf("findings: %+v", got)
	}
}

func TestAddrOfReverse(t *testing.T) {
	for _, ip := range []string{"10.1.2.3", "fd00:a:0:110::b", "2001:db8::1"} {
		a := mustAddr(t, ip)
		back, ok := addrOfReverse(reverseOf(a))
		if !ok || back != a {
			t.Errorf("%s: round trip gave %v %v", ip, back, ok)
		}
	}
}
