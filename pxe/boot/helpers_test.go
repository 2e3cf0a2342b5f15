package boot

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// memStore is an in-memory node.Store: records under a mutex,
// copied in and out through JSON as a real store would.
type memStore struct {
	mu   sync.Mutex
	recs map[string][]byte
}

func newMemStore() *memStore { return &memStore{recs: map[string][]byte{}} }

func (m *memStore) NodeRecords(ctx context.Context) (map[string]*node.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]*node.Record{}
	for name, v := range m.recs {
		r := &node.Record{}
		if err := json.Unmarshal(v, r); err != nil {
			return nil, err
		}
		out[name] = r
	}
	return out, ctx.Err()
}

func (m *memStore) NodeRecord(ctx context.Context, name string) (*node.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.recs[name]
	if !ok {
		return nil, ctx.Err()
	}
	r := &node.Record{}
	return r, json.Unmarshal(v, r)
}

func (m *memStore) UpdateNode(ctx context.Context, name string, fn func(*node.Record) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := &node.Record{Name: name}
	if v, ok := m.recs[name]; ok {
		if err := json.Unmarshal(v, r); err != nil {
			return err
		}
	}
	if err := fn(r); err != nil {
		return err
	}
	r.Name = name
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	m.recs[name] = v
	return nil
}

// lockedBuffer collects log output written from handler goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newTestLogger logs everything, in text, to w.
func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testKey is the HMAC key of every fixture; it must never reach a log.
var testKey = []byte("k3y-for-tests-ONLY-0123456789abcdef")

// t0 is the fixtures' clock.
var t0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

func loadSite(t testing.TB) *schema.Site {
	t.Helper()
	site, _, err := schema.Load(context.Background(), os.DirFS("../../examples/site-repo"), schema.LoadOptions{})
	if err != nil {
		t.Fatalf("load examples/site-repo: %v", err)
	}
	return site
}

// fixture is a Server over a real HTTP listener, a memStore, a fixed clock
// and captured logs. Every token it sees is checked absent from the logs
// when the test ends.
type fixture struct {
	t       *testing.T
	site    *schema.Site
	store   *memStore
	srv     *Server
	ts      *httptest.Server
	logs    *lockedBuffer
	client  *http.Client
	mu      sync.Mutex
	now     time.Time
	reports []node.Report
	secrets []string
	noSite  bool
}

// newFixture starts a fixture; opts change its site and Server before the
// server starts.
func newFixture(t *testing.T, opts ...func(*fixture)) *fixture {
	t.Helper()
	f := &fixture{t: t, site: loadSite(t), store: newMemStore(), logs: &lockedBuffer{}, now: t0}
	f.srv = &Server{
		Site: func() *schema.Site {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.noSite {
				return nil
			}
			return f.site
		},
		Nodes: f.store,
		Key:   testKey,
		// The example site's nodes are on 10.10.1.0/24; the fixture's
		// client is on loopback, which the lab binding lets stand for any
		// node. hijack_test.go tests the default binding.
		Binding: BindLab,
		Log:     newTestLogger(f.logs),
		Now:     f.clock,
		OnReport: func(r node.Report) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.reports = append(f.reports, r)
		},
	}
	for _, o := range opts {
		o(f)
	}
	f.ts = httptest.NewUnstartedServer(f.srv)
	f.srv.BaseURL = "http://" + f.ts.Listener.Addr().String()
	f.ts.Start()
	f.client = f.ts.Client()
	t.Cleanup(f.ts.Close)
	f.secret(string(testKey), hex.EncodeToString(testKey), base64.StdEncoding.EncodeToString(testKey))
	for _, n := range f.site.Nodes {
		f.secret(AgentToken(testKey, n.Name, ""), AgentToken(testKey, n.Name, agentGenOf(n.Name)))
	}
	t.Cleanup(f.checkLogs)
	return f
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) setNow(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = now
}

func (f *fixture) setSite(site *schema.Site, none bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.site, f.noSite = site, none
}

func (f *fixture) secret(s ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secrets = append(f.secrets, s...)
}

func (f *fixture) takeReports() []node.Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.reports
	f.reports = nil
	return r
}

// checkLogs fails the test when any key or token reached the logs.
func (f *fixture) checkLogs() {
	logs := f.logs.String()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.secrets {
		if s != "" && strings.Contains(logs, s) {
			f.t.Errorf("a secret (%d bytes) appears in the logs:\n%s", len(s), logs)
		}
	}
}

// buildID is the build the site wants for node now.
func (f *fixture) buildID(name string) string {
	f.t.Helper()
	n := f.site.Node(name)
	if n == nil {
		f.t.Fatalf("node %s not in the example site", name)
	}
	return node.BuildSpecOf(f.site, n).ID()
}

// agentGenOf is the agent token generation arm gives node.
func agentGenOf(node string) string { return "gen-" + node }

// arm records node as provisioning its current build with a nonce valid
// for an hour and a new agent token generation, as the rebuild engine
// does.
func (f *fixture) arm(name string) string {
	f.t.Helper()
	build := f.buildID(name)
	err := f.store.UpdateNode(context.Background(), name, func(r *node.Record) error {
		r.State, r.Since, r.Target = node.Provisioning, t0, build
		r.Nonce, r.TokenExpires = "nonce-"+name, t0.Add(time.Hour)
		r.AgentGen, r.Fetched, r.InstallFetched = agentGenOf(name), nil, time.Time{}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return build
}

func (f *fixture) record(node string) *node.Record {
	f.t.Helper()
	r, err := f.store.NodeRecord(context.Background(), node)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

var scriptToken = regexp.MustCompile(`anneal\.token=(\S+)`)

// tokenOf netboots node's first interface and returns the install token
// its script carries.
func (f *fixture) tokenOf(node string) string {
	f.t.Helper()
	status, body := f.get("/ipxe/" + f.site.Node(node).Interfaces[0].MAC)
	m := scriptToken.FindStringSubmatch(body)
	if status != http.StatusOK || m == nil {
		f.t.Fatalf("netboot %s: %d, no token in script:\n%s", node, status, body)
	}
	f.secret(m[1])
	return m[1]
}

func (f *fixture) get(path string) (int, string) {
	f.t.Helper()
	resp, err := f.client.Get(f.ts.URL + path)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// post sends body (JSON-encoded unless it is a string) with an optional
// bearer token.
func (f *fixture) post(path string, body any, bearer string) (int, string) {
	f.t.Helper()
	var data []byte
	if s, ok := body.(string); ok {
		data = []byte(s)
	} else {
		var err error
		if data, err = json.Marshal(body); err != nil {
			f.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(http.MethodPost, f.ts.URL+path, bytes.NewReader(data))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.StatusCode, string(out)
}

// sampleFacts is what a freshly installed node might report.
func sampleFacts(name string) node.Facts {
	return node.Facts{
		Hostname:  name,
		OSRelease: map[string]string{"ID": "ubuntu", "VERSION_ID": "22.04"},
		Kernel:    "5.15.0-126-generic",
		Interfaces: []node.FactInterface{
			{Name: "eno1", Kind: node.KindEther, MAC: "b0:7b:25:0b:01:01", Addresses: []string{"10.10.1.11/24"}},
		},
	}
}
