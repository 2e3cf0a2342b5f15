package rollout

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/node/nodetest"
	"github.com/anneal-dev/anneal/schema"
)

// fakeFleet plays the nodes behind the BMCs: a power cycle with a
// one-time PXE boot "installs" the armed build after a delay and reports
// it, as the boot server would record it. It tracks how many nodes are
// down at once per rack.
type fakeFleet struct {
	t       *testing.T
	site    *schema.Site
	store   *nodetest.Store
	wake    *Waker
	delay   time.Duration
	badNode map[string]bool // reports facts with a VLAN missing
	silent  map[string]bool // never calls back
	mute    map[string]bool // calls back, but its agent never reports
	lost    map[string]int  // power cycles whose netboot is lost (booted the disk)

	mu       sync.Mutex
	cycles   map[string]int
	down     map[string]int // per rack, now
	maxDown  map[string]int
	order    []string // nodes in power-cycle order
	finished map[string]time.Time
}

type fakeBMC struct {
	f    *fakeFleet
	node *schema.Node
	pxe  bool
}

func (b *fakeBMC) PowerState(context.Context) (node.PowerState, error) { return node.PowerOn, nil }
func (b *fakeBMC) Firmware(context.Context) (node.Firmware, error)     { return node.Firmware{}, nil }
func (b *fakeBMC) BootOnce(_ context.Context, d node.BootDevice) error {
	b.pxe = d == node.BootPXE
	return nil
}

func (b *fakeBMC) SetPower(ctx context.Context, a node.PowerAction) error {
	if a != node.ActionCycle {
		return nil
	}
	if !b.pxe {
		b.f.t.Errorf("%s power-cycled without a one-time PXE boot", b.node.Name)
	}
	b.f.start(b.node)
	return nil
}

func (f *fakeFleet) start(n *schema.Node) {
	f.mu.Lock()
	f.cycles[n.Name]++
	f.order = append(f.order, n.Name)
	f.down[n.Rack]++
	f.maxDown[n.Rack] = max(f.maxDown[n.Rack], f.down[n.Rack])
	f.mu.Unlock()
	if f.silent[n.Name] {
		return
	}
	f.mu.Lock()
	lost := f.lost[n.Name] > 0
	if lost {
		f.lost[n.Name]--
		f.down[n.Rack]--
	}
	f.mu.Unlock()
	if lost {
		return
	}
	_ = f.store.UpdateNode(context.Background(), n.Name, func(r *node.Record) error {
		r.Netbooted, r.InstallFetched = time.Now(), time.Now()
		return nil
	})
	go func() {
		time.Sleep(f.delay)
		spec := node.BuildSpecOf(f.site, n)
		facts := node.FactsOfBuild(spec)
		if f.badNode[n.Name] {
			facts.Interfaces = slices.DeleteFunc(facts.Interfaces, func(i node.FactInterface) bool { return i.Kind == node.KindVLAN })
		}
		f.mu.Lock()
		f.down[n.Rack]--
		f.finished[n.Name] = time.Now()
		f.mu.Unlock()
		err := f.store.UpdateNode(context.Background(), n.Name, func(r *node.Record) error {
			if r.State != node.Provisioning || r.Nonce == "" {
				return errors.New("not armed")
			}
			r.State, r.Since, r.Nonce = node.Installed, time.Now(), ""
			r.Facts, r.FactsAt, r.FactsFrom, r.FactsBuild = &facts, time.Now(), node.ReportInstalled, spec.ID()
			return nil
		})
		if err != nil {
			f.t.Errorf("%s callback: %v", n.Name, err)
		}
		f.wake.Notify(n.Name)
		if f.mute[n.Name] {
			return
		}
		// The installed system's agent reports, as the boot server stores it.
		_ = f.store.UpdateNode(context.Background(), n.Name, func(r *node.Record) error {
			r.Facts, r.FactsAt, r.FactsFrom, r.FactsBuild = &facts, time.Now(), node.ReportAgent, spec.ID()
			return nil
		})
		f.wake.Notify(n.Name)
	}()
}

func newFleet(t *testing.T, site *schema.Site) (*fakeFleet, *Engine) {
	f := &fakeFleet{t: t, site: site, store: &nodetest.Store{}, wake: &Waker{}, delay: 20 * time.Millisecond,
		badNode: map[string]bool{}, silent: map[string]bool{}, mute: map[string]bool{}, lost: map[string]int{},
		cycles: map[string]int{}, down: map[string]int{}, maxDown: map[string]int{}, finished: map[string]time.Time{}}
	ro := &Engine{Site: site, Nodes: f.store, Wake: f.wake, PollInterval: 10 * time.Millisecond,
		BMC: func(n *schema.Node) (node.BMC, error) { return &fakeBMC{f: f, node: n}, nil }}
	return f, ro
}

func TestRolloutConvergesUnderLimits(t *testing.T) {
	ctx := context.Background()
	site := siteWith(t, nil)
	f, ro := newFleet(t, site)
	var syncs int
	var mu sync.Mutex
	ro.SyncDNS = func(context.Context) error { mu.Lock(); syncs++; mu.Unlock(); return nil }
	plan := PlanRebuilds(site, nil, time.Now())
	// 14 nodes, one in maintenance: 13 new builds, one canary.
	if len(plan.Rebuilds) != 13 || len(plan.Held) != 1 || plan.Held[0].Node != "e2n03" {
		t.Fatalf("plan: %d rebuilds, held %v", len(plan.Rebuilds), plan.Held)
	}
	var canaries []string
	for _, r := range plan.Rebuilds {
		if r.Canary {
			canaries = append(canaries, r.Node)
		}
		if !slices.Equal(r.Reasons, []node.RebuildReason{node.ReasonNew}) {
			t.Errorf("%s reasons %v", r.Node, r.Reasons)
		}
	}
	if !slices.Equal(canaries, []string{"e1n01"}) {
		t.Fatalf("canaries = %v", canaries)
	}
	res, err := ro.Run(ctx, plan)
	if err != nil || res.Err() != nil {
		t.Fatalf("run: %v, %v", err, res.Err())
	}
	if len(res.Verified) != 13 {
		t.Fatalf("verified %v", res.Verified)
	}
	// The canary was alone: it finished before anything else started.
	if f.order[0] != "e1n01" {
		t.Fatalf("first power cycle: %s", f.order[0])
	}
	for rack, n := range f.maxDown {
		if n > 1 { // perRack: 1
			t.Errorf("rack %s had %d nodes down at once", rack, n)
		}
	}
	for name, n := range f.cycles {
		if n != 1 {
			t.Errorf("%s power-cycled %d times", name, n)
		}
	}
	if syncs == 0 {
		t.Error("DNS never synced for nodes in groups")
	}
	recs, _ := f.store.NodeRecords(ctx)
	for _, r := range plan.Rebuilds {
		rec := recs[r.Node]
		if rec.State != node.Verified || rec.BuildID != r.To || rec.Nonce != "" || rec.Spec == nil {
			t.Errorf("%s record %+v", r.Node, rec)
		}
	}
	// Converged: the next plan is empty, and every node is in service.
	if again := PlanRebuilds(site, recs, time.Now()); len(again.Rebuilds) != 0 {
		t.Fatalf("second plan: %+v", again.Rebuilds)
	}
	av := AvailabilityOf(site, recs)
	if slices.Collect(maps.Keys(av.OutOfService)) == nil || len(av.OutOfService) != 1 || !av.OutOfService["e2n03"] {
		t.Fatalf("out of service after rollout: %v", av.OutOfService)
	}
}

func TestRolloutHalts(t *testing.T) {
	ctx := context.Background()
	site := siteWith(t, nil)
	t.Run("failed canary leaves every other node untouched", func(t *testing.T) {
		f, ro := newFleet(t, site)
		f.badNode["e1n01"] = true
		res, err := ro.Run(ctx, PlanRebuilds(site, nil, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res.Halted, "canary e1n01 failed") || len(res.NotStarted) != 12 || len(f.order) != 1 {
			t.Fatalf("halted %q, not started %d, cycled %v", res.Halted, len(res.NotStarted), f.order)
		}
		if !strings.Contains(res.Failed["e1n01"], "VLAN") {
			t.Fatalf("failure reason: %q", res.Failed["e1n01"])
		}
		recs, _ := f.store.NodeRecords(ctx)
		if len(recs) != 1 || recs["e1n01"].State != node.Failed {
			t.Fatalf("records: %v", slices.Collect(maps.Keys(recs)))
		}
		// The failed canary is held in the next plan until retried.
		next := PlanRebuilds(site, recs, time.Now())
		if len(next.Held) != 2 || next.Held[0].Node != "e1n01" {
			t.Fatalf("held: %+v", next.Held)
		}
	})
	t.Run("a failure past the canaries halts new starts", func(t *testing.T) {
		f, ro := newFleet(t, site)
		f.badNode["e2n01"] = true
		res, err := ro.Run(ctx, PlanRebuilds(site, nil, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res.Halted, "more than maxFailures 0") || len(res.NotStarted) == 0 {
			t.Fatalf("halted %q, not started %v", res.Halted, res.NotStarted)
		}
		if _, ok := res.Failed["e2n01"]; !ok || len(res.Verified)+len(res.Failed)+len(res.NotStarted) != 13 {
			t.Fatalf("result %+v", res)
		}
	})
	t.Run("no callback times out", func(t *testing.T) {
		f, ro := newFleet(t, site)
		f.silent["e1n01"] = true
		ro.InstallTimeout = 100 * time.Millisecond
		res, err := ro.Run(ctx, PlanRebuilds(site, nil, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res.Failed["e1n01"], "no install callback within 100ms") {
			t.Fatalf("failed: %v", res.Failed)
		}
		rec, _ := f.store.NodeRecord(ctx, "e1n01")
		if rec.Nonce != "" {
			t.Fatal("a timed-out node stays armed")
		}
	})
}

func TestRolloutResumesWithoutSecondPowerCycle(t *testing.T) {
	ctx := context.Background()
	site := siteWith(t, nil)
	f, ro := newFleet(t, site)
	plan := PlanRebuilds(site, nil, time.Now())
	// Simulate a crash: e1n01 was armed and power cycled, then anneal died.
	var target NodeRebuild
	for _, r := range plan.Rebuilds {
		if r.Node == "e1n01" {
			target = r
		}
	}
	_ = f.store.UpdateNode(ctx, "e1n01", func(r *node.Record) error {
		r.State, r.Since, r.Target, r.Nonce, r.TokenExpires = node.Provisioning, time.Now(), target.To, "n", time.Now().Add(time.Hour)
		return nil
	})
	recs, _ := f.store.NodeRecords(ctx)
	plan = PlanRebuilds(site, recs, time.Now())
	if !plan.Rebuilds[0].Resume || plan.Rebuilds[0].Node != "e1n01" || plan.Rebuilds[0].Canary {
		t.Fatalf("first rebuild %+v", plan.Rebuilds[0])
	}
	// The node calls back while anneal is down.
	var n *schema.Node
	for _, x := range site.Nodes {
		if x.Name == "e1n01" {
			n = x
		}
	}
	facts := node.FactsOfBuild(node.BuildSpecOf(site, n))
	_ = f.store.UpdateNode(ctx, "e1n01", func(r *node.Record) error {
		r.State, r.Nonce, r.InstallFetched = node.Installed, "", time.Now()
		r.Facts, r.FactsAt, r.FactsFrom, r.FactsBuild = &facts, time.Now(), node.ReportAgent, target.To
		return nil
	})
	res, err := ro.Run(ctx, plan)
	if err != nil || res.Err() != nil {
		t.Fatalf("%v %v", err, res.Err())
	}
	if f.cycles["e1n01"] != 0 {
		t.Fatalf("e1n01 power-cycled %d times after resume", f.cycles["e1n01"])
	}
	if len(res.Verified) != 13 {
		t.Fatalf("verified %v", res.Verified)
	}
}

func TestPlanRebuildReasons(t *testing.T) {
	site := siteWith(t, nil)
	patched := siteWith(t, map[string]func(string) string{
		"site.yaml": func(s string) string { return strings.Replace(s, `patchSet: "2026-11"`, `patchSet: "2026-10"`, 1) },
	})
	f, ro := newFleet(t, site)
	if res, err := ro.Run(context.Background(), PlanRebuilds(site, nil, time.Now())); err != nil || res.Err() != nil {
		t.Fatal(err, res.Err())
	}
	recs, _ := f.store.NodeRecords(context.Background())
	p := PlanRebuilds(patched, recs, time.Now())
	if len(p.Rebuilds) == 0 {
		t.Fatal("a patch set change rebuilds nothing")
	}
	r := p.Rebuilds[0]
	if !slices.Contains(r.Reasons, node.ReasonPatchSetChanged) || r.From == "" || r.From == r.To {
		t.Fatalf("rebuild %+v", r)
	}
	var kernel bool
	for _, c := range r.Changes {
		if c.Path == "patchSet.kernel" && c.Old == "5.15.0-126-generic" && c.New == "5.15.0-124-generic" {
			kernel = true
		}
	}
	if !kernel {
		t.Fatalf("changes %v", r.Changes)
	}
	// Drift by hand: a VLAN added on a verified node.
	rec := recs["w1n01"]
	rec.Facts.Interfaces = append(rec.Facts.Interfaces, node.FactInterface{Name: "bond0.999", Kind: node.KindVLAN, VLANID: 999, Link: "bond0"})
	p = PlanRebuilds(site, recs, time.Now())
	if len(p.Rebuilds) != 1 || p.Rebuilds[0].Reasons[0] != node.ReasonLiveDrift || !strings.Contains(strings.Join(p.Rebuilds[0].Drift, ";"), "bond0.999") {
		t.Fatalf("drift plan %+v", p.Rebuilds)
	}
	// Patch and scrub: an old build is rebuilt.
	p = PlanRebuilds(site, recs, time.Now().Add(91*24*time.Hour))
	if len(p.Rebuilds) != 13 || p.Rebuilds[0].Reasons[0] != node.ReasonExpired {
		t.Fatalf("expired plan: %d, %+v", len(p.Rebuilds), p.Rebuilds[0])
	}
}

func TestRolloutRecyclesAMissedNetboot(t *testing.T) {
	site := siteWith(t, nil)
	f, ro := newFleet(t, site)
	ro.NetbootTimeout = 100 * time.Millisecond
	f.lost["e1n02"] = 1 // its first boot never reached the netboot server
	f.lost["e1n03"] = 5 // it never netboots
	res, err := ro.Run(context.Background(), PlanRebuilds(site, nil, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if f.cycles["e1n02"] != 2 || !slices.Contains(res.Verified, "e1n02") {
		t.Fatalf("e1n02: %d cycles, verified %v", f.cycles["e1n02"], res.Verified)
	}
	if f.cycles["e1n03"] != MaxPowerCycles || !strings.Contains(res.Failed["e1n03"], "never fetched its iPXE script after 3 power cycles") {
		t.Fatalf("e1n03: %d cycles, failed %q", f.cycles["e1n03"], res.Failed["e1n03"])
	}
}

// decomBMC records power-offs.
type decomBMC struct {
	fakeBMC
	off *[]string
	mu  *sync.Mutex
}

func (b *decomBMC) SetPower(ctx context.Context, a node.PowerAction) error {
	if a == node.ActionOff {
		b.mu.Lock()
		*b.off = append(*b.off, b.node.Name)
		b.mu.Unlock()
		return nil
	}
	return b.fakeBMC.SetPower(ctx, a)
}

func TestRolloutDecommission(t *testing.T) {
	ctx := context.Background()
	site := siteWith(t, nil)
	f, ro := newFleet(t, site)
	if res, err := ro.Run(ctx, PlanRebuilds(site, nil, time.Now())); err != nil || res.Err() != nil {
		t.Fatal(err, res.Err())
	}
	gone := siteWith(t, map[string]func(string) string{
		"nodes/west-w1.yaml": func(s string) string {
			return strings.Replace(s, "name: w1n04\n", "name: w1n04\nstate: decommissioned\n", 1)
		},
	})
	recs, _ := f.store.NodeRecords(ctx)
	plan := PlanRebuilds(gone, recs, time.Now())
	if !slices.Equal(plan.Decommission, []string{"w1n04"}) || len(plan.Rebuilds) != 0 {
		t.Fatalf("plan: decommission %v, rebuilds %v", plan.Decommission, plan.Rebuilds)
	}
	// DNS while it retires: its names stay until it is off, then go.
	var off []string
	var mu sync.Mutex
	var namesAtSync []bool
	ro.Site = gone
	ro.BMC = func(n *schema.Node) (node.BMC, error) {
		return &decomBMC{fakeBMC: fakeBMC{f: f, node: n}, off: &off, mu: &mu}, nil
	}
	ro.SyncDNS = func(ctx context.Context) error {
		recs, _ := f.store.NodeRecords(ctx)
		d, err := dns.CompileWith(gone, AvailabilityOf(gone, recs))
		if err != nil {
			return err
		}
		has := false
		for _, z := range d.Zones {
			for _, s := range z.RRsets {
				if strings.HasPrefix(s.Name, "w1n04.") {
					has = true
				}
			}
		}
		namesAtSync = append(namesAtSync, has)
		return nil
	}
	res, err := ro.Run(ctx, plan)
	if err != nil || res.Err() != nil {
		t.Fatal(err, res.Err())
	}
	if !slices.Equal(off, []string{"w1n04"}) || !slices.Equal(res.Decommissioned, []string{"w1n04"}) {
		t.Fatalf("powered off %v, decommissioned %v", off, res.Decommissioned)
	}
	if !slices.Equal(namesAtSync, []bool{true, false}) {
		t.Fatalf("w1n04's names at each DNS sync: %v, want kept while it runs, then removed", namesAtSync)
	}
	recs, _ = f.store.NodeRecords(ctx)
	if recs["w1n04"].State != node.Retired {
		t.Fatalf("record %+v", recs["w1n04"])
	}
	if again := PlanRebuilds(gone, recs, time.Now()); again.Count() != 0 {
		t.Fatalf("decommissioned twice: %+v", again)
	}
}

// TestPlanInterruptedRollouts: a node left pending (out of service, not
// armed) by a stopped rollout is rebuilt, even on its desired build; one
// installing a build the site no longer wants is re-armed.
func TestPlanInterruptedRollouts(t *testing.T) {
	site := siteWith(t, nil)
	f, ro := newFleet(t, site)
	ctx := context.Background()
	if res, err := ro.Run(ctx, PlanRebuilds(site, nil, time.Now())); err != nil || res.Err() != nil {
		t.Fatal(err, res.Err())
	}
	_ = f.store.UpdateNode(ctx, "e1n01", func(r *node.Record) error { r.State, r.Target = node.Pending, r.BuildID; return nil })
	_ = f.store.UpdateNode(ctx, "e1n02", func(r *node.Record) error { r.State, r.Target = node.Provisioning, "0123456789abcdef"; return nil })
	recs, _ := f.store.NodeRecords(ctx)
	p := PlanRebuilds(site, recs, time.Now())
	got := map[string]node.RebuildReason{}
	for _, r := range p.Rebuilds {
		got[r.Node] = r.Reasons[0]
	}
	if len(got) != 2 || got["e1n01"] != node.ReasonInterrupted || got["e1n02"] != node.ReasonSuperseded {
		t.Fatalf("rebuilds: %v", got)
	}
}

// TestRolloutHaltsWhenDNSCannotLeave: a node that cannot leave its DNS
// groups is not taken down, and the rollout starts nothing more.
func TestRolloutHaltsWhenDNSCannotLeave(t *testing.T) {
	site := siteWith(t, nil)
	f, ro := newFleet(t, site)
	ro.SyncDNS = func(context.Context) error { return errors.New("bind: connection refused") }
	res, err := ro.Run(context.Background(), PlanRebuilds(site, nil, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.Halted, "DNS could not take nodes out of their groups") || len(f.order) != 0 || len(res.NotStarted) != 13 {
		t.Fatalf("halted %q, cycled %v, not started %d", res.Halted, f.order, len(res.NotStarted))
	}
}

// TestFactsOfBuildVerify: a node reporting exactly its build verifies,
// for every node of the example site.
func TestFactsOfBuildVerify(t *testing.T) {
	site := siteWith(t, nil)
	for _, n := range site.Nodes {
		spec := node.BuildSpecOf(site, n)
		if diffs := node.VerifyFacts(spec, node.FactsOfBuild(spec)); len(diffs) > 0 {
			t.Errorf("%s: %v", n.Name, diffs)
		}
	}
}
