package labdns_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/anneal-dev/anneal/lab/labdns"
	"github.com/anneal-dev/anneal/providers/dns/powerdns"
	"github.com/anneal-dev/anneal/providers/dns/rfc2136"
	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/dns/dnstest"
	"github.com/anneal-dev/anneal/schema"
)

// restart closes the server and starts a new one from the same
// configuration and state directory, on the same addresses.
func (l *lab) restart(t *testing.T) *lab {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := l.cfg
	cfg.DNSAddr = l.DNSAddr()
	if cfg.APIAddr != "" {
		cfg.APIAddr = strings.TrimPrefix(l.APIURL(), "http://")
	}
	return start(t, cfg)
}

// TestPersistence: a restarted server holds every record, comment and
// disabled record, at the same serial; the zone file is RFC 1035 that
// any parser reads, holding what the server serves.
func TestPersistence(t *testing.T) {
	t.Parallel()
	t.Run("rfc2136", func(t *testing.T) {
		t.Parallel()
		l := start(t, bindConfig(t))
		tg := l.rfc2136Target(t)
		want := model{}
		changes := []dns.RRsetChange{
			dnstest.Create(dnstest.Set(t, "www.example.net", dns.TypeA, 300, "192.0.2.1", "192.0.2.2")),
			dnstest.Create(dnstest.Set(t, "example.net", dns.TypeTXT, 60, `"v=spf1 mx -all"`, `"a \"quoted\" string; with a semicolon"`)),
			dnstest.Create(dnstest.Set(t, "*.apps.example.net", dns.TypeCNAME, 60, "ingress.example.net.")),
			dnstest.Create(dnstest.Set(t, "_ldap._tcp.example.net", dns.TypeSRV, 300, "0 100 389 e1n01.east.example.net.")),
			dnstest.Create(dnstest.Set(t, "example.net", dns.TypeCAA, 300, `0 issue "letsencrypt.org"`)),
		}
		apply(t, tg, fwd, changes...)
		want.apply(changes...)
		before, _ := content(t, tg, fwd)

		l = l.restart(t)
		tg = l.rfc2136Target(t)
		after, got := content(t, tg, fwd)
		if !sameRRsets(got, want.sorted()) || after.Serial != before.Serial {
			t.Fatalf("after a restart: serial %d (was %d), zone\n%v\nwant\n%v", after.Serial, before.Serial, got, want.sorted())
		}
		// The next change goes on from there.
		apply(t, tg, fwd, dnstest.Create(dnstest.Set(t, "more.example.net", dns.TypeA, 300, "192.0.2.3")))
		if s, _ := tg.Serial(context.Background(), fwd); s != before.Serial+1 {
			t.Fatalf("serial %d after one more change from %d", s, before.Serial)
		}

		// The file as a plain RFC 1035 parser sees it.
		file := filepath.Join(l.cfg.StateDir, "example.net.zone")
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		zp := mdns.NewZoneParser(bytes.NewReader(data), "", file)
		var parsed []mdns.RR
		for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
			parsed = append(parsed, rr)
		}
		if err := zp.Err(); err != nil {
			t.Fatal(err)
		}
		if parsed[0].Header().Rrtype != mdns.TypeSOA || len(withoutApexNS(dns.RRsetsFromRRs(parsed), fwd)) != len(want)+1 {
			t.Fatalf("the zone file holds %v", parsed)
		}
		entries, _ := os.ReadDir(l.cfg.StateDir)
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".tmp") {
				t.Errorf("a temporary file is left: %s", e.Name())
			}
		}
		if len(entries) != 4 {
			t.Errorf("%d files for 4 zones", len(entries))
		}
	})
	t.Run("powerdns", func(t *testing.T) {
		t.Parallel()
		l := start(t, pdnsConfig(t))
		tg := l.pdnsTarget(t, false)
		ours := dnstest.Set(t, "ours.example.net", dns.TypeA, 300, "192.0.2.1")
		apply(t, tg, fwd, dnstest.Create(ours))
		l.patch(t, fwd,
			`{"name":"off.example.net.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"192.0.2.4","disabled":true},{"content":"192.0.2.5","disabled":false}]},`+
				`{"name":"ghost.example.net.","type":"TXT","ttl":300,"changetype":"REPLACE","comments":[{"content":"kept","account":"bob"}]}`)
		_, zoneBefore := l.call(t, http.MethodGet, "/api/v1/servers/localhost/zones/example.net.", "", "")

		l = l.restart(t)
		_, zoneAfter := l.call(t, http.MethodGet, "/api/v1/servers/localhost/zones/example.net.", "", "")
		if zoneAfter != zoneBefore {
			t.Fatalf("after a restart the zone reads\n%s\nwas\n%s", zoneAfter, zoneBefore)
		}
		zc, _ := content(t, l.pdnsTarget(t, false), fwd)
		if !zc.Marked[ours.Key()] {
			t.Fatal("the mark was lost")
		}
		if r := query(t, l.DNSAddr(), "udp", "off.example.net", mdns.TypeA); len(r.Answer) != 1 {
			t.Fatalf("off.example.net: %v", r.Answer)
		}
	})
}

// TestBadStateFile: a zone file that does not parse, or has no SOA, keeps
// the server from being made, with the file named.
func TestBadStateFile(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, file, want string
	}{
		{"garbage", "example.net. 300 IN A not-an-address\n", "example.net.zone"},
		{"no SOA", "example.net. 300 IN NS ns1.example.net.\n", "exactly one SOA"},
		{"out of zone", "example.net. 300 IN SOA a. b. 1 2 3 4 5\nwww.example.org. 300 IN A 192.0.2.1\n", "not in the zone"},
		{"bad comments", "example.net. 300 IN SOA a. b. 1 2 3 4 5\n;lab:comments {\n", "comments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := bindConfig(t)
			if err := os.WriteFile(filepath.Join(cfg.StateDir, "example.net.zone"), []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := labdns.New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error about %q", err, tc.want)
			}
		})
	}
}

// TestSetDown: a server that goes away makes every provider verb fail
// with a transient error within the timeout; back up, on the same
// addresses, everything works again.
func TestSetDown(t *testing.T) {
	t.Parallel()
	bind := start(t, bindConfig(t))
	pdns := start(t, pdnsConfig(t))
	targets := []dns.Target{
		bind.rfc2136Target(t, func(c *rfc2136.Config) { c.Timeout = time.Second }),
		pdns.pdnsTarget(t, false, func(c *powerdns.Config) { c.Timeout = time.Second }),
		pdns.pdnsTarget(t, true, func(c *powerdns.Config) { c.Timeout = time.Second }),
	}
	addrs := []string{bind.DNSAddr(), pdns.DNSAddr(), pdns.APIURL()}
	for _, l := range []*lab{bind, pdns} {
		if err := l.SetDown(true); err != nil {
			t.Fatal(err)
		}
		if err := l.SetDown(true); err != nil || !l.Down() {
			t.Fatalf("down twice: %v", err)
		}
	}
	ctx := context.Background()
	a := dnstest.Set(t, "a.example.net", dns.TypeA, 300, "192.0.2.1")
	for _, tg := range targets {
		for name, op := range map[string]func() error{
			"serial": func() error { _, err := tg.Serial(ctx, fwd); return err },
			"read":   func() error { _, err := tg.ReadZone(ctx, fwd); return err },
			"apply":  func() error { _, err := tg.Apply(ctx, fwd, []dns.RRsetChange{dnstest.Create(a)}); return err },
		} {
			begin := time.Now()
			err := op()
			dnstest.WantClass(t, err, dns.ClassTransient, tg.Name())
			if took := time.Since(begin); took > 3*time.Second {
				t.Errorf("%s %s: took %s with a 1 s timeout", tg.Name(), name, took)
			}
		}
	}
	// A plain query gets no answer.
	m := new(mdns.Msg)
	m.SetQuestion("example.net.", mdns.TypeSOA)
	c := &mdns.Client{Timeout: 500 * time.Millisecond}
	if _, _, err := c.Exchange(m, bind.DNSAddr()); err == nil {
		t.Fatal("a server held down answered")
	}

	for _, l := range []*lab{bind, pdns} {
		if err := l.SetDown(false); err != nil {
			t.Fatal(err)
		}
	}
	if got := []string{bind.DNSAddr(), pdns.DNSAddr(), pdns.APIURL()}; strings.Join(got, " ") != strings.Join(addrs, " ") {
		t.Fatalf("back on %v, was %v", got, addrs)
	}
	for i, tg := range targets {
		apply(t, tg, fwd, dnstest.Create(dnstest.Set(t, fmt.Sprintf("back%d.example.net", i), dns.TypeA, 300, "192.0.2.1")))
	}
}

// TestNew: what a configuration must hold, and that it never prints its
// secrets.
func TestNew(t *testing.T) {
	t.Parallel()
	const secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
	ok := func() labdns.Config {
		return labdns.Config{Name: "t", Zones: []string{fwd}, DNSAddr: "127.0.0.1:0",
			TSIG: &labdns.TSIGKey{Name: "anneal", Secret: secret}, APIAddr: "127.0.0.1:0", APIKey: "the-api-key"}
	}
	for _, tc := range []struct {
		name string
		edit func(*labdns.Config)
		want string
	}{
		{"ok", func(*labdns.Config) {}, ""},
		{"no zones", func(c *labdns.Config) { c.Zones = nil }, "no zones"},
		{"no DNS address", func(c *labdns.Config) { c.DNSAddr = "" }, "no DNS address"},
		{"DNS address without a port", func(c *labdns.Config) { c.DNSAddr = "127.0.0.1" }, "DNS address"},
		{"API without a key", func(c *labdns.Config) { c.APIKey = "" }, "needs an API key"},
		{"bad server id", func(c *labdns.Config) { c.ServerID = "a/b" }, "server id"},
		{"bad algorithm", func(c *labdns.Config) { c.TSIG.Algorithm = "hmac-md5" }, "not supported"},
		{"secret not base64", func(c *labdns.Config) { c.TSIG.Secret = "not base64!" }, "not valid base64"},
		{"zone twice", func(c *labdns.Config) { c.Zones = []string{fwd, "Example.NET."} }, "twice"},
		{"bad zone", func(c *labdns.Config) { c.Zones = []string{"a..b"} }, "not a domain name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok()
			tc.edit(&cfg)
			s, err := labdns.New(cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "cfg", cfg)
				printed := fmt.Sprintf("%v %+v %#v %s %v %#v %s", cfg, cfg, cfg, buf.String(), s, s, s.Zones())
				if strings.Contains(printed, secret) || strings.Contains(printed, "the-api-key") {
					t.Fatalf("a secret is printed: %s", printed)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want %q", err, tc.want)
			}
			if err != nil && (strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "not base64!")) {
				t.Fatalf("the error quotes the secret: %v", err)
			}
		})
	}
}

// TestLifecycle: Start twice, SetDown before Start, Close twice, Start
// after Close, and a cancelled context stopping the server.
func TestLifecycle(t *testing.T) {
	t.Parallel()
	s, err := labdns.New(bindConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetDown(true); err == nil {
		t.Error("SetDown before Start worked")
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err == nil {
		t.Error("started twice")
	}
	addr := s.DNSAddr()
	if r := query(t, addr, "udp", fwd, mdns.TypeSOA); !r.Authoritative {
		t.Fatalf("SOA: %v", r)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for s.SetDown(false) == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.SetDown(false); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after its context ended the server is not closed: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err == nil {
		t.Error("started after Close")
	}
	c := &mdns.Client{Timeout: 300 * time.Millisecond}
	m := new(mdns.Msg)
	m.SetQuestion("example.net.", mdns.TypeSOA)
	if _, _, err := c.Exchange(m, addr); err == nil {
		t.Error("a closed server answered")
	}
}

// TestExampleSite stands in for the example site's two DNS targets with
// FromSite, converges the site's DNS onto them with anneal's planner and
// applier, and checks that the next plan is empty, also after both
// servers restarted from their state.
func TestExampleSite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	site, diags, err := schema.LoadDir(ctx, "../../examples/site-repo", schema.LoadOptions{})
	if err != nil || site == nil {
		t.Fatalf("load the example site: %v %v", err, diags)
	}
	desired, err := dns.Compile(site)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[schema.SecretRef]string{}
	resolve := func(ref schema.SecretRef, _ schema.SecretDest) (string, error) {
		if v, ok := secrets[ref]; ok {
			return v, nil
		}
		return "", fmt.Errorf("no secret %s", ref)
	}
	stateDir := t.TempDir()
	var logs logBuf
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	// The site's fixed ports may be taken on this machine: free ones.
	local := map[string]schema.Target{}
	for _, tg := range site.DNS.Targets {
		switch tg.Kind {
		case schema.TargetRFC2136:
			secrets[tg.TSIG.Secret] = randomSecret(t)
		case schema.TargetPowerDNS:
			secrets[tg.APIKey] = randomKey(t)
			tg.API = "http://127.0.0.1:0"
		}
		tg.Server = "127.0.0.1:0"
		local[tg.Name] = tg
	}
	servers := map[string]*labdns.Server{}
	startAll := func() map[string]dns.Target {
		targets := map[string]dns.Target{}
		for name, tg := range local {
			s, err := labdns.FromSite(site, tg, resolve, filepath.Join(stateDir, name), log)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			servers[name] = s
			// The provider, from the same target at the bound addresses.
			tg.Server = s.DNSAddr()
			var dt dns.Target
			if tg.Kind == schema.TargetPowerDNS {
				tg.API = s.APIURL()
				dt, err = powerdns.FromSite(tg, resolve)
			} else {
				dt, err = rfc2136.FromSite(tg, resolve)
			}
			if err != nil {
				t.Fatal(err)
			}
			local[name] = tg
			targets[name] = dt
		}
		return targets
	}
	targets := startAll()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	plan, err := (&dns.Planner{Targets: targets, State: st}).Plan(ctx, desired)
	if err != nil || len(plan.Failures) > 0 || !plan.HasChanges() || plan.HasConflicts() {
		t.Fatalf("first plan: %v %+v", err, plan.Failures)
	}
	res, err := (&dns.Applier{Targets: targets, State: st}).Apply(ctx, plan, desired, dns.ApplyOptions{AllowMassDelete: true})
	if err != nil || res.Failed() {
		t.Fatalf("apply: %v %+v", err, res)
	}
	empty := func(when string, targets map[string]dns.Target) {
		t.Helper()
		plan, err := (&dns.Planner{Targets: targets, State: st}).Plan(ctx, desired)
		if err != nil || len(plan.Failures) > 0 || plan.HasChanges() || plan.HasConflicts() {
			t.Fatalf("plan %s is not empty: %v %+v %+v", when, err, plan.Failures, plan.Zones)
		}
	}
	empty("after the apply", targets)

	// A name of the site, by DNS: the wildcard of the example.
	r := query(t, servers["bind"].DNSAddr(), "udp", "web.apps.east.example.net", mdns.TypeCNAME)
	if len(r.Answer) != 1 || !r.Authoritative {
		t.Fatalf("wildcard: %v", r)
	}

	for _, s := range servers {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	empty("after a restart of the servers", startAll())

	for _, v := range secrets {
		if strings.Contains(logs.String(), v) {
			t.Fatal("the log holds a secret")
		}
	}
}

// TestFromSiteErrors: targets the lab cannot stand in for.
func TestFromSiteErrors(t *testing.T) {
	t.Parallel()
	resolve := func(schema.SecretRef, schema.SecretDest) (string, error) { return "c2VjcmV0", nil }
	failing := func(schema.SecretRef, schema.SecretDest) (string, error) { return "", errors.New("no such variable") }
	site := &schema.Site{DNS: &schema.DNS{Targets: []schema.Target{{Name: "bind"}, {Name: "pdns"}, {Name: "odd"}}}}
	for _, tc := range []struct {
		name    string
		target  schema.Target
		resolve func(schema.SecretRef, schema.SecretDest) (string, error)
		want    string
	}{
		{"not the site's", schema.Target{Name: "other", Kind: schema.TargetRFC2136}, resolve, "not a target of the site"},
		{"no key", schema.Target{Name: "bind", Kind: schema.TargetRFC2136, Server: "127.0.0.1:0", Zones: []string{fwd}}, resolve, "no tsig key"},
		{"key not resolved", schema.Target{Name: "bind", Kind: schema.TargetRFC2136, Server: "127.0.0.1:0", Zones: []string{fwd},
			TSIG: &schema.TSIG{Name: "anneal", Secret: "secret:x"}}, failing, "no such variable"},
		{"https API", schema.Target{Name: "pdns", Kind: schema.TargetPowerDNS, API: "https://127.0.0.1:8443", Zones: []string{fwd}}, resolve, "plain http"},
		{"unknown kind", schema.Target{Name: "odd", Kind: "route53", Zones: []string{fwd}}, resolve, "no lab stand-in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := labdns.FromSite(site, tc.target, tc.resolve, t.TempDir(), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("FromSite: %v, want %q", err, tc.want)
			}
		})
	}
	// A powerdns target without a server address gets a free DNS port;
	// a server without a port gets 53.
	s, err := labdns.FromSite(site, schema.Target{Name: "pdns", Kind: schema.TargetPowerDNS, API: "http://127.0.0.1:0", Zones: []string{fwd}}, resolve, "", nil)
	if err != nil || s.DNSAddr() != "127.0.0.1:0" {
		t.Fatalf("FromSite: %v, %v", s, err)
	}
	s, err = labdns.FromSite(site, schema.Target{Name: "bind", Kind: schema.TargetRFC2136, Server: "127.0.0.1", Zones: []string{fwd},
		TSIG: &schema.TSIG{Name: "anneal", Secret: "env:X"}}, resolve, "", nil)
	if err != nil || s.DNSAddr() != "127.0.0.1:53" {
		t.Fatalf("FromSite: %v, %v", s, err)
	}
}
