package labdns_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/anneal-dev/anneal/lab/labdns"
	"github.com/anneal-dev/anneal/providers/dns/rfc2136"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/dns/dnstest"
)

// TestRFC2136RoundTrip runs anneal's RFC 2136 provider against the
// server: creates, updates and deletes of every type anneal manages, each
// read back by AXFR and by query, the serial moving once per message.
func TestRFC2136RoundTrip(t *testing.T) {
	t.Parallel()
	l := start(t, bindConfig(t))
	tg := l.rfc2136Target(t)
	ctx := context.Background()

	www := dnstest.Set(t, "www.example.net", dns.TypeA, 300, "192.0.2.1", "192.0.2.2")
	www6 := dnstest.Set(t, "www.example.net", dns.TypeAAAA, 300, "2001:db8::1")
	spf := dnstest.Set(t, "example.net", dns.TypeTXT, 300, `"v=spf1 mx -all"`)
	mx := dnstest.Set(t, "example.net", dns.TypeMX, 3600, "10 mail.example.net.")
	mail := dnstest.Set(t, "mail.example.net", dns.TypeA, 300, "203.0.113.25")
	srv := dnstest.Set(t, "_ldap._tcp.example.net", dns.TypeSRV, 300, "0 100 389 e1n01.east.example.net.")
	alias := dnstest.Set(t, "alias.example.net", dns.TypeCNAME, 60, "www.example.net.")
	wild := dnstest.Set(t, "*.apps.example.net", dns.TypeCNAME, 60, "ingress.example.net.")
	caa := dnstest.Set(t, "example.net", dns.TypeCAA, 300, `0 issue "letsencrypt.org"`)
	deleg := dnstest.Set(t, "sub.example.net", dns.TypeNS, 300, "ns1.example.org.")
	steps := []struct {
		name    string
		changes []dns.RRsetChange
	}{
		{"create", []dns.RRsetChange{dnstest.Create(www), dnstest.Create(www6), dnstest.Create(spf), dnstest.Create(mx), dnstest.Create(mail), dnstest.Create(srv), dnstest.Create(alias), dnstest.Create(wild), dnstest.Create(caa), dnstest.Create(deleg)}},
		{"update data and ttl", []dns.RRsetChange{
			dnstest.Update(www, dnstest.Set(t, "www.example.net", dns.TypeA, 60, "192.0.2.1", "192.0.2.3", "192.0.2.4")),
			dnstest.Update(spf, dnstest.Set(t, "example.net", dns.TypeTXT, 300, `"v=spf1 mx ~all"`, `"hello world"`)),
			dnstest.Update(alias, dnstest.Set(t, "alias.example.net", dns.TypeCNAME, 60, "mail.example.net.")),
			dnstest.Update(mx, dnstest.Set(t, "example.net", dns.TypeMX, 600, "10 mail.example.net.")),
		}},
		{"delete", []dns.RRsetChange{
			dnstest.Delete(www6), dnstest.Delete(caa), dnstest.Delete(wild), dnstest.Delete(deleg),
			dnstest.Delete(dnstest.Set(t, "alias.example.net", dns.TypeCNAME, 60, "mail.example.net.")),
		}},
		{"delete then create a CNAME at the same name", []dns.RRsetChange{
			dnstest.Delete(mail), dnstest.Create(dnstest.Set(t, "mail.example.net", dns.TypeCNAME, 300, "www.example.net.")),
		}},
	}
	want := model{}
	serial, err := tg.Serial(ctx, fwd)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		before := tg.Stats().Messages
		apply(t, tg, fwd, s.changes...)
		sent := tg.Stats().Messages - before
		want.apply(s.changes...)
		zc, got := content(t, tg, fwd)
		if !sameRRsets(got, want.sorted()) {
			t.Fatalf("%s: zone holds\n%v\nwant\n%v", s.name, got, want.sorted())
		}
		next, err := tg.Serial(ctx, fwd)
		if err != nil {
			t.Fatal(err)
		}
		if next != serial+uint32(sent) || next != zc.Serial {
			t.Fatalf("%s: %d messages: serial %d before, %d after, %d in the transfer", s.name, sent, serial, next, zc.Serial)
		}
		serial = next
	}
	// What DNS answers agrees.
	r := query(t, l.DNSAddr(), "udp", "www.example.net", mdns.TypeA)
	if len(r.Answer) != 3 || r.Answer[0].Header().Ttl != 60 {
		t.Fatalf("www A: %v", r.Answer)
	}
	r = query(t, l.DNSAddr(), "udp", "mail.example.net", mdns.TypeA)
	if len(r.Answer) != 4 || r.Answer[0].Header().Rrtype != mdns.TypeCNAME {
		t.Fatalf("mail A: %v", r.Answer)
	}
}

// TestRFC2136Zones: the provider writes reverse zones and a child zone
// served beside its parent.
func TestRFC2136Zones(t *testing.T) {
	t.Parallel()
	l := start(t, bindConfig(t))
	tg := l.rfc2136Target(t)
	for _, tc := range []struct {
		zone string
		set  *dns.RRset
	}{
		{rev4, dnstest.Set(t, "11.2.10.10.in-addr.arpa", dns.TypePTR, 300, "e1n01.east.example.net.")},
		{rev6, dnstest.Set(t, "1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.1.0.8.b.d.0.1.0.0.2.ip6.arpa", dns.TypePTR, 300, "e1n01.east.example.net.")},
		{east, dnstest.Set(t, "e1n01.east.example.net", dns.TypeA, 300, "10.10.2.11")},
	} {
		t.Run(tc.zone, func(t *testing.T) {
			apply(t, tg, tc.zone, dnstest.Create(tc.set))
			if _, got := content(t, tg, tc.zone); !sameRRsets(got, []dns.RRset{*tc.set}) {
				t.Fatalf("zone holds %v", got)
			}
		})
	}
	// The parent zone does not hold the child's records.
	if _, got := content(t, tg, fwd); len(got) != 0 {
		t.Fatalf("example.net holds %v", got)
	}
	// A zone the server does not have.
	_, err := tg.Apply(context.Background(), "example.org", []dns.RRsetChange{dnstest.Create(dnstest.Set(t, "a.example.org", dns.TypeA, 300, "192.0.2.1"))})
	dnstest.WantClass(t, err, dns.ClassPermanent, "bind")
	_, err = tg.ReadZone(context.Background(), "example.org")
	dnstest.WantClass(t, err, dns.ClassPermanent, "bind")
	_, err = tg.Serial(context.Background(), "example.org")
	dnstest.WantClass(t, err, dns.ClassPermanent, "bind")
}

// nsupdate sends one UPDATE to the server, signed with key when given,
// and returns the answer's rcode.
func nsupdate(t *testing.T, l *lab, zone string, key *labdns.TSIGKey, build func(m *mdns.Msg)) int {
	t.Helper()
	m := new(mdns.Msg)
	m.SetUpdate(mdns.Fqdn(zone))
	build(m)
	r, err := exchange(t, l.DNSAddr(), "tcp", m, key)
	if r == nil {
		t.Fatalf("UPDATE: %v", err)
	}
	return r.Rcode
}

func rrs(t *testing.T, lines ...string) []mdns.RR {
	t.Helper()
	var out []mdns.RR
	for _, s := range lines {
		rr, err := mdns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rr)
	}
	return out
}

// TestRFC2136Conflicts: a change made out of band since the plan makes
// the provider's prerequisites fail: ClassConflict, and nothing of the
// message applied, not even the innocent change packed before it.
func TestRFC2136Conflicts(t *testing.T) {
	t.Parallel()
	l := start(t, bindConfig(t))
	tg := l.rfc2136Target(t)
	key := l.cfg.TSIG
	x := dnstest.Set(t, "x.example.net", dns.TypeA, 300, "192.0.2.1")
	for i, tc := range []struct {
		name     string
		seed     bool
		oob      func(m *mdns.Msg, name string)
		change   dns.RRsetChange
		conflict bool
	}{
		{name: "update after a change of data", seed: true,
			oob: func(m *mdns.Msg, n string) {
				m.RemoveRRset(rrs(t, n+" 0 IN A 0.0.0.0"))
				m.Insert(rrs(t, n+" 300 IN A 192.0.2.2"))
			},
			change: dnstest.Update(x, dnstest.Set(t, "x.example.net", dns.TypeA, 300, "192.0.2.3")), conflict: true},
		{name: "update after a record was added", seed: true,
			oob:    func(m *mdns.Msg, n string) { m.Insert(rrs(t, n+" 300 IN A 192.0.2.2")) },
			change: dnstest.Update(x, dnstest.Set(t, "x.example.net", dns.TypeA, 300, "192.0.2.3")), conflict: true},
		{name: "delete after the RRset was deleted", seed: true,
			oob:    func(m *mdns.Msg, n string) { m.RemoveRRset(rrs(t, n+" 0 IN A 0.0.0.0")) },
			change: dnstest.Delete(x), conflict: true},
		{name: "create after someone created it",
			oob:    func(m *mdns.Msg, n string) { m.Insert(rrs(t, n+" 300 IN A 192.0.2.2")) },
			change: dnstest.Create(x), conflict: true},
		{name: "create A beside a CNAME created out of band",
			oob:    func(m *mdns.Msg, n string) { m.Insert(rrs(t, n+" 300 IN CNAME www.example.net.")) },
			change: dnstest.Create(x), conflict: true},
		{name: "create CNAME beside data created out of band",
			oob:    func(m *mdns.Msg, n string) { m.Insert(rrs(t, n+` 300 IN TXT "hi"`)) },
			change: dnstest.Create(dnstest.Set(t, "x.example.net", dns.TypeCNAME, 300, "www.example.net.")), conflict: true},
		{name: "update after a TTL-only change", seed: true,
			oob: func(m *mdns.Msg, n string) {
				m.RemoveRRset(rrs(t, n+" 0 IN A 0.0.0.0"))
				m.Insert(rrs(t, n+" 60 IN A 192.0.2.1"))
			},
			change: dnstest.Update(x, dnstest.Set(t, "x.example.net", dns.TypeA, 300, "192.0.2.3"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("x%d.example.net", i)
			rename := func(s *dns.RRset) *dns.RRset {
				if s == nil {
					return nil
				}
				c := *s
				c.Name = name
				return &c
			}
			ch := dns.RRsetChange{Op: tc.change.Op, Old: rename(tc.change.Old), New: rename(tc.change.New)}
			if tc.seed {
				apply(t, tg, fwd, dnstest.Create(rename(x)))
			}
			planned, _ := content(t, tg, fwd)
			if rc := nsupdate(t, l, fwd, key, func(m *mdns.Msg) { tc.oob(m, name+".") }); rc != mdns.RcodeSuccess {
				t.Fatalf("out-of-band update: %s", mdns.RcodeToString[rc])
			}
			before, beforeSets := content(t, tg, fwd)
			if before.Serial == planned.Serial {
				t.Fatal("the out-of-band change did not move the serial")
			}
			innocent := dnstest.Create(dnstest.Set(t, "innocent."+name, dns.TypeTXT, 300, `"ok"`))
			n, err := tg.Apply(context.Background(), fwd, []dns.RRsetChange{innocent, ch})
			after, afterSets := content(t, tg, fwd)
			if !tc.conflict {
				if err != nil || n != 2 {
					t.Fatalf("applied %d: %v", n, err)
				}
				return
			}
			te := dnstest.WantClass(t, err, dns.ClassConflict, "bind")
			if n != 0 || te.Zone != fwd || te.Op != "apply" {
				t.Errorf("applied %d; error names zone %q op %q", n, te.Zone, te.Op)
			}
			if after.Serial != before.Serial || !sameRRsets(afterSets, beforeSets) {
				t.Errorf("a refused update changed the zone:\n%v\n%v", beforeSets, afterSets)
			}
		})
	}
}

// TestUpdates sends raw UPDATEs: every prerequisite of RFC 2136 section
// 2.4 and every kind of update of section 2.5, and the errors of
// section 3.
func TestUpdates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		zone  string
		build func(t *testing.T, m *mdns.Msg)
		rcode int
		// after: "name TYPE" -> how many records DNS answers with.
		after   map[string]int
		changed bool // the serial moved
	}{
		{name: "name in use, and it is", build: func(t *testing.T, m *mdns.Msg) {
			m.NameUsed(rrs(t, "a.example.net A"))
			m.Insert(rrs(t, "new.example.net 300 IN A 192.0.2.9"))
		}, after: map[string]int{"new.example.net A": 1}, changed: true},
		{name: "name in use, and it is not", build: func(t *testing.T, m *mdns.Msg) {
			m.NameUsed(rrs(t, "nope.example.net A"))
			m.Insert(rrs(t, "new.example.net 300 IN A 192.0.2.9"))
		}, rcode: mdns.RcodeNameError, after: map[string]int{"new.example.net A": 0}},
		{name: "an empty non-terminal is not in use", build: func(t *testing.T, m *mdns.Msg) {
			m.NameUsed(rrs(t, "ent.example.net A"))
		}, rcode: mdns.RcodeNameError},
		{name: "name not in use, and it is", build: func(t *testing.T, m *mdns.Msg) {
			m.NameNotUsed(rrs(t, "a.example.net A"))
		}, rcode: mdns.RcodeYXDomain},
		{name: "RRset exists", build: func(t *testing.T, m *mdns.Msg) {
			m.RRsetUsed(rrs(t, "a.example.net A"))
			m.Insert(rrs(t, "a.example.net 300 IN A 192.0.2.9"))
		}, after: map[string]int{"a.example.net A": 3}, changed: true},
		{name: "RRset exists, and it does not", build: func(t *testing.T, m *mdns.Msg) {
			m.RRsetUsed(rrs(t, "a.example.net AAAA"))
		}, rcode: mdns.RcodeNXRrset},
		{name: "RRset does not exist, and it does", build: func(t *testing.T, m *mdns.Msg) {
			m.RRsetNotUsed(rrs(t, "a.example.net A"))
		}, rcode: mdns.RcodeYXRrset},
		{name: "RRset holds exactly, TTL aside", build: func(t *testing.T, m *mdns.Msg) {
			m.Used(rrs(t, "a.example.net 1 IN A 192.0.2.2", "a.example.net 1 IN A 192.0.2.1"))
			m.Remove(rrs(t, "a.example.net 300 IN A 192.0.2.1"))
		}, after: map[string]int{"a.example.net A": 1}, changed: true},
		{name: "RRset holds other records", build: func(t *testing.T, m *mdns.Msg) {
			m.Used(rrs(t, "a.example.net 300 IN A 192.0.2.1"))
			m.Remove(rrs(t, "a.example.net 300 IN A 192.0.2.1"))
		}, rcode: mdns.RcodeNXRrset, after: map[string]int{"a.example.net A": 2}},
		{name: "delete an RRset", build: func(t *testing.T, m *mdns.Msg) {
			m.RemoveRRset(rrs(t, "a.example.net 0 IN A 0.0.0.0"))
		}, after: map[string]int{"a.example.net A": 0, "a.example.net TXT": 1}, changed: true},
		{name: "delete a name", build: func(t *testing.T, m *mdns.Msg) {
			m.RemoveName(rrs(t, "a.example.net A"))
		}, after: map[string]int{"a.example.net A": 0, "a.example.net TXT": 0}, changed: true},
		{name: "delete the apex: SOA and NS stay", build: func(t *testing.T, m *mdns.Msg) {
			m.RemoveName(rrs(t, "example.net A"))
		}, after: map[string]int{"example.net SOA": 1, "example.net NS": 1, "example.net MX": 0}, changed: true},
		{name: "delete the last apex NS: ignored", build: func(t *testing.T, m *mdns.Msg) {
			m.Remove(rrs(t, "example.net 300 IN NS ns1.example.net."))
			m.RemoveRRset(rrs(t, "example.net 0 IN NS ns1.example.net."))
			m.RemoveRRset(rrs(t, "example.net 0 IN SOA . . 0 0 0 0 0"))
		}, after: map[string]int{"example.net NS": 1, "example.net SOA": 1}},
		{name: "data beside a CNAME: ignored", build: func(t *testing.T, m *mdns.Msg) {
			m.Insert(rrs(t, "c.example.net 300 IN A 192.0.2.1"))
		}, after: map[string]int{"c.example.net CNAME": 1}},
		{name: "a CNAME beside data: ignored", build: func(t *testing.T, m *mdns.Msg) {
			m.Insert(rrs(t, "a.example.net 300 IN CNAME www.example.net."))
		}, after: map[string]int{"a.example.net CNAME": 0, "a.example.net A": 2}},
		{name: "a CNAME replaces a CNAME", build: func(t *testing.T, m *mdns.Msg) {
			m.Insert(rrs(t, "c.example.net 300 IN CNAME other.example.net."))
		}, after: map[string]int{"c.example.net CNAME": 1}, changed: true},
		{name: "a record already there", build: func(t *testing.T, m *mdns.Msg) {
			m.Insert(rrs(t, "a.example.net 300 IN A 192.0.2.1"))
		}, after: map[string]int{"a.example.net A": 2}},
		{name: "a newer SOA", build: func(t *testing.T, m *mdns.Msg) {
			m.Insert(rrs(t, "example.net 300 IN SOA ns1.example.net. hostmaster.example.net. 1000 3600 600 86400 300"))
		}, after: map[string]int{"example.net SOA": 1}, changed: true},
		{name: "a wildcard", build: func(t *testing.T, m *mdns.Msg) {
			m.Insert(rrs(t, "*.w.example.net 300 IN A 192.0.2.7"))
		}, after: map[string]int{"x.w.example.net A": 1}, changed: true},
		{name: "prerequisite with a TTL", build: func(t *testing.T, m *mdns.Msg) {
			m.Answer = append(m.Answer, &mdns.ANY{Hdr: mdns.RR_Header{Name: "a.example.net.", Rrtype: mdns.TypeA, Class: mdns.ClassANY, Ttl: 5}})
		}, rcode: mdns.RcodeFormatError},
		{name: "prerequisite outside the zone", build: func(t *testing.T, m *mdns.Msg) {
			m.NameUsed(rrs(t, "a.example.org A"))
		}, rcode: mdns.RcodeNotZone},
		{name: "update outside the zone", build: func(t *testing.T, m *mdns.Msg) {
			m.Insert(rrs(t, "a.example.net 300 IN A 192.0.2.9", "a.example.org 300 IN A 192.0.2.1"))
		}, rcode: mdns.RcodeNotZone, after: map[string]int{"a.example.net A": 2}},
		{name: "a child zone's name in the parent's update", build: func(t *testing.T, m *mdns.Msg) {
			m.Insert(rrs(t, "x.east.example.net 300 IN A 192.0.2.1"))
		}, changed: true, after: map[string]int{"x.east.example.net A": 0}},
		{name: "a zone not served", zone: "example.org", build: func(t *testing.T, m *mdns.Msg) {
			m.Insert(rrs(t, "a.example.org 300 IN A 192.0.2.1"))
		}, rcode: mdns.RcodeNotAuth},
		{name: "the zone section is not an SOA", build: func(t *testing.T, m *mdns.Msg) {
			m.Question[0].Qtype = mdns.TypeA
		}, rcode: mdns.RcodeFormatError},
		{name: "an ANY record to add", build: func(t *testing.T, m *mdns.Msg) {
			m.Ns = append(m.Ns, &mdns.ANY{Hdr: mdns.RR_Header{Name: "a.example.net.", Rrtype: mdns.TypeANY, Class: mdns.ClassINET, Ttl: 300}})
		}, rcode: mdns.RcodeFormatError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l := start(t, bindConfig(t))
			key := l.cfg.TSIG
			seed := func(m *mdns.Msg) {
				m.Insert(rrs(t,
					"a.example.net 300 IN A 192.0.2.1", "a.example.net 300 IN A 192.0.2.2", `a.example.net 300 IN TXT "a"`,
					"c.example.net 300 IN CNAME www.example.net.", "x.ent.example.net 300 IN A 192.0.2.3",
					"example.net 300 IN MX 10 mail.example.net."))
			}
			if rc := nsupdate(t, l, fwd, key, seed); rc != mdns.RcodeSuccess {
				t.Fatalf("seed: %s", mdns.RcodeToString[rc])
			}
			before := query(t, l.DNSAddr(), "udp", fwd, mdns.TypeSOA).Answer[0].(*mdns.SOA).Serial
			zone := fwd
			if tc.zone != "" {
				zone = tc.zone
			}
			rc := nsupdate(t, l, zone, key, func(m *mdns.Msg) { tc.build(t, m) })
			if rc != tc.rcode {
				t.Fatalf("rcode %s, want %s", mdns.RcodeToString[rc], mdns.RcodeToString[tc.rcode])
			}
			after := query(t, l.DNSAddr(), "udp", fwd, mdns.TypeSOA).Answer[0].(*mdns.SOA).Serial
			if moved := after != before; moved != tc.changed || moved && after != before+1 && after != 1000 {
				t.Errorf("serial %d before, %d after", before, after)
			}
			for k, n := range tc.after {
				name, typ, _ := strings.Cut(k, " ")
				r := query(t, l.DNSAddr(), "tcp", name, mdns.StringToType[typ])
				got := 0
				for _, rr := range r.Answer {
					if rr.Header().Rrtype == mdns.StringToType[typ] {
						got++
					}
				}
				if got != n {
					t.Errorf("%s: %d records, want %d: %v", k, got, n, r)
				}
			}
		})
	}
}

// TestBadTSIG: an UPDATE without a signature, with a wrong secret, an
// unknown key or another algorithm is refused (NOTAUTH, with BADSIG,
// BADKEY or BADTIME); the provider reports a permanent error naming the
// key, its reads fail the same way, and nothing lands.
func TestBadTSIG(t *testing.T) {
	t.Parallel()
	l := start(t, bindConfig(t))
	good := *l.cfg.TSIG
	insert := func(m *mdns.Msg) { m.Insert(rrs(t, "x.example.net 300 IN A 192.0.2.1")) }
	if rc := nsupdate(t, l, fwd, nil, insert); rc != mdns.RcodeNotAuth {
		t.Errorf("unsigned UPDATE: %s, want NOTAUTH", mdns.RcodeToString[rc])
	}

	wrongSecret := randomSecret(t)
	for _, tc := range []struct {
		name    string
		edit    func(*rfc2136.Config)
		key     string
		tsigErr uint16
	}{
		{"wrong secret", func(c *rfc2136.Config) { c.Secret = wrongSecret }, "anneal", mdns.RcodeBadSig},
		{"unknown key", func(c *rfc2136.Config) { c.KeyName = "intruder" }, "intruder", mdns.RcodeBadKey},
		{"wrong algorithm", func(c *rfc2136.Config) { c.Algorithm = "hmac-sha512" }, "anneal", mdns.RcodeBadKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg := l.rfc2136Target(t, tc.edit)
			ctx := context.Background()
			_, err := tg.Apply(ctx, fwd, []dns.RRsetChange{dnstest.Create(dnstest.Set(t, "x.example.net", dns.TypeA, 300, "192.0.2.1"))})
			dnstest.WantClass(t, err, dns.ClassPermanent, "bind")
			_, rerr := tg.ReadZone(ctx, fwd)
			dnstest.WantClass(t, rerr, dns.ClassPermanent, "bind")
			for _, e := range []error{err, rerr} {
				if msg := e.Error(); !strings.Contains(msg, "key "+tc.key) || strings.Contains(msg, wrongSecret) || strings.Contains(msg, good.Secret) {
					t.Errorf("error does not name key %s, or quotes a secret: %s", tc.key, msg)
				}
			}
			if _, err := tg.Serial(ctx, fwd); err != nil {
				t.Errorf("the unsigned serial query: %v", err)
			}

			// The TSIG error the server answered with.
			cfg := l.cfg.TSIG
			k := &labdns.TSIGKey{Name: cfg.Name, Algorithm: "hmac-sha256", Secret: cfg.Secret}
			switch tc.name {
			case "wrong secret":
				k.Secret = wrongSecret
			case "unknown key":
				k.Name = "intruder"
			case "wrong algorithm":
				k.Algorithm = "hmac-sha512"
			}
			m := new(mdns.Msg)
			m.SetUpdate(fwd + ".")
			insert(m)
			r, _ := exchange(t, l.DNSAddr(), "tcp", m, k)
			if r == nil || r.Rcode != mdns.RcodeNotAuth || r.IsTsig() == nil || r.IsTsig().Error != tc.tsigErr {
				t.Fatalf("answer %v, want NOTAUTH with TSIG error %d", r, tc.tsigErr)
			}
		})
	}

	// A signature made an hour ago: BADTIME, signed.
	m := new(mdns.Msg)
	m.SetUpdate(fwd + ".")
	insert(m)
	m.SetTsig("anneal.", mdns.HmacSHA256, 300, time.Now().Add(-time.Hour).Unix())
	c := &mdns.Client{Net: "tcp", Timeout: 2 * time.Second, TsigSecret: map[string]string{"anneal.": good.Secret}}
	r, _, _ := c.Exchange(m, l.DNSAddr())
	if r == nil || r.Rcode != mdns.RcodeNotAuth || r.IsTsig() == nil || r.IsTsig().Error != mdns.RcodeBadTime {
		t.Fatalf("an old signature: %v", r)
	}

	if _, got := content(t, l.rfc2136Target(t), fwd); len(got) != 0 {
		t.Fatalf("a refused update landed: %v", got)
	}
}

// TestRecordLimit: an UPDATE that would put more records in an RRset
// than MaxRecordsPerType fails whole with SERVFAIL, which the provider
// sees as transient, as with BIND's max-records-per-type.
func TestRecordLimit(t *testing.T) {
	t.Parallel()
	cfg := bindConfig(t)
	cfg.MaxRecordsPerType = 3
	l := start(t, cfg)
	tg := l.rfc2136Target(t)
	ok := dnstest.Create(dnstest.Set(t, "ok.example.net", dns.TypeA, 300, "192.0.2.1"))
	over := dnstest.Create(dnstest.Set(t, "rr.example.net", dns.TypeA, 300, "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"))
	n, err := tg.Apply(context.Background(), fwd, []dns.RRsetChange{ok, over})
	if te := dnstest.WantClass(t, err, dns.ClassTransient, "bind"); n != 0 || !strings.Contains(te.Error(), "max-records-per-type") {
		t.Fatalf("applied %d: %v", n, err)
	}
	if _, got := content(t, tg, fwd); len(got) != 0 {
		t.Fatalf("part of a failed update landed: %v", got)
	}
	apply(t, tg, fwd, ok, dnstest.Create(dnstest.Set(t, "rr.example.net", dns.TypeA, 300, "192.0.2.1", "192.0.2.2", "192.0.2.3")))
}

// TestConcurrentUpdates: many writers and readers at once; every UPDATE
// lands, and each moves the serial exactly once.
func TestConcurrentUpdates(t *testing.T) {
	t.Parallel()
	l := start(t, bindConfig(t))
	ctx := context.Background()
	first, err := l.rfc2136Target(t).Serial(ctx, fwd)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 12
	want := model{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, writers*each*2)
	for w := range writers {
		tg := l.rfc2136Target(t)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range each {
				s := dnstest.Set(t, fmt.Sprintf("w%d-%d.example.net", w, i), dns.TypeA, 300, fmt.Sprintf("10.%d.%d.1", w, i))
				if _, err := tg.Apply(ctx, fwd, []dns.RRsetChange{dnstest.Create(s)}); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				want.apply(dnstest.Create(s))
				mu.Unlock()
			}
		}()
		go func() {
			defer wg.Done()
			for range each {
				if _, err := tg.ReadZone(ctx, fwd); err != nil {
					errs <- err
				}
				c := &mdns.Client{Timeout: 2 * time.Second}
				m := new(mdns.Msg)
				m.SetQuestion("w0-0.example.net.", mdns.TypeA)
				if _, _, err := c.Exchange(m, l.DNSAddr()); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	zc, got := content(t, l.rfc2136Target(t), fwd)
	if !sameRRsets(got, want.sorted()) || zc.Serial != first+writers*each {
		t.Fatalf("%d RRsets at serial %d, want %d at %d", len(got), zc.Serial, len(want), first+writers*each)
	}
}
