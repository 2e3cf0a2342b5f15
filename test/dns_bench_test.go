package test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/providers/dns/powerdns"
	"github.com/anneal-dev/anneal/providers/dns/rfc2136"
	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/schema"
	"github.com/anneal-dev/anneal/test/servers"
)

// BenchmarkDNSScale converges a generated site (10,000 nodes by default,
// ANNEAL_BENCH_NODES to change) on a real BIND and a real PowerDNS, once,
// and reports each phase as a metric:
//
//	go test ./test -run '^$' -bench DNSScale -benchtime 1x -timeout 30m
//
// Figures are compared as ratios within the run (anneal vs nsupdate on the
// same records and the same server build), never asserted as times.
func BenchmarkDNSScale(b *testing.B) {
	ctx := context.Background()
	_, site, desired := generatedSite(b)
	records := 0
	for _, z := range desired.Zones {
		for _, s := range z.RRsets {
			records += len(s.Data)
		}
	}
	b.ReportMetric(float64(records), "records")
	only := func(target string) *dns.Desired {
		d := *desired
		d.Targets = nil
		for _, tz := range desired.Targets {
			if tz.Target == target {
				d.Targets = append(d.Targets, tz)
			}
		}
		return &d
	}
	bindWant := only("bind")
	for range b.N {
		// BIND: first full apply, then cold and warm plans.
		srv := servers.StartBIND(b, servers.BINDOptions{Zones: bindWant.Targets[0].Zones, MaxRecordsPerType: 1000})
		bt, err := rfc2136.New(rfc2136.Config{Name: "bind", Server: srv.Addr, KeyName: srv.KeyName, Algorithm: srv.Algorithm, Secret: srv.Secret, Timeout: 30 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		st, err := bolt.Open(filepath.Join(b.TempDir(), "state.db"), time.Second)
		if err != nil {
			b.Fatal(err)
		}
		targets := map[string]dns.Target{"bind": bt}
		start := time.Now()
		applyAll(b, ctx, targets, st, bindWant)
		firstApply := time.Since(start)
		b.ReportMetric(firstApply.Seconds(), "bind_first_apply_s")
		b.ReportMetric(float64(bt.Stats().Messages), "bind_first_apply_msgs")

		start = time.Now()
		mustPlanEmpty(b, ctx, targets, noCache{st}, bindWant)
		b.ReportMetric(time.Since(start).Seconds(), "bind_plan_cold_s")
		start = time.Now()
		mustPlanEmpty(b, ctx, targets, st, bindWant)
		b.ReportMetric(time.Since(start).Seconds(), "bind_plan_warm_s")

		// One node changes address: one UPDATE per zone it touches.
		changed := moveOneNode(b, site)
		before := bt.Stats().Messages
		plan := applyAll(b, ctx, targets, st, changed)
		touched := 0
		for _, z := range plan.Zones {
			if len(z.Changes) > 0 {
				touched++
				var ops []string
				for _, c := range z.Changes {
					ops = append(ops, string(c.Op)+" "+c.Key().String())
				}
				b.Logf("one-node change in %s: %s", z.Zone, strings.Join(ops, "; "))
			}
		}
		b.ReportMetric(float64(touched), "one_node_zones")
		b.ReportMetric(float64(bt.Stats().Messages-before), "one_node_msgs")
		st.Close()

		// nsupdate: the same records into a fresh BIND, 1,000 a message.
		srv2 := servers.StartBIND(b, servers.BINDOptions{Zones: bindWant.Targets[0].Zones, MaxRecordsPerType: 1000})
		script := nsupdateScript(bindWant, 1000)
		start = time.Now()
		cmd := exec.Command("nsupdate", "-y", fmt.Sprintf("%s:%s:%s", srv2.Algorithm, srv2.KeyName, srv2.Secret))
		cmd.Stdin = strings.NewReader(fmt.Sprintf("server %s %s\n", strings.Split(srv2.Addr, ":")[0], strings.Split(srv2.Addr, ":")[1]) + script)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("nsupdate: %v\n%s", err, out)
		}
		nsupdate := time.Since(start)
		b.ReportMetric(nsupdate.Seconds(), "nsupdate_s")
		b.ReportMetric(nsupdate.Seconds()/firstApply.Seconds(), "nsupdate/anneal")

		// PowerDNS: first push.
		pdnsWant := only("pdns")
		p := servers.StartPowerDNS(b, servers.PowerDNSOptions{})
		for _, z := range pdnsWant.Targets[0].Zones {
			p.CreateZone(b, z)
		}
		pt, err := powerdns.New(powerdns.Config{Name: "pdns", APIURL: p.APIURL, APIKey: p.APIKey, DNSAddr: p.DNSAddr, Timeout: 60 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		pst, err := bolt.Open(filepath.Join(b.TempDir(), "pdns.db"), time.Second)
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		applyAll(b, ctx, map[string]dns.Target{"pdns": pt}, pst, pdnsWant)
		b.ReportMetric(time.Since(start).Seconds(), "pdns_first_apply_s")
		pst.Close()
	}
}

func applyAll(b *testing.B, ctx context.Context, targets map[string]dns.Target, st dns.State, want *dns.Desired) *dns.Plan {
	b.Helper()
	plan, err := (&dns.Planner{Targets: targets, State: st}).Plan(ctx, want)
	if err != nil || len(plan.Failures) > 0 {
		b.Fatalf("plan: %v %+v", err, plan.Failures)
	}
	res, err := (&dns.Applier{Targets: targets, State: st}).Apply(ctx, plan, want, dns.ApplyOptions{AllowMassDelete: true})
	if err != nil || res.Failed() {
		b.Fatalf("apply: %v %+v", err, res)
	}
	return plan
}

func mustPlanEmpty(b *testing.B, ctx context.Context, targets map[string]dns.Target, st dns.State, want *dns.Desired) {
	b.Helper()
	plan, err := (&dns.Planner{Targets: targets, State: st}).Plan(ctx, want)
	if err != nil || len(plan.Failures) > 0 || plan.HasChanges() || plan.HasConflicts() {
		b.Fatalf("plan after apply is not empty: %v %+v", err, plan.Failures)
	}
}

// noCache hides the zone cache and the sync marks, forcing full transfers
// (a cold plan); marks it sets still land, for the warm plan after it.
type noCache struct{ dns.State }

func (noCache) SyncMark(context.Context, string, string) (*dns.SyncMark, error) {
	return nil, nil
}

func (noCache) CachedZone(context.Context, string, string) (*dns.ZoneContent, error) {
	return nil, nil
}

func (noCache) CacheZone(context.Context, string, *dns.ZoneContent) error { return nil }

// moveOneNode moves the first node's IPv4 addresses to free ones (as an
// address override would) and recompiles the DNS.
func moveOneNode(b *testing.B, site *schema.Site) *dns.Desired {
	b.Helper()
	n := site.Nodes[0]
	for i := range n.Addresses {
		a := &n.Addresses[i]
		if a.IPv4.IsValid() {
			v := a.IPv4.As4()
			v[2] |= 0x0f // the top of the region's /20: no generated node sits there
			a.IPv4 = netip.AddrFrom4(v)
		}
	}
	d, err := dns.Compile(site)
	if err != nil {
		b.Fatal(err)
	}
	out := *d
	out.Targets = nil
	for _, tz := range d.Targets {
		if tz.Target == "bind" {
			out.Targets = append(out.Targets, tz)
		}
	}
	return &out
}

// nsupdateScript writes every record as nsupdate adds, perMsg to a send.
func nsupdateScript(d *dns.Desired, perMsg int) string {
	var sb strings.Builder
	for _, zone := range d.Targets[0].Zones {
		z := d.Zone(zone)
		n := 0
		fmt.Fprintf(&sb, "zone %s\n", zone)
		for _, s := range z.RRsets {
			for _, data := range s.Data {
				fmt.Fprintf(&sb, "update add %s. %d %s %s\n", s.Name, s.TTL, s.Type, data)
				n++
				if n%perMsg == 0 {
					sb.WriteString("send\n")
				}
			}
		}
		sb.WriteString("send\n")
	}
	return sb.String()
}

// generatedSite writes a generated site of ANNEAL_BENCH_NODES nodes
// (default 10,000) and compiles its DNS.
func generatedSite(b *testing.B) (string, *schema.Site, *dns.Desired) {
	b.Helper()
	nodes := 10000
	if v := os.Getenv("ANNEAL_BENCH_NODES"); v != "" {
		nodes, _ = strconv.Atoi(v)
	}
	dir := b.TempDir()
	if _, err := gen.Generate(dir, gen.Options{Nodes: nodes}); err != nil {
		b.Fatal(err)
	}
	site, _, err := schema.LoadDir(context.Background(), dir, schema.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	desired, err := dns.Compile(site)
	if err != nil {
		b.Fatal(err)
	}
	return dir, site, desired
}
