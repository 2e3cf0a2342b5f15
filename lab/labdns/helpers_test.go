package labdns_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/anneal-dev/anneal/lab/labdns"
	"github.com/anneal-dev/anneal/providers/dns/powerdns"
	"github.com/anneal-dev/anneal/providers/dns/rfc2136"
	"github.com/anneal-dev/anneal/reconcile/dns"
)

const (
	fwd  = "example.net"
	east = "east.example.net"
	rev4 = "10.10.in-addr.arpa"
	rev6 = "0.3.1.0.8.b.d.0.1.0.0.2.ip6.arpa"
)

// logBuf collects a server's log, to look for secrets in it.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lab is a started server with what it was made from.
type lab struct {
	*labdns.Server
	cfg  labdns.Config
	logs *logBuf
}

func randomSecret(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func randomKey(t testing.TB) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// bindConfig is a BIND stand-in: TSIG, the four test zones, a free port.
func bindConfig(t testing.TB) labdns.Config {
	return labdns.Config{
		Name:     "bind",
		Zones:    []string{fwd, east, rev4, rev6},
		DNSAddr:  "127.0.0.1:0",
		TSIG:     &labdns.TSIGKey{Name: "anneal", Algorithm: "hmac-sha256", Secret: randomSecret(t)},
		StateDir: t.TempDir(),
	}
}

// pdnsConfig is a PowerDNS stand-in: API and DNS on free ports.
func pdnsConfig(t testing.TB) labdns.Config {
	return labdns.Config{
		Name:     "pdns",
		Zones:    []string{fwd, rev6},
		DNSAddr:  "127.0.0.1:0",
		APIAddr:  "127.0.0.1:0",
		APIKey:   randomKey(t),
		StateDir: t.TempDir(),
	}
}

// start makes and starts a server; it is closed when the test ends, and
// its log must hold no secret then.
func start(t *testing.T, cfg labdns.Config) *lab {
	t.Helper()
	logs := &logBuf{}
	cfg.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := labdns.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	l := &lab{Server: s, cfg: cfg, logs: logs}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		l.noSecretsLogged(t)
	})
	return l
}

func (l *lab) noSecretsLogged(t *testing.T) {
	t.Helper()
	logs := l.logs.String()
	if l.cfg.TSIG != nil && strings.Contains(logs, l.cfg.TSIG.Secret) {
		t.Error("the log holds the TSIG secret")
	}
	if l.cfg.APIKey != "" && strings.Contains(logs, l.cfg.APIKey) {
		t.Error("the log holds the API key")
	}
}

// rfc2136Target is anneal's RFC 2136 provider pointed at the server.
func (l *lab) rfc2136Target(t testing.TB, edit ...func(*rfc2136.Config)) *rfc2136.Target {
	t.Helper()
	cfg := rfc2136.Config{Name: "bind", Server: l.DNSAddr(), KeyName: l.cfg.TSIG.Name, Algorithm: l.cfg.TSIG.Algorithm, Secret: l.cfg.TSIG.Secret, Timeout: 2 * time.Second}
	for _, e := range edit {
		e(&cfg)
	}
	tg, err := rfc2136.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// pdnsTarget is anneal's PowerDNS provider pointed at the server's API,
// and with withDNS at its DNS address too.
func (l *lab) pdnsTarget(t testing.TB, withDNS bool, edit ...func(*powerdns.Config)) *powerdns.Target {
	t.Helper()
	cfg := powerdns.Config{Name: "pdns", APIURL: l.APIURL(), APIKey: l.cfg.APIKey, ServerID: l.cfg.ServerID, Timeout: 2 * time.Second}
	if withDNS {
		cfg.DNSAddr = l.DNSAddr()
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

func apply(t testing.TB, tg dns.Target, zone string, changes ...dns.RRsetChange) {
	t.Helper()
	n, err := tg.Apply(context.Background(), zone, changes)
	if err != nil || n != len(changes) {
		t.Fatalf("Apply to %s: %d of %d applied: %v", zone, n, len(changes), err)
	}
}

// model is what a zone should hold besides its apex NS, RRset by key.
type model map[dns.RRsetKey]dns.RRset

func (m model) apply(changes ...dns.RRsetChange) {
	for _, c := range changes {
		if c.New == nil {
			delete(m, c.Key())
		} else {
			m[c.Key()] = *c.New
		}
	}
}

func (m model) sorted() []dns.RRset {
	out := make([]dns.RRset, 0, len(m))
	for _, s := range m {
		out = append(out, s)
	}
	sortSets(out)
	return out
}

func sortSets(s []dns.RRset) {
	slices.SortFunc(s, func(a, b dns.RRset) int { return strings.Compare(a.Key().String(), b.Key().String()) })
}

// withoutApexNS drops the NS the server made the zone with.
func withoutApexNS(sets []dns.RRset, zone string) []dns.RRset {
	var out []dns.RRset
	for _, s := range sets {
		if s.Name != zone || s.Type != dns.TypeNS {
			out = append(out, s)
		}
	}
	sortSets(out)
	return out
}

func sameRRsets(a, b []dns.RRset) bool {
	sortSets(a)
	sortSets(b)
	return slices.EqualFunc(a, b, func(x, y dns.RRset) bool { return x.Equal(&y) })
}

// content reads a zone through a target, without the apex NS.
func content(t testing.TB, tg dns.Target, zone string) (*dns.ZoneContent, []dns.RRset) {
	t.Helper()
	zc, err := tg.ReadZone(context.Background(), zone)
	if err != nil {
		t.Fatal(err)
	}
	return zc, withoutApexNS(zc.RRsets, zone)
}

// exchange sends one message to addr over network ("udp" or "tcp").
func exchange(t testing.TB, addr, network string, m *mdns.Msg, tsig *labdns.TSIGKey) (*mdns.Msg, error) {
	t.Helper()
	c := &mdns.Client{Net: network, Timeout: 2 * time.Second}
	if tsig != nil {
		c.TsigSecret = map[string]string{mdns.Fqdn(tsig.Name): tsig.Secret}
		m.SetTsig(mdns.Fqdn(tsig.Name), mdns.Fqdn(tsig.Algorithm), 300, time.Now().Unix())
	}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

// query asks addr one question over network and fails the test on a
// transport error.
func query(t testing.TB, addr, network, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	r, err := exchange(t, addr, network, m, nil)
	if err != nil {
		t.Fatalf("query %s %s over %s: %v", name, mdns.TypeToString[qtype], network, err)
	}
	return r
}
