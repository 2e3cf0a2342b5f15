package servers

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

func TestStartBIND(t *testing.T) {
	t.Parallel()
	b := StartBIND(t, BINDOptions{Zones: []string{"example.net", "10.10.in-addr.arpa"}, MaxRecordsPerType: 5})
	if !strings.HasPrefix(b.Addr, "127.0.0.1:") {
		t.Fatalf("Addr = %q", b.Addr)
	}
	b.Nsupdate(t, "zone example.net.\nupdate add www.example.net. 300 A 192.0.2.1\n")
	var found bool
	rrs := b.AXFR(t, "example.net")
	for _, rr := range rrs {
		if a, ok := rr.(*dns.A); ok && a.Hdr.Name == "www.example.net." && a.A.String() == "192.0.2.1" {
			found = true
		}
	}
	if !found {
		t.Fatalf("nsupdate's record missing from AXFR: %v", rrs)
	}

	// Over max-records-per-type: BIND refuses (SERVFAIL), nsupdate fails.
	var script strings.Builder
	script.WriteString("zone example.net.\n")
	for i := range 6 {
		script.WriteString("update add rr.example.net. 300 A 192.0.2." + string(rune('1'+i)) + "\n")
	}
	if err := b.NsupdateErr(script.String()); err == nil {
		t.Fatal("update over max-records-per-type 5 succeeded")
	}

	// Unsigned updates are refused.
	m := new(dns.Msg)
	m.SetUpdate("example.net.")
	rr, _ := dns.NewRR("x.example.net. 300 IN A 192.0.2.9")
	m.Insert([]dns.RR{rr})
	r, _, err := (&dns.Client{Net: "tcp"}).Exchange(m, b.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeRefused {
		t.Fatalf("unsigned update: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}

	// Stop, then Restart keeps the zone (journal) and the address.
	b.Stop()
	if _, _, err := (&dns.Client{Net: "tcp"}).Exchange(m, b.Addr); err == nil {
		t.Fatal("stopped server answered")
	}
	b.Restart(t)
	found = false
	for _, rr := range b.AXFR(t, "example.net") {
		if rr.Header().Name == "www.example.net." && rr.Header().Rrtype == dns.TypeA {
			found = true
		}
	}
	if !found {
		t.Fatal("record lost over a restart")
	}
}

func TestStartBINDMany(t *testing.T) {
	t.Parallel()
	// Several servers at once each get their own port.
	seen := map[string]bool{}
	for range 3 {
		b := StartBIND(t, BINDOptions{Zones: []string{"example.org"}, KeyName: "other", Algorithm: "hmac-sha512"})
		if seen[b.Addr] {
			t.Fatalf("port reused: %s", b.Addr)
		}
		seen[b.Addr] = true
		b.Nsupdate(t, "update add a.example.org. 60 TXT \"hello\"")
	}
}
