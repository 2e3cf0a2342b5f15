// Package labdns is the simulated lab's authoritative DNS server: it
// stands in for a site's DNS targets on loopback, so that a site repo's
// DNS can be converged with nothing installed but Go.
//
// One Server serves a fixed set of zones over UDP and TCP with
// miekg/dns: authoritative answers (NXDOMAIN and NODATA with the SOA,
// CNAME chains, RFC 4592 wildcards, referrals under delegations), AXFR
// over TCP, and RFC 2136 UPDATEs signed with one TSIG key (a BIND
// stand-in, for kind rfc2136 targets). With an API address it also
// serves the subset of the PowerDNS Authoritative 4.7 HTTP API that
// providers/dns/powerdns uses (a PowerDNS stand-in, for kind powerdns
// targets). Zones are kept as RFC 1035 zone files in a state directory,
// rewritten atomically after every change, so a restarted lab keeps its
// records. SetDown makes the server go away and come back on the same
// addresses, for fault injection.
package labdns

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/anneal-dev/anneal/schema"
)

// Defaults.
const (
	// DefaultServerID is the PowerDNS API's server id.
	DefaultServerID = "localhost"
	// DefaultTTL is the TTL of the SOA and NS records of a new zone.
	DefaultTTL = 300
	// DefaultMaxBodyBytes bounds a PATCH body as PowerDNS's default
	// webserver-max-bodysize of 2 MiB does.
	DefaultMaxBodyBytes = 2 << 20

	// shutdownGrace bounds how long going down waits for requests in
	// flight.
	shutdownGrace = 2 * time.Second
	// fudge is the TSIG time window the server signs with, in seconds.
	fudge = 300
)

// TSIGKey is the one key that may sign UPDATEs (and transfers).
type TSIGKey struct {
	// Name is the key's name ("anneal").
	Name string
	// Algorithm is hmac-sha1, hmac-sha224, hmac-sha256 (default),
	// hmac-sha384 or hmac-sha512.
	Algorithm string
	// Secret is the resolved base64 secret: never logged or put in an
	// error.
	Secret string
}

// Config is one lab DNS server.
type Config struct {
	// Name names the server in logs (the site's target name).
	Name string
	// Zones are the apexes the server is authoritative for.
	Zones []string
	// DNSAddr is where DNS is served, UDP and TCP ("127.0.0.1:5301";
	// port 0 picks a free port, the same for both).
	DNSAddr string
	// APIAddr, when set, is where the PowerDNS API is served over plain
	// HTTP ("127.0.0.1:8081"); APIKey is then required.
	APIAddr string
	// APIKey is the resolved X-API-Key: never logged or put in an error.
	APIKey string
	// ServerID is the API's server id (default "localhost").
	ServerID string
	// TSIG, when set, is the key UPDATEs must be signed with; without
	// it the server refuses every UPDATE (PowerDNS's dnsupdate=no).
	TSIG *TSIGKey
	// StateDir holds one zone file per zone; empty keeps zones in memory
	// only.
	StateDir string
	// DefaultTTL is the SOA and NS TTL of a zone not yet persisted
	// (default 300).
	DefaultTTL uint32
	// MaxRecordsPerType refuses, with SERVFAIL, an UPDATE that would
	// leave more records in one RRset (BIND's max-records-per-type); 0
	// means no limit.
	MaxRecordsPerType int
	// MaxBodyBytes bounds a PATCH body (default 2 MiB, as PowerDNS).
	MaxBodyBytes int
	// Log receives one record per change and per refused request
	// (default: discard).
	Log *slog.Logger
}

// String describes the configuration without its secrets.
func (c Config) String() string {
	key := "-"
	if c.TSIG != nil {
		key = c.TSIG.Name
	}
	return fmt.Sprintf("lab dns %s on %s (api %s, key %s, zones %s)", c.Name, c.DNSAddr, cmp.Or(c.APIAddr, "-"), key, strings.Join(c.Zones, ","))
}

// GoString keeps the secrets out of %#v.
func (c Config) GoString() string { return c.String() }

// LogValue keeps the secrets out of log/slog records.
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("name", c.Name), slog.String("dns", c.DNSAddr), slog.Int("zones", len(c.Zones))}
	if c.APIAddr != "" {
		attrs = append(attrs, slog.String("api", c.APIAddr))
	}
	if c.TSIG != nil {
		attrs = append(attrs, slog.String("key", c.TSIG.Name))
	}
	return slog.GroupValue(attrs...)
}

// key is a validated TSIG key.
type key struct {
	name      string // canonical: lower case, fully qualified
	algorithm string // miekg/dns's name, fully qualified
	secret    string
}

// Server is a lab DNS server. Its methods are safe for concurrent use.
type Server struct {
	name     string
	zones    map[string]*zone // by canonical apex
	tsig     *key
	apiKey   string
	serverID string
	maxBody  int
	recLimit int
	log      *slog.Logger

	dnsAddr string // as configured; after Start, as bound
	apiAddr string

	mu      sync.Mutex
	started bool
	closed  bool
	down    bool
	stopCtx func() bool // stops the context watch of Start
	udp     *dns.Server
	tcp     *dns.Server
	api     *http.Server
}

// New checks a configuration and loads the zones: from the state
// directory when their file exists, else each with an SOA and an NS
// ns1.<zone>. It does not listen yet.
func New(cfg Config) (*Server, error) {
	name := cmp.Or(cfg.Name, "dns")
	fail := func(format string, args ...any) error {
		return fmt.Errorf("lab dns %s: "+format, append([]any{name}, args...)...)
	}
	if len(cfg.Zones) == 0 {
		return nil, fail("no zones")
	}
	if cfg.DNSAddr == "" {
		return nil, fail("no DNS address")
	}
	if _, _, err := net.SplitHostPort(cfg.DNSAddr); err != nil {
		return nil, fail("DNS address %q: %w", cfg.DNSAddr, err)
	}
	if cfg.APIAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.APIAddr); err != nil {
			return nil, fail("API address %q: %w", cfg.APIAddr, err)
		}
		if cfg.APIKey == "" {
			return nil, fail("an API address needs an API key")
		}
	}
	serverID := cmp.Or(cfg.ServerID, DefaultServerID)
	if strings.ContainsAny(serverID, "/?#") {
		return nil, fail("server id %q: no /, ? or #", serverID)
	}
	if cfg.MaxRecordsPerType < 0 || cfg.MaxBodyBytes < 0 {
		return nil, fail("negative record or body limit")
	}
	var k *key
	if cfg.TSIG != nil {
		var err error
		if k, err = checkKey(cfg.TSIG); err != nil {
			return nil, fail("%w", err)
		}
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("server", name)
	s := &Server{
		name:     name,
		zones:    map[string]*zone{},
		tsig:     k,
		apiKey:   cfg.APIKey,
		serverID: serverID,
		maxBody:  cmp.Or(cfg.MaxBodyBytes, DefaultMaxBodyBytes),
		recLimit: cfg.MaxRecordsPerType,
		log:      log,
		dnsAddr:  cfg.DNSAddr,
		apiAddr:  cfg.APIAddr,
	}
	ttl := cmp.Or(cfg.DefaultTTL, DefaultTTL)
	for _, zn := range cfg.Zones {
		origin := dns.CanonicalName(zn)
		if _, ok := dns.IsDomainName(origin); !ok || origin == "." {
			return nil, fail("zone %q is not a domain name", zn)
		}
		if s.zones[origin] != nil {
			return nil, fail("zone %s listed twice", zn)
		}
		file := ""
		if cfg.StateDir != "" {
			file = filepath.Join(cfg.StateDir, zoneFileName(origin))
		}
		z, err := loadZone(origin, file, ttl)
		if err != nil {
			return nil, fail("%w", err)
		}
		s.zones[origin] = z
	}
	return s, nil
}

// checkKey validates a TSIG key.
func checkKey(t *TSIGKey) (*key, error) {
	if t.Name == "" {
		return nil, errors.New("TSIG key without a name")
	}
	var alg string
	switch strings.ToLower(strings.TrimSuffix(cmp.Or(t.Algorithm, "hmac-sha256"), ".")) {
	case "hmac-sha1":
		alg = dns.HmacSHA1
	case "hmac-sha224":
		alg = dns.HmacSHA224
	case "hmac-sha256":
		alg = dns.HmacSHA256
	case "hmac-sha384":
		alg = dns.HmacSHA384
	case "hmac-sha512":
		alg = dns.HmacSHA512
	default:
		return nil, fmt.Errorf("TSIG key %s: algorithm %q is not supported", t.Name, t.Algorithm)
	}
	if t.Secret == "" {
		return nil, fmt.Errorf("TSIG key %s: empty secret", t.Name)
	}
	if _, err := base64.StdEncoding.DecodeString(t.Secret); err != nil {
		return nil, fmt.Errorf("TSIG key %s: the secret is not valid base64", t.Name)
	}
	return &key{name: dns.CanonicalName(t.Name), algorithm: alg, secret: t.Secret}, nil
}

// FromSite makes the server that stands in for one of a site's DNS
// targets: its zones, its server address (rfc2136 and powerdns), its API
// address, key and server id (powerdns), its TSIG key (rfc2136), with
// secrets resolved by resolve (secret.Grants.Resolve). Zones are kept
// in stateDir, which must be the target's own (two targets may serve a
// zone of the same name); an empty stateDir keeps them in memory. A
// powerdns target without a server address gets a DNS address on
// 127.0.0.1 with a free port; an rfc2136 target gets the site's record
// limit (schema.Target.RecordLimit) as MaxRecordsPerType.
func FromSite(site *schema.Site, target schema.Target, resolve func(schema.SecretRef, schema.SecretDest) (string, error), stateDir string, log *slog.Logger) (*Server, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("lab dns for target %s: "+format, append([]any{target.Name}, args...)...)
	}
	if target.Name == "" {
		return nil, errors.New("lab dns: the target has no name")
	}
	if site != nil && site.DNS != nil && !slices.ContainsFunc(site.DNS.Targets, func(t schema.Target) bool { return t.Name == target.Name }) {
		return nil, fail("not a target of the site")
	}
	cfg := Config{
		Name:    target.Name,
		Zones:   target.Zones,
		DNSAddr: target.Server,
		Log:     log,
	}
	if site != nil && site.DNS != nil && site.DNS.TTL > 0 {
		cfg.DefaultTTL = uint32(site.DNS.TTL)
	}
	cfg.StateDir = stateDir
	if cfg.DNSAddr != "" {
		if _, _, err := net.SplitHostPort(cfg.DNSAddr); err != nil {
			cfg.DNSAddr = net.JoinHostPort(strings.Trim(cfg.DNSAddr, "[]"), "53")
		}
	}
	switch target.Kind {
	case schema.TargetRFC2136:
		if target.TSIG == nil {
			return nil, fail("no tsig key")
		}
		dest, ok := target.SecretDest()
		if !ok {
			return nil, fail("server %q: want host:port", target.Server)
		}
		secret, err := resolve(target.TSIG.Secret, dest)
		if err != nil {
			return nil, fail("TSIG key %s: %w", target.TSIG.Name, err)
		}
		cfg.TSIG = &TSIGKey{Name: target.TSIG.Name, Algorithm: target.TSIG.Algorithm, Secret: secret}
		cfg.MaxRecordsPerType = target.RecordLimit()
	case schema.TargetPowerDNS:
		u, err := url.Parse(target.API)
		if err != nil {
			return nil, fail("API URL: %w", err)
		}
		if u.Scheme != "http" || u.Host == "" {
			return nil, fail("API URL %q: the lab serves plain http://host:port", target.API)
		}
		cfg.APIAddr = u.Host
		if u.Port() == "" {
			cfg.APIAddr = net.JoinHostPort(u.Hostname(), "80")
		}
		dest, ok := target.SecretDest()
		if !ok {
			return nil, fail("API URL %q: want http://host:port", target.API)
		}
		key, err := resolve(target.APIKey, dest)
		if err != nil {
			return nil, fail("API key: %w", err)
		}
		cfg.APIKey = key
		cfg.ServerID = target.ServerID
		if cfg.DNSAddr == "" {
			cfg.DNSAddr = "127.0.0.1:0"
		}
	default:
		return nil, fail("kind %q has no lab stand-in", target.Kind)
	}
	return New(cfg)
}

// Name is the server's name (the target's, from FromSite).
func (s *Server) Name() string { return s.name }

// DNSAddr is the DNS address: after Start, the bound one.
func (s *Server) DNSAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dnsAddr
}

// APIURL is the PowerDNS API's base URL ("http://127.0.0.1:8081"), or ""
// without an API; after Start, with the bound port.
func (s *Server) APIURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.apiAddr == "" {
		return ""
	}
	return "http://" + s.apiAddr
}

// Zones lists the zones served, without their trailing dot, sorted.
func (s *Server) Zones() []string {
	out := make([]string, 0, len(s.zones))
	for origin := range s.zones {
		out = append(out, strings.TrimSuffix(origin, "."))
	}
	slices.Sort(out)
	return out
}

// String describes the server without its secrets.
func (s *Server) String() string {
	return fmt.Sprintf("lab dns %s on %s (api %s)", s.name, s.DNSAddr(), cmp.Or(s.APIURL(), "-"))
}

// GoString keeps the secrets out of %#v.
func (s *Server) GoString() string { return s.String() }

// zoneFor returns the zone most specific for name (canonical), or nil.
func (s *Server) zoneFor(name string) *zone {
	for n := name; ; {
		if z := s.zones[n]; z != nil {
			return z
		}
		if n == "." {
			return nil
		}
		n = parent(n)
	}
}
