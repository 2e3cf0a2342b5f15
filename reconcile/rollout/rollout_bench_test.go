package rollout

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/node/nodetest"
	"github.com/anneal-dev/anneal/schema"
)

// benchFleet's BMCs answer at once and a PXE power cycle stores the
// install callback and the agent's report before it returns, so a rollout
// never waits on the fleet: what Run costs is the engine's (and the
// in-memory store's).
type benchFleet struct {
	store *nodetest.Store
	wake  *Waker
	facts map[string]node.Facts // by node: what its build reports
}

type benchBMC struct {
	f    *benchFleet
	node string
	pxe  bool
}

func (b *benchBMC) PowerState(context.Context) (node.PowerState, error) { return node.PowerOn, nil }
func (b *benchBMC) Firmware(context.Context) (node.Firmware, error)     { return node.Firmware{}, nil }

func (b *benchBMC) BootOnce(_ context.Context, d node.BootDevice) error {
	b.pxe = d == node.BootPXE
	return nil
}

func (b *benchBMC) SetPower(ctx context.Context, a node.PowerAction) error {
	if a != node.ActionCycle || !b.pxe {
		return nil
	}
	facts := b.f.facts[b.node]
	err := b.f.store.UpdateNode(ctx, b.node, func(r *node.Record) error {
		if r.State != node.Provisioning || r.Nonce == "" {
			return errors.New("not armed")
		}
		// The callback and, at once, the new agent's confirming report.
		now := time.Now()
		r.State, r.Nonce, r.InstallFetched = node.Installed, "", now
		r.Facts, r.FactsAt, r.FactsFrom, r.FactsBuild = &facts, now, node.ReportAgent, r.Target
		return nil
	})
	b.f.wake.Notify(b.node)
	return err
}

// BenchmarkRollout runs Engine.Run over the first rebuild plan of a
// generated 1,000-node site (canaries 1, maxUnavailable 10% per rack and
// per role, maxConcurrentInstalls 100) with zero BMC and install latency
// and an in-memory store, and reports the engine's cost per node rebuilt.
func BenchmarkRollout(b *testing.B) {
	const nodes = 1000
	dir := filepath.Join(b.TempDir(), "site")
	pol := &gen.Policies{Canaries: 1, PerRack: "10%", MaxConcurrentInstalls: 100,
		PerRole: map[string]string{"compute": "10%", "storage": "10%", "ingress": "10%", "api": "10%"}}
	if _, err := gen.Generate(dir, gen.Options{Nodes: nodes, Seed: 1, Policies: pol}); err != nil {
		b.Fatal(err)
	}
	site, _, err := schema.LoadDir(context.Background(), dir, schema.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	plan := PlanRebuilds(site, nil, time.Now())
	facts := map[string]node.Facts{}
	for _, n := range site.Nodes {
		facts[n.Name] = node.FactsOfBuild(node.BuildSpecOf(site, n))
	}
	b.ReportAllocs()
	for b.Loop() {
		f := &benchFleet{store: &nodetest.Store{}, wake: &Waker{}, facts: facts}
		ro := &Engine{Site: site, Nodes: f.store, Wake: f.wake,
			BMC: func(n *schema.Node) (node.BMC, error) { return &benchBMC{f: f, node: n.Name}, nil }}
		res, err := ro.Run(context.Background(), plan)
		if err != nil {
			b.Fatal(err)
		}
		if err := res.Err(); err != nil || len(res.Verified) != len(plan.Rebuilds) {
			b.Fatalf("%d of %d verified: %v", len(res.Verified), len(plan.Rebuilds), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(plan.Rebuilds)), "ns/node")
}

// BenchmarkDecommission retires 1,000 nodes that left an 11,000-node site
// (a large rack removal) with zero BMC latency and a DNS sync that
// compiles the site with the nodes' availability, as the daemon's does
// (without the DNS servers): what the engine costs per decommissioned
// node, and how many DNS syncs it makes.
func BenchmarkDecommission(b *testing.B) {
	big := generated(b, 11000)
	small := generated(b, 10000)
	decl := node.DeclaredOf(big, big.Nodes, "A")
	for b.Loop() {
		b.StopTimer()
		nodes := &nodetest.Store{Recs: map[string]*node.Record{}}
		for _, n := range big.Nodes {
			nodes.Recs[n.Name] = &node.Record{Name: n.Name, State: node.Verified, BuildID: "x", Declared: decl[n.Name]}
		}
		recs, _ := nodes.NodeRecords(context.Background())
		p := PlanRebuildsWith(small, recs, RebuildOptions{Now: time.Now()})
		p.Rebuilds = nil // the decommissions alone
		f := &benchFleet{store: nodes, wake: &Waker{}}
		syncs := 0
		ro := &Engine{Site: small, Nodes: nodes, Wake: f.wake,
			BMC: func(n *schema.Node) (node.BMC, error) { return &benchBMC{f: f, node: n.Name}, nil },
			SyncDNS: func(ctx context.Context) error {
				syncs++
				recs, err := nodes.NodeRecords(ctx)
				if err != nil {
					return err
				}
				_, err = dns.CompileWith(small, AvailabilityOf(small, recs))
				return err
			}}
		b.StartTimer()
		res, err := ro.Run(context.Background(), p)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Decommissioned) != len(p.Decommission) || len(p.Decommission) != 1000 {
			b.Fatalf("%d of %d decommissioned: %v", len(res.Decommissioned), len(p.Decommission), res.Failed)
		}
		b.ReportMetric(float64(syncs), "dns_syncs")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/node")
}
