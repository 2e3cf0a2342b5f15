package servers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// pdnsMissing is the message a test gets when PowerDNS is not installed.
const pdnsMissing = "PowerDNS not installed: .ci/run must apt-get install pdns-server pdns-backend-sqlite3 sqlite3"

// Where Debian's pdns-backend-sqlite3 puts the gsqlite3 schema (the first
// is under /usr/share/doc, which slim images drop).
const (
	pdnsSchemaDoc   = "/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql"
	pdnsSchemaShare = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"
)

// pdnsReadyTimeout bounds how long pdns_server may take to answer.
const pdnsReadyTimeout = 10 * time.Second

// PowerDNSOptions configure a PowerDNS server for a test.
type PowerDNSOptions struct {
	// Zones are created at start, as CreateZone makes them.
	Zones []string
	// APIKey is the API key (default: 16 random bytes, hex).
	APIKey string
	// MaxBodySizeMB sets webserver-max-bodysize, in MiB (0: PowerDNS's
	// default of 2). PowerDNS applies it to request bodies only.
	MaxBodySizeMB int
	// Config holds extra pdns.conf lines ("setting=value").
	Config []string
}

// PowerDNS is a running pdns_server with the gsqlite3 backend and the
// HTTP API.
type PowerDNS struct {
	// APIURL is the webserver's base URL: "http://127.0.0.1:PORT".
	APIURL string
	APIKey string
	// DNSAddr is where it answers DNS, UDP and TCP: "127.0.0.1:PORT".
	DNSAddr string
	// ServerID is the API's server id: always "localhost".
	ServerID string
	// Dir holds pdns.conf, the sqlite database and pdns.log.
	Dir string

	conf []string

	daemon
}

// StartPowerDNS starts pdns_server for the test and stops it when the test
// ends. It skips the test when PowerDNS is not installed, or fails it if
// the CI environment variable is set.
func StartPowerDNS(t testing.TB, opts PowerDNSOptions) *PowerDNS {
	t.Helper()
	missing := ""
	for _, tool := range []string{"pdns_server", "sqlite3"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = tool
		}
	}
	schemaFile := ""
	for _, f := range [...]string{pdnsSchemaDoc, pdnsSchemaShare} {
		if _, err := os.Stat(f); err == nil {
			schemaFile = f
			break
		}
	}
	if m, _ := filepath.Glob("/usr/lib/*/pdns/libgsqlite3backend.so"); (len(m) == 0 || schemaFile == "") && missing == "" {
		missing = "pdns-backend-sqlite3"
	}
	if missing != "" {
		Unavailable(t, fmt.Sprintf("%s (%s is missing)", pdnsMissing, missing))
	}
	p := &PowerDNS{APIKey: opts.APIKey, ServerID: "localhost", Dir: t.TempDir()}
	p.name, p.logPath = "pdns_server", filepath.Join(p.Dir, "pdns.log")
	if p.APIKey == "" {
		key := make([]byte, 16)
		if _, err := rand.Read(key); err != nil {
			t.Fatalf("servers.StartPowerDNS: random key: %v", err)
		}
		p.APIKey = hex.EncodeToString(key)
	}
	db := filepath.Join(p.Dir, "pdns.sqlite3")
	schema, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatalf("servers.StartPowerDNS: %v", err)
	}
	cmd := exec.Command("sqlite3", db)
	cmd.Stdin = bytes.NewReader(schema)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("servers.StartPowerDNS: sqlite3 %s < %s: %v\n%s", db, schemaFile, err, out)
	}
	p.conf = []string{
		"launch=gsqlite3",
		"gsqlite3-database=" + db,
		"local-address=127.0.0.1",
		"socket-dir=" + p.Dir,
		"api=yes",
		"api-key=" + p.APIKey,
		"webserver=yes",
		"webserver-address=127.0.0.1",
		"webserver-allow-from=127.0.0.0/8",
		"allow-axfr-ips=127.0.0.0/8",
		"guardian=no",
		"daemon=no",
		"disable-syslog=yes",
		"security-poll-suffix=",
	}
	if opts.MaxBodySizeMB > 0 {
		p.conf = append(p.conf, "webserver-max-bodysize="+strconv.Itoa(opts.MaxBodySizeMB))
	}
	p.conf = append(p.conf, opts.Config...)
	t.Cleanup(p.Stop)

	// The ports are free when we look, but another process may take one
	// before pdns_server binds it: try a few.
	var lastErr error
	for range 5 {
		dnsPort, err := freePort(true)
		if err != nil {
			t.Fatalf("servers.StartPowerDNS: %v", err)
		}
		apiPort, err := freePort(false)
		if err != nil {
			t.Fatalf("servers.StartPowerDNS: %v", err)
		}
		if apiPort == dnsPort {
			continue
		}
		p.DNSAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(dnsPort))
		p.APIURL = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(apiPort))
		conf := append(p.conf[:len(p.conf):len(p.conf)], "local-port="+strconv.Itoa(dnsPort), "webserver-port="+strconv.Itoa(apiPort))
		if err := os.WriteFile(filepath.Join(p.Dir, "pdns.conf"), []byte(strings.Join(conf, "\n")+"\n"), 0o600); err != nil {
			t.Fatalf("servers.StartPowerDNS: %v", err)
		}
		lastErr = p.start()
		if lastErr == nil {
			for _, z := range opts.Zones {
				p.CreateZone(t, z)
			}
			return p
		}
		p.Stop()
		if !strings.Contains(lastErr.Error(), "in use") {
			break
		}
	}
	t.Fatalf("servers.StartPowerDNS: %v", lastErr)
	return nil
}

// start runs pdns_server and waits until both its API and its DNS side
// answer.
func (p *PowerDNS) start() error {
	return p.run(p.Dir, []string{"pdns_server", "--config-dir=" + p.Dir}, pdnsReadyTimeout, p.ready, nil)
}

// ready reports whether GET /api/v1/servers/localhost answers 200 and a
// DNS query gets an answer (any rcode).
func (p *PowerDNS) ready() bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	status, _, err := p.do(ctx, http.MethodGet, "", nil)
	if err != nil || status != http.StatusOK {
		return false
	}
	c := &dns.Client{Net: "udp", Timeout: 500 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion("localhost.", dns.TypeSOA)
	_, _, err = c.Exchange(m, p.DNSAddr)
	return err == nil
}

// Restart stops pdns_server if it runs and starts it again on the same
// ports, with the same database.
func (p *PowerDNS) Restart(t testing.TB) {
	t.Helper()
	p.Stop()
	if err := p.start(); err != nil {
		p.Stop()
		t.Fatalf("servers: restart pdns_server: %v", err)
	}
}

// do sends one API request to path under /api/v1/servers/localhost and
// returns the status and the body.
func (p *PowerDNS) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		var b []byte
		switch v := body.(type) {
		case []byte:
			b = v
		case string:
			b = []byte(v)
		default:
			var err error
			if b, err = json.Marshal(body); err != nil {
				return 0, nil, err
			}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, p.APIURL+"/api/v1/servers/"+p.ServerID+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("X-API-Key", p.APIKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// API sends one request to the API, at path under
// /api/v1/servers/localhost ("/zones/example.net."); body is JSON bytes, a
// string, or a value to marshal (nil: none). It fails the test on a
// transport error, not on an error status.
func (p *PowerDNS) API(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	status, out, err := p.do(ctx, method, path, body)
	if err != nil {
		t.Fatalf("servers: PowerDNS API %s %s: %v", method, path, err)
	}
	return status, out
}

// PDNSRRset is an rrset in the PowerDNS API's shape, for tests that write
// behind anneal's back.
type PDNSRRset struct {
	Name       string        `json:"name"`
	Type       string        `json:"type"`
	TTL        uint32        `json:"ttl,omitempty"`
	ChangeType string        `json:"changetype,omitempty"`
	Records    []PDNSRecord  `json:"records"`
	Comments   []PDNSComment `json:"comments,omitempty"`
}

// PDNSRecord is one record of a PDNSRRset.
type PDNSRecord struct {
	Content  string `json:"content"`
	Disabled bool   `json:"disabled"`
}

// PDNSComment is one comment of a PDNSRRset.
type PDNSComment struct {
	Content string `json:"content"`
	Account string `json:"account"`
}

// Patch sends PATCH /zones/ZONE. with rrsets (changetype REPLACE when
// unset) and fails the test unless PowerDNS answers 204.
func (p *PowerDNS) Patch(t testing.TB, zone string, rrsets ...PDNSRRset) {
	t.Helper()
	for i := range rrsets {
		if rrsets[i].ChangeType == "" {
			rrsets[i].ChangeType = "REPLACE"
		}
		if rrsets[i].Records == nil {
			rrsets[i].Records = []PDNSRecord{}
		}
	}
	status, out := p.API(t, http.MethodPatch, "/zones/"+dns.Fqdn(zone), map[string]any{"rrsets": rrsets})
	if status != http.StatusNoContent {
		t.Fatalf("servers: PATCH zone %s: HTTP %d: %s", zone, status, out)
	}
}

// CreateZone creates a Native zone with an explicit SOA (serial 1, which
// soa_edit_api DEFAULT turns into a date serial) and NS localhost.
func (p *PowerDNS) CreateZone(t testing.TB, zone string) {
	t.Helper()
	z := dns.Fqdn(strings.ToLower(zone))
	body := map[string]any{
		"name":         z,
		"kind":         "Native",
		"soa_edit_api": "DEFAULT",
		"nameservers":  []string{},
		"rrsets": []PDNSRRset{
			{Name: z, Type: "SOA", TTL: 3600, Records: []PDNSRecord{{Content: "localhost. hostmaster." + z + " 1 10800 3600 604800 3600"}}},
			{Name: z, Type: "NS", TTL: 3600, Records: []PDNSRecord{{Content: "localhost."}}},
		},
	}
	status, out := p.API(t, http.MethodPost, "/zones", body)
	if status != http.StatusCreated {
		t.Fatalf("servers: create zone %s on PowerDNS: HTTP %d: %s", zone, status, out)
	}
}

// AXFR transfers a zone (transfers are open to 127.0.0.0/8) and returns
// every record, the SOA first and last as the server sends them.
func (p *PowerDNS) AXFR(t testing.TB, zone string) []dns.RR {
	t.Helper()
	return axfr(t, p.DNSAddr, zone, 30*time.Second)
}
