package api

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/providers/source"
	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/schema"
)

// TestRevisions: GET /api/v1/revisions/{rev} resolves through the
// reconciler's source: its full id for a prefix, 404 for a revision it
// does not have, 400 for a name out of bounds, 501 without a resolver.
func TestRevisions(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	src := source.Dir{Path: exampleSite}
	latest, err := src.Latest(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	r := &reconcile.Reconciler{Source: src, State: st, Mode: reconcile.ModeReport,
		Targets: func(*schema.Site) (map[string]dns.Target, error) { return map[string]dns.Target{}, nil }}
	h := New(Config{Reconciler: r})
	tests := []struct {
		rev  string
		code int
		want string
	}{
		{latest.ID, http.StatusOK, `"revision": "` + latest.ID + `"`},
		{strings.TrimPrefix(latest.ID, "dir:")[:8], http.StatusOK, `"revision": "` + latest.ID + `"`},
		{strings.TrimPrefix(latest.ID, "dir:")[:7], http.StatusNotFound, "unknown revision"},
		{"main", http.StatusNotFound, `revision \"main\": unknown revision: the directory`},
		{strings.Repeat("a", 257), http.StatusBadRequest, "1 to 256 characters"},
	}
	for _, tc := range tests {
		w := do(t, h, http.MethodGet, "/api/v1/revisions/"+tc.rev, "", nil)
		if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.want) {
			t.Errorf("%s: %d %s, want %d with %q", tc.rev, w.Code, w.Body.String(), tc.code, tc.want)
		}
	}
	if w := do(t, New(Config{Reconciler: &fakeReconciler{}}), http.MethodGet, "/api/v1/revisions/abc", "", nil); w.Code != http.StatusNotImplemented {
		t.Errorf("without a resolver: %d %s", w.Code, w.Body.String())
	}
	if w := do(t, h, http.MethodPost, "/api/v1/revisions/"+latest.ID, "", nil); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", w.Code)
	}
}

// TestStatusVersion: the version is in /api/v1/status (and the suspend
// answer), and with the revision in anneal_build_info.
func TestStatusVersion(t *testing.T) {
	f := &fakeReconciler{}
	const token = "t0ken"
	h := New(Config{Reconciler: f, Token: token, Version: "v1.2.3", Revision: "abc123"})
	for _, req := range []struct{ method, path, token string }{{http.MethodGet, "/api/v1/status", ""}, {http.MethodPost, "/api/v1/suspend", token}} {
		w := do(t, h, req.method, req.path, req.token, nil)
		var v StatusView
		if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil || w.Code != http.StatusOK || v.Version != "v1.2.3" {
			t.Errorf("%s %s: %d %s", req.method, req.path, w.Code, w.Body.String())
		}
	}
	w := do(t, h, http.MethodGet, "/metrics", "", nil)
	if !strings.Contains(w.Body.String(), `anneal_build_info{revision="abc123",version="v1.2.3"} 1`) {
		t.Errorf("metrics:\n%s", w.Body.String())
	}
	// A second New on the same metrics does not register it twice.
	m := NewMetrics()
	New(Config{Reconciler: f, Metrics: m, Version: "v1"})
	New(Config{Reconciler: f, Metrics: m, Version: "v1"})
}
