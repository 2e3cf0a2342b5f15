package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

const exampleSite = "../examples/site-repo"

// fakeReconciler is a Reconciler whose answers the test sets and whose
// calls it records.
type fakeReconciler struct {
	mu        sync.Mutex
	status    reconcile.Status
	plan      *reconcile.Plan
	site      *schema.Site
	triggers  int
	suspended []bool
	retried   []string
	revoked   []string
	approved  []string
	err       error // returned by SetSuspended, Retry, RevokeAgent
}

func (f *fakeReconciler) Status() reconcile.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}
func (f *fakeReconciler) LastPlan() *reconcile.Plan { return f.plan }
func (f *fakeReconciler) Site() *schema.Site        { return f.site }
func (f *fakeReconciler) Trigger() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.triggers++
}
func (f *fakeReconciler) SetSuspended(_ context.Context, v bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.suspended = append(f.suspended, v)
	f.status.Suspended = v
	return nil
}
func (f *fakeReconciler) Retry(_ context.Context, node string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retried = append(f.retried, node)
	return f.err
}
func (f *fakeReconciler) Approve(_ context.Context, rev, digest string) (*reconcile.Approval, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.approved = append(f.approved, rev+"/"+digest)
	if rev == "broken" {
		return nil, errors.New("record the approval: disk full")
	}
	if rev != "rev1" || digest != "d1" {
		return nil, fmt.Errorf("%w: plan d2 of rev1 awaits approval", reconcile.ErrNotPending)
	}
	return &reconcile.Approval{Revision: rev, PlanDigest: digest}, nil
}

func (f *fakeReconciler) RevokeAgent(_ context.Context, node string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, node)
	return f.err
}

// fakeNodes is a NodeRecords.
type fakeNodes struct {
	recs map[string]*node.Record
	err  error
}

func (n fakeNodes) NodeRecords(context.Context) (map[string]*node.Record, error) {
	return n.recs, n.err
}

// do sends one request to h and returns the recorded answer.
func do(t *testing.T, h http.Handler, method, path, token string, body io.Reader) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func loadExample(t *testing.T) *schema.Site {
	t.Helper()
	s, diags, err := schema.LoadDir(context.Background(), exampleSite, schema.LoadOptions{})
	if err != nil || s == nil {
		t.Fatalf("load %s: %v %v", exampleSite, err, diags)
	}
	return s
}

// TestReadOnlyRoutes: health, readiness, status, drift and nodes answer
// without a token, 503 until there is something to show.
func TestReadOnlyRoutes(t *testing.T) {
	f := &fakeReconciler{}
	h := New(Config{Reconciler: f, Token: "t"})
	for _, tc := range []struct {
		path string
		want int
		body string
	}{
		{"/healthz", http.StatusOK, "ok"},
		{"/readyz", http.StatusServiceUnavailable, "no reconcile has finished yet"},
		{"/api/v1/status", http.StatusOK, `"reconciles": 0`},
		{"/api/v1/drift", http.StatusServiceUnavailable, "no plan computed yet"},
		{"/api/v1/nodes", http.StatusServiceUnavailable, "no valid revision loaded yet"},
		{"/metrics", http.StatusOK, "anneal_suspended 0"},
	} {
		w := do(t, h, http.MethodGet, tc.path, "", nil)
		if w.Code != tc.want || !strings.Contains(w.Body.String(), tc.body) {
			t.Errorf("GET %s: %d %q, want %d with %q", tc.path, w.Code, w.Body.String(), tc.want, tc.body)
		}
	}
	f.status.Reconciles = 1
	f.plan = &reconcile.Plan{Site: "lab1"}
	if w := do(t, h, http.MethodGet, "/readyz", "", nil); w.Code != http.StatusOK || w.Body.String() != "ready\n" {
		t.Errorf("readyz after a reconcile: %d %q", w.Code, w.Body.String())
	}
	w := do(t, h, http.MethodGet, "/api/v1/drift", "", nil)
	var p reconcile.Plan
	if err := json.Unmarshal(w.Body.Bytes(), &p); w.Code != http.StatusOK || err != nil || p.Site != "lab1" {
		t.Errorf("drift: %d %v %q", w.Code, err, w.Body.String())
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("drift Content-Type %q", ct)
	}
	if w := do(t, h, http.MethodPost, "/api/v1/status", "t", nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST status: %d, want 405", w.Code)
	}
}

// TestNodes: the site's nodes, with the live state of those with a record
// when records are wired.
func TestNodes(t *testing.T) {
	s := loadExample(t)
	n := s.Nodes[0]
	build := node.BuildSpecOf(s, n).ID()
	recs := map[string]*node.Record{n.Name: {Name: n.Name, State: node.Verified, BuildID: build}}
	f := &fakeReconciler{site: s}
	get := func(nodes NodeRecords) (int, []NodeView) {
		w := do(t, New(Config{Reconciler: f, Nodes: nodes}), http.MethodGet, "/api/v1/nodes", "", nil)
		var views []NodeView
		if w.Code == http.StatusOK {
			if err := json.Unmarshal(w.Body.Bytes(), &views); err != nil {
				t.Fatal(err)
			}
		}
		return w.Code, views
	}
	code, views := get(nil)
	if code != http.StatusOK || len(views) != len(s.Nodes) || views[0].Name != n.Name || views[0].BuildID != build || views[0].Live != nil {
		t.Fatalf("without records: %d %+v", code, views)
	}
	code, views = get(fakeNodes{recs: recs})
	if code != http.StatusOK || views[0].Live == nil || !views[0].Live.UpToDate || views[0].Live.State != "verified" || views[1].Live != nil {
		t.Fatalf("with records: %d %+v", code, views)
	}
	if code, _ := get(fakeNodes{err: errors.New("store down")}); code != http.StatusInternalServerError {
		t.Fatalf("records failing: %d, want 500", code)
	}
}

// TestMutatingRoutes: every action needs the bearer token (none
// configured accepts nothing) and is refused before it acts; with it, it
// acts and answers as the CLI expects.
func TestMutatingRoutes(t *testing.T) {
	const token = "s3cret"
	routes := []string{"/api/v1/reconcile", "/api/v1/suspend", "/api/v1/resume", "/api/v1/nodes/e1n01/retry", "/api/v1/nodes/e1n01/revoke-agent", "/api/v1/webhook", "/api/v1/approve"}
	for _, cfgToken := range []string{token, ""} {
		f := &fakeReconciler{}
		h := New(Config{Reconciler: f, Token: cfgToken})
		for _, path := range routes {
			for _, bearer := range []string{"", "wrong", " "} {
				if w := do(t, h, http.MethodPost, path, bearer, nil); w.Code != http.StatusForbidden {
					t.Errorf("token %q, POST %s with %q: %d, want 403", cfgToken, path, bearer, w.Code)
				}
			}
		}
		if w := do(t, h, http.MethodGet, "/api/v1/state/backup", "", nil); w.Code != http.StatusForbidden {
			t.Errorf("backup without token: %d", w.Code)
		}
		if f.triggers != 0 || f.suspended != nil || f.retried != nil || f.revoked != nil || f.approved != nil {
			t.Errorf("token %q: refused requests acted: %+v", cfgToken, f)
		}
	}

	f := &fakeReconciler{}
	m := NewMetrics()
	h := New(Config{Reconciler: f, Metrics: m, Token: token})
	metric := func() string {
		w := do(t, h, http.MethodGet, "/metrics", "", nil)
		for line := range strings.Lines(w.Body.String()) {
			if strings.HasPrefix(line, "anneal_suspended ") {
				return strings.TrimSpace(line)
			}
		}
		return ""
	}
	if w := do(t, h, http.MethodPost, "/api/v1/reconcile", token, nil); w.Code != http.StatusAccepted || f.triggers != 1 {
		t.Errorf("reconcile: %d, %d triggers", w.Code, f.triggers)
	}
	w := do(t, h, http.MethodPost, "/api/v1/suspend", token, nil)
	var st reconcile.Status
	if err := json.Unmarshal(w.Body.Bytes(), &st); w.Code != http.StatusOK || err != nil || !st.Suspended || f.triggers != 1 {
		t.Errorf("suspend: %d %q, %d triggers", w.Code, w.Body.String(), f.triggers)
	}
	if got := metric(); got != "anneal_suspended 1" {
		t.Errorf("after suspend: %q", got)
	}
	if w := do(t, h, http.MethodPost, "/api/v1/resume", token, nil); w.Code != http.StatusOK || f.Status().Suspended || f.triggers != 2 {
		t.Errorf("resume: %d %q, %d triggers (a resume triggers)", w.Code, w.Body.String(), f.triggers)
	}
	if got := metric(); got != "anneal_suspended 0" {
		t.Errorf("after resume: %q", got)
	}
	if w := do(t, h, http.MethodPost, "/api/v1/nodes/e1n01/retry", token, nil); w.Code != http.StatusAccepted || len(f.retried) != 1 || f.retried[0] != "e1n01" {
		t.Errorf("retry: %d %v", w.Code, f.retried)
	}
	if w := do(t, h, http.MethodPost, "/api/v1/nodes/e1n02/revoke-agent", token, nil); w.Code != http.StatusOK || len(f.revoked) != 1 || f.revoked[0] != "e1n02" {
		t.Errorf("revoke-agent: %d %v", w.Code, f.revoked)
	}

	f.err = errors.New("node e1n01 is not failed")
	for _, path := range []string{"/api/v1/nodes/e1n01/retry", "/api/v1/nodes/e1n01/revoke-agent"} {
		w := do(t, h, http.MethodPost, path, token, nil)
		if w.Code != http.StatusConflict || !strings.Contains(w.Body.String(), "node e1n01 is not failed") {
			t.Errorf("%s refused: %d %q, want 409 with the error", path, w.Code, w.Body.String())
		}
	}
	if w := do(t, h, http.MethodPost, "/api/v1/suspend", token, nil); w.Code != http.StatusInternalServerError {
		t.Errorf("suspend failing: %d, want 500", w.Code)
	}
	if got := metric(); got != "anneal_suspended 0" {
		t.Errorf("after a failed suspend: %q", got)
	}
}

// TestApprove: POST /api/v1/approve passes the revision and digest to the
// reconciler; a bad body is 400 (and nothing is approved), a plan that
// does not await approval 409.
func TestApprove(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       int
		calls      int
	}{
		{"the plan that waits", `{"revision": "rev1", "planDigest": "d1"}`, http.StatusOK, 1},
		{"another plan", `{"revision": "rev1", "planDigest": "d0"}`, http.StatusConflict, 1},
		{"no digest", `{"revision": "rev1"}`, http.StatusBadRequest, 0},
		{"unknown field", `{"revision": "rev1", "planDigest": "d1", "force": true}`, http.StatusBadRequest, 0},
		{"not JSON", `rev1`, http.StatusBadRequest, 0},
		{"too large", `{"revision": "` + strings.Repeat("a", 8<<10) + `", "planDigest": "d1"}`, http.StatusRequestEntityTooLarge, 0},
		{"two values", `{"revision": "rev1", "planDigest": "d1"} {}`, http.StatusBadRequest, 0},
		{"the approval cannot be saved", `{"revision": "broken", "planDigest": "d1"}`, http.StatusInternalServerError, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeReconciler{}
			w := do(t, New(Config{Reconciler: f, Token: "t"}), http.MethodPost, "/api/v1/approve", "t", strings.NewReader(tc.body))
			if w.Code != tc.want || len(f.approved) != tc.calls {
				t.Errorf("%d with %d approval call(s), want %d with %d: %s", w.Code, len(f.approved), tc.want, tc.calls, w.Body)
			}
		})
	}
}

// TestBackup: the copy with its length; an error before the first byte
// is a 500, and a server without a backup says so.
func TestBackup(t *testing.T) {
	const token = "t"
	f := &fakeReconciler{}
	data := []byte("a consistent copy")
	ok := func(_ context.Context, w io.Writer, sized func(int64)) (int64, error) {
		sized(int64(len(data)))
		n, err := w.Write(data)
		return int64(n), err
	}
	w := do(t, New(Config{Reconciler: f, Token: token, Backup: ok}), http.MethodGet, "/api/v1/state/backup", token, nil)
	if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), data) || w.Header().Get("Content-Length") != "17" ||
		w.Header().Get("Content-Type") != "application/octet-stream" {
		t.Errorf("backup: %d %v %q", w.Code, w.Header(), w.Body.String())
	}
	failing := func(context.Context, io.Writer, func(int64)) (int64, error) { return 0, errors.New("disk gone") }
	w = do(t, New(Config{Reconciler: f, Token: token, Backup: failing}), http.MethodGet, "/api/v1/state/backup", token, nil)
	if w.Code != http.StatusInternalServerError || !strings.Contains(w.Body.String(), "disk gone") {
		t.Errorf("failing backup: %d %q", w.Code, w.Body.String())
	}
	w = do(t, New(Config{Reconciler: f, Token: token}), http.MethodGet, "/api/v1/state/backup", token, nil)
	if w.Code != http.StatusNotImplemented {
		t.Errorf("no backup: %d, want 501", w.Code)
	}
}

// dirSource serves one revision of a directory.
type dirSource string

func (d dirSource) Latest(context.Context) (reconcile.Revision, error) {
	return reconcile.Revision{ID: "r1"}, nil
}
func (d dirSource) FS(context.Context, string) (fs.FS, error) { return os.DirFS(string(d)), nil }
func (d dirSource) Descends(string, string) (bool, error)     { return true, nil }

// TestRealReconciler drives the API with a *reconcile.Reconciler over the
// example site and a bolt state store: ready after one pass, its nodes
// listed, a suspend persisted, the store's copy served.
func TestRealReconciler(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m := NewMetrics()
	r := &reconcile.Reconciler{Source: dirSource(exampleSite), State: st, Mode: reconcile.ModeReport, Observe: m.Observe,
		Targets: func(*schema.Site) (map[string]dns.Target, error) {
			return map[string]dns.Target{}, nil
		}}
	const token = "t0ken"
	h := New(Config{Reconciler: r, Metrics: m, Token: token, Backup: st.Backup})
	if w := do(t, h, http.MethodGet, "/readyz", "", nil); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("readyz before a pass: %d", w.Code)
	}
	r.ReconcileOnce(ctx)
	if w := do(t, h, http.MethodGet, "/readyz", "", nil); w.Code != http.StatusOK {
		t.Fatalf("readyz after a pass: %d %q", w.Code, w.Body.String())
	}
	if w := do(t, h, http.MethodGet, "/metrics", "", nil); !strings.Contains(w.Body.String(), "anneal_reconciles_total 1") {
		t.Errorf("metrics do not count the pass:\n%s", w.Body.String())
	}
	w := do(t, h, http.MethodGet, "/api/v1/nodes", "", nil)
	var views []NodeView
	if err := json.Unmarshal(w.Body.Bytes(), &views); w.Code != http.StatusOK || err != nil || len(views) < 12 {
		t.Fatalf("nodes: %d %v %d", w.Code, err, len(views))
	}
	if w := do(t, h, http.MethodPost, "/api/v1/suspend", token, nil); w.Code != http.StatusOK || !r.Status().Suspended {
		t.Fatalf("suspend: %d %q", w.Code, w.Body.String())
	}
	saved, err := st.LoadStatus(ctx)
	if err != nil || saved == nil || !saved.Suspended {
		t.Fatalf("suspend not saved: %+v %v", saved, err)
	}
	w = do(t, h, http.MethodGet, "/api/v1/state/backup", token, nil)
	if w.Code != http.StatusOK || w.Body.Len() == 0 || w.Header().Get("Content-Length") == "" {
		t.Fatalf("backup: %d, %d bytes", w.Code, w.Body.Len())
	}
	if w := do(t, h, http.MethodPost, "/api/v1/nodes/"+views[0].Name+"/retry", token, nil); w.Code != http.StatusConflict ||
		!strings.Contains(w.Body.String(), "rebuilds are not enabled") {
		t.Errorf("retry without rebuilds: %d %q", w.Code, w.Body.String())
	}
}
