package powerdns

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/anneal-dev/anneal/reconcile/dns"
)

// TestContentRoundTrip converts canonical RDATA to PowerDNS content and
// back, and checks the forms PowerDNS itself returns read as canonical.
func TestContentRoundTrip(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		typ       dns.RRType
		canonical string // reconcile's form
		content   string // what anneal sends
		returned  string // a form PowerDNS may return for it ("" = content)
	}{
		{dns.TypeA, "192.0.2.1", "192.0.2.1", ""},
		{dns.TypeAAAA, "2001:db8::1", "2001:db8::1", ""},
		{dns.TypeAAAA, "::ffff:192.0.2.1", "::ffff:c000:201", "::ffff:192.0.2.1"},
		{dns.TypePTR, "host.example.net.", "host.example.net.", "Host.Example.NET."},
		{dns.TypeCNAME, "target.example.org.", "target.example.org.", "TARGET.example.org."},
		{dns.TypeNS, "ns1.example.org.", "ns1.example.org.", ""},
		{dns.TypeMX, "10 mail.example.net.", "10 mail.example.net.", "10 Mail.Example.net."},
		{dns.TypeMX, "0 .", "0 .", ""},
		{dns.TypeSRV, "0 100 389 ldap.example.net.", "0 100 389 ldap.example.net.", ""},
		{dns.TypeTXT, `"v=spf1 mx -all"`, `"v=spf1 mx -all"`, ""},
		{dns.TypeTXT, `"a" "b c"`, `"a" "b c"`, ""},
		{dns.TypeTXT, `"q \" b \\ s ;"`, `"q \" b \\ s ;"`, ""},
		{dns.TypeTXT, `"caf\195\169"`, `"caf\195\169"`, ""},
		{dns.TypeTXT, `"` + long[:255] + `" "` + long[255:] + `"`, `"` + long[:255] + `" "` + long[255:] + `"`, `"` + long + `"`},
		{dns.TypeCAA, `0 issue "letsencrypt.org"`, `0 issue "letsencrypt.org"`, ""},
	} {
		content, err := toContent("n.example.net", tc.typ, 300, tc.canonical)
		if err != nil {
			t.Fatalf("%s %q: %v", tc.typ, tc.canonical, err)
		}
		if content != tc.content {
			t.Errorf("%s %q: content %q, want %q", tc.typ, tc.canonical, content, tc.content)
		}
		for _, back := range []string{content, tc.returned} {
			if back == "" {
				continue
			}
			got, ok := fromContent("n.example.net", tc.typ, 300, back)
			if !ok || got != tc.canonical {
				t.Errorf("%s content %q reads as %q (%v), want %q", tc.typ, back, got, ok, tc.canonical)
			}
		}
		// The canonical form is miekg/dns's, which is what DNS serves.
		rr, err := mdns.NewRR("n.example.net. 300 IN " + string(tc.typ) + " " + tc.canonical)
		if err != nil || dns.CanonicalRData(rr) != tc.canonical {
			t.Errorf("%s %q is not canonical: %v", tc.typ, tc.canonical, err)
		}
	}
	for _, bad := range []struct {
		typ  dns.RRType
		data string
	}{{dns.TypeA, "not-an-ip"}, {dns.TypeMX, "mail.example.net."}, {dns.TypeA, "192.0.2.1\n192.0.2.2"}, {dns.TypeA, ""}} {
		if c, err := toContent("n.example.net", bad.typ, 300, bad.data); err == nil {
			t.Errorf("%s %q rendered as %q", bad.typ, bad.data, c)
		}
	}
	// Types miekg/dns does not know stay as PowerDNS wrote them.
	if got, ok := fromContent("n.example.net", "ALIAS", 300, "target.example.org."); ok || got != "target.example.org." {
		t.Errorf("ALIAS read as %q, %v", got, ok)
	}
}

func TestZonePath(t *testing.T) {
	t.Parallel()
	for zone, want := range map[string]string{
		"example.net":                      "/zones/example.net.",
		"0/26.2.0.192.in-addr.arpa":        "/zones/0=2F26.2.0.192.in-addr.arpa.",
		"0.3.1.0.8.b.d.0.1.0.0.2.ip6.arpa": "/zones/0.3.1.0.8.b.d.0.1.0.0.2.ip6.arpa.",
	} {
		if got := zonePath(zone); got != want {
			t.Errorf("zonePath(%q) = %q, want %q", zone, got, want)
		}
	}
}

// TestDecodeZone reads zone JSON in shapes PowerDNS may send: a comment
// in an entry of its own, one name in two cases, disabled records, the
// SOA, and both serials.
func TestDecodeZone(t *testing.T) {
	t.Parallel()
	const body = `{"account": "", "edited_serial": 2026010102, "serial": 2026010101, "soa_edit_api": "DEFAULT",
	 "rrsets": [
	  {"name": "example.net.", "type": "SOA", "ttl": 3600, "records": [{"content": "localhost. h.example.net. 2026010101 1 1 1 1", "disabled": false}], "comments": []},
	  {"name": "A.example.net.", "type": "A", "ttl": 300, "records": [{"content": "192.0.2.2", "disabled": false}], "comments": []},
	  {"name": "a.example.net.", "type": "A", "ttl": 60, "records": [{"content": "192.0.2.1", "disabled": false}, {"content": "192.0.2.9", "disabled": true}], "comments": []},
	  {"name": "a.example.net.", "type": "A", "ttl": 0, "records": [], "comments": [{"account": "anneal", "content": "managed by anneal", "modified_at": 1}]},
	  {"name": "b.example.net.", "type": "MX", "ttl": 300, "records": [{"content": "10 Mail.Example.net.", "disabled": false}], "comments": [{"account": "bob", "content": "managed by anneal"}]},
	  {"name": "c.example.net.", "type": "A", "ttl": 300, "records": [{"content": "192.0.2.3", "disabled": true}], "comments": [{"account": "anneal", "content": "x"}]},
	  {"name": "ghost.example.net.", "type": "TXT", "ttl": 0, "records": [], "comments": [{"account": "anneal", "content": "x"}]}
	 ], "url": "/api/v1/servers/localhost/zones/example.net."}`
	zc := &dns.ZoneContent{Zone: "example.net", Marked: map[dns.RRsetKey]bool{}}
	if err := decodeZone(strings.NewReader(body), zc); err != nil {
		t.Fatal(err)
	}
	want := []dns.RRset{
		{Name: "a.example.net", Type: dns.TypeA, TTL: 60, Data: []string{"192.0.2.1", "192.0.2.2"}},
		{Name: "b.example.net", Type: dns.TypeMX, TTL: 300, Data: []string{"10 mail.example.net."}},
	}
	if zc.Serial != 2026010102 || len(zc.RRsets) != len(want) {
		t.Fatalf("serial %d, RRsets %+v", zc.Serial, zc.RRsets)
	}
	for i := range want {
		if !zc.RRsets[i].Equal(&want[i]) {
			t.Fatalf("RRset %d = %+v, want %+v", i, zc.RRsets[i], want[i])
		}
	}
	if len(zc.Marked) != 1 || !zc.Marked[want[0].Key()] {
		t.Fatalf("Marked = %v", zc.Marked)
	}

	off := strings.Replace(body, `"soa_edit_api": "DEFAULT"`, `"soa_edit_api": ""`, 1)
	zc = &dns.ZoneContent{Marked: map[dns.RRsetKey]bool{}}
	if err := decodeZone(strings.NewReader(off), zc); err != nil || zc.Serial != 0 {
		t.Fatalf("soa_edit_api off: serial %d, %v", zc.Serial, err)
	}
	for _, bad := range []string{`[]`, `{"rrsets": [}`, `{"rrsets": []}`, `{"serial": "x"}`} {
		if err := decodeZone(strings.NewReader(bad), &dns.ZoneContent{Marked: map[dns.RRsetKey]bool{}}); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// TestPack: batches keep order, stay under the limit to the byte, and
// never hold two changes of one RRset.
func TestPack(t *testing.T) {
	t.Parallel()
	tg := &Target{maxBody: minBodyBytes}
	var changes []dns.RRsetChange
	var items [][]byte
	for i := range 300 {
		name := fmt.Sprintf("h%d.example.net", i%120) // names repeat
		s := &dns.RRset{Name: name, Type: dns.TypeA, TTL: 300, Data: []string{"192.0.2.1"}}
		changes = append(changes, dns.RRsetChange{Op: dns.OpCreate, New: s})
		item, err := tg.render("example.net", &changes[i])
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, item)
	}
	batches, err := tg.pack(changes, items, tg.maxBody)
	if err != nil {
		t.Fatal(err)
	}
	next := 0
	for _, b := range batches {
		if b.lo != next || b.hi <= b.lo {
			t.Fatalf("batch %+v after %d", b, next)
		}
		next = b.hi
		body := body(b, items)
		if len(body) != b.size || len(body) > tg.maxBody {
			t.Fatalf("batch %+v: body %d bytes, limit %d", b, len(body), tg.maxBody)
		}
		var parsed struct {
			RRsets []struct{ Name, Type string } `json:"rrsets"`
		}
		if err := json.Unmarshal(body, &parsed); err != nil || len(parsed.RRsets) != b.hi-b.lo {
			t.Fatalf("batch %+v: %v", b, err)
		}
		seen := map[string]bool{}
		for _, r := range parsed.RRsets {
			if seen[r.Name+r.Type] {
				t.Fatalf("batch %+v holds %s %s twice", b, r.Name, r.Type)
			}
			seen[r.Name+r.Type] = true
		}
	}
	if next != len(changes) || len(batches) < 3 {
		t.Fatalf("%d batches covering %d of %d changes", len(batches), next, len(changes))
	}
}
