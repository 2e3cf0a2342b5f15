package labdns_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/anneal-dev/anneal/lab/labdns"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/dns/dnstest"
)

// seedQueries writes the records the query tests ask about, through the
// RFC 2136 provider.
func seedQueries(t *testing.T, l *lab) {
	t.Helper()
	tg := l.rfc2136Target(t)
	var big, mid []string
	for i := range 100 {
		big = append(big, fmt.Sprintf("192.0.2.%d", i+1))
	}
	for i := range 40 {
		mid = append(mid, fmt.Sprintf("198.51.100.%d", i+1))
	}
	apply(t, tg, fwd,
		dnstest.Create(dnstest.Set(t, "www.example.net", dns.TypeA, 300, "192.0.2.1", "192.0.2.2")),
		dnstest.Create(dnstest.Set(t, "www.example.net", dns.TypeAAAA, 300, "2001:db8::1")),
		dnstest.Create(dnstest.Set(t, "example.net", dns.TypeMX, 300, "10 mail.example.net.")),
		dnstest.Create(dnstest.Set(t, "example.net", dns.TypeTXT, 300, `"v=spf1 mx -all"`)),
		dnstest.Create(dnstest.Set(t, "alias.example.net", dns.TypeCNAME, 300, "www.example.net.")),
		dnstest.Create(dnstest.Set(t, "chain.example.net", dns.TypeCNAME, 300, "alias.example.net.")),
		dnstest.Create(dnstest.Set(t, "dangling.example.net", dns.TypeCNAME, 300, "nowhere.example.net.")),
		dnstest.Create(dnstest.Set(t, "out.example.net", dns.TypeCNAME, 300, "www.example.org.")),
		dnstest.Create(dnstest.Set(t, "cross.example.net", dns.TypeCNAME, 300, "host.east.example.net.")),
		dnstest.Create(dnstest.Set(t, "loop1.example.net", dns.TypeCNAME, 300, "loop2.example.net.")),
		dnstest.Create(dnstest.Set(t, "loop2.example.net", dns.TypeCNAME, 300, "loop1.example.net.")),
		dnstest.Create(dnstest.Set(t, "*.apps.example.net", dns.TypeCNAME, 60, "ingress.example.net.")),
		dnstest.Create(dnstest.Set(t, "ingress.example.net", dns.TypeA, 60, "192.0.2.80")),
		dnstest.Create(dnstest.Set(t, "*.wild.example.net", dns.TypeA, 60, "192.0.2.90")),
		dnstest.Create(dnstest.Set(t, "exists.wild.example.net", dns.TypeTXT, 60, `"here"`)),
		dnstest.Create(dnstest.Set(t, "deep.ent.example.net", dns.TypeA, 300, "192.0.2.5")),
		dnstest.Create(dnstest.Set(t, "sub.example.net", dns.TypeNS, 300, "ns1.sub.example.net.")),
		dnstest.Create(dnstest.Set(t, "ns1.sub.example.net", dns.TypeA, 300, "192.0.2.53")),
		dnstest.Create(dnstest.Set(t, "big.example.net", dns.TypeA, 300, big...)),
		dnstest.Create(dnstest.Set(t, "mid.example.net", dns.TypeA, 300, mid...)),
	)
	apply(t, tg, east, dnstest.Create(dnstest.Set(t, "host.east.example.net", dns.TypeA, 300, "10.10.2.11")))
	apply(t, tg, rev4, dnstest.Create(dnstest.Set(t, "11.2.10.10.in-addr.arpa", dns.TypePTR, 300, "host.east.example.net.")))
	apply(t, tg, rev6, dnstest.Create(dnstest.Set(t, "1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.1.0.8.b.d.0.1.0.0.2.ip6.arpa", dns.TypePTR, 300, "host.east.example.net.")))
}

func TestQueries(t *testing.T) {
	t.Parallel()
	l := start(t, bindConfig(t))
	seedQueries(t, l)
	for _, tc := range []struct {
		name   string
		qtype  uint16
		rcode  int
		aa     bool
		answer []string // "owner TYPE rdata", in order
		soa    bool     // the SOA in the authority section
		ns     int      // NS records in the authority section (a referral)
		extra  int
	}{
		{name: "www.example.net", qtype: mdns.TypeA, aa: true, answer: []string{"www.example.net. A 192.0.2.1", "www.example.net. A 192.0.2.2"}},
		{name: "WWW.Example.NET", qtype: mdns.TypeA, aa: true, answer: []string{"www.example.net. A 192.0.2.1", "www.example.net. A 192.0.2.2"}},
		{name: "www.example.net", qtype: mdns.TypeAAAA, aa: true, answer: []string{"www.example.net. AAAA 2001:db8::1"}},
		{name: "www.example.net", qtype: mdns.TypeMX, aa: true, soa: true},
		{name: "nope.example.net", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, aa: true, soa: true},
		{name: "example.net", qtype: mdns.TypeSOA, aa: true, answer: []string{"example.net. SOA ns1.example.net. hostmaster.example.net."}},
		{name: "example.net", qtype: mdns.TypeMX, aa: true, answer: []string{"example.net. MX 10 mail.example.net."}},
		{name: "example.net", qtype: mdns.TypeTXT, aa: true, answer: []string{`example.net. TXT "v=spf1 mx -all"`}},
		{name: "alias.example.net", qtype: mdns.TypeA, aa: true, answer: []string{"alias.example.net. CNAME www.example.net.", "www.example.net. A 192.0.2.1", "www.example.net. A 192.0.2.2"}},
		{name: "alias.example.net", qtype: mdns.TypeCNAME, aa: true, answer: []string{"alias.example.net. CNAME www.example.net."}},
		{name: "chain.example.net", qtype: mdns.TypeAAAA, aa: true, answer: []string{"chain.example.net. CNAME alias.example.net.", "alias.example.net. CNAME www.example.net.", "www.example.net. AAAA 2001:db8::1"}},
		{name: "dangling.example.net", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, aa: true, answer: []string{"dangling.example.net. CNAME nowhere.example.net."}, soa: true},
		{name: "out.example.net", qtype: mdns.TypeA, aa: true, answer: []string{"out.example.net. CNAME www.example.org."}},
		{name: "cross.example.net", qtype: mdns.TypeA, aa: true, answer: []string{"cross.example.net. CNAME host.east.example.net.", "host.east.example.net. A 10.10.2.11"}},
		{name: "loop1.example.net", qtype: mdns.TypeA, aa: true, answer: []string{"loop1.example.net. CNAME loop2.example.net.", "loop2.example.net. CNAME loop1.example.net."}},
		{name: "foo.apps.example.net", qtype: mdns.TypeA, aa: true, answer: []string{"foo.apps.example.net. CNAME ingress.example.net.", "ingress.example.net. A 192.0.2.80"}},
		{name: "a.b.apps.example.net", qtype: mdns.TypeA, aa: true, answer: []string{"a.b.apps.example.net. CNAME ingress.example.net.", "ingress.example.net. A 192.0.2.80"}},
		{name: "apps.example.net", qtype: mdns.TypeA, aa: true, soa: true}, // an empty non-terminal
		{name: "x.wild.example.net", qtype: mdns.TypeA, aa: true, answer: []string{"x.wild.example.net. A 192.0.2.90"}},
		{name: "x.wild.example.net", qtype: mdns.TypeTXT, aa: true, soa: true},
		{name: "exists.wild.example.net", qtype: mdns.TypeA, aa: true, soa: true}, // no synthesis at an existing name
		{name: "*.wild.example.net", qtype: mdns.TypeA, aa: true, answer: []string{"*.wild.example.net. A 192.0.2.90"}},
		{name: "ent.example.net", qtype: mdns.TypeA, aa: true, soa: true},
		{name: "deep.ent.example.net", qtype: mdns.TypeA, aa: true, answer: []string{"deep.ent.example.net. A 192.0.2.5"}},
		{name: "x.sub.example.net", qtype: mdns.TypeA, ns: 1, extra: 1},
		{name: "sub.example.net", qtype: mdns.TypeNS, ns: 1, extra: 1},
		{name: "host.east.example.net", qtype: mdns.TypeA, aa: true, answer: []string{"host.east.example.net. A 10.10.2.11"}},
		{name: "east.example.net", qtype: mdns.TypeSOA, aa: true, answer: []string{"east.example.net. SOA ns1.east.example.net. hostmaster.east.example.net."}},
		{name: "nope.east.example.net", qtype: mdns.TypeA, rcode: mdns.RcodeNameError, aa: true, soa: true},
		{name: "11.2.10.10.in-addr.arpa", qtype: mdns.TypePTR, aa: true, answer: []string{"11.2.10.10.in-addr.arpa. PTR host.east.example.net."}},
		{name: "1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.1.0.8.b.d.0.1.0.0.2.ip6.arpa", qtype: mdns.TypePTR, aa: true, answer: []string{"1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.1.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR host.east.example.net."}},
		{name: "www.example.org", qtype: mdns.TypeA, rcode: mdns.RcodeRefused},
		{name: "net", qtype: mdns.TypeSOA, rcode: mdns.RcodeRefused},
	} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(fmt.Sprintf("%s/%s/%s", tc.name, mdns.TypeToString[tc.qtype], network), func(t *testing.T) {
				r := query(t, l.DNSAddr(), network, tc.name, tc.qtype)
				if r.Rcode != tc.rcode || r.Authoritative != tc.aa || r.Truncated || r.RecursionAvailable {
					t.Fatalf("rcode %s aa %v tc %v ra %v, want %s aa %v:\n%v", mdns.RcodeToString[r.Rcode], r.Authoritative, r.Truncated, r.RecursionAvailable, mdns.RcodeToString[tc.rcode], tc.aa, r)
				}
				var got []string
				for _, rr := range r.Answer {
					got = append(got, brief(rr))
				}
				if len(got) != len(tc.answer) {
					t.Fatalf("answer %q, want %q", got, tc.answer)
				}
				for i := range got {
					if !strings.HasPrefix(got[i], tc.answer[i]) {
						t.Fatalf("answer %q, want %q", got, tc.answer)
					}
				}
				soa := slices.ContainsFunc(r.Ns, func(rr mdns.RR) bool { return rr.Header().Rrtype == mdns.TypeSOA })
				ns := 0
				for _, rr := range r.Ns {
					if rr.Header().Rrtype == mdns.TypeNS {
						ns++
					}
				}
				if soa != tc.soa || ns != tc.ns || len(r.Extra) != tc.extra {
					t.Fatalf("authority %v (want SOA %v, %d NS), additional %v (want %d)", r.Ns, tc.soa, tc.ns, r.Extra, tc.extra)
				}
				if soa {
					// RFC 2308: the negative TTL is the lesser of the SOA's TTL and minimum.
					s := r.Ns[0].(*mdns.SOA)
					if s.Hdr.Ttl > s.Minttl {
						t.Errorf("negative SOA TTL %d over its minimum %d", s.Hdr.Ttl, s.Minttl)
					}
				}
			})
		}
	}
}

// brief renders a record without its TTL and class: "owner TYPE rdata".
func brief(rr mdns.RR) string {
	h := rr.Header()
	return h.Name + " " + mdns.TypeToString[h.Rrtype] + " " + strings.TrimPrefix(rr.String(), h.String())
}

// TestOtherQueries: ANY, another class, EDNS versions, NOTIFY.
func TestOtherQueries(t *testing.T) {
	t.Parallel()
	l := start(t, bindConfig(t))
	seedQueries(t, l)
	addr := l.DNSAddr()

	r := query(t, addr, "tcp", fwd, mdns.TypeANY)
	types := map[uint16]bool{}
	for _, rr := range r.Answer {
		types[rr.Header().Rrtype] = true
	}
	if !r.Authoritative || !types[mdns.TypeSOA] || !types[mdns.TypeNS] || !types[mdns.TypeMX] || !types[mdns.TypeTXT] {
		t.Errorf("ANY at the apex: %v", r)
	}

	m := new(mdns.Msg)
	m.SetQuestion("version.bind.", mdns.TypeTXT)
	m.Question[0].Qclass = mdns.ClassCHAOS
	if r, err := exchange(t, addr, "udp", m, nil); err != nil || r.Rcode != mdns.RcodeRefused {
		t.Errorf("CH TXT version.bind: %v %v", r, err)
	}

	m = new(mdns.Msg)
	m.SetQuestion("www.example.net.", mdns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().SetVersion(1)
	if r, err := exchange(t, addr, "udp", m, nil); err != nil || r.Rcode != mdns.RcodeBadVers || r.IsEdns0() == nil {
		t.Errorf("EDNS version 1: %v %v", r, err)
	}

	m = new(mdns.Msg)
	m.SetNotify("example.net.")
	if r, err := exchange(t, addr, "udp", m, nil); err != nil || r.Rcode != mdns.RcodeNotImplemented {
		t.Errorf("NOTIFY: %v %v", r, err)
	}
}

// TestTruncation: a UDP answer over 512 bytes, or over the client's EDNS
// size, comes truncated; over TCP it comes whole.
func TestTruncation(t *testing.T) {
	t.Parallel()
	l := start(t, bindConfig(t))
	seedQueries(t, l)
	for _, tc := range []struct {
		name    string
		network string
		edns    uint16 // 0: none
		tc      bool
		answers int
	}{
		{"mid.example.net", "udp", 0, true, -1},
		{"mid.example.net", "udp", 1232, false, 40},
		{"mid.example.net", "udp", 600, true, -1},
		{"big.example.net", "udp", 0, true, -1},
		{"big.example.net", "udp", 4096, true, -1}, // the server answers with 1,232 at most
		{"big.example.net", "tcp", 0, false, 100},
		{"www.example.net", "udp", 0, false, 2},
	} {
		t.Run(fmt.Sprintf("%s/%s/%d", tc.name, tc.network, tc.edns), func(t *testing.T) {
			m := new(mdns.Msg)
			m.SetQuestion(tc.name+".", mdns.TypeA)
			if tc.edns > 0 {
				m.SetEdns0(tc.edns, false)
			}
			r, err := exchange(t, l.DNSAddr(), tc.network, m, nil)
			if err != nil {
				t.Fatal(err)
			}
			r.Compress = true // as it came: the server compresses what it truncates
			size := r.Len()
			limit := 512
			if tc.edns > 0 {
				limit = min(int(tc.edns), 1232)
			}
			if tc.network == "udp" && size > limit {
				t.Errorf("a %d-byte UDP answer, over %d", size, limit)
			}
			if r.Truncated != tc.tc || tc.answers >= 0 && len(r.Answer) != tc.answers {
				t.Errorf("TC %v with %d answers (%d bytes), want TC %v and %d", r.Truncated, len(r.Answer), size, tc.tc, tc.answers)
			}
			if tc.edns > 0 && r.IsEdns0() == nil {
				t.Error("no OPT in the answer to an EDNS query")
			}
		})
	}
}

// TestTransfer: AXFR over TCP, unsigned or signed with the key, has the
// SOA first and last and every served record; over UDP it is refused; a
// zone not served is NOTAUTH; a bad signature is refused.
func TestTransfer(t *testing.T) {
	t.Parallel()
	l := start(t, bindConfig(t))
	seedQueries(t, l)
	// Enough records for several messages.
	tg := l.rfc2136Target(t)
	var many []dns.RRsetChange
	for i := range 3000 {
		many = append(many, dnstest.Create(dnstest.Set(t, fmt.Sprintf("h%04d.example.net", i), dns.TypeA, 300, fmt.Sprintf("10.0.%d.%d", i/256, i%256))))
	}
	apply(t, tg, fwd, many...)

	key := l.cfg.TSIG
	wrong := *key
	wrong.Secret = randomSecret(t)
	for _, tc := range []struct {
		name    string
		zone    string
		key     *labdns.TSIGKey
		network string
		rcode   int
		err     bool
	}{
		{"unsigned", fwd, nil, "tcp", mdns.RcodeSuccess, false},
		{"signed", fwd, key, "tcp", mdns.RcodeSuccess, false},
		{"wrong secret", fwd, &wrong, "tcp", mdns.RcodeNotAuth, true},
		{"over UDP", fwd, nil, "udp", mdns.RcodeRefused, false},
		{"not served", "example.org", nil, "tcp", mdns.RcodeNotAuth, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.network == "udp" {
				m := new(mdns.Msg)
				m.SetAxfr(mdns.Fqdn(tc.zone))
				r, err := exchange(t, l.DNSAddr(), "udp", m, nil)
				if err != nil || r.Rcode != tc.rcode {
					t.Fatalf("AXFR over UDP: %v %v", r, err)
				}
				return
			}
			rrs, msgs, err := axfr(l.DNSAddr(), tc.zone, tc.key)
			if tc.err || tc.rcode != mdns.RcodeSuccess {
				if err == nil {
					t.Fatalf("transfer worked, want rcode %s", mdns.RcodeToString[tc.rcode])
				}
				t.Log(err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			first, last := rrs[0], rrs[len(rrs)-1]
			if first.Header().Rrtype != mdns.TypeSOA || last.Header().Rrtype != mdns.TypeSOA || msgs < 2 {
				t.Fatalf("%d records in %d messages, first %v, last %v", len(rrs), msgs, first, last)
			}
			sets := dns.RRsetsFromRRs(rrs)
			if got := len(withoutApexNS(sets, fwd)); got != 3000+20 {
				t.Fatalf("%d RRsets transferred", got)
			}
		})
	}

	// IXFR over UDP: the SOA alone (RFC 1995 section 4).
	m := new(mdns.Msg)
	m.SetIxfr(fwd+".", 1, "ns1.example.net.", "hostmaster.example.net.")
	r, err := exchange(t, l.DNSAddr(), "udp", m, nil)
	if err != nil || len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != mdns.TypeSOA {
		t.Fatalf("IXFR over UDP: %v %v", r, err)
	}
}

// axfr transfers a zone with miekg/dns's client, signed with key when
// given, and returns the records and how many messages carried them.
func axfr(addr, zone string, key *labdns.TSIGKey) ([]mdns.RR, int, error) {
	m := new(mdns.Msg)
	m.SetAxfr(mdns.Fqdn(zone))
	tr := &mdns.Transfer{}
	if key != nil {
		tr.TsigSecret = map[string]string{mdns.Fqdn(key.Name): key.Secret}
		m.SetTsig(mdns.Fqdn(key.Name), mdns.HmacSHA256, 300, time.Now().Unix())
	}
	env, err := tr.In(m, addr)
	if err != nil {
		return nil, 0, err
	}
	var rrs []mdns.RR
	var first error
	msgs := 0
	for e := range env {
		if e.Error != nil && first == nil {
			first = e.Error
		}
		msgs++
		rrs = append(rrs, e.RR...)
	}
	return rrs, msgs, first
}
