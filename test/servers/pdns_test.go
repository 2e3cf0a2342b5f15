package servers

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestStartPowerDNS(t *testing.T) {
	t.Parallel()
	p := StartPowerDNS(t, PowerDNSOptions{Zones: []string{"example.net"}})
	if !strings.HasPrefix(p.APIURL, "http://127.0.0.1:") || !strings.HasPrefix(p.DNSAddr, "127.0.0.1:") || p.ServerID != "localhost" || len(p.APIKey) < 16 {
		t.Fatalf("PowerDNS = %+v", p)
	}
	p.CreateZone(t, "10.10.in-addr.arpa")
	p.Patch(t, "example.net", PDNSRRset{Name: "www.example.net.", Type: "A", TTL: 300, Records: []PDNSRecord{{Content: "192.0.2.1"}}})

	var found bool
	rrs := p.AXFR(t, "example.net")
	for _, rr := range rrs {
		if a, ok := rr.(*dns.A); ok && a.Hdr.Name == "www.example.net." && a.A.String() == "192.0.2.1" {
			found = true
		}
	}
	if !found {
		t.Fatalf("the API's record is missing from the AXFR: %v", rrs)
	}
	// The zone has the explicit SOA, with a serial soa_edit_api moved
	// past 1, and NS localhost.
	soa, ok := rrs[0].(*dns.SOA)
	if !ok || soa.Ns != "localhost." || soa.Serial <= 1 {
		t.Fatalf("first record %v, want the zone's SOA with a date serial", rrs[0])
	}

	c := &dns.Client{Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("10.10.in-addr.arpa.", dns.TypeNS)
	r, _, err := c.Exchange(m, p.DNSAddr)
	if err != nil || !r.Authoritative || len(r.Answer) != 1 || r.Answer[0].(*dns.NS).Ns != "localhost." {
		t.Fatalf("NS query: %v %v", r, err)
	}

	// A wrong key is refused.
	good := p.APIKey
	p.APIKey = "wrong"
	if status, _ := p.API(t, http.MethodGet, "/zones", nil); status != http.StatusUnauthorized {
		t.Fatalf("wrong key: HTTP %d", status)
	}
	p.APIKey = good

	p.Stop()
	p.Stop() // idempotent
	if p.ready() {
		t.Fatal("answers after Stop")
	}
	p.Restart(t)
	if status, body := p.API(t, http.MethodGet, "/zones/example.net.", nil); status != http.StatusOK || !strings.Contains(string(body), "www.example.net.") {
		t.Fatalf("after restart: HTTP %d %s", status, body)
	}
}

func TestStartPowerDNSBodyLimit(t *testing.T) {
	t.Parallel()
	p := StartPowerDNS(t, PowerDNSOptions{Zones: []string{"example.net"}, MaxBodySizeMB: 1})
	big := `{"rrsets": [], "pad": "` + strings.Repeat("x", 1<<20) + `"}`
	// PowerDNS answers 400 and closes the connection, sometimes before the
	// client has sent the whole body: then the client sees a reset.
	status, _, err := p.do(context.Background(), http.MethodPatch, "/zones/example.net.", big)
	if err == nil && status != http.StatusBadRequest || err != nil && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("a body over webserver-max-bodysize: HTTP %d, %v; want 400 or a reset", status, err)
	}
	// At the limit (1 MiB of body) it passes.
	exact := `{"rrsets": [], "pad": "`
	exact += strings.Repeat("x", 1<<20-len(exact)-2) + `"}`
	if status, body := p.API(t, http.MethodPatch, "/zones/example.net.", exact); status != http.StatusNoContent && status != http.StatusUnprocessableEntity {
		t.Fatalf("a body of exactly 1 MiB: HTTP %d %s", status, body)
	}
}
