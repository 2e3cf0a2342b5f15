package rfc2136_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/anneal-dev/anneal/providers/dns/rfc2136"
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

func start(t *testing.T, opts servers.BINDOptions) *servers.BIND {
	t.Helper()
	if opts.Zones == nil {
		opts.Zones = []string{fwd}
	}
	return servers.StartBIND(t, opts)
}

func target(t *testing.T, b *servers.BIND, edit ...func(*rfc2136.Config)) *rfc2136.Target {
	t.Helper()
	cfg := rfc2136.Config{Name: "bind", Server: b.Addr, KeyName: b.KeyName, Algorithm: b.Algorithm, Secret: b.Secret, Timeout: 5 * time.Second}
	for _, e := range edit {
		e(&cfg)
	}
	tg, err := rfc2136.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func set(name string, typ dns.RRType, ttl uint32, data ...string) *dns.RRset {
	s := &dns.RRset{Name: name, Type: typ, TTL: ttl, Data: data}
	s.Normalize()
	return s
}

// content reads the zone and drops the apex NS the harness put there.
func content(t *testing.T, tg *rfc2136.Target, zone string) (*dns.ZoneContent, []dns.RRset) {
	t.Helper()
	zc, err := tg.ReadZone(context.Background(), zone)
	if err != nil {
		t.Fatal(err)
	}
	var out []dns.RRset
	for _, s := range zc.RRsets {
		if s.Name == zone && s.Type == dns.TypeNS {
			continue
		}
		out = append(out, s)
	}
	return zc, out
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
	slices.SortFunc(out, func(a, b dns.RRset) int { return strings.Compare(a.Key().String(), b.Key().String()) })
	return out
}

func sameRRsets(a, b []dns.RRset) bool {
	key := func(s dns.RRset) string { return s.Key().String() }
	slices.SortFunc(a, func(x, y dns.RRset) int { return strings.Compare(key(x), key(y)) })
	slices.SortFunc(b, func(x, y dns.RRset) int { return strings.Compare(key(x), key(y)) })
	return slices.EqualFunc(a, b, func(x, y dns.RRset) bool { return x.Equal(&y) })
}

func wantClass(t *testing.T, err error, class dns.ErrorClass) *dns.TargetError {
	t.Helper()
	return dnstest.WantClass(t, err, class, "bind")
}

// TestRoundTrip applies creates, updates and deletes of every record type
// anneal manages, and after each step reads the zone back: it must hold
// exactly what was applied, and its serial must have moved.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	b := start(t, servers.BINDOptions{})
	tg := target(t, b)
	ctx := context.Background()

	www := set("www.example.net", dns.TypeA, 300, "192.0.2.1", "192.0.2.2")
	www6 := set("www.example.net", dns.TypeAAAA, 300, "2001:db8::1")
	spf := set("example.net", dns.TypeTXT, 300, `"v=spf1 mx -all"`)
	mx := set("example.net", dns.TypeMX, 3600, "10 mail.example.net.")
	mail := set("mail.example.net", dns.TypeA, 300, "203.0.113.25")
	srv := set("_ldap._tcp.example.net", dns.TypeSRV, 300, "0 100 389 e1n01.east.example.net.")
	alias := set("alias.example.net", dns.TypeCNAME, 60, "www.example.net.")
	wild := set("*.apps.example.net", dns.TypeCNAME, 60, "ingress.example.net.")
	caa := set("example.net", dns.TypeCAA, 300, `0 issue "letsencrypt.org"`)
	deleg := set("sub.example.net", dns.TypeNS, 300, "ns1.example.org.")

	steps := []struct {
		name    string
		changes []dns.RRsetChange
	}{
		{"create", []dns.RRsetChange{dnstest.Create(www), dnstest.Create(www6), dnstest.Create(spf), dnstest.Create(mx), dnstest.Create(mail), dnstest.Create(srv), dnstest.Create(alias), dnstest.Create(wild), dnstest.Create(caa), dnstest.Create(deleg)}},
		{"update data and ttl", []dns.RRsetChange{
			dnstest.Update(www, set("www.example.net", dns.TypeA, 60, "192.0.2.1", "192.0.2.3", "192.0.2.4")),
			dnstest.Update(spf, set("example.net", dns.TypeTXT, 300, `"v=spf1 mx ~all"`, `"hello world"`)),
			dnstest.Update(alias, set("alias.example.net", dns.TypeCNAME, 60, "mail.example.net.")),
			dnstest.Update(mx, set("example.net", dns.TypeMX, 600, "10 mail.example.net.")),
		}},
		{"delete", []dns.RRsetChange{
			dnstest.Delete(www6), dnstest.Delete(caa), dnstest.Delete(wild), dnstest.Delete(deleg),
			dnstest.Delete(set("alias.example.net", dns.TypeCNAME, 60, "mail.example.net.")),
		}},
		{"delete then create a CNAME at the same name", []dns.RRsetChange{
			dnstest.Delete(mail), dnstest.Create(set("mail.example.net", dns.TypeCNAME, 300, "www.example.net.")),
		}},
	}
	want := model{}
	serial, err := tg.Serial(ctx, fwd)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		n, err := tg.Apply(ctx, fwd, s.changes)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if n != len(s.changes) {
			t.Fatalf("%s: applied %d of %d", s.name, n, len(s.changes))
		}
		want.apply(s.changes)
		zc, got := content(t, tg, fwd)
		if !sameRRsets(got, want.sorted()) {
			t.Fatalf("%s: zone holds\n%v\nwant\n%v", s.name, got, want.sorted())
		}
		next, err := tg.Serial(ctx, fwd)
		if err != nil {
			t.Fatal(err)
		}
		if next == serial || next != zc.Serial {
			t.Fatalf("%s: serial %d before, %d after, %d in the transfer", s.name, serial, next, zc.Serial)
		}
		serial = next
	}
	// Unrelated RRsets and a delete then create at one name: two messages
	// for the last step, one for each of the others.
	if st := tg.Stats(); st.Messages != 5 {
		t.Errorf("sent %d messages, want 5", st.Messages)
	}
	if n, err := tg.Apply(ctx, fwd, nil); n != 0 || err != nil {
		t.Errorf("empty apply: %d, %v", n, err)
	}
}

// TestReverseZones writes PTRs in an in-addr.arpa and an ip6.arpa zone.
func TestReverseZones(t *testing.T) {
	t.Parallel()
	b := start(t, servers.BINDOptions{Zones: []string{rev4, rev6}})
	tg := target(t, b)
	for _, tc := range []struct {
		zone  string
		addrs []string
	}{
		{rev4, []string{"10.10.2.11", "10.10.2.12", "10.10.255.1"}},
		{rev6, []string{"2001:db8:130::11", "2001:db8:130:ffff::1"}},
	} {
		t.Run(tc.zone, func(t *testing.T) {
			var changes []dns.RRsetChange
			want := model{}
			for i, a := range tc.addrs {
				name, err := mdns.ReverseAddr(netip.MustParseAddr(a).String())
				if err != nil {
					t.Fatal(err)
				}
				changes = append(changes, dnstest.Create(set(strings.TrimSuffix(name, "."), dns.TypePTR, 300, fmt.Sprintf("n%d.east.example.net.", i))))
			}
			want.apply(changes)
			if n, err := tg.Apply(context.Background(), tc.zone, changes); err != nil || n != len(changes) {
				t.Fatalf("applied %d: %v", n, err)
			}
			_, got := content(t, tg, tc.zone)
			if !sameRRsets(got, want.sorted()) {
				t.Fatalf("zone holds %v, want %v", got, want.sorted())
			}
			// A PTR in the other zone is refused before anything is sent.
			other := rev4
			if tc.zone == rev4 {
				other = rev6
			}
			before := tg.Stats().Messages
			_, err := tg.Apply(context.Background(), other, changes[:1])
			te := wantClass(t, err, dns.ClassPermanent)
			if !strings.Contains(te.Error(), "is not in zone") || tg.Stats().Messages != before {
				t.Fatalf("out-of-zone PTR: %v", err)
			}
		})
	}
}

// TestLargeBatch creates 5,000 A records in one zone: they go in as few
// messages as fit under 64 KiB, and all of them land.
func TestLargeBatch(t *testing.T) {
	t.Parallel()
	b := start(t, servers.BINDOptions{})
	tg := target(t, b, func(c *rfc2136.Config) { c.Timeout = 30 * time.Second })
	const n = 5000
	changes := make([]dns.RRsetChange, n)
	want := model{}
	for i := range changes {
		changes[i] = dnstest.Create(set(fmt.Sprintf("host%04d.east.example.net", i), dns.TypeA, 300, fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)))
	}
	want.apply(changes)
	begin := time.Now()
	applied, err := tg.Apply(context.Background(), fwd, changes)
	if err != nil || applied != n {
		t.Fatalf("applied %d of %d: %v", applied, n, err)
	}
	st := tg.Stats()
	t.Logf("%d creates: %d messages, %d bytes, largest %d, %s", n, st.Messages, st.Bytes, st.Largest, time.Since(begin))
	// Each message holds as many changes as fit: the count is the total
	// size over the room in one message, rounded up (within one change's
	// size of slack per message: the changes here are ~90 bytes).
	if lo, hi := ceilDiv(st.Bytes, mdns.MaxMsgSize), ceilDiv(st.Bytes, mdns.MaxMsgSize-300-100); st.Messages < lo || st.Messages > hi {
		t.Errorf("%d messages for %d bytes, want %d to %d", st.Messages, st.Bytes, lo, hi)
	}
	if st.Largest > mdns.MaxMsgSize || st.Largest < mdns.MaxMsgSize-300-100 {
		t.Errorf("largest message %d bytes: not filled up to the limit", st.Largest)
	}
	_, got := content(t, tg, fwd)
	if len(got) != n || !sameRRsets(got, want.sorted()) {
		t.Fatalf("zone holds %d RRsets, want %d", len(got), n)
	}
	// Delete them all again the same way.
	dels := make([]dns.RRsetChange, n)
	for i, c := range changes {
		dels[i] = dnstest.Delete(c.New)
	}
	if applied, err := tg.Apply(context.Background(), fwd, dels); err != nil || applied != n {
		t.Fatalf("deleted %d of %d: %v", applied, n, err)
	}
	if _, got := content(t, tg, fwd); len(got) != 0 {
		t.Fatalf("%d RRsets left", len(got))
	}
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// TestConflicts: the plan saw the zone one way, then someone changed it
// with nsupdate. Apply must refuse with ClassConflict and change nothing,
// not even the innocent change packed in the same message before it.
func TestConflicts(t *testing.T) {
	t.Parallel()
	b := start(t, servers.BINDOptions{})
	tg := target(t, b)
	ctx := context.Background()
	x := set("x.example.net", dns.TypeA, 300, "192.0.2.1")
	for i, tc := range []struct {
		name     string
		seed     string // nsupdate: the zone as the plan saw it (x.example.net holds x above)
		oob      string // nsupdate: the change out of band after the plan
		change   dns.RRsetChange
		conflict bool
	}{
		{name: "update after a change of data", oob: "update delete x.example.net A\nupdate add x.example.net 300 A 192.0.2.2",
			change: dnstest.Update(x, set("x.example.net", dns.TypeA, 300, "192.0.2.3")), conflict: true},
		{name: "update after a record was added", oob: "update add x.example.net 300 A 192.0.2.2",
			change: dnstest.Update(x, set("x.example.net", dns.TypeA, 300, "192.0.2.3")), conflict: true},
		{name: "update after the RRset was deleted", oob: "update delete x.example.net A",
			change: dnstest.Update(x, set("x.example.net", dns.TypeA, 300, "192.0.2.3")), conflict: true},
		{name: "delete after a change of data", oob: "update delete x.example.net A\nupdate add x.example.net 300 A 192.0.2.2",
			change: dnstest.Delete(x), conflict: true},
		{name: "delete after the RRset was deleted", oob: "update delete x.example.net A",
			change: dnstest.Delete(x), conflict: true},
		{name: "create after someone created it", seed: "-", oob: "update add x.example.net 300 A 192.0.2.2",
			change: dnstest.Create(x), conflict: true},
		{name: "create A beside a CNAME created out of band", seed: "-", oob: "update add x.example.net 300 CNAME www.example.net.",
			change: dnstest.Create(x), conflict: true},
		{name: "create CNAME beside data created out of band", seed: "-", oob: "update add x.example.net 300 TXT \"hi\"",
			change: dnstest.Create(set("x.example.net", dns.TypeCNAME, 300, "www.example.net.")), conflict: true},
		// RFC 2136 §2.4.2 compares records without their TTL: a TTL-only
		// change out of band is not a conflict, and the update overwrites it.
		{name: "update after a TTL-only change", oob: "update delete x.example.net A\nupdate add x.example.net 60 A 192.0.2.1",
			change: dnstest.Update(x, set("x.example.net", dns.TypeA, 300, "192.0.2.3"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each case gets its own names: x<i>.example.net.
			rename := func(s string) string {
				return strings.ReplaceAll(s, "x.example.net", fmt.Sprintf("x%d.example.net", i))
			}
			ch := tc.change
			if ch.Old != nil {
				o := *ch.Old
				o.Name = rename(o.Name)
				ch.Old = &o
			}
			if ch.New != nil {
				n := *ch.New
				n.Name = rename(n.Name)
				ch.New = &n
			}
			if tc.seed == "" {
				b.Nsupdate(t, rename("update add x.example.net 300 A 192.0.2.1"))
			}
			// The plan: the zone as it is now.
			planned, _ := content(t, tg, fwd)
			// ... then someone changes it.
			b.Nsupdate(t, rename(tc.oob))
			before, beforeSets := content(t, tg, fwd)
			if before.Serial == planned.Serial {
				t.Fatal("the out-of-band change did not move the serial")
			}
			innocent := dnstest.Create(set(rename("innocent.x.example.net"), dns.TypeTXT, 300, `"ok"`))
			sent := tg.Stats().Messages
			n, err := tg.Apply(ctx, fwd, []dns.RRsetChange{innocent, ch})
			if got := tg.Stats().Messages - sent; got != 1 {
				t.Fatalf("sent %d messages, want 1", got)
			}
			after, afterSets := content(t, tg, fwd)
			if !tc.conflict {
				if err != nil || n != 2 {
					t.Fatalf("applied %d: %v", n, err)
				}
				return
			}
			te := wantClass(t, err, dns.ClassConflict)
			if n != 0 {
				t.Errorf("applied %d, want 0", n)
			}
			if te.Zone != fwd || te.Op != "apply" {
				t.Errorf("error names zone %q op %q", te.Zone, te.Op)
			}
			if after.Serial != before.Serial || !sameRRsets(afterSets, beforeSets) {
				t.Errorf("a refused update changed the zone:\n%v\n%v", beforeSets, afterSets)
			}
			t.Log(err)
		})
	}
}

// TestPartialApply: with small messages, a conflict in a later message
// leaves the earlier messages committed, and Apply says how many.
func TestPartialApply(t *testing.T) {
	t.Parallel()
	b := start(t, servers.BINDOptions{})
	tg := target(t, b, func(c *rfc2136.Config) { c.MaxMessageSize = 1024 })
	var changes []dns.RRsetChange
	for i := range 40 {
		changes = append(changes, dnstest.Create(set(fmt.Sprintf("h%02d.example.net", i), dns.TypeA, 300, fmt.Sprintf("192.0.2.%d", i))))
	}
	b.Nsupdate(t, "update add h30.example.net 300 A 198.51.100.1")
	n, err := tg.Apply(context.Background(), fwd, changes)
	wantClass(t, err, dns.ClassConflict)
	st := tg.Stats()
	if n == 0 || n > 30 || st.Messages < 2 || st.Largest > 1024 {
		t.Fatalf("applied %d in %d messages (largest %d bytes): %v", n, st.Messages, st.Largest, err)
	}
	want := model{}
	want.apply(changes[:n])
	want[dns.RRsetKey{Name: "h30.example.net", Type: dns.TypeA}] = *set("h30.example.net", dns.TypeA, 300, "198.51.100.1")
	if _, got := content(t, tg, fwd); !sameRRsets(got, want.sorted()) {
		t.Fatalf("zone holds %v, want the %d applied and the out-of-band record", got, n)
	}
	t.Logf("%d of %d applied in %d messages: %v", n, len(changes), st.Messages, err)
}

// TestWrongKey: a wrong secret or key name is a permanent error naming
// the key, and never quoting the secret.
func TestWrongKey(t *testing.T) {
	t.Parallel()
	b := start(t, servers.BINDOptions{})
	const wrong = "d3JvbmctYnV0LXZhbGlkLWJhc2U2NC1zZWNyZXQtMTIzNA=="
	for _, tc := range []struct {
		name string
		edit func(*rfc2136.Config)
		key  string
	}{
		{"wrong secret", func(c *rfc2136.Config) { c.Secret = wrong }, "anneal"},
		{"unknown key", func(c *rfc2136.Config) { c.KeyName = "intruder" }, "intruder"},
		{"wrong algorithm", func(c *rfc2136.Config) { c.Algorithm = "hmac-sha512" }, "anneal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := target(t, b, tc.edit)
			ctx := context.Background()
			_, err := tg.Apply(ctx, fwd, []dns.RRsetChange{dnstest.Create(set("x.example.net", dns.TypeA, 300, "192.0.2.1"))})
			wantClass(t, err, dns.ClassPermanent)
			_, rerr := tg.ReadZone(ctx, fwd)
			wantClass(t, rerr, dns.ClassPermanent)
			for _, e := range []error{err, rerr} {
				msg := e.Error()
				if !strings.Contains(msg, "key "+tc.key) {
					t.Errorf("error does not name key %s: %s", tc.key, msg)
				}
				if strings.Contains(msg, wrong) || strings.Contains(msg, b.Secret) {
					t.Errorf("error quotes a secret: %s", msg)
				}
			}
			t.Log(err)
			t.Log(rerr)
			// The serial query is unsigned: it still works.
			if _, err := tg.Serial(ctx, fwd); err != nil {
				t.Error(err)
			}
		})
	}
	if _, got := content(t, target(t, b), fwd); len(got) != 0 {
		t.Fatalf("a refused update landed: %v", got)
	}
}

// TestServerDown: a stopped server is a transient error naming the target,
// within the timeout; after a restart everything works again.
func TestServerDown(t *testing.T) {
	t.Parallel()
	b := start(t, servers.BINDOptions{})
	tg := target(t, b, func(c *rfc2136.Config) { c.Timeout = time.Second })
	b.Stop()
	ctx := context.Background()
	for name, op := range map[string]func() error{
		"serial": func() error { _, err := tg.Serial(ctx, fwd); return err },
		"read":   func() error { _, err := tg.ReadZone(ctx, fwd); return err },
		"apply": func() error {
			_, err := tg.Apply(ctx, fwd, []dns.RRsetChange{dnstest.Create(set("x.example.net", dns.TypeA, 300, "192.0.2.1"))})
			return err
		},
	} {
		begin := time.Now()
		err := op()
		te := wantClass(t, err, dns.ClassTransient)
		if took := time.Since(begin); took > 3*time.Second {
			t.Errorf("%s: took %s with a 1 s timeout", name, took)
		}
		if te.Op != name || te.Zone != fwd {
			t.Errorf("%s: error names op %q zone %q", name, te.Op, te.Zone)
		}
		t.Log(err)
	}
	b.Restart(t)
	if _, err := tg.Apply(ctx, fwd, []dns.RRsetChange{dnstest.Create(set("x.example.net", dns.TypeA, 300, "192.0.2.1"))}); err != nil {
		t.Fatal(err)
	}
}

// TestSilentNoops documents the updates BIND acknowledges with NOERROR but
// ignores, which is why the reconcile layer reads every zone back after
// an apply.
func TestSilentNoops(t *testing.T) {
	t.Parallel()
	b := start(t, servers.BINDOptions{})
	tg := target(t, b)
	ctx := context.Background()
	www := set("www.example.net", dns.TypeCNAME, 300, "web.example.net.")
	if _, err := tg.Apply(ctx, fwd, []dns.RRsetChange{dnstest.Create(www)}); err != nil {
		t.Fatal(err)
	}

	// An A record inserted without prerequisites at a CNAME's name: BIND
	// answers NOERROR (nsupdate succeeds) and keeps only the CNAME.
	b.Nsupdate(t, "update add www.example.net 300 A 192.0.2.1")
	if _, got := content(t, tg, fwd); !sameRRsets(got, []dns.RRset{*www}) {
		t.Fatalf("zone holds %v, want only the CNAME", got)
	}
	// The same through Apply: its prerequisite (no CNAME at the name)
	// turns the silent no-op into a conflict.
	_, err := tg.Apply(ctx, fwd, []dns.RRsetChange{dnstest.Create(set("www.example.net", dns.TypeA, 300, "192.0.2.1"))})
	wantClass(t, err, dns.ClassConflict)

	// What Apply cannot catch: deleting the zone's last apex NS. The
	// prerequisite holds (the NS is as the plan saw it), BIND answers
	// NOERROR and keeps the NS: Apply returns nil, the read-back shows it.
	ns := set("example.net", dns.TypeNS, 300, "localhost.")
	if n, err := tg.Apply(ctx, fwd, []dns.RRsetChange{dnstest.Delete(ns)}); err != nil || n != 1 {
		t.Fatalf("apex NS delete: %d, %v", n, err)
	}
	zc, err := tg.ReadZone(ctx, fwd)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(zc.RRsets, func(s dns.RRset) bool { return s.Equal(ns) }) {
		t.Fatalf("apex NS gone: %v", zc.RRsets)
	}
	// A lookup shows it as well: the applier's one-RRset read-back.
	if got, sure := tg.LookupRRset(ctx, fwd, ns.Key()); !sure || got == nil || !got.Equal(ns) {
		t.Fatalf("lookup of the apex NS: %v, sure %v", got, sure)
	}
}

// TestLookupRRset: one query answers for one RRset, sure only when the
// answer is the zone's own data.
func TestLookupRRset(t *testing.T) {
	t.Parallel()
	b := start(t, servers.BINDOptions{})
	tg := target(t, b)
	ctx := context.Background()
	b.Nsupdate(t, strings.Join([]string{
		"update add a.example.net 300 A 192.0.2.2",
		"update add a.example.net 300 A 192.0.2.1",
		"update add www.example.net 300 CNAME a.example.net.",
		"update add *.wild.example.net 300 A 192.0.2.9",
		"update add child.example.net 300 NS ns.elsewhere.example.org.",
	}, "\n"))
	key := func(name string, typ dns.RRType) dns.RRsetKey {
		return dns.RRsetKey{Name: name, Type: typ}
	}
	for _, tc := range []struct {
		name string
		key  dns.RRsetKey
		want *dns.RRset
		sure bool
	}{
		{"an RRset", key("a.example.net", dns.TypeA), set("a.example.net", dns.TypeA, 300, "192.0.2.1", "192.0.2.2"), true},
		{"no such name", key("nothing.example.net", dns.TypeA), nil, true},
		{"no such type", key("a.example.net", dns.TypeAAAA), nil, true},
		{"an A asked at a CNAME: not the CNAME's target", key("www.example.net", dns.TypeA), nil, true},
		{"the CNAME itself", key("www.example.net", dns.TypeCNAME), set("www.example.net", dns.TypeCNAME, 300, "a.example.net."), true},
		// A wildcard's answer looks like data at the name: the applier
		// only trusts a lookup that matches what it wrote.
		{"a wildcard's synthesized answer", key("x.wild.example.net", dns.TypeA), set("x.wild.example.net", dns.TypeA, 300, "192.0.2.9"), true},
		{"below a delegation: a referral", key("host.child.example.net", dns.TypeA), nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, sure := tg.LookupRRset(ctx, fwd, tc.key)
			if sure != tc.sure || (got == nil) != (tc.want == nil) || got != nil && !got.Equal(tc.want) {
				t.Fatalf("LookupRRset = %v, sure %v; want %v, sure %v", got, sure, tc.want, tc.sure)
			}
		})
	}
	down := target(t, b, func(c *rfc2136.Config) { c.Server = "127.0.0.1:9"; c.Timeout = 300 * time.Millisecond })
	if got, sure := down.LookupRRset(ctx, fwd, key("a.example.net", dns.TypeA)); sure || got != nil {
		t.Fatalf("lookup at a server that does not answer: %v, sure %v", got, sure)
	}
}

// TestRecordLimit: an RRset over BIND's max-records-per-type fails with
// SERVFAIL, which reconcile sees as transient; validation refuses such
// RRsets before they get here (schema.Target.RecordLimit).
func TestRecordLimit(t *testing.T) {
	t.Parallel()
	b := start(t, servers.BINDOptions{MaxRecordsPerType: 10})
	tg := target(t, b)
	var data []string
	for i := range 11 {
		data = append(data, fmt.Sprintf("192.0.2.%d", i+1))
	}
	_, err := tg.Apply(context.Background(), fwd, []dns.RRsetChange{dnstest.Create(set("rr.example.net", dns.TypeA, 300, data...))})
	wantClass(t, err, dns.ClassTransient)
	if !strings.Contains(err.Error(), "max-records-per-type") {
		t.Errorf("error does not hint at the limit: %v", err)
	}
	if n, err := tg.Apply(context.Background(), fwd, []dns.RRsetChange{dnstest.Create(set("rr.example.net", dns.TypeA, 300, data[:10]...))}); err != nil || n != 1 {
		t.Fatalf("10 records: %d, %v", n, err)
	}
}

// TestCancel: a cancelled context stops Apply before it sends anything,
// and a deadline stops a read.
func TestCancel(t *testing.T) {
	t.Parallel()
	b := start(t, servers.BINDOptions{})
	tg := target(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err := tg.Apply(ctx, fwd, []dns.RRsetChange{dnstest.Create(set("x.example.net", dns.TypeA, 300, "192.0.2.1"))})
	wantClass(t, err, dns.ClassTransient)
	if n != 0 || !errors.Is(err, context.Canceled) || tg.Stats().Messages != 0 {
		t.Fatalf("applied %d, sent %d: %v", n, tg.Stats().Messages, err)
	}
	if _, err := tg.ReadZone(ctx, fwd); !errors.Is(err, context.Canceled) {
		t.Fatalf("read with a cancelled context: %v", err)
	}
	if _, err := tg.Serial(ctx, fwd); !errors.Is(err, context.Canceled) {
		t.Fatalf("serial with a cancelled context: %v", err)
	}
}

// TestZoneNotServed: asking for a zone the server does not serve is
// permanent.
func TestZoneNotServed(t *testing.T) {
	t.Parallel()
	b := start(t, servers.BINDOptions{})
	tg := target(t, b)
	ctx := context.Background()
	_, err := tg.Serial(ctx, "example.com")
	wantClass(t, err, dns.ClassPermanent)
	_, err = tg.ReadZone(ctx, "example.com")
	wantClass(t, err, dns.ClassPermanent)
	_, err = tg.Apply(ctx, "example.com", []dns.RRsetChange{dnstest.Create(set("x.example.com", dns.TypeA, 300, "192.0.2.1"))})
	wantClass(t, err, dns.ClassPermanent)
	t.Log(err)
}

// TestInvalidChanges are refused before anything is sent.
func TestInvalidChanges(t *testing.T) {
	t.Parallel()
	tg, err := rfc2136.New(rfc2136.Config{Name: "bind", Server: "127.0.0.1:1", KeyName: "anneal", Secret: "c2VjcmV0"})
	if err != nil {
		t.Fatal(err)
	}
	a := set("x.example.net", dns.TypeA, 300, "192.0.2.1")
	var big []string
	for i := range 400 {
		big = append(big, fmt.Sprintf(`"%0200d"`, i))
	}
	for _, tc := range []struct {
		name   string
		change dns.RRsetChange
		want   string
	}{
		{"outside the zone", dnstest.Create(set("x.example.org", dns.TypeA, 300, "192.0.2.1")), "not in zone"},
		{"create without new", dns.RRsetChange{Op: dns.OpCreate}, "without a new"},
		{"update without old", dns.RRsetChange{Op: dns.OpUpdate, New: a}, "needs both"},
		{"update renames", dnstest.Update(a, set("y.example.net", dns.TypeA, 300, "192.0.2.1")), "must not change"},
		{"delete without old", dns.RRsetChange{Op: dns.OpDelete}, "without the old"},
		{"empty RRset", dnstest.Create(set("x.example.net", dns.TypeA, 300)), "no records"},
		{"SOA", dnstest.Create(set("example.net", dns.TypeSOA, 300, "a. b. 1 2 3 4 5")), "SOA"},
		{"bad data", dnstest.Create(set("x.example.net", dns.TypeA, 300, "not-an-address")), "render"},
		{"unknown op", dns.RRsetChange{Op: "replace", New: a}, "unknown operation"},
		{"too large for one message", dnstest.Create(set("x.example.net", dns.TypeTXT, 300, big...)), "over the"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := tg.Apply(context.Background(), fwd, []dns.RRsetChange{tc.change})
			te := wantClass(t, err, dns.ClassPermanent)
			if n != 0 || !strings.Contains(te.Error(), tc.want) {
				t.Fatalf("got %d, %v; want an error containing %q", n, err, tc.want)
			}
		})
	}
	if tg.Stats().Messages != 0 {
		t.Fatal("an invalid change was sent")
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	const secretValue = "c2VjcmV0LXRzaWcta2V5LWRvLW5vdC1sZWFr"
	ok := rfc2136.Config{Name: "bind", Server: "127.0.0.1:5301", KeyName: "anneal", Algorithm: "hmac-sha256", Secret: secretValue}
	for _, tc := range []struct {
		name string
		edit func(*rfc2136.Config)
		want string // "" for success
	}{
		{"ok", func(*rfc2136.Config) {}, ""},
		{"default algorithm", func(c *rfc2136.Config) { c.Algorithm = "" }, ""},
		{"algorithm with dot, upper case", func(c *rfc2136.Config) { c.Algorithm = "HMAC-SHA512." }, ""},
		{"no port", func(c *rfc2136.Config) { c.Server = "ns1.example.net" }, ""},
		{"IPv6 without port", func(c *rfc2136.Config) { c.Server = "2001:db8::53" }, ""},
		{"no name", func(c *rfc2136.Config) { c.Name = "" }, "no name"},
		{"no server", func(c *rfc2136.Config) { c.Server = "" }, "no server"},
		{"no key", func(c *rfc2136.Config) { c.KeyName = "" }, "no TSIG key"},
		{"md5", func(c *rfc2136.Config) { c.Algorithm = "hmac-md5" }, "not supported"},
		{"empty secret", func(c *rfc2136.Config) { c.Secret = "" }, "empty secret"},
		{"secret not base64", func(c *rfc2136.Config) { c.Secret = "not base64 at all!" }, "not valid base64"},
		{"message too large", func(c *rfc2136.Config) { c.MaxMessageSize = 70000 }, "over the DNS limit"},
		{"message too small", func(c *rfc2136.Config) { c.MaxMessageSize = 100 }, "under"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.edit(&cfg)
			tg, err := rfc2136.New(cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range []string{tg.String(), fmt.Sprintf("%v %+v %#v", tg, tg, tg), cfg.String(), fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg)} {
					if strings.Contains(s, secretValue) {
						t.Fatalf("formatting shows the secret: %s", s)
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), cfg.Secret) && cfg.Secret != "" {
				t.Fatalf("error shows the secret: %v", err)
			}
		})
	}
}

func TestFromSite(t *testing.T) {
	t.Parallel()
	b := start(t, servers.BINDOptions{})
	env := map[string]string{"ANNEAL_TSIG_SECRET": b.Secret}
	g, err := secret.ParseGrants("grants.yaml", []byte("secrets:\n  tsig-key:\n    from: env:ANNEAL_TSIG_SECRET\n    dns: [127.0.0.1]\n"))
	if err != nil {
		t.Fatal(err)
	}
	g.Env = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	site := schema.Target{Name: "bind", Kind: schema.TargetRFC2136, Server: b.Addr, Zones: []string{fwd},
		TSIG: &schema.TSIG{Name: b.KeyName, Algorithm: b.Algorithm, Secret: "secret:tsig-key"}}
	tg, err := rfc2136.FromSite(site, g.Resolve)
	if err != nil {
		t.Fatal(err)
	}
	if tg.Name() != "bind" {
		t.Fatalf("name %q", tg.Name())
	}
	if _, err := tg.Apply(context.Background(), fwd, []dns.RRsetChange{dnstest.Create(set("x.example.net", dns.TypeA, 300, "192.0.2.1"))}); err != nil {
		t.Fatal(err)
	}

	missing := site
	missing.TSIG = &schema.TSIG{Name: "anneal", Algorithm: "hmac-sha256", Secret: "secret:not-granted"}
	if _, err := rfc2136.FromSite(missing, g.Resolve); err == nil || !strings.Contains(err.Error(), `"not-granted" is not granted`) {
		t.Fatalf("unresolved secret: %v", err)
	}
	pdns := site
	pdns.Kind = schema.TargetPowerDNS
	if _, err := rfc2136.FromSite(pdns, g.Resolve); err == nil {
		t.Fatal("a powerdns target made an rfc2136 target")
	}
	nokey := site
	nokey.TSIG = nil
	if _, err := rfc2136.FromSite(nokey, g.Resolve); err == nil {
		t.Fatal("a target without a key was accepted")
	}
}

// TestCancelInFlight: cancelling the context stops an exchange the server
// never answers, long before the target's timeout.
func TestCancelInFlight(t *testing.T) {
	t.Parallel()
	// A server that accepts connections and datagrams and never answers.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Skipf("UDP port %d taken: %v", port, err)
	}
	defer u.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	tg, err := rfc2136.New(rfc2136.Config{Name: "bind", Server: l.Addr().String(), KeyName: "anneal", Secret: "c2VjcmV0", Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for name, op := range map[string]func(context.Context) error{
		"serial": func(ctx context.Context) error { _, err := tg.Serial(ctx, fwd); return err },
		"read":   func(ctx context.Context) error { _, err := tg.ReadZone(ctx, fwd); return err },
		"apply": func(ctx context.Context) error {
			_, err := tg.Apply(ctx, fwd, []dns.RRsetChange{dnstest.Create(set("x.example.net", dns.TypeA, 300, "192.0.2.1"))})
			return err
		},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(200*time.Millisecond, cancel)
		begin := time.Now()
		err := op(ctx)
		cancel()
		wantClass(t, err, dns.ClassTransient)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v does not wrap context.Canceled", name, err)
		}
		if took := time.Since(begin); took > 5*time.Second {
			t.Errorf("%s: took %s after a cancel at 200 ms", name, took)
		}
	}
}
