package api

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/dns/dnstest"
	"github.com/anneal-dev/anneal/reconcile/events"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/node/nodetest"
	"github.com/anneal-dev/anneal/reconcile/rollout"
	"github.com/anneal-dev/anneal/schema"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// scrape GETs /metrics from h and returns its samples by series
// (`name{labels}` as exposed) and the families it has.
func scrape(t testing.TB, h http.Handler) (samples map[string]float64, families map[string]bool) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", w.Code, w.Body)
	}
	samples, families = map[string]float64{}, map[string]bool{}
	for line := range strings.Lines(w.Body.String()) {
		line = strings.TrimSpace(line)
		if f, ok := strings.CutPrefix(line, "# TYPE "); ok {
			families[strings.Fields(f)[0]] = true
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples, families
}

// expect checks samples against want (series → value); a wanted value of
// -1 means the series must be absent.
func expect(t *testing.T, samples map[string]float64, want map[string]float64) {
	t.Helper()
	for _, series := range slices.Sorted(maps.Keys(want)) {
		v, ok := samples[series]
		switch {
		case want[series] == -1 && ok:
			t.Errorf("%s = %v, want it absent", series, v)
		case want[series] != -1 && !ok:
			t.Errorf("%s absent, want %v", series, want[series])
		case want[series] != -1 && v != want[series]:
			t.Errorf("%s = %v, want %v", series, v, want[series])
		}
	}
}

// TestMetricsLint: every family follows Prometheus' naming conventions
// (promlint: units, _total on counters, no camel case).
func TestMetricsLint(t *testing.T) {
	m := NewMetrics()
	s := loadExample(t)
	New(Config{Reconciler: &fakeReconciler{site: s, status: reconcile.Status{Rollout: &reconcile.RolloutStatus{Total: 1}}}, Metrics: m,
		Nodes: fakeNodes{recs: map[string]*node.Record{}}})
	m.Observe(reconcile.Status{LastErrorClass: reconcile.FailApply}, time.Second)
	problems, err := testutil.GatherAndLint(m.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// TestStatusMetrics: the rollout's progress, the pending approval and the
// times of the last pass and apply follow the reconciler's status at each
// scrape (a rollout's progress is published while it runs, before Observe).
func TestStatusMetrics(t *testing.T) {
	since := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	applied := since.Add(time.Hour)
	for _, tc := range []struct {
		name   string
		status reconcile.Status
		want   map[string]float64
	}{
		{"nothing yet", reconcile.Status{}, map[string]float64{
			"anneal_rollout_running": 0, "anneal_rollout_halted": 0, "anneal_rollout_nodes": 0, "anneal_rollout_nodes_done": 0,
			`anneal_rollout_result_nodes{result="verified"}`: 0, `anneal_rollout_result_nodes{result="failed"}`: 0,
			`anneal_rollout_result_nodes{result="decommissioned"}`: 0, `anneal_rollout_result_nodes{result="not_started"}`: 0,
			"anneal_pending_approval": 0, "anneal_pending_approval_since_timestamp_seconds": 0,
			"anneal_last_apply_timestamp_seconds": 0, "anneal_last_reconcile_timestamp_seconds": 0,
		}},
		{"a rollout running, one of three done", reconcile.Status{
			Rollout: &reconcile.RolloutStatus{Revision: "r2", Running: true, Done: 1, Total: 3},
		}, map[string]float64{
			"anneal_rollout_running": 1, "anneal_rollout_halted": 0, "anneal_rollout_nodes": 3, "anneal_rollout_nodes_done": 1,
		}},
		{"a halted rollout", reconcile.Status{
			Rollout: &reconcile.RolloutStatus{Revision: "r2", Done: 3, Total: 5, Result: rollout.Result{
				Verified: []string{"a", "b"}, Failed: map[string]string{"c": "install timed out"}, NotStarted: []string{"d", "e"},
				Halted: "canary c failed"}},
		}, map[string]float64{
			"anneal_rollout_running": 0, "anneal_rollout_halted": 1, "anneal_rollout_nodes": 5, "anneal_rollout_nodes_done": 3,
			`anneal_rollout_result_nodes{result="verified"}`: 2, `anneal_rollout_result_nodes{result="failed"}`: 1,
			`anneal_rollout_result_nodes{result="decommissioned"}`: 0, `anneal_rollout_result_nodes{result="not_started"}`: 2,
		}},
		{"a plan awaiting approval, an apply before", reconcile.Status{
			PendingApproval: &reconcile.Approval{Revision: "r3", PlanDigest: "d", Since: since},
			LastApplied:     applied, LastReconcile: applied.Add(time.Minute),
		}, map[string]float64{
			"anneal_pending_approval": 1, "anneal_pending_approval_since_timestamp_seconds": float64(since.Unix()),
			"anneal_last_apply_timestamp_seconds":     float64(applied.Unix()),
			"anneal_last_reconcile_timestamp_seconds": float64(applied.Unix() + 60),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeReconciler{}
			h := New(Config{Reconciler: f})
			f.mu.Lock()
			f.status = tc.status // after New: read at scrape time
			f.mu.Unlock()
			samples, families := scrape(t, h)
			expect(t, samples, tc.want)
			if families["anneal_nodes"] || families["anneal_nodes_drifted"] {
				t.Errorf("node families without node records: %v", families)
			}
		})
	}
}

// countingNodes is a NodeRecords that counts its reads and, when gate is
// set, blocks each until gate closes (ignoring its context, as a store
// stuck in a read would).
type countingNodes struct {
	mu    sync.Mutex
	recs  map[string]*node.Record
	err   error
	calls int
	gate  chan struct{}
}

func (n *countingNodes) NodeRecords(context.Context) (map[string]*node.Record, error) {
	n.mu.Lock()
	n.calls++
	gate := n.gate
	n.mu.Unlock()
	if gate != nil {
		<-gate
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.recs, n.err
}

func (n *countingNodes) set(recs map[string]*node.Record, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.recs, n.err = recs, err
}

func (n *countingNodes) reads() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.calls
}

// limits sets the collector's read timeout, the age of reusable counts and
// that of counts shown when a read is late or fails.
func (c *liveCollector) limits(timeout, maxAge, maxStale time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timeout, c.maxAge, c.maxStale = timeout, maxAge, maxStale
}

// TestNodeMetrics: the nodes by state (every state exposed, 0 when no
// node is in it; a node without a record is unknown; a removed node
// counts by its record) and those not verified on their desired build.
func TestNodeMetrics(t *testing.T) {
	s := loadExample(t)
	var live []*schema.Node
	for _, n := range s.Nodes {
		if n.Exists() {
			live = append(live, n)
		}
	}
	if len(live) < 5 {
		t.Fatalf("the example has %d nodes that exist, want 5", len(live))
	}
	build := func(n *schema.Node) string { return node.BuildSpecOf(s, n).ID() }
	recs := map[string]*node.Record{
		live[0].Name: {Name: live[0].Name, State: node.Verified, BuildID: build(live[0])},
		live[1].Name: {Name: live[1].Name, State: node.Verified, BuildID: "an-old-build"},
		live[2].Name: {Name: live[2].Name, State: node.Failed, BuildID: build(live[2])},
		live[3].Name: {Name: live[3].Name, State: node.Provisioning},
		"gone01":     {Name: "gone01", State: node.Retired},
		"gone02":     {Name: "gone02", State: node.Retiring},
	}
	all, existing := len(s.Nodes), len(live)
	for _, tc := range []struct {
		name string
		site *schema.Site
		want map[string]float64
	}{
		{"with a site", s, map[string]float64{
			`anneal_nodes{state="verified"}`:        2,
			`anneal_nodes{state="failed"}`:          1,
			`anneal_nodes{state="provisioning"}`:    1,
			`anneal_nodes{state="pending"}`:         0,
			`anneal_nodes{state="installed"}`:       0,
			`anneal_nodes{state="decommissioning"}`: 1,
			// gone01 (the site's decommissioned nodes have no record:
			// unknown)
			`anneal_nodes{state="decommissioned"}`: 1,
			`anneal_nodes{state="unknown"}`:        float64(all - 4),
			"anneal_nodes_drifted":                 float64(existing - 1),
		}},
		{"before a valid revision", nil, map[string]float64{
			`anneal_nodes{state="verified"}`:        2,
			`anneal_nodes{state="decommissioned"}`:  1,
			`anneal_nodes{state="decommissioning"}`: 1,
			`anneal_nodes{state="unknown"}`:         0,
			"anneal_nodes_drifted":                  -1,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := &countingNodes{recs: recs}
			h := New(Config{Reconciler: &fakeReconciler{site: tc.site}, Nodes: nodes})
			samples, _ := scrape(t, h)
			expect(t, samples, tc.want)
			expect(t, samples, map[string]float64{"anneal_node_records_read_errors_total": 0})
			var sum float64
			for series, v := range samples {
				if strings.HasPrefix(series, "anneal_nodes{") {
					sum += v
				}
			}
			if want := float64(len(recs) + len(s.Nodes) - 4); tc.site != nil && sum != want {
				t.Errorf("anneal_nodes sums to %v, want %v (every node once)", sum, want)
			}
		})
	}
}

// TestNodeMetricsStore: a read is shared by the scrapes within its age; a
// store that fails or does not answer in time leaves the node families
// out (and counts it) while the rest is served; one read at a time.
func TestNodeMetricsStore(t *testing.T) {
	s := loadExample(t)
	n := s.Nodes[0]
	recs := map[string]*node.Record{n.Name: {Name: n.Name, State: node.Failed}}
	nodes := &countingNodes{recs: recs}
	m := NewMetrics()
	h := New(Config{Reconciler: &fakeReconciler{site: s}, Metrics: m, Nodes: nodes})

	for range 3 {
		samples, _ := scrape(t, h)
		expect(t, samples, map[string]float64{`anneal_nodes{state="failed"}`: 1})
	}
	if got := nodes.reads(); got != 1 {
		t.Errorf("3 scrapes within %s read the records %d times, want once", NodeCountsMaxAge, got)
	}

	m.live.limits(time.Minute, 0, 0) // every scrape reads; no stale counts
	nodes.set(nil, errors.New("bolt: database not open"))
	samples, families := scrape(t, h)
	if families["anneal_nodes"] || families["anneal_nodes_drifted"] {
		t.Errorf("node families served from a failed read")
	}
	expect(t, samples, map[string]float64{"anneal_node_records_read_errors_total": 1, "anneal_rollout_running": 0, "anneal_suspended": 0})

	recs2 := map[string]*node.Record{n.Name: {Name: n.Name, State: node.Installed}}
	nodes.set(recs2, nil)
	samples, _ = scrape(t, h)
	expect(t, samples, map[string]float64{`anneal_nodes{state="failed"}`: 0, `anneal_nodes{state="installed"}`: 1, "anneal_node_records_read_errors_total": 1})

	// A store stuck in a read: each scrape waits for it at most the
	// timeout, and joins the read in flight rather than start another.
	gate := make(chan struct{})
	nodes.mu.Lock()
	nodes.gate = gate
	nodes.mu.Unlock()
	m.live.limits(time.Millisecond, 0, 0)
	before := nodes.reads()
	for i := range 2 {
		samples, families := scrape(t, h)
		if families["anneal_nodes"] {
			t.Errorf("scrape %d: node families while the read hangs", i)
		}
		expect(t, samples, map[string]float64{"anneal_node_records_read_errors_total": float64(2 + i), "anneal_pending_approval": 0})
	}
	// With stale counts allowed, the last ones are shown (and the late
	// read counted).
	m.live.limits(time.Millisecond, 0, time.Hour)
	samples, _ = scrape(t, h)
	expect(t, samples, map[string]float64{`anneal_nodes{state="installed"}`: 1, "anneal_node_records_read_errors_total": 4})
	if got := nodes.reads() - before; got != 1 {
		t.Errorf("%d reads while one hangs, want 1", got)
	}
	m.live.limits(time.Minute, time.Minute, time.Hour)
	nodes.set(recs, nil)
	close(gate)
	samples, _ = scrape(t, h) // the read in flight ends, with these records
	expect(t, samples, map[string]float64{`anneal_nodes{state="failed"}`: 1, `anneal_nodes{state="installed"}`: 0, "anneal_node_records_read_errors_total": 4})
}

// TestMetricsWithReconciler: a real reconciler in converge mode over the
// example site; after its pass the times of the pass and of the apply are
// exposed, the apply's at or after the pass's start.
func TestMetricsWithReconciler(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := NewMetrics()
	r := &reconcile.Reconciler{Source: dirSource(exampleSite), State: st, Mode: reconcile.ModeConverge, Observe: m.Observe,
		Targets: func(s *schema.Site) (map[string]dns.Target, error) {
			out := map[string]dns.Target{}
			for _, tg := range s.DNS.Targets {
				out[tg.Name] = &dnstest.Memory{TargetName: tg.Name}
			}
			return out, nil
		}}
	h := New(Config{Reconciler: r, Metrics: m})
	samples, _ := scrape(t, h)
	expect(t, samples, map[string]float64{"anneal_last_apply_timestamp_seconds": 0, "anneal_last_reconcile_timestamp_seconds": 0})
	r.ReconcileOnce(ctx)
	status := r.Status()
	if status.LastError != "" || status.AppliedRevision != "r1" {
		t.Fatalf("the pass: %+v", status)
	}
	samples, _ = scrape(t, h)
	start := float64(status.LastReconcile.UnixNano()) / 1e9
	if got := samples["anneal_last_reconcile_timestamp_seconds"]; got != start {
		t.Errorf("last reconcile %v, want %v", got, start)
	}
	if got := samples["anneal_last_apply_timestamp_seconds"]; got < start || got != float64(status.LastApplied.UnixNano())/1e9 {
		t.Errorf("last apply %v, want %v (at or after the pass's start %v)", got, status.LastApplied, start)
	}
}

// recordingSource is a real recorder whose subscriptions are signalled,
// and whose first refuse subscriptions are refused.
type recordingSource struct {
	*events.Recorder
	subscribed chan struct{}
	refuse     int
}

func (s *recordingSource) Subscribe(ctx context.Context, f events.Filter) (<-chan events.Event, error) {
	if s.refuse > 0 {
		s.refuse--
		s.subscribed <- struct{}{}
		return nil, events.ErrTooManySubscribers
	}
	ch, err := s.Recorder.Subscribe(ctx, f)
	s.subscribed <- struct{}{}
	return ch, err
}

// TestCountEvents: anneal_events_total counts events by kind from 0 (every
// kind exposed before its first event); a subscription dropped because
// the counter fell behind is renewed and what it missed is counted from
// the store, once; a refused one is retried.
func TestCountEvents(t *testing.T) {
	for _, refuse := range []int{0, 1} {
		t.Run(fmt.Sprintf("refused %d", refuse), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			rec := events.NewRecorder(&events.Memory{}, nil)
			src := &recordingSource{Recorder: rec, subscribed: make(chan struct{}, 4), refuse: refuse}
			m := NewMetrics()
			counted := make(chan struct{})
			m.counted = func() { counted <- struct{}{} }
			h := New(Config{Reconciler: &fakeReconciler{}, Metrics: m})
			samples, _ := scrape(t, h)
			want := map[string]float64{}
			for _, k := range events.Kinds() {
				want[fmt.Sprintf("anneal_events_total{kind=%q}", k)] = 0
			}
			expect(t, samples, want)

			done := make(chan struct{})
			go func() { defer close(done); m.CountEvents(ctx, src) }()
			for range refuse + 1 {
				<-src.subscribed
			}
			// The counter takes the first event and blocks on counted:
			// the buffer overflows and the subscription is dropped.
			const n = events.SubscriberBuffer + 2
			for i := range n {
				kind := events.NodeStep
				switch {
				case i == 0:
					kind = events.Applied
				case i == n-1:
					kind = events.RolloutHalted // always past the buffer
				case i%2 == 0:
					kind = events.DNSWritten
				}
				rec.Emit(ctx, events.Event{Kind: kind, Message: "m"})
			}
			for range n {
				<-counted
			}
			<-src.subscribed // renewed
			rec.Emit(ctx, events.Event{Kind: events.Suspended, Message: "suspended"})
			<-counted
			samples, _ = scrape(t, h)
			want[`anneal_events_total{kind="revision.applied"}`] = 1
			want[`anneal_events_total{kind="rollout.halted"}`] = 1
			want[`anneal_events_total{kind="reconcile.suspended"}`] = 1
			want[`anneal_events_total{kind="dns.written"}`] = float64((n - 2) / 2)
			want[`anneal_events_total{kind="node.step"}`] = float64(n - 2 - (n-2)/2)
			want["anneal_events_subscriptions_lost_total"] = float64(1 + refuse)
			expect(t, samples, want)
			cancel()
			<-done
		})
	}
}

// BenchmarkNodeMetrics measures a scrape that reads the node records of a
// generated site (ANNEAL_BENCH_NODES, default 10,000) from a bolt store,
// each record with its build spec: the first scrape (which also computes
// the desired builds) and then each scrape that reads the records again.
//
//	go test ./api -run '^$' -bench NodeMetrics -benchtime 5x
func BenchmarkNodeMetrics(b *testing.B) {
	nodes := 10000
	if v := os.Getenv("ANNEAL_BENCH_NODES"); v != "" {
		nodes, _ = strconv.Atoi(v)
	}
	dir := b.TempDir()
	if _, err := gen.Generate(dir, gen.Options{Nodes: nodes}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	s, _, err := schema.LoadDir(ctx, dir, schema.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(b.TempDir(), "state.db"), time.Second)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	names := make([]string, len(s.Nodes))
	for i, n := range s.Nodes {
		names[i] = n.Name
	}
	err = st.UpdateNodes(ctx, names, func(rec *node.Record) error {
		spec := node.BuildSpecOf(s, s.Node(rec.Name))
		rec.State, rec.BuildID, rec.Spec, rec.Since = node.Verified, spec.ID(), &spec, time.Now()
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	m := NewMetrics()
	h := New(Config{Reconciler: &fakeReconciler{site: s}, Metrics: m, Nodes: st})
	m.live.limits(time.Minute, 0, 0)
	t0 := time.Now()
	samples, _ := scrape(b, h)
	first := time.Since(t0)
	if samples[`anneal_nodes{state="verified"}`] != float64(len(s.Nodes)) || samples["anneal_nodes_drifted"] != 0 {
		b.Fatalf("%d nodes: %v verified, %v drifted", len(s.Nodes), samples[`anneal_nodes{state="verified"}`], samples["anneal_nodes_drifted"])
	}
	b.ResetTimer()
	for range b.N {
		scrape(b, h)
	}
	b.ReportMetric(first.Seconds(), "first_scrape_s")
}

// TestRolloutMetricsLive: a real reconciler's rollout (rack e1 on an older
// patch set) is visible on /metrics while it runs, not only once the pass
// ends: running, with its nodes; then, the canary failing (no BMC), halted
// with the failed node among the nodes by state.
func TestRolloutMetricsLive(t *testing.T) {
	site := loadExample(t)
	nodes := &nodetest.Store{Recs: map[string]*node.Record{}}
	now := time.Now()
	rack := 0
	for _, n := range site.Nodes {
		if !n.Exists() {
			continue
		}
		spec := node.BuildSpecOf(site, n)
		if n.Region == "east" && n.Rack == "e1" {
			spec.PatchSet.Name = "older"
			rack++
		}
		nodes.Recs[n.Name] = &node.Record{Name: n.Name, State: node.Verified, Since: now, BuildID: spec.ID(), Spec: &spec, BuiltAt: now}
	}
	if rack < 2 {
		t.Fatalf("the example site's rack east/e1 has %d nodes, want 2 or more", rack)
	}
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	started, release := make(chan string), make(chan struct{})
	var once sync.Once
	m := NewMetrics()
	r := &reconcile.Reconciler{Source: dirSource(exampleSite), State: st, Mode: reconcile.ModeConverge, Observe: m.Observe,
		Targets: func(s *schema.Site) (map[string]dns.Target, error) {
			out := map[string]dns.Target{}
			for _, tg := range s.DNS.Targets {
				out[tg.Name] = &dnstest.Memory{TargetName: tg.Name}
			}
			return out, nil
		},
		Rebuild: &reconcile.RebuildConfig{Nodes: nodes, FirmwareEvery: -1,
			BMC: func(node.BMCAccess) (node.BMC, error) { return nil, errors.New("no BMC in this test") },
			Progress: func(e rollout.Event) {
				if e.Step == rollout.StepLeave {
					once.Do(func() { started <- e.Node; <-release })
				}
			}}}
	m.live.limits(time.Minute, 0, 0)
	h := New(Config{Reconciler: r, Metrics: m, Nodes: nodes})
	passed := make(chan struct{})
	go func() { defer close(passed); r.ReconcileOnce(context.Background()) }()
	canary := <-started
	samples, _ := scrape(t, h)
	expect(t, samples, map[string]float64{"anneal_rollout_running": 1, "anneal_rollout_nodes": float64(rack), "anneal_rollout_nodes_done": 0,
		"anneal_rollout_halted": 0, "anneal_reconciles_total": 0, "anneal_nodes_drifted": float64(rack)})
	close(release)
	<-passed
	samples, _ = scrape(t, h)
	expect(t, samples, map[string]float64{"anneal_rollout_running": 0, "anneal_rollout_nodes": float64(rack), "anneal_rollout_halted": 1,
		`anneal_rollout_result_nodes{result="failed"}`: 1, `anneal_rollout_result_nodes{result="not_started"}`: float64(rack - 1),
		`anneal_nodes{state="failed"}`: 1, "anneal_reconciles_total": 1, `anneal_reconcile_failures_total{class="apply"}`: 1})
	if st := r.Status(); st.Rollout == nil || st.Rollout.Failed[canary] == "" {
		t.Errorf("the canary %s did not fail: %+v", canary, st.Rollout)
	}
}
