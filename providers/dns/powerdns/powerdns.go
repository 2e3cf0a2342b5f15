// Package powerdns writes zones to PowerDNS Authoritative (4.7, as Debian
// 12 ships it) through its HTTP API. It reads a zone with one GET of the
// zone, which carries the records, the ownership marks (RRset comments)
// and the serial in one snapshot; reads the serial with one SOA query when
// a DNS address is configured; and applies changes as PATCHes of whole
// RRsets, batched under the webserver's request body limit, each batch
// checked against what the plan saw just before it is sent. See README.md
// for the server settings and the limits of that check.
package powerdns

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anneal-dev/anneal/providers/secret"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/schema"
)

// Defaults.
const (
	DefaultServerID    = "localhost"
	DefaultTimeout     = 10 * time.Second
	DefaultBulkTimeout = 2 * time.Minute
	// DefaultMaxBodyBytes keeps every PATCH under PowerDNS's default
	// webserver-max-bodysize of 2 MiB (2,097,152 bytes; PowerDNS answers
	// "400 Bad Request" to a larger body), with headroom.
	DefaultMaxBodyBytes = 2_000_000 - 100_000
	// DefaultDNSCheckLimit is the largest batch whose compare-and-swap
	// check is made with one DNS query per RRset (when DNSAddr is set)
	// rather than an AXFR of the zone.
	DefaultDNSCheckLimit = 256

	// MarkAccount is the account of the comment anneal puts on every RRset
	// it writes: its ownership mark. MarkContent is the comment's text.
	MarkAccount = "anneal"
	MarkContent = "managed by anneal"

	// minBodyBytes is the smallest MaxBodyBytes accepted: room for one
	// RRset of a few records.
	minBodyBytes = 4096
	// bodyHeadroom is kept free under the server's own body limit.
	bodyHeadroom = 4096
	// dnsCheckParallel bounds the DNS queries in flight for one check.
	dnsCheckParallel = 8
)

// Config is one PowerDNS server.
type Config struct {
	// Name is the target's name in the site, for messages.
	Name string
	// APIURL is the webserver's base URL ("http://127.0.0.1:8081"); a
	// trailing /api/v1 is accepted.
	APIURL string
	// APIKey is the resolved API key: sent in the X-API-Key header, never
	// logged or put in an error.
	APIKey string
	// ServerID is the API's server id (default "localhost").
	ServerID string
	// DNSAddr is the server's DNS address ("host:port", port 53 when
	// absent), optional: when set, Serial is one SOA query, compare-and-
	// swap checks of small batches are DNS queries, and a zone read the
	// API fails falls back to AXFR (allow-axfr-ips must list anneal).
	DNSAddr string
	// HTTPClient sends the API requests (default: a client of its own).
	HTTPClient *http.Client
	// Timeout bounds each API request and DNS exchange (default 10 s).
	Timeout time.Duration
	// BulkTimeout bounds each request that moves a whole zone or a full
	// batch: a zone's GET or AXFR, a PATCH (default 2 min: a 200,000-record
	// zone is about 40 MB of JSON; a 1.9 MB PATCH into it takes PowerDNS
	// with sqlite about 2 s).
	BulkTimeout time.Duration
	// MaxBodyBytes bounds each PATCH body (default 1,900,000, under
	// PowerDNS's default webserver-max-bodysize of 2 MiB). A server whose
	// GET /config shows a lower webserver-max-bodysize lowers it further.
	MaxBodyBytes int
	// DNSCheckLimit is the largest batch checked with one DNS query per
	// RRset; a larger one is checked with an AXFR (default 256; negative:
	// always AXFR). Without DNSAddr every check reads the zone through
	// the API.
	DNSCheckLimit int
	// ConcurrentWrites bounds zones written at once (default 1: with the
	// sqlite backend PowerDNS answers concurrent writes with HTTP 500;
	// a PostgreSQL or MySQL backend can take more).
	ConcurrentWrites int
}

// String describes the configuration without its key.
func (c Config) String() string {
	return fmt.Sprintf("powerdns target %s at %s (server %s, dns %s)", c.Name, c.APIURL, cmp.Or(c.ServerID, DefaultServerID), cmp.Or(c.DNSAddr, "-"))
}

// GoString keeps the key out of %#v.
func (c Config) GoString() string { return c.String() }

// LogValue keeps the key out of log/slog records.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", c.Name), slog.String("api", c.APIURL),
		slog.String("server", cmp.Or(c.ServerID, DefaultServerID)), slog.String("dns", c.DNSAddr))
}

// Target is a PowerDNS server anneal writes zones to. It is safe for
// concurrent use.
type Target struct {
	writers     int
	name        string
	apiURL      string // as configured, without /api/v1
	base        string // apiURL + /api/v1/servers/{id}
	serverID    string
	key         string
	dnsAddr     string
	client      *http.Client
	timeout     time.Duration
	bulkTimeout time.Duration
	maxBody     int
	dnsLimit    int

	limitMu     sync.Mutex
	limitKnown  bool // the server's /config has answered
	serverLimit int  // its webserver-max-bodysize in bytes; 0: unknown

	requests   atomic.Int64
	patches    atomic.Int64
	patchBytes atomic.Int64
	largest    atomic.Int64
	zoneReads  atomic.Int64
	axfrs      atomic.Int64
	queries    atomic.Int64
	fallbacks  atomic.Int64
}

var _ dns.Target = (*Target)(nil)

// New checks a configuration and returns its target. It does not contact
// the server.
func New(cfg Config) (*Target, error) {
	if cfg.Name == "" {
		return nil, errors.New("powerdns: target has no name")
	}
	fail := func(format string, args ...any) error {
		return &dns.TargetError{Target: cfg.Name, Op: "configure", Class: dns.ClassPermanent, Err: fmt.Errorf(format, args...)}
	}
	if cfg.APIURL == "" {
		return nil, fail("no API URL")
	}
	u, err := url.Parse(cfg.APIURL)
	if err != nil {
		return nil, fail("API URL: %w", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fail("API URL %q: want http:// or https://", cfg.APIURL)
	case u.Host == "":
		return nil, fail("API URL %q has no host", cfg.APIURL)
	case u.User != nil:
		// Credentials in a URL end up in error messages.
		return nil, fail("API URL must not carry credentials: put the key in apiKey")
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fail("API URL %q: no query or fragment, please", cfg.APIURL)
	}
	apiURL := strings.TrimSuffix(strings.TrimSuffix(u.String(), "/"), "/api/v1")
	if cfg.APIKey == "" {
		return nil, fail("no API key")
	}
	if strings.ContainsAny(cfg.APIKey, "\r\n\x00") {
		return nil, fail("the API key holds a line break or NUL (a file with trailing lines?)")
	}
	serverID := cmp.Or(cfg.ServerID, DefaultServerID)
	if strings.ContainsAny(serverID, "/?#") {
		return nil, fail("server id %q: no /, ? or #", serverID)
	}
	dnsAddr := cfg.DNSAddr
	if dnsAddr != "" {
		if _, _, err := net.SplitHostPort(dnsAddr); err != nil {
			host := strings.TrimSuffix(strings.TrimPrefix(dnsAddr, "["), "]")
			if _, perr := netip.ParseAddr(host); strings.Contains(host, ":") && perr != nil {
				return nil, fail("DNS address %q: %w", cfg.DNSAddr, err)
			}
			dnsAddr = net.JoinHostPort(host, "53")
		}
	}
	if cfg.Timeout < 0 || cfg.BulkTimeout < 0 || cfg.MaxBodyBytes < 0 {
		return nil, fail("negative timeout or body size")
	}
	maxBody := cmp.Or(cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	if maxBody < minBodyBytes {
		return nil, fail("maximum body size %d is under %d bytes", maxBody, minBodyBytes)
	}
	var client *http.Client
	if cfg.HTTPClient != nil {
		c := *cfg.HTTPClient
		client = &c
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = dnsCheckParallel
		client = &http.Client{Transport: tr}
	}
	// The API key goes to the API's host only: never after a redirect, nor
	// to any other URL.
	client.CheckRedirect = secret.SameHostRedirects
	client.Transport = secret.PinURL(client.Transport, u)
	dnsLimit := cfg.DNSCheckLimit
	if dnsLimit == 0 {
		dnsLimit = DefaultDNSCheckLimit
	}
	return &Target{
		writers:     cmp.Or(cfg.ConcurrentWrites, 1),
		name:        cfg.Name,
		apiURL:      apiURL,
		base:        apiURL + "/api/v1/servers/" + url.PathEscape(serverID),
		serverID:    serverID,
		key:         cfg.APIKey,
		dnsAddr:     dnsAddr,
		client:      client,
		timeout:     cmp.Or(cfg.Timeout, DefaultTimeout),
		bulkTimeout: cmp.Or(cfg.BulkTimeout, DefaultBulkTimeout),
		maxBody:     maxBody,
		dnsLimit:    dnsLimit,
	}, nil
}

// FromSite makes a target from a site's DNS target, resolving its API key
// reference with resolve (the operator's grants, secret.Grants.Resolve, asked
// for the API's host). The target's server
// field, when set, is the DNS address.
func FromSite(t schema.Target, resolve func(schema.SecretRef, schema.SecretDest) (string, error)) (*Target, error) {
	if t.Kind != schema.TargetPowerDNS {
		return nil, fmt.Errorf("dns target %s: kind %q is not %s", t.Name, t.Kind, schema.TargetPowerDNS)
	}
	if t.APIKey == "" {
		return nil, fmt.Errorf("dns target %s: no apiKey reference", t.Name)
	}
	dest, ok := t.SecretDest()
	if !ok {
		return nil, fmt.Errorf("dns target %s: api %q: want an http(s) URL with a host", t.Name, t.API)
	}
	key, err := resolve(t.APIKey, dest)
	if err != nil {
		return nil, fmt.Errorf("dns target %s: API key: %w", t.Name, err)
	}
	return New(Config{
		Name:     t.Name,
		APIURL:   t.API,
		APIKey:   key,
		ServerID: t.ServerID,
		DNSAddr:  t.Server,
	})
}

// Name is the target's name in the site.
func (t *Target) Name() string { return t.name }

// ConcurrentWrites is how many zones the applier may write at once.
func (t *Target) ConcurrentWrites() int { return t.writers }

// String describes the target without its key.
func (t *Target) String() string {
	return fmt.Sprintf("powerdns target %s at %s (server %s, dns %s)", t.name, t.apiURL, t.serverID, cmp.Or(t.dnsAddr, "-"))
}

// GoString keeps the key out of %#v.
func (t *Target) GoString() string { return t.String() }

// Stats counts what a target has sent.
type Stats struct {
	// Requests is the number of API requests sent (answered or not).
	Requests int64
	// Patches is the number of PATCH requests among them; PatchBytes
	// their total body size and LargestPatch the largest body.
	Patches      int64
	PatchBytes   int64
	LargestPatch int64
	// ZoneReads counts GETs of a whole zone (reads and compare-and-swap
	// checks); AXFRs the zone transfers; DNSQueries the SOA and
	// compare-and-swap queries; Fallbacks the reads that fell back from
	// the API to AXFR.
	ZoneReads  int64
	AXFRs      int64
	DNSQueries int64
	Fallbacks  int64
}

// Stats returns what the target has sent so far.
func (t *Target) Stats() Stats {
	return Stats{
		Requests:     t.requests.Load(),
		Patches:      t.patches.Load(),
		PatchBytes:   t.patchBytes.Load(),
		LargestPatch: t.largest.Load(),
		ZoneReads:    t.zoneReads.Load(),
		AXFRs:        t.axfrs.Load(),
		DNSQueries:   t.queries.Load(),
		Fallbacks:    t.fallbacks.Load(),
	}
}

func (t *Target) countPatch(size int) {
	t.patches.Add(1)
	t.patchBytes.Add(int64(size))
	for {
		l := t.largest.Load()
		if int64(size) <= l || t.largest.CompareAndSwap(l, int64(size)) {
			return
		}
	}
}

func (t *Target) fail(zone, op string, class dns.ErrorClass, err error) *dns.TargetError {
	return &dns.TargetError{Target: t.name, Zone: zone, Op: op, Class: class, Err: err}
}

// zoneName returns a zone's canonical name: lower case, no trailing dot.
func zoneName(zone string) string { return strings.TrimSuffix(strings.ToLower(zone), ".") }
