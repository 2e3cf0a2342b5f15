package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/schema"
	"github.com/anneal-dev/anneal/test/servers"
	mdns "github.com/miekg/dns"
)

// dnsLab is the example site wired to a real BIND and a real PowerDNS.
type dnsLab struct {
	site  string
	bind  *servers.BIND
	pdns  *servers.PowerDNS
	env   []string
	state string
}

func newDNSLab(t *testing.T) *dnsLab {
	t.Helper()
	s, _, err := schema.LoadDir(context.Background(), "../examples/site-repo", schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var bindZones, pdnsZones []string
	for _, tg := range s.DNS.Targets {
		for _, z := range tg.Zones {
			if tg.Name == "bind" {
				bindZones = append(bindZones, z)
			} else {
				pdnsZones = append(pdnsZones, z)
			}
		}
	}
	b := servers.StartBIND(t, servers.BINDOptions{Zones: bindZones})
	p := servers.StartPowerDNS(t, servers.PowerDNSOptions{})
	for _, z := range pdnsZones {
		p.CreateZone(t, z)
	}
	site := copySite(t, "../examples/site-repo", map[string]string{
		"127.0.0.1:5301":        b.Addr,
		"http://127.0.0.1:8081": p.APIURL,
		"127.0.0.1:5302":        p.DNSAddr,
	})
	return &dnsLab{
		site:  site,
		bind:  b,
		pdns:  p,
		env:   []string{"ANNEAL_TSIG_SECRET=" + b.Secret, "ANNEAL_PDNS_API_KEY=" + p.APIKey},
		state: t.TempDir() + "/state.db",
	}
}

func (l *dnsLab) run(t *testing.T, args ...string) result {
	t.Helper()
	return anneal(t, l.env, append(args, "--site", l.site, "--state", l.state)...)
}

// want compiles the lab's site into the records each zone should hold.
func (l *dnsLab) want(t *testing.T) *dns.Desired {
	t.Helper()
	s, _, err := schema.LoadDir(context.Background(), l.site, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := dns.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// zoneLines renders RRsets as sorted "name TYPE ttl data" lines, skipping
// the SOA and the apex NS the server owns.
func zoneLines(zone string, sets []dns.RRset) []string {
	var out []string
	for _, s := range sets {
		if s.Type == dns.TypeSOA || s.Type == dns.TypeNS && s.Name == zone {
			continue
		}
		for _, d := range s.Data {
			out = append(out, fmt.Sprintf("%s %s %d %s", s.Name, s.Type, s.TTL, d))
		}
	}
	slices.Sort(out)
	return out
}

func (l *dnsLab) live(t *testing.T, target, zone string) []string {
	t.Helper()
	var rrs []mdns.RR
	if target == "bind" {
		rrs = l.bind.AXFR(t, zone)
	} else {
		rrs = l.pdns.AXFR(t, zone)
	}
	return zoneLines(zone, dns.RRsetsFromRRs(rrs))
}

// assertConverged checks every zone on every target equals the site exactly.
func (l *dnsLab) assertConverged(t *testing.T, extra ...string) {
	t.Helper()
	d := l.want(t)
	for _, tz := range d.Targets {
		for _, zone := range tz.Zones {
			want := zoneLines(zone, d.Zone(zone).RRsets)
			for _, e := range extra {
				if strings.HasPrefix(e, tz.Target+" ") && strings.Contains(e, " "+zone+" ") {
					want = append(want, strings.SplitN(e, " ", 3)[2])
				}
			}
			slices.Sort(want)
			got := l.live(t, tz.Target, zone)
			if !slices.Equal(got, want) {
				t.Errorf("%s zone %s differs from the site:\n%s", tz.Target, zone, lineDiff(want, got))
			}
		}
	}
}

func lineDiff(want, got []string) string {
	var b strings.Builder
	w := map[string]bool{}
	for _, x := range want {
		w[x] = true
	}
	g := map[string]bool{}
	for _, x := range got {
		g[x] = true
		if !w[x] {
			fmt.Fprintf(&b, "  unexpected: %s\n", x)
		}
	}
	for _, x := range want {
		if !g[x] {
			fmt.Fprintf(&b, "  missing:    %s\n", x)
		}
	}
	return b.String()
}

func mustExit(t *testing.T, r result, code int, contains ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("want exit %d, got:\n%s", code, r)
	}
	for _, c := range contains {
		if !strings.Contains(r.stdout+r.stderr, c) {
			t.Fatalf("output lacks %q:\n%s", c, r)
		}
	}
}

// TestDNSConverge walks the life of a site's DNS on real servers: first
// apply, idempotence, out-of-band drift, node removal beside a foreign
// record, round-robin membership, and the mass-delete guard.
func TestDNSConverge(t *testing.T) {
	l := newDNSLab(t)

	mustExit(t, l.run(t, "plan"), 2, "to add")
	mustExit(t, l.run(t, "plan", "-o", "markdown"), 2, "### anneal plan")
	mustExit(t, l.run(t, "apply"), 0, "Apply:", "0 zones failed")
	l.assertConverged(t)

	// Converged: plan is clean and a second apply sends nothing.
	serial := soaSerial(l.bind.AXFR(t, "east.example.net"))
	mustExit(t, l.run(t, "plan"), 0, "No changes")
	mustExit(t, l.run(t, "apply"), 0, "No changes")
	if got := soaSerial(l.bind.AXFR(t, "east.example.net")); got != serial {
		t.Fatalf("second apply changed the zone: serial %d → %d", serial, got)
	}

	// Out-of-band change with nsupdate: drift (exit 2), then repaired.
	l.bind.Nsupdate(t, "zone east.example.net\nupdate delete e1n01.east.example.net A\nupdate add e1n01.east.example.net 300 A 10.10.2.99\nsend\n")
	mustExit(t, l.run(t, "plan"), 2, "e1n01.east.example.net A 300 10.10.2.99 → 300 10.10.2.11")
	mustExit(t, l.run(t, "apply"), 0)
	l.assertConverged(t)

	// A foreign record in a managed zone is never touched.
	l.bind.Nsupdate(t, "zone east.example.net\nupdate add printer.east.example.net 300 A 192.0.2.7\nsend\n")
	mustExit(t, l.run(t, "plan"), 0, "No changes")

	// Remove a node: its forward and reverse records go, the foreign stays.
	edit(t, l.site, "nodes/east-e1.yaml", func(s string) string {
		docs := strings.Split(s, "---\n")
		return strings.Join(slices.DeleteFunc(docs, func(d string) bool { return strings.Contains(d, "name: e1n04\n") }), "---\n")
	})
	r := l.run(t, "plan")
	mustExit(t, r, 2, "- e1n04.east.example.net A", "- 14.2.10.10.in-addr.arpa PTR")
	mustExit(t, l.run(t, "apply"), 0)
	l.assertConverged(t, "bind east.example.net printer.east.example.net A 300 192.0.2.7")

	// Round robin follows membership: e1n01 into maintenance leaves api.
	edit(t, l.site, "nodes/east-e1.yaml", func(s string) string {
		return strings.Replace(s, "aliases: [db1, ldap]", "aliases: [db1, ldap]\nstate: maintenance", 1)
	})
	mustExit(t, l.run(t, "apply"), 0, "api.example.net A")
	l.assertConverged(t, "bind east.example.net printer.east.example.net A 300 192.0.2.7")
	for _, target := range []string{"bind", "pdns"} {
		for _, line := range l.live(t, target, "example.net") {
			if strings.HasPrefix(line, "api.example.net A") && strings.HasSuffix(line, " 203.0.113.11") {
				t.Errorf("%s: e1n01 still in the api group: %s", target, line)
			}
		}
	}

	// Mass delete: decommissioning a whole rack is refused without the flag.
	edit(t, l.site, "nodes/east-e2.yaml", func(s string) string {
		s = strings.ReplaceAll(s, "state: maintenance\n", "")
		return strings.ReplaceAll(s, "rack: e2\n", "rack: e2\nstate: decommissioned\n")
	})
	mustExit(t, l.run(t, "apply"), 1, "refusing to apply", "--allow-mass-delete")
	mustExit(t, l.run(t, "apply", "--allow-mass-delete"), 0)
	l.assertConverged(t, "bind east.example.net printer.east.example.net A 300 192.0.2.7")
}

// TestDNSFailures: a wrong TSIG secret and a stopped server give clear
// errors naming the target, print no secret, change nothing on the failed
// target, and do not stop the other target.
func TestDNSFailures(t *testing.T) {
	l := newDNSLab(t)
	mustExit(t, l.run(t, "apply"), 0)

	edit(t, l.site, "nodes/west-w1.yaml", func(s string) string {
		return strings.Replace(s, "aliases: [backup]", "aliases: [backup, vault]", 1)
	})
	before := l.live(t, "bind", "west.example.net")
	wrong := "c2VjcmV0LXRoYXQtaXMtd3Jvbmc="
	env := []string{"ANNEAL_TSIG_SECRET=" + wrong, "ANNEAL_PDNS_API_KEY=" + l.pdns.APIKey}
	r := anneal(t, env, "apply", "--site", l.site, "--state", l.state)
	mustExit(t, r, 1, "bind", "anneal")
	if strings.Contains(r.stdout+r.stderr, wrong) || strings.Contains(r.stdout+r.stderr, l.bind.Secret) {
		t.Fatalf("a TSIG secret was printed:\n%s", r)
	}
	if after := l.live(t, "bind", "west.example.net"); !slices.Equal(before, after) {
		t.Fatalf("bind changed despite the refused key:\n%s", lineDiff(before, after))
	}
	if !slices.ContainsFunc(l.live(t, "pdns", "west.example.net"), func(s string) bool { return strings.HasPrefix(s, "vault.west.example.net CNAME") }) {
		t.Fatal("pdns did not get the change while bind failed")
	}

	l.bind.Stop()
	r = l.run(t, "plan")
	mustExit(t, r, 1, "bind")
	r = l.run(t, "apply")
	mustExit(t, r, 1, "bind")
	l.bind.Restart(t)
	mustExit(t, l.run(t, "apply"), 0)
	l.assertConverged(t)
}

func soaSerial(rrs []mdns.RR) uint32 {
	for _, rr := range rrs {
		if soa, ok := rr.(*mdns.SOA); ok {
			return soa.Serial
		}
	}
	return 0
}

// TestDNSExport writes one zone file per zone and has BIND's own
// named-checkzone accept each of them.
func TestDNSExport(t *testing.T) {
	checkzone, err := exec.LookPath("named-checkzone")
	if err != nil {
		missingTool(t, "named-checkzone (apt package bind9-utils)")
	}
	out := t.TempDir()
	r := anneal(t, nil, "dns", "export", "--site", "../examples/site-repo", "--out", out)
	mustExit(t, r, 0, "east.example.net.zone")
	s, _, err := schema.LoadDir(context.Background(), "../examples/site-repo", schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := dns.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, z := range d.Zones {
		file := filepath.Join(out, z.Zone+".zone")
		cmd := exec.Command(checkzone, z.Zone, file)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("named-checkzone %s: %v\n%s", z.Zone, err, b)
			continue
		}
		if !strings.Contains(string(b), "OK") {
			t.Errorf("named-checkzone %s: %s", z.Zone, b)
		}
	}
}

// TestSavedPlan: `plan -o json > plan.json` then `apply plan.json` applies
// exactly that plan, and refuses when the site or the live zones moved.
func TestSavedPlan(t *testing.T) {
	l := newDNSLab(t)
	save := func(name string) string {
		t.Helper()
		r := l.run(t, "plan", "-o", "json")
		if r.code != 2 {
			t.Fatalf("plan: want exit 2:\n%s", r)
		}
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, []byte(r.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	first := save("first.json")
	mustExit(t, l.run(t, "apply", first), 0, "Apply:")
	l.assertConverged(t)
	mustExit(t, l.run(t, "apply", first), 1, "live state changed since it was made")

	// The live zone moves after the plan: refused, nothing written.
	edit(t, l.site, "nodes/west-w1.yaml", func(s string) string {
		return strings.Replace(s, "aliases: [backup]", "aliases: [backup, vault]", 1)
	})
	stale := save("stale.json")
	l.bind.Nsupdate(t, "zone west.example.net\nupdate add printer.west.example.net 300 A 192.0.2.9\nsend\n")
	mustExit(t, l.run(t, "apply", stale), 1, "bind zone west.example.net serial")
	if slices.ContainsFunc(l.live(t, "bind", "west.example.net"), func(s string) bool { return strings.HasPrefix(s, "vault.") }) {
		t.Fatal("a refused saved plan wrote to bind")
	}

	// The site moves after the plan: refused.
	fresh := save("fresh.json")
	edit(t, l.site, "nodes/west-w1.yaml", func(s string) string {
		return strings.Replace(s, "aliases: [backup, vault]", "aliases: [backup, vault, safe]", 1)
	})
	mustExit(t, l.run(t, "apply", fresh), 1, "refusing to apply plan", "run plan again")

	// A fresh plan of the current site applies.
	mustExit(t, l.run(t, "apply", save("last.json")), 0)
	l.assertConverged(t, "bind west.example.net printer.west.example.net A 300 192.0.2.9")
}
