package dashboard

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/anneal-dev/anneal/internal/sitetest"
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

	ctx := browser(t, chromium)
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

// browser starts a headless Chromium for the test (no sandbox, no GPU, a
// throwaway profile, only loopback resolvable) and returns its tab.
func browser(t *testing.T, chromium string) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.UserDataDir(t.TempDir()), chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

// TestBrowserLargeFleet: a 1,000-node site is shown a page at a time,
// paged and filtered on the server.
func TestBrowserLargeFleet(t *testing.T) {
	chromium := testenv.LookPath(t, "chromium", "chromium")
	site := sitetest.Generated(t, 1000)
	st := reconcile.Status{Mode: reconcile.ModeConverge}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, st) })
	mux.Handle("/", New(Config{Reconciler: fixed{st: st, site: site}}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx := browser(t, chromium)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	wait := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('fleet').innerText`))
			t.Fatalf("waiting for %s: %v\n%s", what, err, text)
		}
	}
	rows := `document.querySelectorAll('#nodes-body tr.node')`
	wait("the first page", `document.getElementById('fleet-count').textContent === '1000 of 1000 nodes' && `+rows+`.length === 100 &&
		document.getElementById('page-info').textContent === 'page 1 of 10'`)
	first, err := chromedp.Run(ctx, chromedp.Evaluate[string](rows+`[0].dataset.node`))
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#page-next"))); err != nil {
		t.Fatal(err)
	}
	wait("the second page", `document.getElementById('page-info').textContent === 'page 2 of 10' && `+rows+`.length === 100 && `+rows+`[0].dataset.node !== '`+first+`'`)
	region := site.Nodes[0].Region
	n := 0
	for _, nd := range site.Nodes {
		if nd.Region == region {
			n++
		}
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { const s = document.getElementById('f-region'); s.value = '`+region+`'; s.dispatchEvent(new Event('change')); return s.value === '`+region+`'; })()`)); err != nil {
		t.Fatal(err)
	}
	wait("the region's nodes", fmt.Sprintf(`document.getElementById('fleet-count').textContent === '%d of 1000 nodes' && document.getElementById('page-info').textContent === 'page 1 of %d'`, n, (n+99)/100))
}
