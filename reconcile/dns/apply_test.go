package dns

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// memTarget is a zone in memory that can take a write without holding it
// (as a server ignores data beside a CNAME) and answer lookups with data
// of its own choosing (a wildcard, a stale cache).
type memTarget struct {
	mu      sync.Mutex
	zone    map[RRsetKey]RRset
	ignore  map[RRsetKey]bool   // writes acknowledged and dropped
	answers map[RRsetKey]*RRset // lookup answers that are not the zone's
	unsure  bool                // lookups never sure
	reads   int
	lookups int
}

func (m *memTarget) Name() string { return "mem" }

func (m *memTarget) Serial(context.Context, string) (uint32, error) { return 1, nil }

func (m *memTarget) ReadZone(_ context.Context, zone string) (*ZoneContent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	zc := &ZoneContent{Zone: zone, Serial: 1}
	for _, s := range m.zone {
		zc.RRsets = append(zc.RRsets, s)
	}
	return zc, nil
}

func (m *memTarget) Apply(_ context.Context, _ string, changes []RRsetChange) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range changes {
		switch {
		case m.ignore[c.Key()]:
		case c.New == nil:
			delete(m.zone, c.Key())
		default:
			m.zone[c.Key()] = *c.New
		}
	}
	return len(changes), nil
}

func (m *memTarget) LookupRRset(_ context.Context, _ string, k RRsetKey) (*RRset, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lookups++
	if m.unsure {
		return nil, false
	}
	if a, ok := m.answers[k]; ok {
		return a, true
	}
	if s, ok := m.zone[k]; ok {
		return &s, true
	}
	return nil, true
}

// TestApplyReadBack: the applier reads a few changes back one RRset at a
// time, falls back to the whole zone on any doubt, and reports a write the
// server acknowledged but does not hold, whichever way it was read.
func TestApplyReadBack(t *testing.T) {
	a := func(name, ip string) *RRset {
		return &RRset{Name: name + ".example.net", Type: TypeA, TTL: 300, Data: []string{ip}}
	}
	key := func(name string) RRsetKey { return RRsetKey{name + ".example.net", TypeA} }
	many := func(n int) []RRsetChange {
		var out []RRsetChange
		for i := range n {
			out = append(out, RRsetChange{Op: OpCreate, New: a(fmt.Sprintf("n%03d", i), "192.0.2.1")})
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		changes   []RRsetChange
		setup     func(m *memTarget)
		wantReads int
		wantErr   string
	}{
		{name: "held, confirmed by lookups",
			changes: []RRsetChange{{Op: OpCreate, New: a("new", "192.0.2.1")}, {Op: OpDelete, Old: a("old", "192.0.2.9")}}},
		{name: "lookups unsure: the zone settles it",
			changes: []RRsetChange{{Op: OpCreate, New: a("new", "192.0.2.1")}},
			setup:   func(m *memTarget) { m.unsure = true }, wantReads: 1},
		{name: "a deleted name still answered (a wildcard): the zone settles it",
			changes: []RRsetChange{{Op: OpDelete, Old: a("old", "192.0.2.9")}},
			setup:   func(m *memTarget) { m.answers[key("old")] = a("old", "192.0.2.7") }, wantReads: 1},
		{name: "write dropped: lookups doubt, the zone says so",
			changes: []RRsetChange{{Op: OpCreate, New: a("new", "192.0.2.1")}},
			setup:   func(m *memTarget) { m.ignore[key("new")] = true }, wantReads: 1,
			wantErr: "does not hold it"},
		{name: "delete dropped",
			changes: []RRsetChange{{Op: OpDelete, Old: a("old", "192.0.2.9")}},
			setup:   func(m *memTarget) { m.ignore[key("old")] = true }, wantReads: 1,
			wantErr: "old.example.net A still present"},
		{name: "many changes: the zone is read whole", changes: many(lookupVerifyLimit + 1), wantReads: 1},
		{name: "many changes, one dropped", changes: many(lookupVerifyLimit + 1),
			setup: func(m *memTarget) { m.ignore[key("n007")] = true }, wantReads: 1, wantErr: "n007.example.net A not as written"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &memTarget{zone: map[RRsetKey]RRset{key("old"): *a("old", "192.0.2.9")}, ignore: map[RRsetKey]bool{}, answers: map[RRsetKey]*RRset{}}
			if tc.setup != nil {
				tc.setup(m)
			}
			plan := &Plan{Zones: []ZoneDiff{{Target: "mem", Zone: "example.net", Changes: tc.changes}}}
			desired := &Desired{byZone: map[string]*DesiredZone{"example.net": {Zone: "example.net"}}}
			res, err := (&Applier{Targets: map[string]Target{"mem": m}}).Apply(context.Background(), plan, desired, ApplyOptions{AllowMassDelete: true})
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if res.Failed() {
				got = res.Zones[0].Error
			}
			if tc.wantErr == "" && got != "" || tc.wantErr != "" && !strings.Contains(got, tc.wantErr) {
				t.Fatalf("zone error %q, want %q", got, tc.wantErr)
			}
			if m.reads != tc.wantReads {
				t.Errorf("zone read %d times, want %d", m.reads, tc.wantReads)
			}
			if tc.wantReads == 0 && m.lookups != len(tc.changes) {
				t.Errorf("%d lookups for %d changes", m.lookups, len(tc.changes))
			}
		})
	}
}
