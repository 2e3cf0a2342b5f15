package dashboard

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/anneal-dev/anneal/internal/testenv"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/events"
	"github.com/anneal-dev/anneal/reconcile/rollout"
)

// TestBrowserShowsMarkupAsText: strings from the site (reasons, the plan)
// that hold markup are shown as text in a real browser; none becomes an
// element or runs.
func TestBrowserShowsMarkupAsText(t *testing.T) {
	chromium := testenv.LookPath(t, "chromium", "chromium")
	const evil = `<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>`
	site := exampleSite(t)
	plan := &reconcile.Plan{Site: "lab1", DNS: &dns.Plan{}, Digest: "0123456789abcdef",
		Rebuilds: &rollout.RebuildPlan{Held: []rollout.HeldNode{{Node: "e1n01", Reason: evil}}},
		Guards:   []reconcile.Guard{{Kind: reconcile.GuardMassRemove, Reason: evil}}}
	st := reconcile.Status{Mode: reconcile.ModeConverge, LastError: evil,
		PendingApproval: &reconcile.Approval{Revision: "abc", PlanDigest: plan.Digest, Reasons: []string{evil}},
		Rollout:         &reconcile.RolloutStatus{Revision: "abc", Running: true, Done: 1, Total: 3, Result: rollout.Result{Failed: map[string]string{"e1n02": evil}}}}
	// The API's status route, as api.New serves it, beside the dashboard.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, st) })
	// The history endpoints' contract: revisions newest first, events
	// oldest first; a commit's summary is the site author's text.
	mux.HandleFunc("GET /api/v1/history", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, []map[string]any{
			{"revision": "abc", "summary": evil, "seen": "2026-01-02T03:04:05Z", "outcome": "awaiting-approval", "counts": map[string]int{"decommissions": 5}},
			{"revision": "def", "summary": "B", "seen": "2026-01-02T03:00:00Z", "applied": "2026-01-02T03:01:00Z", "outcome": "applied"},
		})
	})
	mux.HandleFunc("GET /api/v1/events", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, []events.Event{
			{Seq: 1, Kind: events.RevisionSeen, Revision: "abc", Message: evil},
			{Seq: 2, Kind: events.NodeStep, Node: "e1n02", Step: "install", Message: "install failed", Error: evil},
		})
	})
	mux.Handle("/", New(Config{Reconciler: fixed{st: st, plan: plan, site: site}}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()), chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	shown, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelectorAll('#nodes-body tr.node').length === 14 &&
		document.querySelectorAll('#history-body tr').length === 2 && document.querySelectorAll('#events li').length === 2 &&
		document.getElementById('plan-text').textContent.includes('guarded (mass-remove)') &&
		!document.getElementById('approval-pending').hidden`, chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil || !shown {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("the page did not fill: %v\n%s", err, text)
	}
	res, err := chromedp.Run(ctx, chromedp.Evaluate[[]any](`[document.querySelectorAll('main img, main script').length, String(window.pwned),
		['rev-error', 'approval-reasons', 'rollout-detail', 'plan-text', 'nodes-body', 'history-body', 'events'].map(id => document.getElementById(id).textContent.includes('<img src=x')).join()]`))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || res[0] != float64(0) || res[1] != "undefined" || res[2] != strings.Repeat("true,", 6)+"true" {
		t.Errorf("markup from the site: [elements made, window.pwned, shown as text in each part] = %v, want [0 undefined true,...]", res)
	}
}
