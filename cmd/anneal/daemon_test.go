package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/api"
	"github.com/anneal-dev/anneal/providers/source"
	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/rollout"
	"github.com/anneal-dev/anneal/schema"
)

// testToken is the daemon's bearer token in these tests, read by the CLI
// through --token env:ANNEAL_TEST_TOKEN.
const testToken = "t0ken-for-tests"

// testDaemon is a real reconciler (a directory source, a bolt state) behind
// a real api.New on 127.0.0.1: what anneal serve wires, without DNS
// targets or netboot.
type testDaemon struct {
	url   string
	r     *reconcile.Reconciler
	store *bolt.Store
	dir   string
	// onStatus, when set, runs before GET /api/v1/status is answered,
	// with the count of such requests so far (1 for the first).
	onStatus atomic.Pointer[func(n int64)]
	statuses atomic.Int64
}

// exampleWithoutDNS copies the example site without its DNS document (no
// target to reach, no secret to grant).
func exampleWithoutDNS(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	err := filepath.WalkDir(example, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(example, p)
		if e.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		if rel == "dns.yaml" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func startDaemon(t *testing.T, siteDir string) *testDaemon {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	d := &testDaemon{store: st, dir: siteDir}
	d.r = &reconcile.Reconciler{Source: source.Dir{Path: siteDir}, State: st, Mode: reconcile.ModeConverge, Interval: time.Hour,
		Targets: func(s *schema.Site) (map[string]dns.Target, error) { return dnsTargets(s, nil) },
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil))}
	d.r.ReconcileOnce(context.Background())
	h := api.New(api.Config{Reconciler: d.r, Token: testToken, Nodes: st, Backup: st.Backup, Version: "v9.9.9-test", Revision: "c0ffee"})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/api/v1/status" {
			n := d.statuses.Add(1)
			if f := d.onStatus.Load(); f != nil {
				(*f)(n)
			}
		}
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	d.url = srv.URL
	t.Setenv("ANNEAL_TEST_TOKEN", testToken)
	return d
}

func statusJSON(t *testing.T, d *testDaemon) (api.StatusView, *reconcile.Plan) {
	t.Helper()
	code, out, errs := runCLI(t, "status", "--server", d.url, "-o", "json")
	if code != exitOK {
		t.Fatalf("status -o json: exit %d: %s", code, errs)
	}
	var v struct {
		Status api.StatusView  `json:"status"`
		Drift  *reconcile.Plan `json:"drift"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("status -o json does not parse: %v\n%s", err, out)
	}
	return v.Status, v.Drift
}

// TestControlVerbs: suspend, resume and reconcile reach the daemon with
// the token, status says suspended plainly, and API errors are messages.
func TestControlVerbs(t *testing.T) {
	d := startDaemon(t, exampleWithoutDNS(t))
	tok := []string{"--server", d.url, "--token", "env:ANNEAL_TEST_TOKEN"}
	steps := []struct {
		name      string
		args      []string
		code      int
		stdout    string
		stderr    string
		suspended bool
	}{
		{"suspend without a token", []string{"suspend", "--server", d.url}, exitUsage, "", "anneal suspend: suspend needs the API's token: --token REF", false},
		{"suspend with a wrong token", []string{"suspend", "--server", d.url, "--token", "env:ANNEAL_WRONG_TOKEN"}, exitError,
			"", "POST /api/v1/suspend: 403 Forbidden: a valid bearer token is required (serve --token); give the API's token with --token REF", false},
		{"suspend", append([]string{"suspend"}, tok...), exitOK, "suspended: nothing is fetched or applied until anneal resume", "", true},
		{"status says suspended", []string{"status", "--server", d.url}, exitOK, "SUSPENDED:               reconciling is paused: nothing is fetched or applied until anneal resume", "", true},
		{"reconcile while suspended", append([]string{"reconcile"}, tok...), exitError, "",
			"anneal reconcile: the daemon is suspended: a reconcile runs nothing until anneal resume", true},
		{"resume", append([]string{"resume"}, tok...), exitOK, "resumed", "", false},
		{"reconcile", append([]string{"reconcile"}, tok...), exitOK, "reconcile triggered", "", false},
		{"retry without a token", []string{"nodes", "retry", "e1n01", "--server", d.url}, exitUsage, "", "anneal nodes retry: retry needs the API's token", false},
		{"backup without a token", []string{"backup", "--server", d.url, "--out", filepath.Join(t.TempDir(), "b.db")}, exitError, "",
			"anneal backup: GET /api/v1/state/backup: 403 Forbidden: a valid bearer token is required (serve --token)", false},
		{"retry a node that did not fail", append([]string{"nodes", "retry", "e1n01"}, tok...), exitError, "", "POST /api/v1/nodes/e1n01/retry: 409 Conflict: ", false},
	}
	t.Setenv("ANNEAL_WRONG_TOKEN", "not-the-token")
	for _, s := range steps {
		code, out, errs := runCLI(t, s.args...)
		if code != s.code || !strings.Contains(out, s.stdout) || !strings.Contains(errs, s.stderr) {
			t.Errorf("%s: exit %d (want %d)\nstdout: %s\nstderr: %s\nwant stdout %q, stderr %q", s.name, code, s.code, out, errs, s.stdout, s.stderr)
		}
		if strings.Contains(errs, "{") || strings.Contains(errs, testToken) || strings.Contains(errs, "not-the-token") {
			t.Errorf("%s: stderr has a raw body or a token: %s", s.name, errs)
		}
		if got := d.r.Status().Suspended; got != s.suspended {
			t.Errorf("%s: daemon suspended=%t, want %t", s.name, got, s.suspended)
		}
		if st, _ := statusJSON(t, d); st.Suspended != s.suspended || st.Version != "v9.9.9-test" {
			t.Errorf("%s: status -o json: suspended=%t version %q", s.name, st.Suspended, st.Version)
		}
	}
}

// TestStatusText: the three revisions are named and explained, the daemon's
// version shown.
func TestStatusText(t *testing.T) {
	d := startDaemon(t, exampleWithoutDNS(t))
	rev := d.r.Status().AppliedRevision
	if rev == "" {
		t.Fatalf("the daemon applied nothing: %+v", d.r.Status())
	}
	code, out, errs := runCLI(t, "status", "--server", d.url)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"(v9.9.9-test)",
		"applied revision:        " + rev + "  (the last revision fully applied)",
		"last good revision:      " + rev + "  (the newest that validated: the one converged to)",
		"last attempted revision: " + rev + "  (the newest fetched)",
		"drift (the daemon's last plan):",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "SUSPENDED") {
		t.Errorf("status says suspended:\n%s", out)
	}
}

func TestRolloutLine(t *testing.T) {
	tests := []struct {
		ro   reconcile.RolloutStatus
		want string
	}{
		{reconcile.RolloutStatus{Revision: "abc", Running: true, Done: 1, Total: 3, Canaries: []string{"e1n01"}}, "rollout of abc: running: 1 of 3 done (canaries: e1n01)"},
		{reconcile.RolloutStatus{Revision: "abc", Running: true, Total: 3}, "rollout of abc: running: 0 of 3 done"},
		{reconcile.RolloutStatus{Revision: "abc", Result: rollout.Result{Verified: []string{"a", "b"}, Failed: map[string]string{"c": "no callback"}, Halted: "canary c failed"}},
			"last rollout (abc): 2 verified, 0 decommissioned, 1 failed, 0 not started; halted: canary c failed (anneal nodes retry NODE... once fixed)"},
	}
	for _, tc := range tests {
		if got := rolloutLine(&tc.ro); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

// TestStatusWait: --wait takes what the daemon resolves (a prefix of the
// directory's revision), refuses at once what it does not have, and a
// failure the status held before the wait began ends it only once a
// reconcile after the start reports it again.
func TestStatusWait(t *testing.T) {
	d := startDaemon(t, exampleWithoutDNS(t))
	rev := d.r.Status().AppliedRevision
	prefix := strings.TrimPrefix(rev, "dir:")[:10]
	code, out, errs := runCLI(t, "status", "--server", d.url, "--wait", prefix, "--timeout", "30s")
	if code != exitOK || !strings.Contains(out, "revision "+short(rev)+" applied") {
		t.Fatalf("--wait %s: exit %d\n%s%s", prefix, code, out, errs)
	}
	code, _, errs = runCLI(t, "status", "--server", d.url, "--wait", "deadbeef", "--timeout", "1h")
	if code != exitError || !strings.Contains(errs, "--wait deadbeef: the daemon does not have this revision") || strings.Contains(errs, "within") {
		t.Fatalf("--wait of an unknown revision: exit %d: %s", code, errs)
	}

	// A revision that does not validate: its error is in the status
	// before the wait begins.
	if err := os.WriteFile(filepath.Join(d.dir, "bad.yaml"), []byte("apiVersion: anneal.dev/v1alpha1\nkind: Frob\nname: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.r.ReconcileOnce(context.Background())
	st := d.r.Status()
	if st.LastErrorClass != reconcile.FailInvalid || st.LastAttemptedRevision == rev {
		t.Fatalf("the bad revision did not fail as invalid: %+v", st)
	}
	bad := st.LastAttemptedRevision
	var reconciled atomic.Bool
	hook := func(n int64) {
		// The wait's third status request (its second poll, after its
		// look at the status as it starts and a first poll that must not
		// end it): a reconcile runs before it is answered, as the
		// daemon's next pass would.
		if n == 3 {
			d.r.ReconcileOnce(context.Background())
			reconciled.Store(true)
		}
	}
	d.statuses.Store(0)
	d.onStatus.Store(&hook)
	code, out, errs = runCLI(t, "status", "--server", d.url, "--wait", bad, "--timeout", "1h")
	d.onStatus.Store(nil)
	if code != exitError || !strings.Contains(errs, "revision "+short(bad)+": ") {
		t.Fatalf("--wait of an invalid revision: exit %d\n%s%s", code, out, errs)
	}
	if !reconciled.Load() {
		t.Fatalf("the wait ended on the failure it found as it began, before any new reconcile:\n%s", errs)
	}
}

// TestStatusWaitStaleHalt: right after nodes retry, the status still holds
// the halted rollout, and the pass under way as the wait began (planned
// before the retry) halts again without starting anything: neither ends
// the wait. A rollout seen to move, or a later pass, does. The daemon is
// a test server answering a scripted sequence of statuses (a halt is a
// rollout of real nodes, which the lab tests drive).
func TestStatusWaitStaleHalt(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	halted := func(reconciles int, running bool, msg string) reconcile.Status {
		st := reconcile.Status{LastGoodRevision: rev, LastAttemptedRevision: rev, AppliedRevision: "older", Reconciles: reconciles,
			Rollout: &reconcile.RolloutStatus{Revision: rev, Running: running, Total: 3}}
		if !running {
			st.Rollout.Halted = msg
			st.LastError, st.LastErrorClass = "rollout halted ("+msg+")", reconcile.FailApply
		}
		return st
	}
	applied := reconcile.Status{LastGoodRevision: rev, LastAttemptedRevision: rev, AppliedRevision: rev, Reconciles: 8,
		Rollout: &reconcile.RolloutStatus{Revision: rev, Done: 3, Total: 3}}
	tests := []struct {
		name     string
		statuses []reconcile.Status // the first is the wait's look as it begins
		code     int
		want     string
	}{
		{"the pass under way halts again, the next applies", []reconcile.Status{halted(5, false, "canary e1n01 failed"), halted(6, false, "canary e1n01 failed"), applied},
			exitOK, "applied"},
		{"the pass under way halts again, the next halts too", []reconcile.Status{halted(5, false, "canary e1n01 failed"), halted(6, false, "canary e1n01 failed"), halted(7, false, "canary e1n01 failed")},
			exitError, "rollout halted (canary e1n01 failed)"},
		{"the rollout runs again and halts", []reconcile.Status{halted(5, false, "canary e1n01 failed"), halted(5, true, ""), halted(6, false, "canary e1n01 failed")},
			exitError, "rollout halted (canary e1n01 failed)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int64
			mux := http.NewServeMux()
			mux.HandleFunc("GET /api/v1/revisions/{rev}", func(w http.ResponseWriter, _ *http.Request) {
				_ = json.NewEncoder(w).Encode(map[string]string{"revision": rev})
			})
			mux.HandleFunc("GET /api/v1/nodes", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("[]")) })
			mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, _ *http.Request) {
				i := min(int(n.Add(1))-1, len(tc.statuses)-1)
				_ = json.NewEncoder(w).Encode(tc.statuses[i])
			})
			mux.HandleFunc("GET /api/v1/drift", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("{}")) })
			srv := httptest.NewServer(mux)
			defer srv.Close()
			code, out, errs := runCLI(t, "status", "--server", srv.URL, "--wait", rev[:8], "--timeout", "1h")
			if code != tc.code || !strings.Contains(out+errs, tc.want) {
				t.Fatalf("exit %d (want %d)\n%s%s", code, tc.code, out, errs)
			}
			if got := int(n.Load()); got < len(tc.statuses) {
				t.Fatalf("the wait ended after %d statuses, before the last of %d", got, len(tc.statuses))
			}
		})
	}
}

// TestStatusWaitUnreachable: --wait right after serve was started (make
// demo does so) waits for the daemon to listen, within --timeout, instead
// of failing at once on "connection refused"; other errors end it at once.
func TestStatusWaitUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	code, _, errs := runCLI(t, "status", "--server", closed, "--wait", "abc123", "--timeout", "300ms")
	if code != exitError || !strings.Contains(errs, "the daemon did not answer within 300ms") || !strings.Contains(errs, "connection refused") {
		t.Fatalf("--wait with no daemon listening: exit %d: %s", code, errs)
	}

	// The helper itself: refused, refused, then an answer; or another error.
	refused := apiCall(context.Background(), &apiFlags{server: closed}, http.MethodGet, "/api/v1/status", "", nil)
	if !errors.Is(refused, syscall.ECONNREFUSED) {
		t.Fatalf("a closed port: %v, want connection refused", refused)
	}
	other := errors.New("403 forbidden")
	tests := []struct {
		name    string
		results []error
		calls   int
		want    error
	}{
		{"answers at once", []error{nil}, 1, nil},
		{"starting, then answers", []error{refused, refused, nil}, 3, nil},
		{"starting, then refuses the request", []error{refused, other}, 2, other},
		{"another error ends it at once", []error{other, nil}, 1, other},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := 0
			err := untilReachable(context.Background(), time.Now().Add(time.Hour), time.Hour, func() error {
				n++
				return tc.results[n-1]
			})
			if n != tc.calls || !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("%d calls, %v; want %d calls, %v", n, err, tc.calls, tc.want)
			}
		})
	}
}
