package etcd_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/providers/state/etcd"
	"github.com/anneal-dev/anneal/providers/state/etcd/etcdtest"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/events"
	"github.com/anneal-dev/anneal/reconcile/node"
)

// store is what both state stores implement.
type store interface {
	dns.State
	reconcile.StatusStore
	node.Store
	node.Batch
	events.Store
	SetEventRetention(events.Retention)
}

// kinds are the stores under test: setup prepares what a kind needs (for
// etcd, a server started once for all the cases) and returns the
// constructor of a fresh, empty store: a bolt file in a temporary
// directory, a site of its own on the etcd server.
var kinds = []struct {
	name  string
	setup func(t *testing.T) func(t *testing.T) store
}{
	{"bolt", func(*testing.T) func(t *testing.T) store {
		return func(t *testing.T) store {
			s, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
	}},
	{"etcd", func(t *testing.T) func(t *testing.T) store {
		srv := etcdtest.Start(t)
		n := 0
		return func(t *testing.T) store {
			n++
			s, err := etcd.New(srv.Client, fmt.Sprintf("site%d", n), etcd.Options{Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}},
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestConformance runs the same operations on every store and expects the
// same results.
func TestConformance(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, s store)
	}{
		{"status", testStatus},
		{"inventory", testInventory},
		{"zone cache", testZoneCache},
		{"sync marks", testSyncMarks},
		{"journal", testJournal},
		{"nodes", testNodes},
		{"many nodes", testManyNodes},
		{"concurrent UpdateNode", testConcurrentUpdate},
		{"events", testEvents},
		{"concurrent AppendEvents", testConcurrentEvents},
		{"event retention", testRetention},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			open := k.setup(t)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) { tc.run(t, open(t)) })
			}
		})
	}
}

func testStatus(t *testing.T, s store) {
	ctx := ctxT(t)
	got, err := s.LoadStatus(ctx)
	if err != nil || got != nil {
		t.Fatalf("LoadStatus of an empty store = %v, %v; want nil, nil", got, err)
	}
	want := &reconcile.Status{AppliedRevision: "abc", LastError: "boom", Reconciles: 3,
		LastReconcile: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Steps: map[string]float64{"plan": 1.5}}
	if err := s.SaveStatus(ctx, want); err != nil {
		t.Fatal(err)
	}
	if got, err = s.LoadStatus(ctx); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("LoadStatus = %+v, %v; want %+v", got, err, want)
	}
}

func testInventory(t *testing.T, s store) {
	ctx := ctxT(t)
	a := dns.RRsetKey{Name: "a.example.net.", Type: "A"}
	b := dns.RRsetKey{Name: "b.example.net.", Type: "AAAA"}
	c := dns.RRsetKey{Name: "c/x.example.net.", Type: "TXT"}
	steps := []struct {
		target, zone string
		add, remove  []dns.RRsetKey
		want         []dns.RRsetKey
	}{
		{"t1", "example.net.", []dns.RRsetKey{a, b, c}, nil, []dns.RRsetKey{a, b, c}},
		{"t1", "example.net.", nil, []dns.RRsetKey{b}, []dns.RRsetKey{a, c}},
		// removed and added at once: added
		{"t1", "example.net.", []dns.RRsetKey{b}, []dns.RRsetKey{b, a}, []dns.RRsetKey{b, c}},
		// another target and a zone with a slash do not see the first
		{"t1/x", "example.net.", []dns.RRsetKey{a}, nil, []dns.RRsetKey{a}},
		{"t1", "example.net./x", nil, nil, nil},
		{"t1", "example.net.", nil, nil, []dns.RRsetKey{b, c}},
	}
	for i, st := range steps {
		if err := s.RecordOwned(ctx, st.target, st.zone, st.add, st.remove); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		got, err := s.OwnedRRsets(ctx, st.target, st.zone)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		want := map[dns.RRsetKey]bool{}
		for _, k := range st.want {
			want[k] = true
		}
		if !maps.Equal(got, want) {
			t.Fatalf("step %d: owned %v, want %v", i, got, want)
		}
	}
	// a large change (above one etcd transaction's operations)
	var many []dns.RRsetKey
	for i := range 250 {
		many = append(many, dns.RRsetKey{Name: fmt.Sprintf("h%d.example.org.", i), Type: "A"})
	}
	if err := s.RecordOwned(ctx, "t2", "example.org.", many, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.OwnedRRsets(ctx, "t2", "example.org."); err != nil || len(got) != len(many) {
		t.Fatalf("owned %d, %v; want %d", len(got), err, len(many))
	}
}

func testZoneCache(t *testing.T, s store) {
	ctx := ctxT(t)
	if z, err := s.CachedZone(ctx, "t", "example.net."); err != nil || z != nil {
		t.Fatalf("CachedZone of an empty store = %v, %v", z, err)
	}
	z := &dns.ZoneContent{Zone: "example.net.", Serial: 7, RRsets: []dns.RRset{
		{Name: "a.example.net.", Type: "A", TTL: 300, Data: []string{"192.0.2.1", "192.0.2.2"}},
		{Name: "b.example.net.", Type: "TXT", TTL: 60, Data: []string{`"x y"`}},
	}}
	if err := s.CacheZone(ctx, "t", z); err != nil {
		t.Fatal(err)
	}
	got, err := s.CachedZone(ctx, "t", "example.net.")
	if err != nil || got == nil || string(dns.EncodeZone(got)) != string(dns.EncodeZone(z)) {
		t.Fatalf("CachedZone = %+v, %v; want %+v", got, err, z)
	}
	if z, err := s.CachedZone(ctx, "u", "example.net."); err != nil || z != nil {
		t.Fatalf("CachedZone of another target = %v, %v", z, err)
	}
}

func testSyncMarks(t *testing.T, s store) {
	ctx := ctxT(t)
	if m, err := s.SyncMark(ctx, "t", "z."); err != nil || m != nil {
		t.Fatalf("SyncMark of an empty store = %v, %v", m, err)
	}
	want := &dns.SyncMark{Serial: 9, Desired: "d", Owned: 2, Foreign: 1}
	if err := s.SetSyncMark(ctx, "t", "z.", want); err != nil {
		t.Fatal(err)
	}
	if got, err := s.SyncMark(ctx, "t", "z."); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("SyncMark = %+v, %v; want %+v", got, err, want)
	}
}

func testJournal(t *testing.T, s store) {
	ctx := ctxT(t)
	check := func(step string, want *dns.ApplyRecord) {
		t.Helper()
		got, err := s.InFlight(ctx)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: InFlight = %+v, %v; want %+v", step, got, err, want)
		}
	}
	check("empty", nil)
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := s.BeginApply(ctx, &dns.ApplyRecord{Started: started, Revision: "r1", Pending: map[string]int{"t/a.": 1, "t/b.": 2}}); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginApply(ctx, &dns.ApplyRecord{Started: started.Add(time.Hour), Revision: "r2", Pending: map[string]int{"t/c.": 3}}); err != nil {
		t.Fatal(err)
	}
	check("merged", &dns.ApplyRecord{Started: started, Revision: "r2", Pending: map[string]int{"t/a.": 1, "t/b.": 2, "t/c.": 3}})
	for _, z := range []string{"a.", "c."} {
		if err := s.ZoneDone(ctx, "t", z); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.EndApply(ctx); err != nil {
		t.Fatal(err)
	}
	check("one pending", &dns.ApplyRecord{Started: started, Revision: "r2", Pending: map[string]int{"t/b.": 2}})
	if err := s.ZoneDone(ctx, "t", "b."); err != nil {
		t.Fatal(err)
	}
	if err := s.EndApply(ctx); err != nil {
		t.Fatal(err)
	}
	check("ended", nil)
}

func testNodes(t *testing.T, s store) {
	ctx := ctxT(t)
	if r, err := s.NodeRecord(ctx, "n1"); err != nil || r != nil {
		t.Fatalf("NodeRecord of an empty store = %v, %v", r, err)
	}
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	err := s.UpdateNode(ctx, "n1", func(r *node.Record) error {
		if r.Name != "n1" {
			t.Errorf("new record's name %q, want n1", r.Name)
		}
		r.State, r.Since, r.BuildID = node.Verified, since, "b1"
		r.Name = "renamed" // the store keeps the name
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &node.Record{Name: "n1", State: node.Verified, Since: since, BuildID: "b1"}
	if r, err := s.NodeRecord(ctx, "n1"); err != nil || !reflect.DeepEqual(r, want) {
		t.Fatalf("NodeRecord = %+v, %v; want %+v", r, err, want)
	}
	boom := errors.New("boom")
	err = s.UpdateNode(ctx, "n1", func(r *node.Record) error { r.BuildID = "lost"; return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("UpdateNode error = %v, want boom", err)
	}
	// all or none: n2 fails, so n1 and n3 are unchanged
	err = s.UpdateNodes(ctx, []string{"n1", "n2", "n3"}, func(r *node.Record) error {
		r.Attempts++
		if r.Name == "n2" {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "node n2") {
		t.Fatalf("UpdateNodes error = %v, want boom naming node n2", err)
	}
	err = s.UpdateNodes(ctx, []string{"n1", "n3", "a/b"}, func(r *node.Record) error { r.Attempts++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	all, err := s.NodeRecords(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for name, r := range all {
		if r.Name != name {
			t.Errorf("record %s named %q", name, r.Name)
		}
		got[name] = r.Attempts
	}
	if want := map[string]int{"n1": 1, "n3": 1, "a/b": 1}; !maps.Equal(got, want) {
		t.Fatalf("attempts %v, want %v", got, want)
	}
	if all["n1"].BuildID != "b1" {
		t.Fatalf("n1's build %q, want b1 (a failed update changed it)", all["n1"].BuildID)
	}
}

// testManyNodes: UpdateNodes of more nodes than one etcd transaction
// holds is still all or none when fn fails, and applies a name given twice
// twice.
func testManyNodes(t *testing.T, s store) {
	ctx := ctxT(t)
	var names []string
	for i := range 130 {
		names = append(names, fmt.Sprintf("m%03d", i))
	}
	names = append(names, "m000")
	boom := errors.New("boom")
	err := s.UpdateNodes(ctx, names, func(r *node.Record) error {
		r.Attempts++
		if r.Name == "m129" {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("UpdateNodes error = %v, want boom", err)
	}
	if all, err := s.NodeRecords(ctx); err != nil || len(all) != 0 {
		t.Fatalf("a failed UpdateNodes wrote %d records (%v)", len(all), err)
	}
	if err := s.UpdateNodes(ctx, names, func(r *node.Record) error { r.Attempts++; return nil }); err != nil {
		t.Fatal(err)
	}
	all, err := s.NodeRecords(ctx)
	if err != nil || len(all) != 130 {
		t.Fatalf("%d records (%v), want 130", len(all), err)
	}
	for name, r := range all {
		want := 1
		if name == "m000" {
			want = 2
		}
		if r.Attempts != want || r.Name != name {
			t.Fatalf("record %s = %+v, want %d attempts", name, r, want)
		}
	}
}

// testConcurrentUpdate: goroutines update one record at once; every update
// is applied exactly once. The total stays below etcd.MaxAttempts, so no
// update can lose every try (each loss is another's success).
func testConcurrentUpdate(t *testing.T, s store) {
	ctx := ctxT(t)
	const workers, each = 8, 7
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				errs <- s.UpdateNode(ctx, "n", func(r *node.Record) error {
					r.Attempts++
					r.Fetched = append(r.Fetched, fmt.Sprintf("%d/%d", w, i))
					return nil
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	r, err := s.NodeRecord(ctx, "n")
	if err != nil {
		t.Fatal(err)
	}
	if r.Attempts != workers*each || len(r.Fetched) != workers*each {
		t.Fatalf("%d attempts, %d entries; want %d", r.Attempts, len(r.Fetched), workers*each)
	}
	seen := map[string]bool{}
	for _, f := range r.Fetched {
		if seen[f] {
			t.Fatalf("update %s applied twice", f)
		}
		seen[f] = true
	}
}

func ev(node string, kind events.Kind, at time.Time) events.Event {
	return events.Event{Time: at, Kind: kind, Node: node, Message: "m " + node}
}

func seqs(evs []events.Event) []uint64 {
	var out []uint64
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}

func testEvents(t *testing.T, s store) {
	ctx := ctxT(t)
	now := time.Now().UTC().Truncate(time.Second)
	got, err := s.Events(ctx, events.Filter{})
	if err != nil || len(got) != 0 {
		t.Fatalf("Events of an empty store = %v, %v", got, err)
	}
	a, err := s.AppendEvents(ctx, []events.Event{ev("n1", events.NodeStep, now), ev("n2", events.NodeStep, now), ev("", events.Applied, now)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.AppendEvents(ctx, []events.Event{ev("n1", events.NodeRetry, now), ev("n2", events.NodeStep, now)})
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(append(a, b...)); !slices.Equal(got, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("appended seqs %v, want 1..5", got)
	}
	// more events at once than one etcd transaction holds
	var many []events.Event
	for range 250 {
		many = append(many, ev("n3", events.DNSWritten, now))
	}
	c, err := s.AppendEvents(ctx, many)
	if err != nil {
		t.Fatal(err)
	}
	if len(c) != 250 || c[0].Seq != 6 || c[249].Seq != 255 {
		t.Fatalf("appended %d events, seqs %d..%d; want 250, 6..255", len(c), c[0].Seq, c[len(c)-1].Seq)
	}
	for _, tc := range []struct {
		f    events.Filter
		want []uint64
	}{
		{events.Filter{Kinds: []events.Kind{events.NodeStep, events.Applied, events.NodeRetry}}, []uint64{1, 2, 3, 4, 5}},
		{events.Filter{Node: "n1"}, []uint64{1, 4}},
		{events.Filter{Kinds: []events.Kind{events.NodeStep}}, []uint64{1, 2, 5}},
		{events.Filter{Limit: 2}, []uint64{254, 255}},
		{events.Filter{After: 3, Limit: 3}, []uint64{253, 254, 255}},
		{events.Filter{After: 252}, []uint64{253, 254, 255}},
		{events.Filter{Node: "n3", Limit: 1, After: 250}, []uint64{255}},
		{events.Filter{Node: "n2", Limit: 1}, []uint64{5}},
		{events.Filter{Since: now.Add(time.Hour)}, nil},
	} {
		got, err := s.Events(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(seqs(got), tc.want) {
			t.Errorf("Events(%+v) = %v, want %v", tc.f, seqs(got), tc.want)
		}
		for _, e := range got {
			if e.Message != "m "+e.Node || !e.Time.Equal(now) {
				t.Errorf("event %d = %+v", e.Seq, e)
			}
		}
	}
}

// testConcurrentAppend: appends at once are numbered without gaps or
// repeats.
func testConcurrentEvents(t *testing.T, s store) {
	ctx := ctxT(t)
	const workers, each = 6, 5 // below etcd.MaxAttempts in all
	now := time.Now().UTC()
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			for range each {
				_, err := s.AppendEvents(ctx, []events.Event{ev(fmt.Sprint(w), events.NodeStep, now), ev(fmt.Sprint(w), events.NodeStep, now)})
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Events(ctx, events.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	const n = workers * each * 2
	if len(got) != n {
		t.Fatalf("%d events, want %d", len(got), n)
	}
	perNode := map[string]int{}
	for i, e := range got {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d: a gap or a repeat", i+1, e.Seq)
		}
		perNode[e.Node]++
	}
	for w := range workers {
		if perNode[fmt.Sprint(w)] != each*2 {
			t.Fatalf("events per worker %v, want %d each", perNode, each*2)
		}
	}
}

func testRetention(t *testing.T, s store) {
	ctx := ctxT(t)
	now := time.Now().UTC()
	s.SetEventRetention(events.Retention{MaxEvents: 4, MaxAge: time.Hour})
	old := now.Add(-2 * time.Hour)
	if _, err := s.AppendEvents(ctx, []events.Event{ev("a", events.NodeStep, old), ev("b", events.NodeStep, old)}); err != nil {
		t.Fatal(err)
	}
	// the old ones go at the next append
	if _, err := s.AppendEvents(ctx, []events.Event{ev("c", events.NodeStep, now)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Events(ctx, events.Filter{})
	if err != nil || !slices.Equal(seqs(got), []uint64{3}) {
		t.Fatalf("after the age limit: %v, %v; want [3]", seqs(got), err)
	}
	for range 3 {
		if _, err := s.AppendEvents(ctx, []events.Event{ev("d", events.NodeStep, now), ev("e", events.NodeStep, now)}); err != nil {
			t.Fatal(err)
		}
	}
	got, err = s.Events(ctx, events.Filter{})
	if err != nil || !slices.Equal(seqs(got), []uint64{6, 7, 8, 9}) {
		t.Fatalf("after the count limit: %v, %v; want [6 7 8 9]", seqs(got), err)
	}
}
