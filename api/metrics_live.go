package api

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
	"github.com/prometheus/client_golang/prometheus"
)

// The live metrics are read at scrape time, so that they are current
// while a pass runs (a rollout takes hours; Observe runs at its end):
// the rollout's progress, the pending approval and the times of the last
// pass and apply from the reconciler's status (a copy taken under its
// lock), and the nodes by state from the node records.
//
// Reading the records of 10,000 nodes from bolt takes 1 to 2 s (JSON
// decoding; BenchmarkNodeMetrics), so a read is shared: scrapes within
// NodeCountsMaxAge of a successful read reuse its counts, concurrent
// scrapes wait for the same read, and at most one read runs at a time. A
// scrape waits NodeReadTimeout for it at most (the read's context has
// that deadline too, for stores that honour it). A scrape that gets no
// fresh counts (the read is late or failed) is counted in
// anneal_node_records_read_errors_total and shows the last counts if they
// are under NodeCountsMaxStale old (a read that outlasts the timeout
// serves the next scrape), else leaves the node families out, rather
// than show them stale; the other families are served as usual.
const (
	NodeCountsMaxAge   = 30 * time.Second
	NodeCountsMaxStale = 5 * time.Minute
	NodeReadTimeout    = 5 * time.Second
)

// nodeStates are the node.State values, as the label of anneal_nodes
// (node.Unknown is "unknown").
var nodeStates = []node.State{node.Unknown, node.Pending, node.Provisioning, node.Installed, node.Verified, node.Failed, node.Retiring, node.Retired}

func stateLabel(s node.State) string {
	if s == node.Unknown {
		return "unknown"
	}
	for _, known := range nodeStates {
		if s == known {
			return string(s)
		}
	}
	return "unknown" // a state this release does not know: bounded labels
}

// rolloutResults are the labels of anneal_rollout_result_nodes, in the
// order Collect counts them.
var rolloutResults = []string{"verified", "failed", "decommissioned", "not_started"}

// liveSource is what the live collector reads.
type liveSource struct {
	r     Reconciler
	nodes NodeRecords // nil: no node records (rebuilds not enabled)
}

// nodeCounts are the nodes by state, and those not on their desired build
// (-1: unknown, no valid site loaded).
type nodeCounts struct {
	states  map[string]int
	drifted int
}

type liveCollector struct {
	nodesDesc, driftedDesc                                   *prometheus.Desc
	runningDesc, haltedDesc, totalDesc, doneDesc, resultDesc *prometheus.Desc
	pendingDesc, pendingSinceDesc                            *prometheus.Desc
	lastApplyDesc, lastReconcileDesc                         *prometheus.Desc
	readErrors                                               prometheus.Counter

	mu        sync.Mutex
	src       *liveSource
	timeout   time.Duration
	maxAge    time.Duration
	maxStale  time.Duration
	reading   chan struct{} // closed when the read in flight ends; nil when none runs
	counts    *nodeCounts   // of the last successful read
	countedAt time.Time     // when it ended
	readErr   error         // of the last read (nil: it succeeded)
	// The desired builds of a site, computed once per site (read and
	// written only by the read in flight: one at a time).
	buildsOf *schema.Site
	builds   map[string]string
}

func newLiveCollector() *liveCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &liveCollector{
		nodesDesc: d("anneal_nodes", "Nodes by lifecycle state (the site's nodes, and the records of nodes it no longer declares); "+
			"unknown: anneal has never built or heard from it.", "state"),
		driftedDesc: d("anneal_nodes_drifted", "Nodes the site declares (not decommissioned) that are not verified on their desired build."),
		runningDesc: d("anneal_rollout_running", "1 while a rollout runs."),
		haltedDesc:  d("anneal_rollout_halted", "1 when the last rollout halted (it resumes for the same revision only after a retry)."),
		totalDesc:   d("anneal_rollout_nodes", "Nodes the last (or running) rollout rebuilds or decommissions."),
		doneDesc:    d("anneal_rollout_nodes_done", "Nodes of the last (or running) rollout that are done (verified, failed or decommissioned)."),
		resultDesc:  d("anneal_rollout_result_nodes", "Nodes of the last finished rollout by result.", "result"),
		pendingDesc: d("anneal_pending_approval", "1 while a plan with a guarded change waits for anneal approve."),
		pendingSinceDesc: d("anneal_pending_approval_since_timestamp_seconds",
			"When the plan that waits for approval began to wait (Unix time; 0 when none waits)."),
		lastApplyDesc: d("anneal_last_apply_timestamp_seconds",
			"When a pass last applied the applied revision successfully (Unix time; 0 before the first)."),
		lastReconcileDesc: d("anneal_last_reconcile_timestamp_seconds", "When the last finished pass started (Unix time; 0 before the first)."),
		readErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "anneal_node_records_read_errors_total",
			Help: "Scrapes whose node records could not be read in time (the node families are left out of them)."}),
		timeout:  NodeReadTimeout,
		maxAge:   NodeCountsMaxAge,
		maxStale: NodeCountsMaxStale,
	}
}

// serve makes the live metrics read r and nodes (New calls it).
func (m *Metrics) serve(r Reconciler, nodes NodeRecords) {
	m.live.mu.Lock()
	defer m.live.mu.Unlock()
	m.live.src = &liveSource{r: r, nodes: nodes}
}

// Describe implements prometheus.Collector.
func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.nodesDesc, c.driftedDesc, c.runningDesc, c.haltedDesc, c.totalDesc, c.doneDesc,
		c.resultDesc, c.pendingDesc, c.pendingSinceDesc, c.lastApplyDesc, c.lastReconcileDesc} {
		ch <- d
	}
	c.readErrors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *liveCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	src := c.src
	c.mu.Unlock()
	defer c.readErrors.Collect(ch)
	if src == nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	st := src.r.Status()
	ro := st.Rollout
	if ro == nil {
		ro = &reconcile.RolloutStatus{}
	}
	gauge(c.runningDesc, bit(ro.Running))
	gauge(c.haltedDesc, bit(ro.Halted != ""))
	gauge(c.totalDesc, float64(ro.Total))
	gauge(c.doneDesc, float64(ro.Done))
	for i, n := range []int{len(ro.Verified), len(ro.Failed), len(ro.Decommissioned), len(ro.NotStarted)} {
		gauge(c.resultDesc, float64(n), rolloutResults[i])
	}
	var since time.Time
	if st.PendingApproval != nil {
		since = st.PendingApproval.Since
	}
	gauge(c.pendingDesc, bit(st.PendingApproval != nil))
	gauge(c.pendingSinceDesc, unix(since))
	gauge(c.lastApplyDesc, unix(st.LastApplied))
	gauge(c.lastReconcileDesc, unix(st.LastReconcile))

	if src.nodes == nil {
		return // no node records: nothing is known of the nodes
	}
	counts, err := c.nodeCounts(src)
	if err != nil {
		c.readErrors.Inc()
		if counts = c.recentCounts(); counts == nil {
			return
		}
	}
	for _, s := range nodeStates {
		gauge(c.nodesDesc, float64(counts.states[stateLabel(s)]), stateLabel(s))
	}
	if counts.drifted >= 0 {
		gauge(c.driftedDesc, float64(counts.drifted))
	}
}

// errReadTimeout: the node records were not read within the timeout.
var errReadTimeout = errors.New("the node records were not read in time")

// nodeCounts returns fresh counts: a recent read's, or those of the read in
// flight (started if none runs), waiting for it at most c.timeout.
func (c *liveCollector) nodeCounts(src *liveSource) (*nodeCounts, error) {
	c.mu.Lock()
	if c.reading == nil && c.readErr == nil && c.counts != nil && time.Since(c.countedAt) < c.maxAge {
		defer c.mu.Unlock()
		return c.counts, nil
	}
	timeout := c.timeout
	if c.reading == nil {
		done := make(chan struct{})
		c.reading = done
		go c.read(src, timeout, done)
	}
	done := c.reading
	c.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		return nil, fmt.Errorf("%w (%s)", errReadTimeout, timeout)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readErr != nil {
		return nil, c.readErr
	}
	return c.counts, nil
}

// read reads the records and counts them, then publishes the counts and
// closes done. It is the only read in flight.
func (c *liveCollector) read(src *liveSource, timeout time.Duration, done chan struct{}) {
	defer close(done)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	site := src.r.Site()
	recs, err := src.nodes.NodeRecords(ctx)
	var counts *nodeCounts
	if err == nil {
		if site != c.buildsOf {
			c.buildsOf, c.builds = site, desiredBuilds(site)
		}
		counts = countNodes(site, c.builds, recs)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reading, c.readErr = nil, err
	if err == nil {
		c.counts, c.countedAt = counts, time.Now()
	}
}

// recentCounts returns the last counts if they are under c.maxStale old,
// else nil.
func (c *liveCollector) recentCounts() *nodeCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil || time.Since(c.countedAt) >= c.maxStale {
		return nil
	}
	return c.counts
}

// desiredBuilds are the build ids of a site's nodes, by name (nil site:
// none).
func desiredBuilds(s *schema.Site) map[string]string {
	if s == nil {
		return nil
	}
	builds := make(map[string]string, len(s.Nodes))
	for _, n := range s.Nodes {
		builds[n.Name] = node.BuildSpecOf(s, n).ID()
	}
	return builds
}

// countNodes counts the site's nodes by the state of their records
// (unknown without one), the records of nodes the site does not declare
// by theirs, and the nodes the site declares (not decommissioned) that are
// not verified on their desired build (-1 without a site).
func countNodes(s *schema.Site, builds map[string]string, recs map[string]*node.Record) *nodeCounts {
	c := &nodeCounts{states: map[string]int{}, drifted: -1}
	if s != nil {
		c.drifted = 0
		for _, n := range s.Nodes {
			rec := recs[n.Name]
			state := node.Unknown
			if rec != nil {
				state = rec.State
			}
			c.states[stateLabel(state)]++
			if n.Exists() && (rec == nil || rec.State != node.Verified || rec.BuildID != builds[n.Name]) {
				c.drifted++
			}
		}
	}
	for name, rec := range recs {
		if _, declared := builds[name]; !declared && rec != nil {
			c.states[stateLabel(rec.State)]++
		}
	}
	return c
}

func bit(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// unix is t in Unix seconds, 0 for the zero time.
func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}
