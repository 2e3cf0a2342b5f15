package powerdns_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/anneal-dev/anneal/providers/dns/powerdns"
	"github.com/anneal-dev/anneal/providers/secret"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/dns/dnstest"
	"github.com/anneal-dev/anneal/schema"
	"github.com/anneal-dev/anneal/test/servers"
)

const (
	fwd  = "example.net"
	rev4 = "10.10.in-addr.arpa"
	rev6 = "0.3.1.0.8.b.d.0.1.0.0.2.ip6.arpa"
)

func start(t *testing.T, opts servers.PowerDNSOptions) *servers.PowerDNS {
	t.Helper()
	if opts.Zones == nil {
		opts.Zones = []string{fwd}
	}
	return servers.StartPowerDNS(t, opts)
}

// target makes a target for p; withDNS also gives it p's DNS address.
func target(t *testing.T, p *servers.PowerDNS, withDNS bool, edit ...func(*powerdns.Config)) *powerdns.Target {
	t.Helper()
	cfg := powerdns.Config{Name: "pdns", APIURL: p.APIURL, APIKey: p.APIKey, ServerID: p.ServerID, Timeout: 5 * time.Second}
	if withDNS {
		cfg.DNSAddr = p.DNSAddr
	}
	for _, e := range edit {
		e(&cfg)
	}
	tg, err := powerdns.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// both runs f with a target without and with the DNS address.
func both(t *testing.T, f func(t *testing.T, withDNS bool)) {
	for _, withDNS := range []bool{false, true} {
		t.Run(map[bool]string{false: "api", true: "api+dns"}[withDNS], func(t *testing.T) {
			t.Parallel()
			f(t, withDNS)
		})
	}
}

func apply(t *testing.T, tg *powerdns.Target, zone string, changes ...dns.RRsetChange) {
	t.Helper()
	n, err := tg.Apply(context.Background(), zone, changes)
	if err != nil || n != len(changes) {
		t.Fatalf("Apply: %d of %d applied: %v", n, len(changes), err)
	}
}

// content reads the zone and drops the apex NS the harness put there.
func content(t *testing.T, tg *powerdns.Target, zone string) (*dns.ZoneContent, []dns.RRset) {
	t.Helper()
	zc, err := tg.ReadZone(context.Background(), zone)
	if err != nil {
		t.Fatal(err)
	}
	return zc, withoutApexNS(zc.RRsets, zone)
}

func withoutApexNS(sets []dns.RRset, zone string) []dns.RRset {
	var out []dns.RRset
	for _, s := range sets {
		if s.Name == zone && s.Type == dns.TypeNS {
			continue
		}
		out = append(out, s)
	}
	return out
}

// axfrContent is the zone as DNS serves it, grouped as reconcile does.
func axfrContent(t *testing.T, p *servers.PowerDNS, zone string) []dns.RRset {
	t.Helper()
	return withoutApexNS(dns.RRsetsFromRRs(p.AXFR(t, zone)), zone)
}

// model is what the zone should hold, RRset by key.
type model map[dns.RRsetKey]dns.RRset

func (m model) apply(changes []dns.RRsetChange) {
	for _, c := range changes {
		if c.New == nil {
			delete(m, c.Key())
		} else {
			m[c.Key()] = *c.New
		}
	}
}

func (m model) sorted() []dns.RRset {
	var out []dns.RRset
	for _, s := range m {
		out = append(out, s)
	}
	sortSets(out)
	return out
}

func sortSets(s []dns.RRset) {
	slices.SortFunc(s, func(a, b dns.RRset) int { return strings.Compare(a.Key().String(), b.Key().String()) })
}

func sameRRsets(a, b []dns.RRset) bool {
	sortSets(a)
	sortSets(b)
	return slices.EqualFunc(a, b, func(x, y dns.RRset) bool { return x.Equal(&y) })
}

func dump(sets []dns.RRset) string {
	var b strings.Builder
	for _, s := range sets {
		fmt.Fprintf(&b, "\n  %s %d %q", s.Key(), s.TTL, s.Data)
	}
	return b.String()
}

// checkZone compares the zone, read through the API and by AXFR, with m,
// and checks that every RRset of m carries anneal's mark.
func checkZone(t *testing.T, tg *powerdns.Target, p *servers.PowerDNS, zone string, m model) *dns.ZoneContent {
	t.Helper()
	zc, got := content(t, tg, zone)
	if want := m.sorted(); !sameRRsets(got, want) {
		t.Fatalf("zone %s through the API:%s\nwant:%s", zone, dump(got), dump(want))
	}
	if got, want := axfrContent(t, p, zone), m.sorted(); !sameRRsets(got, want) {
		t.Fatalf("zone %s by AXFR:%s\nwant:%s", zone, dump(got), dump(want))
	}
	for k := range m {
		if !zc.Marked[k] {
			t.Fatalf("%s is not marked as anneal's; marked: %v", k, zc.Marked)
		}
	}
	return zc
}

func wantClass(t *testing.T, err error, class dns.ErrorClass) *dns.TargetError {
	t.Helper()
	return dnstest.WantClass(t, err, class, "pdns")
}

// TestRoundTrip applies creates, updates and deletes of the record types
// anneal manages, and after each step reads the zone back through the API
// and by AXFR: it must hold exactly what was applied, marked as anneal's,
// and the serial must have moved.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	both(t, func(t *testing.T, withDNS bool) {
		p := start(t, servers.PowerDNSOptions{})
		tg := target(t, p, withDNS)
		ctx := context.Background()
		m := model{}
		serial0, err := tg.Serial(ctx, fwd)
		if err != nil {
			t.Fatal(err)
		}

		www := dnstest.Set(t, "www.example.net", dns.TypeA, 300, "192.0.2.1", "192.0.2.2")
		www6 := dnstest.Set(t, "www.example.net", dns.TypeAAAA, 300, "2001:db8::1")
		mx := dnstest.Set(t, "example.net", dns.TypeMX, 3600, "10 mail.example.net.", "20 mx2.example.org.")
		txt := dnstest.Set(t, "example.net", dns.TypeTXT, 3600, `"v=spf1 mx -all"`)
		srv := dnstest.Set(t, "_ldap._tcp.example.net", dns.TypeSRV, 600, "0 100 389 ldap1.example.net.", "10 50 389 ldap2.example.net.")
		cname := dnstest.Set(t, "vault.example.net", dns.TypeCNAME, 300, "vault1.example.net.")
		caa := dnstest.Set(t, "example.net", dns.TypeCAA, 3600, `0 issue "letsencrypt.org"`)
		star := dnstest.Set(t, "*.apps.example.net", dns.TypeCNAME, 60, "ingress.example.net.")
		// A delegation: DNS answers it with a referral, so the check asks
		// the API.
		deleg := dnstest.Set(t, "sub.example.net", dns.TypeNS, 3600, "ns1.example.org.", "ns2.example.org.")
		step1 := []dns.RRsetChange{dnstest.Create(www), dnstest.Create(www6), dnstest.Create(mx), dnstest.Create(txt), dnstest.Create(srv), dnstest.Create(cname), dnstest.Create(caa), dnstest.Create(star), dnstest.Create(deleg)}
		apply(t, tg, fwd, step1...)
		m.apply(step1)
		zc := checkZone(t, tg, p, fwd, m)
		if zc.Serial == serial0 {
			t.Fatalf("serial still %d after apply", zc.Serial)
		}
		if s, err := tg.Serial(ctx, fwd); err != nil || s != zc.Serial {
			t.Fatalf("Serial = %d, %v; ReadZone's serial %d", s, err, zc.Serial)
		}

		www2 := dnstest.Set(t, "www.example.net", dns.TypeA, 60, "192.0.2.3")
		mx2 := dnstest.Set(t, "example.net", dns.TypeMX, 3600, "10 mail.example.net.")
		txt2 := dnstest.Set(t, "example.net", dns.TypeTXT, 3600, `"v=spf1 mx -all"`, `"google-site-verification=abc"`)
		cname2 := dnstest.Set(t, "vault.example.net", dns.TypeCNAME, 300, "vault2.example.net.")
		deleg2 := dnstest.Set(t, "sub.example.net", dns.TypeNS, 3600, "ns1.example.org.")
		step2 := []dns.RRsetChange{
			dnstest.Delete(srv), dnstest.Delete(www6), dnstest.Delete(star),
			dnstest.Update(www, www2), dnstest.Update(mx, mx2), dnstest.Update(txt, txt2), dnstest.Update(cname, cname2), dnstest.Update(deleg, deleg2),
			dnstest.Create(dnstest.Set(t, "ntp.example.net", dns.TypeA, 300, "10.10.2.2")),
		}
		apply(t, tg, fwd, step2...)
		m.apply(step2)
		zc2 := checkZone(t, tg, p, fwd, m)
		if zc2.Serial == zc.Serial {
			t.Fatalf("serial still %d after the second apply", zc2.Serial)
		}
		for _, gone := range []dns.RRsetKey{srv.Key(), www6.Key(), star.Key()} {
			if zc2.Marked[gone] {
				t.Fatalf("deleted %s is still marked", gone)
			}
		}

		// The same RRset twice in one call: two PATCHes, in order.
		www3 := dnstest.Set(t, "www.example.net", dns.TypeA, 60, "192.0.2.4")
		step3 := []dns.RRsetChange{dnstest.Update(www2, www3), dnstest.Delete(www3)}
		before := tg.Stats().Patches
		apply(t, tg, fwd, step3...)
		m.apply(step3)
		checkZone(t, tg, p, fwd, m)
		if n := tg.Stats().Patches - before; n != 2 {
			t.Fatalf("two changes of one RRset went in %d PATCHes, want 2", n)
		}
		if n, err := tg.Apply(ctx, fwd, nil); n != 0 || err != nil {
			t.Fatalf("empty Apply = %d, %v", n, err)
		}
	})
}

// TestTypesRoundTrip writes RDATA whose PowerDNS content differs from
// miekg/dns's or needs care (quoting, escapes, long TXT, IPv4-mapped
// IPv6, the null MX, a root SRV target) and reads it back as written.
func TestTypesRoundTrip(t *testing.T) {
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{})
	tg := target(t, p, true)
	long := strings.Repeat("k", 300) // one string over 255 bytes: two on the wire
	sets := []*dns.RRset{
		dnstest.Set(t, "txt.example.net", dns.TypeTXT, 300,
			`"hello world" "second string"`,
			`"quote \" and backslash \\ and semicolon ;"`,
			`"caf\195\169 \t tab"`,
			`""`,
			`"`+long+`"`,
			`"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC"`),
		dnstest.Set(t, "mx.example.net", dns.TypeMX, 300, "0 .", "10 MAIL.Example.NET."),
		dnstest.Set(t, "_sip._udp.example.net", dns.TypeSRV, 300, "0 0 0 .", "10 60 5060 sip.example.net."),
		dnstest.Set(t, "_xmpp._tcp.example.net", dns.TypeSRV, 300, "5 0 5269 xmpp.example.org."),
		dnstest.Set(t, "alias.example.net", dns.TypeCNAME, 300, "Target.Example.ORG."),
		dnstest.Set(t, "v6.example.net", dns.TypeAAAA, 300, "::ffff:192.0.2.1", "2001:db8:0:0:0:0:0:1", "fe80::1"),
		dnstest.Set(t, "caa.example.net", dns.TypeCAA, 300, `0 issue "letsencrypt.org"`, `128 iodef "mailto:security@example.net"`, `0 issuewild ";"`),
		dnstest.Set(t, "spf.example.net", dns.TypeTXT, 300, `"v=spf1 ip4:192.0.2.0/24 include:_spf.example.org ~all"`),
	}
	m := model{}
	var changes []dns.RRsetChange
	for _, s := range sets {
		changes = append(changes, dnstest.Create(s))
	}
	apply(t, tg, fwd, changes...)
	m.apply(changes)
	checkZone(t, tg, p, fwd, m)

	// Every record is as DNS serves it, and a re-apply of the read sees
	// no difference (the check passes both ways).
	_, got := content(t, tg, fwd)
	var again []dns.RRsetChange
	for i := range got {
		s := got[i]
		again = append(again, dnstest.Update(&got[i], &s))
	}
	apply(t, tg, fwd, again...)
	checkZone(t, tg, p, fwd, m)
}

// TestReverseZones writes PTRs in an in-addr.arpa and an ip6.arpa zone.
func TestReverseZones(t *testing.T) {
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{Zones: []string{fwd, rev4, rev6}})
	tg := target(t, p, true)
	name := func(ip string) string {
		r, err := mdns.ReverseAddr(ip)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSuffix(r, ".")
	}
	m4, m6 := model{}, model{}
	c4 := []dns.RRsetChange{
		dnstest.Create(dnstest.Set(t, name("10.10.1.1"), dns.TypePTR, 300, "e1n01.east.example.net.")),
		dnstest.Create(dnstest.Set(t, name("10.10.255.254"), dns.TypePTR, 300, "gw.example.net.")),
	}
	c6 := []dns.RRsetChange{
		dnstest.Create(dnstest.Set(t, name("2001:db8:130::1"), dns.TypePTR, 300, "e1n01.east.example.net.")),
		dnstest.Create(dnstest.Set(t, name("2001:db8:130:ffff::abcd"), dns.TypePTR, 300, "e1n02.east.example.net.")),
	}
	apply(t, tg, rev4, c4...)
	apply(t, tg, rev6, c6...)
	m4.apply(c4)
	m6.apply(c6)
	checkZone(t, tg, p, rev4, m4)
	checkZone(t, tg, p, rev6, m6)

	old := c6[0].New
	moved := dnstest.Set(t, old.Name, dns.TypePTR, 300, "e1n09.east.example.net.")
	c6b := []dns.RRsetChange{dnstest.Update(old, moved), dnstest.Delete(c6[1].New)}
	apply(t, tg, rev6, c6b...)
	m6.apply(c6b)
	checkZone(t, tg, p, rev6, m6)

	// A PTR outside the zone is refused before anything is sent.
	_, err := tg.Apply(context.Background(), rev4, []dns.RRsetChange{dnstest.Create(dnstest.Set(t, name("10.11.0.1"), dns.TypePTR, 300, "x.example.net."))})
	if te := wantClass(t, err, dns.ClassPermanent); !strings.Contains(te.Error(), "not in zone") {
		t.Fatalf("out-of-zone PTR: %v", err)
	}
}

// TestMarked: Marked holds what anneal wrote, not what was written
// directly through the API, with or without another account's comment.
func TestMarked(t *testing.T) {
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{})
	tg := target(t, p, true)
	ours := dnstest.Set(t, "ours.example.net", dns.TypeA, 300, "192.0.2.1")
	apply(t, tg, fwd, dnstest.Create(ours))
	p.Patch(t, fwd,
		servers.PDNSRRset{Name: "theirs.example.net.", Type: "A", TTL: 300, Records: []servers.PDNSRecord{{Content: "192.0.2.2"}}},
		servers.PDNSRRset{Name: "noted.example.net.", Type: "A", TTL: 300, Records: []servers.PDNSRecord{{Content: "192.0.2.3"}},
			Comments: []servers.PDNSComment{{Content: "managed by anneal", Account: "alice"}}},
		// A comment without records is not an RRset.
		servers.PDNSRRset{Name: "ghost.example.net.", Type: "A", TTL: 300, Comments: []servers.PDNSComment{{Content: "x", Account: "anneal"}}},
		// Disabled records are not served: not in the zone's content.
		servers.PDNSRRset{Name: "off.example.net.", Type: "A", TTL: 300, Records: []servers.PDNSRecord{{Content: "192.0.2.4", Disabled: true}},
			Comments: []servers.PDNSComment{{Content: "x", Account: "anneal"}}},
	)
	zc, got := content(t, tg, fwd)
	want := []dns.RRset{*ours, *dnstest.Set(t, "theirs.example.net", dns.TypeA, 300, "192.0.2.2"), *dnstest.Set(t, "noted.example.net", dns.TypeA, 300, "192.0.2.3")}
	if !sameRRsets(got, want) {
		t.Fatalf("zone:%s\nwant:%s", dump(got), dump(want))
	}
	wantMarked := map[dns.RRsetKey]bool{ours.Key(): true}
	if len(zc.Marked) != 1 || !zc.Marked[ours.Key()] {
		t.Fatalf("Marked = %v, want %v", zc.Marked, wantMarked)
	}
	if got := axfrContent(t, p, fwd); !sameRRsets(got, want) {
		t.Fatalf("AXFR:%s\nwant:%s", dump(got), dump(want))
	}

	// Updating a foreign RRset (after the planner decided to adopt it)
	// marks it.
	theirs := dnstest.Set(t, "theirs.example.net", dns.TypeA, 300, "192.0.2.2")
	apply(t, tg, fwd, dnstest.Update(theirs, dnstest.Set(t, "theirs.example.net", dns.TypeA, 300, "192.0.2.9")))
	zc, _ = content(t, tg, fwd)
	if !zc.Marked[theirs.Key()] || len(zc.Marked) != 2 {
		t.Fatalf("Marked = %v", zc.Marked)
	}
}

// TestBatches writes 20,000 RRsets to a server whose body limit is 1 MiB:
// they go in several PATCHes, each under the limit, and all land; then a
// target whose limit is over the server's gets PowerDNS's 400, explained.
func TestBatches(t *testing.T) {
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{MaxBodySizeMB: 1})
	const limit = 1_000_000
	tg := target(t, p, true, func(c *powerdns.Config) { c.MaxBodyBytes = limit })
	const n = 20_000
	m := model{}
	var changes []dns.RRsetChange
	for i := range n {
		changes = append(changes, dnstest.Create(dnstest.Set(t, fmt.Sprintf("h%05d.example.net", i), dns.TypeA, 300, fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255))))
	}
	start := time.Now()
	apply(t, tg, fwd, changes...)
	st := tg.Stats()
	t.Logf("%d RRsets: %d PATCHes, largest %d bytes, %d bytes in all, %s", n, st.Patches, st.LargestPatch, st.PatchBytes, time.Since(start))
	if st.Patches < 3 || st.LargestPatch > limit {
		t.Fatalf("%d PATCHes, largest %d bytes: want several, each at most %d", st.Patches, st.LargestPatch, limit)
	}
	m.apply(changes)
	checkZone(t, tg, p, fwd, m)

	// Delete them all again, as big batches.
	var dels []dns.RRsetChange
	for _, c := range changes {
		dels = append(dels, dnstest.Delete(c.New))
	}
	apply(t, tg, fwd, dels...)
	checkZone(t, tg, p, fwd, model{})

	// A target whose limit is over the server's learns the server's from
	// GET /config and keeps under it.
	big := target(t, p, true, func(c *powerdns.Config) { c.MaxBodyBytes = 1_500_000 })
	apply(t, big, fwd, changes...)
	if st := big.Stats(); st.LargestPatch > 1<<20 || st.Patches < 4 {
		t.Fatalf("over the server's limit: %d PATCHes, largest %d bytes", st.Patches, st.LargestPatch)
	}
	m.apply(changes)
	checkZone(t, tg, p, fwd, m)
	apply(t, tg, fwd, dels...)

	// When /config does not answer, PowerDNS refuses the body (400, or a
	// reset mid-upload), the error says why, and nothing lands.
	noConfig := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/config") {
			return &http.Response{StatusCode: http.StatusNotFound, Body: io.NopCloser(strings.NewReader("Not Found")), Request: r}, nil
		}
		return http.DefaultTransport.RoundTrip(r)
	})}
	blind := target(t, p, true, func(c *powerdns.Config) { c.HTTPClient = noConfig; c.MaxBodyBytes = 1_500_000 })
	applied, err := blind.Apply(context.Background(), fwd, changes)
	t.Logf("a body over the server's limit: %v", err)
	var te *dns.TargetError
	if !errors.As(err, &te) || applied != 0 || !strings.Contains(err.Error(), "webserver-max-bodysize") || te.Class == dns.ClassConflict {
		t.Fatalf("over the body limit: %d applied, %v", applied, err)
	}
	checkZone(t, tg, p, fwd, model{})

	// One RRset over the target's own limit is refused before sending.
	var many []string
	for i := range 30_000 {
		many = append(many, fmt.Sprintf("10.1.%d.%d", i>>8, i&255))
	}
	small := target(t, p, true, func(c *powerdns.Config) { c.MaxBodyBytes = 100_000 })
	applied, err = small.Apply(context.Background(), fwd, []dns.RRsetChange{dnstest.Create(dnstest.Set(t, "big.example.net", dns.TypeA, 300, many...))})
	if te := wantClass(t, err, dns.ClassPermanent); applied != 0 || !strings.Contains(te.Error(), "maximum body size") || small.Stats().Patches != 0 {
		t.Fatalf("an RRset over the limit: %d applied, %d PATCHes, %v", applied, small.Stats().Patches, err)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestConflict changes the zone through the API between plan and apply:
// the batch that would overwrite the change is not sent, and the error is
// a conflict. Batches before it land and are counted.
func TestConflict(t *testing.T) {
	t.Parallel()
	both(t, func(t *testing.T, withDNS bool) {
		p := start(t, servers.PowerDNSOptions{})
		tg := target(t, p, withDNS)
		ctx := context.Background()
		a := dnstest.Set(t, "a.example.net", dns.TypeA, 300, "192.0.2.1")
		b := dnstest.Set(t, "b.example.net", dns.TypeA, 300, "192.0.2.2")
		c := dnstest.Set(t, "c.example.net", dns.TypeTXT, 300, `"c"`)
		apply(t, tg, fwd, dnstest.Create(a), dnstest.Create(b), dnstest.Create(c))
		_, planned := content(t, tg, fwd)

		cases := []struct {
			name   string
			behind servers.PDNSRRset // the out-of-band write
			change dns.RRsetChange
		}{
			{"update of a changed RRset",
				servers.PDNSRRset{Name: "a.example.net.", Type: "A", TTL: 300, Records: []servers.PDNSRecord{{Content: "192.0.2.99"}}},
				dnstest.Update(a, dnstest.Set(t, "a.example.net", dns.TypeA, 300, "192.0.2.10"))},
			{"update after a TTL change",
				servers.PDNSRRset{Name: "a.example.net.", Type: "A", TTL: 30, Records: []servers.PDNSRecord{{Content: "192.0.2.1"}}},
				dnstest.Update(a, dnstest.Set(t, "a.example.net", dns.TypeA, 300, "192.0.2.10"))},
			{"create of an RRset someone made",
				servers.PDNSRRset{Name: "new.example.net.", Type: "A", TTL: 300, Records: []servers.PDNSRecord{{Content: "192.0.2.50"}}},
				dnstest.Create(dnstest.Set(t, "new.example.net", dns.TypeA, 300, "192.0.2.51"))},
			{"delete of an RRset someone deleted",
				servers.PDNSRRset{Name: "c.example.net.", Type: "TXT", ChangeType: "DELETE"},
				dnstest.Delete(c)},
			{"delete of an RRset someone extended",
				servers.PDNSRRset{Name: "c.example.net.", Type: "TXT", TTL: 300, Records: []servers.PDNSRecord{{Content: `"c"`}, {Content: `"d"`}}},
				dnstest.Delete(c)},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				// Reset to the planned state.
				p.Patch(t, fwd,
					servers.PDNSRRset{Name: "new.example.net.", Type: "A", ChangeType: "DELETE"},
					servers.PDNSRRset{Name: "a.example.net.", Type: "A", TTL: 300, Records: []servers.PDNSRecord{{Content: "192.0.2.1"}}, Comments: []servers.PDNSComment{{Content: "managed by anneal", Account: "anneal"}}},
					servers.PDNSRRset{Name: "c.example.net.", Type: "TXT", TTL: 300, Records: []servers.PDNSRecord{{Content: `"c"`}}, Comments: []servers.PDNSComment{{Content: "managed by anneal", Account: "anneal"}}},
				)
				if _, got := content(t, tg, fwd); !sameRRsets(got, slices.Clone(planned)) {
					t.Fatalf("reset failed:%s", dump(got))
				}
				p.Patch(t, fwd, tc.behind)
				_, before := content(t, tg, fwd)
				patches := tg.Stats().Patches
				// An unrelated change first, then the conflicting one.
				changes := []dns.RRsetChange{dnstest.Update(b, b), tc.change}
				n, err := tg.Apply(ctx, fwd, changes)
				te := wantClass(t, err, dns.ClassConflict)
				if n != 0 || !strings.Contains(te.Error(), tc.change.Key().String()) {
					t.Fatalf("Apply = %d, %v", n, err)
				}
				if _, after := content(t, tg, fwd); !sameRRsets(after, before) {
					t.Fatalf("the zone changed:%s\nwas:%s", dump(after), dump(before))
				}
				if tg.Stats().Patches != patches {
					t.Fatal("a PATCH was sent")
				}
			})
		}
	})
}

// TestConflictLaterBatch: batches before the conflicting one land and are
// counted; nothing after it is sent.
func TestConflictLaterBatch(t *testing.T) {
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{})
	tg := target(t, p, true, func(c *powerdns.Config) { c.MaxBodyBytes = 4096 })
	var changes []dns.RRsetChange
	m := model{}
	for i := range 200 {
		changes = append(changes, dnstest.Create(dnstest.Set(t, fmt.Sprintf("n%03d.example.net", i), dns.TypeA, 300, "192.0.2.1")))
	}
	// Someone makes n150 before anneal gets to it.
	p.Patch(t, fwd, servers.PDNSRRset{Name: "n150.example.net.", Type: "A", TTL: 300, Records: []servers.PDNSRecord{{Content: "198.51.100.1"}}})
	n, err := tg.Apply(context.Background(), fwd, changes)
	wantClass(t, err, dns.ClassConflict)
	if n == 0 || n > 150 || tg.Stats().Patches < 2 {
		t.Fatalf("Apply = %d in %d PATCHes: want the batches before n150's", n, tg.Stats().Patches)
	}
	m.apply(changes[:n])
	m[dns.RRsetKey{Name: "n150.example.net", Type: dns.TypeA}] = *dnstest.Set(t, "n150.example.net", dns.TypeA, 300, "198.51.100.1")
	zc, got := content(t, tg, fwd)
	if want := m.sorted(); !sameRRsets(got, want) {
		t.Fatalf("zone after %d applied:%s\nwant:%s", n, dump(got), dump(want))
	}
	if zc.Marked[dns.RRsetKey{Name: "n150.example.net", Type: dns.TypeA}] {
		t.Fatal("the out-of-band RRset is marked")
	}
}

// TestCNAMEBehindBack: a CNAME added since the plan where anneal creates
// other data: PowerDNS refuses the PATCH (422), which is a conflict.
func TestCNAMEBehindBack(t *testing.T) {
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{})
	tg := target(t, p, true)
	p.Patch(t, fwd, servers.PDNSRRset{Name: "svc.example.net.", Type: "CNAME", TTL: 300, Records: []servers.PDNSRecord{{Content: "elsewhere.example.org."}}})
	n, err := tg.Apply(context.Background(), fwd, []dns.RRsetChange{dnstest.Create(dnstest.Set(t, "svc.example.net", dns.TypeA, 300, "192.0.2.1"))})
	if te := wantClass(t, err, dns.ClassConflict); n != 0 || !strings.Contains(te.Error(), "Conflicts with pre-existing RRset") {
		t.Fatalf("Apply = %d, %v", n, err)
	}
}

// TestWildcard: a DNS query for a name under a wildcard gets a synthesized
// answer; the check must not take it for an RRset in the way.
func TestWildcard(t *testing.T) {
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{})
	tg := target(t, p, true)
	star := dnstest.Set(t, "*.apps.example.net", dns.TypeA, 60, "192.0.2.80")
	apply(t, tg, fwd, dnstest.Create(star))
	x := dnstest.Set(t, "x.apps.example.net", dns.TypeA, 60, "192.0.2.80")
	apply(t, tg, fwd, dnstest.Create(x))
	m := model{}
	m.apply([]dns.RRsetChange{dnstest.Create(star), dnstest.Create(x)})
	checkZone(t, tg, p, fwd, m)
	apply(t, tg, fwd, dnstest.Delete(x))
	m.apply([]dns.RRsetChange{dnstest.Delete(x)})
	checkZone(t, tg, p, fwd, m)
}

// TestSerial: the serial by SOA query and by the API agree, and move with
// every apply.
func TestSerial(t *testing.T) {
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{})
	viaAPI, viaDNS := target(t, p, false), target(t, p, true)
	ctx := context.Background()
	prev := uint32(0)
	for i := range 3 {
		s1, err := viaAPI.Serial(ctx, fwd)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := viaDNS.Serial(ctx, fwd+".")
		if err != nil {
			t.Fatal(err)
		}
		if s1 != s2 || s1 == prev {
			t.Fatalf("step %d: serial %d by API, %d by DNS, %d before", i, s1, s2, prev)
		}
		prev = s1
		apply(t, viaAPI, fwd, dnstest.Create(dnstest.Set(t, fmt.Sprintf("s%d.example.net", i), dns.TypeA, 300, "192.0.2.1")))
	}
	if q := viaDNS.Stats().DNSQueries; q != 3 || viaDNS.Stats().Requests != 0 {
		t.Fatalf("Serial by DNS: %d queries, %d API requests", q, viaDNS.Stats().Requests)
	}
}

// TestWrongKey: a refused key is a permanent error that names the target
// and does not hold the key.
func TestWrongKey(t *testing.T) {
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{})
	const key = "not-the-key-0123456789"
	tg := target(t, p, false, func(c *powerdns.Config) { c.APIKey = key })
	ctx := context.Background()
	_, err1 := tg.Serial(ctx, fwd)
	_, err2 := tg.ReadZone(ctx, fwd)
	_, err3 := tg.Apply(ctx, fwd, []dns.RRsetChange{dnstest.Create(dnstest.Set(t, "a.example.net", dns.TypeA, 300, "192.0.2.1"))})
	// With a DNS address, the read must not fall back to AXFR either.
	withDNS := target(t, p, true, func(c *powerdns.Config) { c.APIKey = key })
	_, err4 := withDNS.ReadZone(ctx, fwd)
	for _, err := range []error{err1, err2, err3, err4} {
		te := wantClass(t, err, dns.ClassPermanent)
		if !strings.Contains(err.Error(), "API key refused") || strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, te), key) || te.Zone != fwd {
			t.Fatalf("error %q (zone %q)", err, te.Zone)
		}
	}
	if withDNS.Stats().AXFRs != 0 {
		t.Fatal("a refused key fell back to AXFR")
	}
	if s := fmt.Sprintf("%v %s %#v", tg, tg, tg); strings.Contains(s, key) {
		t.Fatalf("the target prints its key: %s", s)
	}
}

// TestStopped: a stopped server is a transient failure, for every verb.
func TestStopped(t *testing.T) {
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{})
	viaAPI := target(t, p, false, func(c *powerdns.Config) { c.Timeout = time.Second })
	viaDNS := target(t, p, true, func(c *powerdns.Config) { c.Timeout = time.Second })
	a := dnstest.Set(t, "a.example.net", dns.TypeA, 300, "192.0.2.1")
	p.Stop()
	ctx := context.Background()
	for _, tg := range []*powerdns.Target{viaAPI, viaDNS} {
		_, err1 := tg.Serial(ctx, fwd)
		_, err2 := tg.ReadZone(ctx, fwd)
		n, err3 := tg.Apply(ctx, fwd, []dns.RRsetChange{dnstest.Create(a)})
		for _, err := range []error{err1, err2, err3} {
			te := wantClass(t, err, dns.ClassTransient)
			if te.Zone != fwd {
				t.Fatalf("zone %q in %v", te.Zone, err)
			}
		}
		if n != 0 {
			t.Fatalf("Apply = %d", n)
		}
	}
	// A cancelled context is transient too, and says so.
	p.Restart(t)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := viaAPI.ReadZone(cctx, fwd)
	if te := wantClass(t, err, dns.ClassTransient); !errors.Is(te, context.Canceled) {
		t.Fatalf("cancelled read: %v", err)
	}
}

// TestNotFound: a missing zone, or a wrong server id, is permanent, and
// anneal does not create the zone.
func TestNotFound(t *testing.T) {
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{})
	tg := target(t, p, false)
	ctx := context.Background()
	const missing = "missing.example"
	_, err1 := tg.Serial(ctx, missing)
	_, err2 := tg.ReadZone(ctx, missing)
	_, err3 := tg.Apply(ctx, missing, []dns.RRsetChange{dnstest.Create(dnstest.Set(t, "a.missing.example", dns.TypeA, 300, "192.0.2.1"))})
	for _, err := range []error{err1, err2, err3} {
		if te := wantClass(t, err, dns.ClassPermanent); !strings.Contains(err.Error(), "zone not found on target") || te.Zone != missing {
			t.Fatalf("missing zone: %v", err)
		}
	}
	if status, _ := p.API(t, http.MethodGet, "/zones/"+missing+".", nil); status != http.StatusNotFound {
		t.Fatalf("the zone was created (HTTP %d)", status)
	}
	// By DNS: the server refuses to answer for a zone it does not have.
	_, err := target(t, p, true).Serial(ctx, missing)
	if wantClass(t, err, dns.ClassPermanent); !strings.Contains(err.Error(), "zone not served") {
		t.Fatalf("missing zone by DNS: %v", err)
	}
	wrong := target(t, p, false, func(c *powerdns.Config) { c.ServerID = "primary" })
	_, err = wrong.ReadZone(ctx, fwd)
	if wantClass(t, err, dns.ClassPermanent); !strings.Contains(err.Error(), `server "primary" not found`) {
		t.Fatalf("wrong server id: %v", err)
	}
}

// TestReadFallsBackToAXFR puts a proxy in front of the API that fails
// reads of whole zones, as a proxy limiting response sizes would: with a
// DNS address the read comes by AXFR, without marks.
func TestReadFallsBackToAXFR(t *testing.T) {
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{})
	tg := target(t, p, true)
	a := dnstest.Set(t, "a.example.net", dns.TypeA, 300, "192.0.2.1")
	apply(t, tg, fwd, dnstest.Create(a))

	up, err := url.Parse(p.APIURL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(up)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/zones/") && r.URL.RawQuery == "" {
			http.Error(w, "response too large", http.StatusBadGateway)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	behind := target(t, p, true, func(c *powerdns.Config) { c.APIURL = proxy.URL + "/api/v1" })
	zc, err := behind.ReadZone(context.Background(), fwd)
	if err != nil {
		t.Fatal(err)
	}
	if zc.Marked != nil || behind.Stats().Fallbacks != 1 {
		t.Fatalf("Marked = %v after %d fallbacks; want nil after 1", zc.Marked, behind.Stats().Fallbacks)
	}
	if got := withoutApexNS(zc.RRsets, fwd); !sameRRsets(got, []dns.RRset{*a}) {
		t.Fatalf("zone by AXFR:%s", dump(got))
	}
	direct, _ := content(t, tg, fwd)
	if zc.Serial != direct.Serial {
		t.Fatalf("serial %d by AXFR, %d by the API", zc.Serial, direct.Serial)
	}
	// Without a DNS address there is nothing to fall back to.
	_, err = target(t, p, false, func(c *powerdns.Config) { c.APIURL = proxy.URL }).ReadZone(context.Background(), fwd)
	wantClass(t, err, dns.ClassTransient)
}

// TestLargeZone reads a 200,000-record zone through the API: its JSON is
// far over the 2 MiB body limit, which PowerDNS 4.7 applies to requests
// only. Then one change to it is checked by DNS queries, not a zone read.
func TestLargeZone(t *testing.T) {
	if testing.Short() {
		t.Skip("200,000 records: not in -short")
	}
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{})
	tg := target(t, p, true)
	const n = 200_000
	changes := make([]dns.RRsetChange, 0, n)
	for i := range n {
		changes = append(changes, dnstest.Create(&dns.RRset{Name: fmt.Sprintf("n%06d.example.net", i), Type: dns.TypeA, TTL: 300,
			Data: []string{fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255)}}))
	}
	begin := time.Now()
	apply(t, tg, fwd, changes...)
	st := tg.Stats()
	t.Logf("wrote %d RRsets in %d PATCHes (largest %d bytes) in %s", n, st.Patches, st.LargestPatch, time.Since(begin))

	begin = time.Now()
	zc, got := content(t, tg, fwd)
	t.Logf("read %d RRsets through the API in %s", len(got), time.Since(begin))
	if len(got) != n || len(zc.Marked) != n {
		t.Fatalf("read %d RRsets, %d marked; want %d", len(got), len(zc.Marked), n)
	}
	if !got[12345].Equal(changes[12345].New) {
		t.Fatalf("RRset %v, want %v", got[12345], changes[12345].New)
	}

	before := tg.Stats()
	old := changes[777].New
	apply(t, tg, fwd, dnstest.Update(old, dnstest.Set(t, old.Name, dns.TypeA, 300, "192.0.2.7")))
	if after := tg.Stats(); after.ZoneReads != before.ZoneReads || after.AXFRs != before.AXFRs || after.DNSQueries != before.DNSQueries+1 {
		t.Fatalf("a one-RRset change: %+v, before %+v; want one DNS query, no zone read", after, before)
	}
}

// TestNew checks configurations and FromSite, and that the key stays out
// of every rendering and error.
func TestNew(t *testing.T) {
	t.Parallel()
	const key = "s3cr3t-api-key"
	good := powerdns.Config{Name: "pdns", APIURL: "http://127.0.0.1:8081", APIKey: key}
	if _, err := powerdns.New(good); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*powerdns.Config){
		"no name":        func(c *powerdns.Config) { c.Name = "" },
		"no URL":         func(c *powerdns.Config) { c.APIURL = "" },
		"bad scheme":     func(c *powerdns.Config) { c.APIURL = "ftp://x" },
		"credentials":    func(c *powerdns.Config) { c.APIURL = "http://admin:" + key + "@127.0.0.1:8081" },
		"no key":         func(c *powerdns.Config) { c.APIKey = "" },
		"key with break": func(c *powerdns.Config) { c.APIKey = key + "\n" },
		"tiny body":      func(c *powerdns.Config) { c.MaxBodyBytes = 100 },
		"bad dns":        func(c *powerdns.Config) { c.DNSAddr = "::1::53" },
		"bad server id":  func(c *powerdns.Config) { c.ServerID = "a/b" },
	} {
		c := good
		edit(&c)
		_, err := powerdns.New(c)
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		if strings.Contains(err.Error(), key) {
			t.Fatalf("%s: the error holds the key: %v", name, err)
		}
	}
	for _, s := range []string{fmt.Sprint(good), fmt.Sprintf("%#v", good), fmt.Sprintf("%+v", good)} {
		if strings.Contains(s, key) {
			t.Fatalf("the config prints its key: %s", s)
		}
	}

	res, err := secret.ParseGrants("grants.yaml", []byte("secrets:\n  pdns-api-key:\n    from: env:ANNEAL_PDNS_API_KEY\n    dns: [\"127.0.0.1:8081\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	res.Env = func(name string) (string, bool) { return key, name == "ANNEAL_PDNS_API_KEY" }
	st := schema.Target{Name: "pdns", Kind: schema.TargetPowerDNS, API: "http://127.0.0.1:8081/", APIKey: "secret:pdns-api-key", Server: "127.0.0.1:5302"}
	tg, err := powerdns.FromSite(st, res.Resolve)
	if err != nil {
		t.Fatal(err)
	}
	if tg.Name() != "pdns" || !strings.Contains(tg.String(), "127.0.0.1:5302") || strings.Contains(tg.String(), key) {
		t.Fatalf("target %s", tg)
	}
	st.APIKey = "secret:missing"
	if _, err := powerdns.FromSite(st, res.Resolve); err == nil || !strings.Contains(err.Error(), `"missing" is not granted`) {
		t.Fatalf("missing key: %v", err)
	}
	st.Kind = schema.TargetRFC2136
	if _, err := powerdns.FromSite(st, res.Resolve); err == nil {
		t.Fatal("an rfc2136 target made a powerdns target")
	}
}

// TestAPIURLForms: the API URL may end in / or /api/v1.
func TestAPIURLForms(t *testing.T) {
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{})
	for _, u := range []string{p.APIURL, p.APIURL + "/", p.APIURL + "/api/v1", p.APIURL + "/api/v1/"} {
		tg := target(t, p, false, func(c *powerdns.Config) { c.APIURL = u })
		if _, err := tg.Serial(context.Background(), fwd); err != nil {
			t.Fatalf("%s: %v", u, err)
		}
	}
}

// TestErrorBodies: PowerDNS's error text reaches the message (422 is
// permanent); a 5xx is transient; the key is scrubbed from any echo.
func TestErrorBodies(t *testing.T) {
	t.Parallel()
	const key = "echoed-key-123"
	status := http.StatusInternalServerError
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error": "RRset a.example.net. IN A: bad, and your key was %s"}`, r.Header.Get("X-API-Key"))
	}))
	t.Cleanup(srv.Close)
	tg, err := powerdns.New(powerdns.Config{Name: "pdns", APIURL: srv.URL, APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	a := &dns.RRset{Name: "a.example.net", Type: dns.TypeA, TTL: 300, Data: []string{"192.0.2.1"}}
	for _, tc := range []struct {
		status int
		class  dns.ErrorClass
	}{{http.StatusInternalServerError, dns.ClassTransient}, {http.StatusServiceUnavailable, dns.ClassTransient}, {http.StatusUnprocessableEntity, dns.ClassPermanent}, {http.StatusForbidden, dns.ClassPermanent}} {
		status = tc.status
		_, err := tg.ReadZone(context.Background(), fwd)
		te := wantClass(t, err, tc.class)
		if strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "bad, and your key was [api key]") {
			t.Fatalf("HTTP %d: %v", tc.status, te)
		}
		_, err = tg.Apply(context.Background(), fwd, []dns.RRsetChange{dnstest.Create(a)})
		wantClass(t, err, tc.class)
	}
}

// TestUnreachableAddress: a connection that is never answered times out
// as a transient error within the timeout.
func TestUnreachableAddress(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Accept and say nothing.
	conns := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(conns)
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for c := range conns {
			c.Close()
		}
	})
	tg, err := powerdns.New(powerdns.Config{Name: "pdns", APIURL: "http://" + l.Addr().String(), APIKey: "k", Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	_, err = tg.Serial(context.Background(), fwd)
	wantClass(t, err, dns.ClassTransient)
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("took %s", d)
	}
}

// TestSerialWithoutSOAEdit: a zone whose soa_edit_api is off keeps its
// serial when the API changes it, so the serial says nothing: ReadZone and
// Serial through the API report 0, which the planner never trusts.
func TestSerialWithoutSOAEdit(t *testing.T) {
	t.Parallel()
	p := start(t, servers.PowerDNSOptions{})
	status, body := p.API(t, http.MethodPost, "/zones", map[string]any{
		"name": "frozen.example.", "kind": "Native", "soa_edit_api": "", "nameservers": []string{},
		"rrsets": []servers.PDNSRRset{{Name: "frozen.example.", Type: "SOA", TTL: 3600,
			Records: []servers.PDNSRecord{{Content: "localhost. hostmaster.frozen.example. 7 10800 3600 604800 3600"}}}},
	})
	if status != http.StatusCreated {
		t.Fatalf("create zone: HTTP %d %s", status, body)
	}
	tg := target(t, p, false)
	apply(t, tg, "frozen.example", dnstest.Create(dnstest.Set(t, "a.frozen.example", dns.TypeA, 300, "192.0.2.1")))
	zc, err := tg.ReadZone(context.Background(), "frozen.example")
	if err != nil || zc.Serial != 0 || len(zc.RRsets) != 1 {
		t.Fatalf("ReadZone = %+v, %v; want serial 0 and the A", zc, err)
	}
	if s, err := tg.Serial(context.Background(), "frozen.example"); s != 0 || err != nil {
		t.Fatalf("Serial through the API = %d, %v; want 0", s, err)
	}
	if s, err := target(t, p, true).Serial(context.Background(), "frozen.example"); s != 7 || err != nil {
		t.Fatalf("Serial by DNS = %d, %v; want the unmoved 7", s, err)
	}
}

// TestAPIKeyStaysOnItsHost: a PowerDNS API that redirects elsewhere does
// not get the API key sent there (Go keeps X-API-Key across hosts).
func TestAPIKeyStaysOnItsHost(t *testing.T) {
	t.Parallel()
	var leaked atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-API-Key") != "" {
			leaked.Add(1)
		}
	}))
	defer other.Close()
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer api.Close()
	tg, err := powerdns.New(powerdns.Config{Name: "pdns", APIURL: api.URL, APIKey: "pdns-key-d41d"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tg.ReadZone(t.Context(), "example.net."); err == nil {
		t.Fatal("read through a redirect to another host succeeded")
	}
	if n := leaked.Load(); n != 0 {
		t.Fatalf("the API key was sent to the redirect's host %d times", n)
	}
}
