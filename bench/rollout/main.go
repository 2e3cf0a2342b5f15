// Command rollout measures the rollout engine's own overhead: it runs
// rollout.Engine over a generated site's first rebuild plan against a
// simulated fleet and the real bbolt node store, and compares the wall time
// with the ideal schedule of the same policies.
//
//	go run ./bench/rollout -nodes 10000 -bmc-latency 200ms -install 2s
//
// The fleet is a node.BMC per node whose calls sleep -bmc-latency
// (BootOnce one call; a power cycle two, as providers/bmc reads the power
// state before it resets). A power cycle after a one-time PXE boot
// "installs" the armed build: after -install it writes the install
// callback as pxe/boot does (state installed, nonce cleared, facts of the
// node's build spec) and wakes the rollout. DNS is not managed (SyncDNS
// nil).
//
// Figures: wall (Engine.Run), ideal (rounds of the ideal schedule, see
// package ideal, × one node's simulated time: 3 BMC latencies + install),
// overhead = (wall − ideal) / wall, the process's CPU time (getrusage) as a
// share of wall, store calls, peak RSS, and per-node step latencies from the
// rollout's progress events, which say where the overhead goes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anneal-dev/anneal/bench/rollout/ideal"
	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/rollout"
	"github.com/anneal-dev/anneal/schema"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "rollout:", err)
		os.Exit(1)
	}
}

type options struct {
	nodes                int
	seed                 uint64
	latency, install     time.Duration
	poll                 time.Duration
	pol                  gen.Policies
	cpuProfile, blockPro string
	keep                 bool
}

func run(args []string, out io.Writer) error {
	fl := flag.NewFlagSet("rollout", flag.ContinueOnError)
	var o options
	fl.IntVar(&o.nodes, "nodes", 10000, "nodes in the generated site")
	fl.Uint64Var(&o.seed, "seed", 1, "sitegen seed")
	fl.DurationVar(&o.latency, "bmc-latency", 200*time.Millisecond, "latency of every BMC call")
	fl.DurationVar(&o.install, "install", 2*time.Second, "from the power cycle to the install callback")
	fl.DurationVar(&o.poll, "poll", 0, "the rollout's poll interval (0: reconcile.DefaultPollInterval)")
	fl.IntVar(&o.pol.Canaries, "canaries", 1, "policy canaries")
	fl.StringVar(&o.pol.PerRack, "per-rack", "10%", "policy maxUnavailable.perRack (count or percentage; empty: none)")
	perRole := fl.String("per-role", "10%", "policy maxUnavailable.perRole: one bound for every role (compute, storage, ingress, api), or role=bound,...; empty: none")
	fl.IntVar(&o.pol.MaxConcurrentInstalls, "max-installs", 500, "policy maxConcurrentInstalls")
	fl.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of Rollout.Run to this file")
	fl.StringVar(&o.blockPro, "blockprofile", "", "write a blocking profile of Rollout.Run to this file")
	fl.BoolVar(&o.keep, "keep", false, "keep the temporary directory (site and state)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fl.Args())
	}
	var err error
	if o.pol.PerRole, err = parsePerRole(*perRole); err != nil {
		return err
	}
	return bench(o, out)
}

// parsePerRole reads "10%" (every generated role) or "compute=10%,api=1".
func parsePerRole(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	out := map[string]string{}
	if !strings.Contains(s, "=") {
		for _, r := range []string{"compute", "storage", "ingress", "api"} {
			out[r] = s
		}
		return out, nil
	}
	for kv := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("-per-role %q: want BOUND, or ROLE=BOUND pairs separated by commas", s)
		}
		out[k] = v
	}
	return out, nil
}

func bench(o options, out io.Writer) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "anneal-bench-rollout-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(out, "work directory:", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	t := time.Now()
	if _, err := gen.Generate(filepath.Join(dir, "site"), gen.Options{Nodes: o.nodes, Seed: o.seed, Policies: &o.pol}); err != nil {
		return err
	}
	site, diags, err := schema.LoadDir(ctx, filepath.Join(dir, "site"), schema.LoadOptions{})
	if err != nil {
		return err
	}
	if len(diags) > 0 {
		return fmt.Errorf("generated site: %d diagnostics, first: %v", len(diags), diags[0])
	}
	setup := time.Since(t)

	st, err := bolt.Open(filepath.Join(dir, "state.db"), time.Second)
	if err != nil {
		return err
	}
	defer st.Close()
	store := &countingStore{Store: st}
	wake := &rollout.Waker{}
	f := &fleet{site: site, store: store, wake: wake, latency: o.latency, install: o.install}
	tr := newTracker(site)

	t = time.Now()
	plan := rollout.PlanRebuilds(site, nil, time.Now())
	planTime := time.Since(t)
	sched := ideal.Of(site, plan)
	nodeTime := 3*o.latency + o.install
	idealWall := time.Duration(sched.Rounds()) * nodeTime

	// The fleet stores only the install callback, not pxe/boot's marks of
	// the script and install fetches: the netboot timeout (power cycle →
	// script fetched) is set as long as the install timeout, so that no
	// node is cycled again for want of a mark.
	timeout := 10*time.Minute + 10*nodeTime
	ro := &rollout.Engine{Site: site, Nodes: store, Wake: wake, PollInterval: o.poll,
		InstallTimeout: timeout, NetbootTimeout: timeout,
		BMC:      func(n *schema.Node) (node.BMC, error) { return &fakeBMC{f: f, node: n}, nil },
		Progress: tr.event}

	fmt.Fprintf(out, "site: %d nodes (%d to rebuild, %d held), generated and loaded in %s; PlanRebuilds %s\n",
		len(site.Nodes), len(plan.Rebuilds), len(plan.Held), setup.Round(time.Millisecond), planTime.Round(time.Millisecond))
	pol := site.Config.Policies
	fmt.Fprintf(out, "policies: canaries %d, maxUnavailable perRack %s perRole %s, maxConcurrentInstalls %d\n",
		pol.Canaries, bound(pol.MaxUnavailable.PerRack), perRoleString(pol.MaxUnavailable.PerRole), sched.Budget)
	fmt.Fprintf(out, "one node: BootOnce + power-state read + reset = 3 × %s, install %s: %s\n", o.latency, o.install, nodeTime)
	fmt.Fprintf(out, "ideal schedule: %d round(s) of the first wave %v, %d round(s) after it %v, %d blocked\n",
		len(sched.First), sched.First, len(sched.Rest), sched.Rest, sched.Blocked)

	if o.cpuProfile != "" {
		pf, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
	}
	if o.blockPro != "" {
		runtime.SetBlockProfileRate(int(time.Millisecond))
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := cpuTime()
	start := time.Now()
	tr.start = start
	res, err := ro.Run(ctx, plan)
	wall := time.Since(start)
	tr.end = start.Add(wall)
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&ms1)
	if o.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if o.blockPro != "" {
		if err := writeProfile("block", o.blockPro); err != nil {
			return err
		}
	}
	f.wg.Wait()
	if err != nil {
		return err
	}
	if err := res.Err(); err != nil {
		return fmt.Errorf("rollout: %w", err)
	}
	if len(res.Verified) != len(plan.Rebuilds) {
		return fmt.Errorf("%d verified of %d", len(res.Verified), len(plan.Rebuilds))
	}
	recs, err := st.NodeRecords(ctx)
	if err != nil {
		return err
	}
	if again := rollout.PlanRebuilds(site, recs, time.Now()); len(again.Rebuilds) > 0 {
		return fmt.Errorf("not converged: the next plan rebuilds %d nodes (first %s)", len(again.Rebuilds), again.Rebuilds[0].Node)
	}
	if n := f.refused.Load(); n > 0 {
		return fmt.Errorf("%d install callbacks refused (node not armed)", n)
	}

	overhead := (wall - idealWall).Seconds() / wall.Seconds()
	updates, callbacks := store.updates.Load(), f.callbacks.Load()
	fmt.Fprintf(out, "\n| %d nodes, latency %s, install %s | figure |\n|---|---:|\n", o.nodes, o.latency, o.install)
	fmt.Fprintf(out, "| wall (Engine.Run) | %.2f s |\n", wall.Seconds())
	fmt.Fprintf(out, "| ideal (%d rounds × %s) | %.2f s |\n", sched.Rounds(), nodeTime, idealWall.Seconds())
	fmt.Fprintf(out, "| overhead (wall − ideal) / wall | %.1f%% |\n", 100*overhead)
	fmt.Fprintf(out, "| process CPU (user+sys) / wall | %.2f s / %.2f s = %.1f%% |\n", cpu.Seconds(), wall.Seconds(), 100*cpu.Seconds()/wall.Seconds())
	fmt.Fprintf(out, "| store writes (UpdateNode): engine + install callbacks | %d + %d = %d (%.1f a node) |\n",
		updates-callbacks, callbacks, updates, float64(updates)/float64(len(plan.Rebuilds)))
	fmt.Fprintf(out, "| store reads: NodeRecord + NodeRecords | %d + %d |\n", store.reads.Load(), store.scans.Load())
	fmt.Fprintf(out, "| allocated during the run | %.0f MiB (%d GCs) |\n", float64(ms1.TotalAlloc-ms0.TotalAlloc)/(1<<20), ms1.NumGC-ms0.NumGC)
	fmt.Fprintf(out, "| peak RSS (getrusage) | %.0f MiB |\n", float64(peakRSS())/(1<<20))
	store.report(out, wall)
	tr.report(out, &f.callbackAt, o.latency, o.install)
	return nil
}

func writeProfile(name, file string) error {
	pf, err := os.Create(file)
	if err != nil {
		return err
	}
	defer pf.Close()
	return pprof.Lookup(name).WriteTo(pf, 0)
}

func bound(p schema.IntOrPercent) string {
	if p.Value == 0 {
		return "none"
	}
	if p.Percent {
		return fmt.Sprintf("%d%%", p.Value)
	}
	return fmt.Sprint(p.Value)
}

func perRoleString(m map[string]schema.IntOrPercent) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, r := range slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}) {
		parts = append(parts, r+" "+bound(m[r]))
	}
	return strings.Join(parts, ", ")
}

// countingStore counts the engine's and the callbacks' store calls and
// times each write by the state it leaves (pending: leave-groups,
// provisioning: arm, installed: the callback, verified: verify).
type countingStore struct {
	node.Store
	updates, reads, scans atomic.Int64
	mu                    sync.Mutex
	writes                map[node.State]*latency
	// leaves are the leave-groups writes' spans.
	leaves [][2]time.Time
}

type latency struct {
	n          int
	sum, worst time.Duration
}

func (c *countingStore) NodeRecords(ctx context.Context) (map[string]*node.Record, error) {
	c.scans.Add(1)
	return c.Store.NodeRecords(ctx)
}

func (c *countingStore) NodeRecord(ctx context.Context, name string) (*node.Record, error) {
	c.reads.Add(1)
	return c.Store.NodeRecord(ctx, name)
}

func (c *countingStore) UpdateNode(ctx context.Context, name string, fn func(*node.Record) error) error {
	c.updates.Add(1)
	t := time.Now()
	var state node.State
	err := c.Store.UpdateNode(ctx, name, func(r *node.Record) error {
		err := fn(r)
		state = r.State
		return err
	})
	d := time.Since(t)
	c.mu.Lock()
	if c.writes == nil {
		c.writes = map[node.State]*latency{}
	}
	l := c.writes[state]
	if l == nil {
		l = &latency{}
		c.writes[state] = l
	}
	l.n++
	l.sum += d
	l.worst = max(l.worst, d)
	if state == node.Pending {
		c.leaves = append(c.leaves, [2]time.Time{t, t.Add(d)})
	}
	c.mu.Unlock()
	return err
}

// report prints the writes' latencies, and how long leave-groups writes
// were in flight: the scheduler makes them before it starts a batch, and
// starts nothing while they last.
func (c *countingStore) report(out io.Writer, wall time.Duration) {
	fmt.Fprintf(out, "\n| store write (bbolt Batch) | writes | mean | max | sum |\n|---|---:|---:|---:|---:|\n")
	for _, k := range []struct {
		state node.State
		what  string
	}{
		{node.Pending, "leave-groups → pending (the scheduler, before a batch starts)"},
		{node.Provisioning, "arm → provisioning (a node's rebuild)"},
		{node.Installed, "install callback → installed (the fleet)"},
		{node.Verified, "verify → verified (a node's rebuild)"},
	} {
		if l := c.writes[k.state]; l != nil {
			fmt.Fprintf(out, "| %s | %d | %s | %s | %.2f s |\n", k.what, l.n, fmtDur(l.sum/time.Duration(l.n)), fmtDur(l.worst), l.sum.Seconds())
		}
	}
	slices.SortFunc(c.leaves, func(a, b [2]time.Time) int { return a[0].Compare(b[0]) })
	var busy time.Duration
	var end time.Time
	for _, s := range c.leaves {
		switch {
		case s[0].After(end):
			busy += s[1].Sub(s[0])
			end = s[1]
		case s[1].After(end):
			busy += s[1].Sub(end)
			end = s[1]
		}
	}
	fmt.Fprintf(out, "\nleave-groups writes in flight (union of their spans): %.2f s, %.0f%% of wall; the scheduler starts no node meanwhile\n",
		busy.Seconds(), 100*busy.Seconds()/wall.Seconds())
}

// fleet plays the nodes behind the BMCs.
type fleet struct {
	site             *schema.Site
	store            node.Store
	wake             *rollout.Waker
	latency, install time.Duration
	wg               sync.WaitGroup
	cycles           atomic.Int64
	callbacks        atomic.Int64
	refused          atomic.Int64
	// callbackAt is when each node's install callback was stored.
	callbackAt sync.Map
}

type fakeBMC struct {
	f    *fleet
	node *schema.Node
	pxe  bool
}

// wait sleeps n BMC round trips.
func (b *fakeBMC) wait(ctx context.Context, n int) error {
	if b.f.latency <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(time.Duration(n) * b.f.latency)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *fakeBMC) PowerState(ctx context.Context) (node.PowerState, error) {
	return node.PowerOn, b.wait(ctx, 1)
}

func (b *fakeBMC) Firmware(ctx context.Context) (node.Firmware, error) {
	return node.Firmware{}, b.wait(ctx, 1)
}

func (b *fakeBMC) BootOnce(ctx context.Context, d node.BootDevice) error {
	if err := b.wait(ctx, 1); err != nil {
		return err
	}
	b.pxe = d == node.BootPXE
	return nil
}

// SetPower: a cycle is two round trips (providers/bmc reads the power
// state first); after a one-time PXE boot the node installs.
func (b *fakeBMC) SetPower(ctx context.Context, a node.PowerAction) error {
	if a != node.ActionCycle {
		return b.wait(ctx, 1)
	}
	if err := b.wait(ctx, 2); err != nil {
		return err
	}
	if b.pxe {
		b.pxe = false
		b.f.cycles.Add(1)
		b.f.wg.Add(1)
		go b.f.installNode(b.node)
	}
	return nil
}

// installNode is the node's netboot and install, then the install callback
// as pxe/boot stores it.
func (f *fleet) installNode(n *schema.Node) {
	defer f.wg.Done()
	time.Sleep(f.install)
	spec := node.BuildSpecOf(f.site, n)
	facts := node.FactsOfBuild(spec)
	err := f.store.UpdateNode(context.Background(), n.Name, func(r *node.Record) error {
		if r.State != node.Provisioning || r.Nonce == "" || r.Target != spec.ID() {
			return errors.New("not armed")
		}
		now := time.Now()
		r.State, r.Reason, r.Since, r.Nonce, r.InstallFetched = node.Installed, "", now, "", now
		// The new agent's first report, at once: it confirms the install.
		r.Facts, r.FactsAt, r.FactsFrom, r.FactsBuild = &facts, now, node.ReportAgent, spec.ID()
		return nil
	})
	f.callbacks.Add(1)
	if err != nil {
		f.refused.Add(1)
		return
	}
	f.callbackAt.Store(n.Name, time.Now())
	f.wake.Notify(n.Name)
}

// tracker keeps each node's step times from the rollout's events.
type tracker struct {
	start, end time.Time
	mu         sync.Mutex
	steps      map[string]map[string]time.Time
	names      []string
}

func newTracker(site *schema.Site) *tracker {
	return &tracker{steps: make(map[string]map[string]time.Time, len(site.Nodes))}
}

func (t *tracker) event(e rollout.Event) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.steps[e.Node]
	if m == nil {
		m = map[string]time.Time{}
		t.steps[e.Node] = m
		t.names = append(t.names, e.Node)
	}
	m[e.Step] = now
}

// stepCallback names the install callback's store time in a node's steps.
const stepCallback = "callback-stored"

// report prints the mean and worst time of each step over the nodes.
func (t *tracker) report(out io.Writer, callbacks *sync.Map, latency, install time.Duration) {
	callbacks.Range(func(k, v any) bool {
		if m := t.steps[k.(string)]; m != nil {
			m[stepCallback] = v.(time.Time)
		}
		return true
	})
	spans := []struct {
		name, from, to string
		expect         time.Duration
	}{
		{"leave-groups → netboot armed (the batch's leave writes, then the arm write)", rollout.StepLeave, rollout.StepArm, 0},
		{"netboot armed → power cycled (BootOnce, power cycle)", rollout.StepArm, rollout.StepPower, 3 * latency},
		{"power cycled → install callback stored (install, callback write)", rollout.StepPower, stepCallback, install},
		{"callback stored → installed seen (wake, record read)", stepCallback, rollout.StepInstalled, 0},
		{"installed seen → verified (verify write, the scheduler's pick-up)", rollout.StepInstalled, rollout.StepVerified, 0},
		{"leave-groups → verified (one node's rebuild)", rollout.StepLeave, rollout.StepVerified, 3*latency + install},
	}
	fmt.Fprintf(out, "\n| per node (%d nodes) | mean | max | simulated |\n|---|---:|---:|---:|\n", len(t.names))
	for _, s := range spans {
		var sum, worst time.Duration
		n := 0
		for _, name := range t.names {
			m := t.steps[name]
			a, ok1 := m[s.from]
			b, ok2 := m[s.to]
			if !ok1 || !ok2 {
				continue
			}
			d := b.Sub(a)
			sum += d
			worst = max(worst, d)
			n++
		}
		if n > 0 {
			fmt.Fprintf(out, "| %s | %s | %s | %s |\n", s.name, fmtDur(sum/time.Duration(n)), fmtDur(worst), fmtDur(s.expect))
		}
	}
	var firstLeave, lastVerified time.Time
	for _, name := range t.names {
		m := t.steps[name]
		if l, ok := m[rollout.StepLeave]; ok && (firstLeave.IsZero() || l.Before(firstLeave)) {
			firstLeave = l
		}
		if v := m[rollout.StepVerified]; v.After(lastVerified) {
			lastVerified = v
		}
	}
	fmt.Fprintf(out, "\nfirst leave-groups %s after Run began; Run returned %s after the last verified\n",
		fmtDur(firstLeave.Sub(t.start)), fmtDur(t.end.Sub(lastVerified)))
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	}
}
