package labdns_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/anneal-dev/anneal/providers/dns/powerdns"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/dns/dnstest"
)

// call sends one request to the API with the server's key (or key, when
// not empty) and returns the status and body.
func (l *lab) call(t *testing.T, method, path, body, key string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, l.APIURL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key == "" {
		key = l.cfg.APIKey
	}
	req.Header.Set("X-API-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(out)
}

func (l *lab) patch(t *testing.T, zone, rrsets string) {
	t.Helper()
	if status, body := l.call(t, http.MethodPatch, "/api/v1/servers/localhost/zones/"+zone+".", `{"rrsets":[`+rrsets+`]}`, ""); status != http.StatusNoContent {
		t.Fatalf("PATCH: HTTP %d %s", status, body)
	}
}

func both(t *testing.T, f func(t *testing.T, withDNS bool)) {
	for _, withDNS := range []bool{false, true} {
		t.Run(map[bool]string{false: "api", true: "api+dns"}[withDNS], func(t *testing.T) {
			t.Parallel()
			f(t, withDNS)
		})
	}
}

// TestPowerDNSRoundTrip runs anneal's PowerDNS provider against the API:
// every change lands, the zone reads back the same through the API and
// by AXFR, every RRset anneal wrote is marked, and the serial through the
// API and by DNS agree and move with every apply.
func TestPowerDNSRoundTrip(t *testing.T) {
	t.Parallel()
	both(t, func(t *testing.T, withDNS bool) {
		l := start(t, pdnsConfig(t))
		tg := l.pdnsTarget(t, withDNS)
		viaAPI, viaDNS := l.pdnsTarget(t, false), l.pdnsTarget(t, true)
		ctx := context.Background()
		www := dnstest.Set(t, "www.example.net", dns.TypeA, 300, "192.0.2.1", "192.0.2.2")
		mx := dnstest.Set(t, "example.net", dns.TypeMX, 300, "10 Mail.Example.net.")
		txt := dnstest.Set(t, "example.net", dns.TypeTXT, 300, `"v=spf1 mx -all"`, `"`+strings.Repeat("x", 300)+`"`)
		alias := dnstest.Set(t, "alias.example.net", dns.TypeCNAME, 60, "www.example.net.")
		srv := dnstest.Set(t, "_ldap._tcp.example.net", dns.TypeSRV, 300, "0 100 389 e1n01.east.example.net.")
		mapped := dnstest.Set(t, "v4.example.net", dns.TypeAAAA, 300, "::ffff:192.0.2.1")
		wild := dnstest.Set(t, "*.apps.example.net", dns.TypeA, 60, "192.0.2.80")
		x := dnstest.Set(t, "x.apps.example.net", dns.TypeA, 60, "192.0.2.80")
		ptr := dnstest.Set(t, "1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.1.0.8.b.d.0.1.0.0.2.ip6.arpa", dns.TypePTR, 300, "www.example.net.")
		steps := [][]dns.RRsetChange{
			{dnstest.Create(www), dnstest.Create(mx), dnstest.Create(txt), dnstest.Create(alias), dnstest.Create(srv), dnstest.Create(mapped), dnstest.Create(wild), dnstest.Create(x)},
			{dnstest.Update(www, dnstest.Set(t, "www.example.net", dns.TypeA, 60, "192.0.2.3")), dnstest.Update(alias, dnstest.Set(t, "alias.example.net", dns.TypeCNAME, 60, "mail.example.net."))},
			{dnstest.Delete(x), dnstest.Delete(mapped), dnstest.Delete(dnstest.Set(t, "alias.example.net", dns.TypeCNAME, 60, "mail.example.net."))},
		}
		want := model{}
		prev := uint32(0)
		for i, changes := range steps {
			apply(t, tg, fwd, changes...)
			want.apply(changes...)
			zc, got := content(t, tg, fwd)
			if !sameRRsets(got, want.sorted()) {
				t.Fatalf("step %d: zone holds\n%v\nwant\n%v", i, got, want.sorted())
			}
			for k := range want {
				if !zc.Marked[k] {
					t.Errorf("step %d: %s is not marked", i, k)
				}
			}
			rrs, _, err := axfr(l.DNSAddr(), fwd, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := withoutApexNS(dns.RRsetsFromRRs(rrs), fwd); !sameRRsets(got, want.sorted()) {
				t.Fatalf("step %d: AXFR holds\n%v\nwant\n%v", i, got, want.sorted())
			}
			s1, err1 := viaAPI.Serial(ctx, fwd)
			s2, err2 := viaDNS.Serial(ctx, fwd)
			if err1 != nil || err2 != nil || s1 != s2 || s1 != zc.Serial || s1 == prev {
				t.Fatalf("step %d: serial %d by API (%v), %d by DNS (%v), %d read, %d before", i, s1, err1, s2, err2, zc.Serial, prev)
			}
			prev = s1
		}
		apply(t, tg, rev6, dnstest.Create(ptr))
		if _, got := content(t, tg, rev6); !sameRRsets(got, []dns.RRset{*ptr}) {
			t.Fatalf("reverse zone: %v", got)
		}
	})
}

// TestPowerDNSMarks: RRsets written behind anneal's back are read
// unmarked; comments without records and disabled records are not
// served; a CNAME added behind anneal's back makes its create a conflict.
func TestPowerDNSMarks(t *testing.T) {
	t.Parallel()
	l := start(t, pdnsConfig(t))
	tg := l.pdnsTarget(t, true)
	ours := dnstest.Set(t, "ours.example.net", dns.TypeA, 300, "192.0.2.1")
	apply(t, tg, fwd, dnstest.Create(ours))
	l.patch(t, fwd,
		`{"name":"theirs.example.net.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"192.0.2.2","disabled":false}]},`+
			`{"name":"noted.example.net.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"192.0.2.3","disabled":false}],"comments":[{"content":"managed by anneal","account":"alice"}]},`+
			`{"name":"ghost.example.net.","type":"A","ttl":300,"changetype":"REPLACE","comments":[{"content":"x","account":"anneal"}]},`+
			`{"name":"off.example.net.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"192.0.2.4","disabled":true}],"comments":[{"content":"x","account":"anneal"}]},`+
			`{"name":"svc.example.net.","type":"CNAME","ttl":300,"changetype":"REPLACE","records":[{"content":"elsewhere.example.org.","disabled":false}]}`)
	zc, got := content(t, tg, fwd)
	want := []dns.RRset{*ours,
		*dnstest.Set(t, "theirs.example.net", dns.TypeA, 300, "192.0.2.2"),
		*dnstest.Set(t, "noted.example.net", dns.TypeA, 300, "192.0.2.3"),
		*dnstest.Set(t, "svc.example.net", dns.TypeCNAME, 300, "elsewhere.example.org.")}
	if !sameRRsets(got, want) {
		t.Fatalf("zone holds %v\nwant %v", got, want)
	}
	if len(zc.Marked) != 1 || !zc.Marked[ours.Key()] {
		t.Fatalf("Marked = %v", zc.Marked)
	}
	for _, name := range []string{"off.example.net", "ghost.example.net"} {
		if r := query(t, l.DNSAddr(), "udp", name, mdns.TypeA); r.Rcode != mdns.RcodeNameError {
			t.Errorf("%s is served: %v", name, r)
		}
	}
	n, err := tg.Apply(context.Background(), fwd, []dns.RRsetChange{dnstest.Create(dnstest.Set(t, "svc.example.net", dns.TypeA, 300, "192.0.2.1"))})
	if te := dnstest.WantClass(t, err, dns.ClassConflict, "pdns"); n != 0 || !strings.Contains(te.Error(), "Conflicts with pre-existing RRset") {
		t.Fatalf("Apply = %d, %v", n, err)
	}
	// Adopting a foreign RRset marks it.
	theirs := dnstest.Set(t, "theirs.example.net", dns.TypeA, 300, "192.0.2.2")
	apply(t, tg, fwd, dnstest.Update(theirs, dnstest.Set(t, "theirs.example.net", dns.TypeA, 300, "192.0.2.9")))
	if zc, _ := content(t, tg, fwd); !zc.Marked[theirs.Key()] || len(zc.Marked) != 2 {
		t.Fatalf("Marked = %v", zc.Marked)
	}
}

// TestPowerDNSErrors: a refused key, a missing zone and a wrong server id
// are permanent errors the provider explains.
func TestPowerDNSErrors(t *testing.T) {
	t.Parallel()
	l := start(t, pdnsConfig(t))
	ctx := context.Background()
	const key = "not-the-key-0123456789"
	a := []dns.RRsetChange{dnstest.Create(dnstest.Set(t, "a.example.net", dns.TypeA, 300, "192.0.2.1"))}
	wrongKey := l.pdnsTarget(t, false, func(c *powerdns.Config) { c.APIKey = key })
	withDNS := l.pdnsTarget(t, true, func(c *powerdns.Config) { c.APIKey = key })
	_, err1 := wrongKey.Serial(ctx, fwd)
	_, err2 := wrongKey.ReadZone(ctx, fwd)
	_, err3 := wrongKey.Apply(ctx, fwd, a)
	_, err4 := withDNS.ReadZone(ctx, fwd)
	for _, err := range []error{err1, err2, err3, err4} {
		if te := dnstest.WantClass(t, err, dns.ClassPermanent, "pdns"); !strings.Contains(err.Error(), "API key refused") || te.Zone != fwd {
			t.Errorf("wrong key: %v", err)
		}
	}
	if withDNS.Stats().AXFRs != 0 {
		t.Error("a refused key fell back to AXFR")
	}

	tg := l.pdnsTarget(t, false)
	const missing = "missing.example"
	_, err1 = tg.Serial(ctx, missing)
	_, err2 = tg.ReadZone(ctx, missing)
	_, err3 = tg.Apply(ctx, missing, []dns.RRsetChange{dnstest.Create(dnstest.Set(t, "a.missing.example", dns.TypeA, 300, "192.0.2.1"))})
	for _, err := range []error{err1, err2, err3} {
		if dnstest.WantClass(t, err, dns.ClassPermanent, "pdns"); !strings.Contains(err.Error(), "zone not found on target") {
			t.Errorf("missing zone: %v", err)
		}
	}
	if _, err := l.pdnsTarget(t, true).Serial(ctx, missing); !strings.Contains(fmt.Sprint(err), "zone not served") {
		t.Errorf("missing zone by DNS: %v", err)
	}
	wrongID := l.pdnsTarget(t, false, func(c *powerdns.Config) { c.ServerID = "primary" })
	if _, err := wrongID.ReadZone(ctx, fwd); !strings.Contains(fmt.Sprint(err), `server "primary" not found`) {
		t.Errorf("wrong server id: %v", err)
	}
	// The DNS side takes no UPDATEs, as PowerDNS with dnsupdate=no.
	m := new(mdns.Msg)
	m.SetUpdate(fwd + ".")
	m.Insert(rrs(t, "u.example.net 300 IN A 192.0.2.1"))
	if r, err := exchange(t, l.DNSAddr(), "tcp", m, nil); err != nil || r.Rcode != mdns.RcodeRefused {
		t.Errorf("UPDATE to the PowerDNS stand-in: %v %v", r, err)
	}
}

// TestAPI checks answers against what PowerDNS 4.7.3 sends for the same
// requests.
func TestAPI(t *testing.T) {
	t.Parallel()
	l := start(t, pdnsConfig(t))
	l.patch(t, fwd, `{"name":"a.example.net.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"192.0.2.1","disabled":false}]}`)
	const base = "/api/v1/servers/localhost"
	z := base + "/zones/example.net."
	item := func(s string) string { return `{"rrsets":[` + s + `]}` }
	for _, tc := range []struct {
		name, method, path, body, key string
		status                        int
		contains                      string
	}{
		{"wrong key", "GET", base, "", "wrong", 401, "Unauthorized"},
		{"no key", "GET", base + "/zones", "", "-", 401, "Unauthorized"},
		{"api root", "GET", "/api/v1", "", "", 200, `"server_url":"/api/v1/servers{/server}"`},
		{"servers", "GET", "/api/v1/servers", "", "", 200, `"daemon_type":"authoritative"`},
		{"server", "GET", base, "", "", 200, `"zones_url":"/api/v1/servers/localhost/zones{/zone}"`},
		{"unknown server", "GET", "/api/v1/servers/nope", "", "", 404, "Not Found"},
		{"config", "GET", base + "/config", "", "", 200, `{"name":"webserver-max-bodysize","type":"ConfigSetting","value":"2"}`},
		{"zones", "GET", base + "/zones", "", "", 200, `"id":"example.net."`},
		{"zones filtered", "GET", base + "/zones?zone=0.3.1.0.8.b.d.0.1.0.0.2.ip6.arpa.", "", "", 200, `"kind":"Native"`},
		{"zone", "GET", z, "", "", 200, `{"comments":[],"name":"a.example.net.","records":[{"content":"192.0.2.1","disabled":false}],"ttl":300,"type":"A"}`},
		{"zone without a dot", "GET", base + "/zones/example.net", "", "", 200, `"soa_edit_api":"INCREASE"`},
		{"missing zone", "GET", base + "/zones/missing.example.", "", "", 404, "Not Found"},
		{"PATCH missing zone", "PATCH", base + "/zones/missing.example.", `{"rrsets":[]}`, "", 404, "Not Found"},
		{"CNAME beside data", "PATCH", z, item(`{"name":"a.example.net.","type":"CNAME","ttl":300,"changetype":"REPLACE","records":[{"content":"x.example.net.","disabled":false}]}`), "", 422,
			`{"error":"RRset a.example.net. IN CNAME: Conflicts with pre-existing RRset"}`},
		{"out of zone", "PATCH", z, item(`{"name":"a.example.org.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"192.0.2.1"}]}`), "", 422,
			"RRset a.example.org. IN A: Name is out of zone"},
		{"bad content", "PATCH", z, item(`{"name":"b.example.net.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"nope"}]}`), "", 422,
			"Record b.example.net./A 'nope': Parsing record content"},
		{"relative name", "PATCH", z, item(`{"name":"b.example.net.","type":"CNAME","ttl":300,"changetype":"REPLACE","records":[{"content":"rel"}]}`), "", 422,
			"Record b.example.net./CNAME 'rel': Not in expected format (parsed as 'rel.')"},
		{"no ttl", "PATCH", z, item(`{"name":"b.example.net.","type":"A","changetype":"REPLACE","records":[{"content":"192.0.2.1"}]}`), "", 422,
			"Key 'ttl' not an Integer or not present"},
		{"bad changetype", "PATCH", z, item(`{"name":"b.example.net.","type":"A","ttl":300,"changetype":"FOO","records":[]}`), "", 422, "Changetype not understood"},
		{"duplicate record", "PATCH", z, item(`{"name":"b.example.net.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"192.0.2.1"},{"content":"192.0.2.1"}]}`), "", 422,
			`Duplicate record in RRset b.example.net. IN A with content \"192.0.2.1\"`},
		{"name not absolute", "PATCH", z, item(`{"name":"b.example.net","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"192.0.2.1"}]}`), "", 422,
			"DNS Name 'b.example.net' is not canonical"},
		{"duplicate RRset", "PATCH", z, item(`{"name":"b.example.net.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"192.0.2.1"}]},{"name":"b.example.net.","type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":"192.0.2.2"}]}`), "", 422,
			"Duplicate RRset b.example.net. IN A with changetype: REPLACE"},
		{"unknown type", "PATCH", z, item(`{"name":"b.example.net.","type":"BOGUS","ttl":300,"changetype":"REPLACE","records":[{"content":"192.0.2.1"}]}`), "", 422,
			"RRset b.example.net. IN BOGUS: unknown type given"},
		{"no change", "PATCH", z, item(`{"name":"d.example.net.","type":"A","ttl":300,"changetype":"REPLACE"}`), "", 422, "No change for RRset d.example.net. IN A"},
		{"delete the SOA", "PATCH", z, item(`{"name":"example.net.","type":"SOA","changetype":"DELETE"}`), "", 422, "SOA"},
		{"not JSON", "PATCH", z, `{not json`, "", 400, "Bad Request"},
		{"too big", "PATCH", z, item(`{"name":"b.example.net.","type":"TXT","ttl":300,"changetype":"REPLACE","records":[{"content":"\"` + strings.Repeat("x", 3<<20) + `\""}]}`), "", 400, "Bad Request"},
		{"create a zone", "POST", base + "/zones", `{"name":"new.example."}`, "", 405, ""},
		{"delete what is not there", "PATCH", z, item(`{"name":"c.example.net.","type":"A","changetype":"DELETE"}`), "", 204, ""},
		{"names in content keep their case", "PATCH", z, item(`{"name":"e.example.net.","type":"MX","ttl":300,"changetype":"REPLACE","records":[{"content":"10 Mail.Example.NET."}]}`), "", 204, ""},
		{"and read back so", "GET", z, "", "", 200, `"content":"10 Mail.Example.NET."`},
		{"the SOA is in the zone", "GET", z, "", "", 200, `"content":"ns1.example.net. hostmaster.example.net. `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.key
			if key == "-" {
				key = " "
			}
			status, body := l.call(t, tc.method, tc.path, tc.body, key)
			if status != tc.status || !strings.Contains(body, tc.contains) {
				t.Fatalf("HTTP %d %.300s\nwant %d with %s", status, body, tc.status, tc.contains)
			}
		})
	}
	// The refused PATCHes changed nothing, and each accepted one moved
	// the serial by one: PowerDNS moves it even for a PATCH that changes
	// nothing.
	_, body := l.call(t, "GET", z+"?rrsets=false", "", "")
	var meta map[string]any
	if err := json.Unmarshal([]byte(body), &meta); err != nil {
		t.Fatal(err)
	}
	if meta["serial"] != float64(4) || meta["rrsets"] != nil {
		t.Fatalf("zone after the PATCHes: %s", body)
	}
	if r := query(t, l.DNSAddr(), "udp", "b.example.net", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("a refused PATCH landed: %v", r)
	}
}

// TestAPIShapes: the JSON objects carry exactly the keys PowerDNS 4.7.3
// sends.
func TestAPIShapes(t *testing.T) {
	t.Parallel()
	l := start(t, pdnsConfig(t))
	keys := func(t *testing.T, path string, list bool) (map[string]any, []string) {
		t.Helper()
		_, body := l.call(t, "GET", path, "", "")
		var obj map[string]any
		if list {
			var arr []map[string]any
			if err := json.Unmarshal([]byte(body), &arr); err != nil || len(arr) == 0 {
				t.Fatalf("%s: %v %s", path, err, body)
			}
			obj = arr[0]
		} else if err := json.Unmarshal([]byte(body), &obj); err != nil {
			t.Fatalf("%s: %v %s", path, err, body)
		}
		return obj, slices.Sorted(maps.Keys(obj))
	}
	for _, tc := range []struct {
		path string
		list bool
		want string
	}{
		{"/api/v1/servers/localhost", false, "autoprimaries_url config_url daemon_type id type url version zones_url"},
		{"/api/v1/servers/localhost/zones", true, "account catalog dnssec edited_serial id kind last_check masters name notified_serial serial url"},
		{"/api/v1/servers/localhost/zones/example.net.", false, "account api_rectify catalog dnssec edited_serial id kind last_check master_tsig_key_ids masters name notified_serial nsec3narrow nsec3param rrsets serial slave_tsig_key_ids soa_edit soa_edit_api url"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			obj, got := keys(t, tc.path, tc.list)
			if strings.Join(got, " ") != tc.want {
				t.Fatalf("keys %s\nwant %s", strings.Join(got, " "), tc.want)
			}
			if rrsets, ok := obj["rrsets"].([]any); ok {
				rr := rrsets[0].(map[string]any)
				if got := strings.Join(slices.Sorted(maps.Keys(rr)), " "); got != "comments name records ttl type" {
					t.Fatalf("RRset keys %s", got)
				}
			}
		})
	}
}

// TestPowerDNSBatches: with a body limit of 1 MiB, the provider reads it
// from GET /config and splits a large apply into PATCHes under it.
func TestPowerDNSBatches(t *testing.T) {
	t.Parallel()
	cfg := pdnsConfig(t)
	cfg.MaxBodyBytes = 1 << 20
	l := start(t, cfg)
	tg := l.pdnsTarget(t, true)
	const n = 8000
	changes := make([]dns.RRsetChange, n)
	want := model{}
	for i := range changes {
		changes[i] = dnstest.Create(dnstest.Set(t, fmt.Sprintf("host%05d.example.net", i), dns.TypeA, 300, fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)))
	}
	want.apply(changes...)
	apply(t, tg, fwd, changes...)
	st := tg.Stats()
	if st.Patches < 2 || st.LargestPatch > 1<<20 {
		t.Fatalf("%d PATCHes, largest %d bytes", st.Patches, st.LargestPatch)
	}
	if _, got := content(t, tg, fwd); !sameRRsets(got, want.sorted()) {
		t.Fatalf("zone holds %d RRsets, want %d", len(got), n)
	}
}
