package test

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/providers/dns/powerdns"
	"github.com/anneal-dev/anneal/providers/dns/rfc2136"
	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/schema"
)

// TestZoneCacheFollowsApply: after a small apply (read back one RRset at a
// time), the zone cache holds exactly what the servers hold, at their
// serials, so the next plan reads nothing; when someone else wrote to the
// zone between the plan and the apply, the cache is left behind and the
// next plan reads the zone, foreign record included. Real BIND and
// PowerDNS.
func TestZoneCacheFollowsApply(t *testing.T) {
	ctx := context.Background()
	l := newDNSLab(t)
	site, _, err := schema.LoadDir(ctx, l.site, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[schema.SecretRef]string{"secret:tsig-key": l.bind.Secret, "secret:pdns-api-key": l.pdns.APIKey}
	resolve := func(r schema.SecretRef, _ schema.SecretDest) (string, error) { return secrets[r], nil }
	targets := map[string]dns.Target{}
	for _, tg := range site.DNS.Targets {
		var dt dns.Target
		if tg.Kind == schema.TargetPowerDNS {
			dt, err = powerdns.FromSite(tg, resolve)
		} else {
			dt, err = rfc2136.FromSite(tg, resolve)
		}
		if err != nil {
			t.Fatal(err)
		}
		targets[tg.Name] = dt
	}
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	apply := func(d *dns.Desired, between func()) *dns.Plan {
		t.Helper()
		plan, err := (&dns.Planner{Targets: targets, State: st}).Plan(ctx, d)
		if err != nil || len(plan.Failures) > 0 {
			t.Fatalf("plan: %v %+v", err, plan.Failures)
		}
		if between != nil {
			between()
		}
		res, err := (&dns.Applier{Targets: targets, State: st}).Apply(ctx, plan, d, dns.ApplyOptions{AllowMassDelete: true})
		if err != nil || res.Failed() {
			t.Fatalf("apply: %v %+v", err, res)
		}
		return plan
	}
	// cached reports whether the cache of a zone is what its server holds.
	cached := func(target, zone string) (bool, string) {
		t.Helper()
		live, err := targets[target].ReadZone(ctx, zone)
		if err != nil {
			t.Fatal(err)
		}
		c, err := st.CachedZone(ctx, target, zone)
		if err != nil || c == nil {
			t.Fatalf("no cache of %s/%s: %v", target, zone, err)
		}
		if c.Serial != live.Serial {
			return false, fmt.Sprintf("cache at serial %d, server at %d", c.Serial, live.Serial)
		}
		if !reflect.DeepEqual(c.RRsets, live.RRsets) || !reflect.DeepEqual(c.Marked, live.Marked) {
			return false, fmt.Sprintf("cache %v (marked %v), server %v (marked %v)", c.RRsets, c.Marked, live.RRsets, live.Marked)
		}
		return true, ""
	}
	alias := func(name string) *dns.Desired {
		t.Helper()
		n := site.Nodes[0]
		n.AliasFQDNs = append(n.AliasFQDNs, name+"."+n.Region+".example.net")
		d, err := dns.Compile(site)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	zone := site.Nodes[0].Region + ".example.net"

	d := alias("first")
	apply(d, nil) // the first convergence: many changes, every zone read back whole

	// One alias more: both targets confirm it with a query each and patch
	// their cache; a plan right after reads no zone.
	plan := apply(alias("second"), nil)
	changed := 0
	for _, zd := range plan.Zones {
		if len(zd.Changes) == 0 {
			continue
		}
		changed++
		if ok, why := cached(zd.Target, zd.Zone); !ok {
			t.Errorf("%s/%s after a small apply: %s", zd.Target, zd.Zone, why)
		}
	}
	if changed != 2 {
		t.Fatalf("%d zones changed, want %s on both targets", changed, zone)
	}
	// Someone writes to the zone on BIND between the plan and the apply:
	// two transactions moved the serial, the cache stays where it was and
	// the next plan reads the zone, the foreign record with it.
	d = alias("third")
	apply(d, func() {
		l.bind.Nsupdate(t, fmt.Sprintf("zone %s\nupdate add printer.%s 300 A 192.0.2.7\nsend\n", zone, zone))
	})
	if ok, _ := cached("bind", zone); ok {
		t.Fatalf("bind/%s: the cache was patched although another writer moved the serial", zone)
	}
	if ok, why := cached("pdns", zone); !ok {
		t.Errorf("pdns/%s, which nobody else wrote to: %s", zone, why)
	}
	again, err := (&dns.Planner{Targets: targets, State: st}).Plan(ctx, d)
	if err != nil || again.HasChanges() || len(again.Failures) > 0 {
		t.Fatalf("plan after apply: %v, changes %v, failures %+v", err, again.HasChanges(), again.Failures)
	}
	if ok, why := cached("bind", zone); !ok {
		t.Errorf("bind/%s after the next plan: %s", zone, why)
	}
}
