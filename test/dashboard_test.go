package test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/anneal-dev/anneal/internal/testenv"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/schema"
)

// browserLog collects what the page says that a clean dashboard must not:
// console errors and warnings, uncaught exceptions, browser log entries
// (CSP violations, failed requests), and every URL it requests.
type browserLog struct {
	mu       sync.Mutex
	problems []string
	urls     []string
	// expected says whether a failed request is one the test provoked.
	expected func(url string) bool
}

func (b *browserLog) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			b.problems = append(b.problems, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
		}
	case *runtime.EventExceptionThrown:
		b.problems = append(b.problems, "exception: "+(&chromedp.ExceptionError{ExceptionDetails: ev.ExceptionDetails}).Error())
	case *log.EventEntryAdded:
		e := ev.Entry
		if e.Level != log.EntryLevelError && e.Level != log.EntryLevelWarning {
			return
		}
		if e.Source == log.EntrySourceNetwork && b.expected != nil && b.expected(e.URL) {
			return
		}
		b.problems = append(b.problems, fmt.Sprintf("log %s %s: %s (%s)", e.Source, e.Level, e.Text, e.URL))
	case *network.EventRequestWillBeSent:
		b.urls = append(b.urls, ev.Request.URL)
	}
}

func (b *browserLog) take() (problems, urls []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	problems, urls = b.problems, b.urls
	b.problems = nil
	return problems, urls
}

// startBrowser runs headless Chromium for the test: no sandbox (CI
// containers), no GPU, a throwaway profile, and every host name but
// loopback unresolvable.
func startBrowser(t *testing.T, blog *browserLog) context.Context {
	t.Helper()
	path := testenv.LookPath(t, "chromium", "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1400, 1000),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Listen(ctx, blog.listen); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// dashStatus is the part of the status the dashboard test reads.
type dashStatus struct {
	serveStatus
	PendingApproval *reconcile.Approval `json:"pendingApproval"`
	Approved        *reconcile.Approval `json:"approved"`
	Rollout         *struct {
		Revision string `json:"revision"`
		Running  bool   `json:"running"`
	} `json:"rollout"`
}

// TestDashboard drives the dashboard in a real headless Chromium against
// serve and the lab: the page loads with no console error and no CSP
// violation, lists every node, shows a rollout while it runs, and an
// approval works only with the token, which never appears in a URL.
func TestDashboard(t *testing.T) {
	blog := &browserLog{}
	bctx := startBrowser(t, blog)

	site, _, revA := labSite(t)
	loaded, _, err := schema.LoadDir(context.Background(), site, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	boot := freeAddr(t)
	labDir := t.TempDir()
	control := startLab(t, site, labDir, "http://"+boot)
	api, _, _ := startServeLogged(t, labEnv, "--repo", site, "--interval", "1s", "--state", filepath.Join(t.TempDir(), "state.db"),
		"--netboot-listen", boot, "--lab", labDir, "--install-timeout", "20s", "--token", "env:ANNEAL_API_TOKEN")
	status := func() dashStatus {
		var s dashStatus
		getJSON(t, api+"/api/v1/status", &s)
		return s
	}
	waitDash := func(what string, ok func(dashStatus) bool) dashStatus {
		t.Helper()
		var s dashStatus
		waitFor(t, what, func() bool { s = status(); return ok(s) })
		return s
	}
	// poll waits until the expression is truthy in the page.
	poll := func(what, expr string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 60*time.Second)
		defer cancel()
		if _, err := chromedp.Run(ctx, chromedp.Poll[any](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(60*time.Second))); err != nil {
			body, _ := chromedp.Run(bctx, chromedp.TextContent(chromedp.CSS("main")))
			t.Fatalf("waiting for %s in the dashboard: %v\npage text:\n%s", what, err, body)
		}
	}
	eval := func(expr string, v any) {
		t.Helper()
		res, err := chromedp.Run(bctx, chromedp.Evaluate[any](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		switch p := v.(type) {
		case *string:
			*p, _ = res.(string)
		case *bool:
			*p, _ = res.(bool)
		case *float64:
			*p, _ = res.(float64)
		}
	}
	text := func(id string) string {
		var s string
		eval(fmt.Sprintf("document.getElementById(%q).textContent", id), &s)
		return s
	}
	click := func(sel string) {
		t.Helper()
		if err := chromedp.Do(bctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
			t.Fatalf("click %s: %v", sel, err)
		}
	}
	// choose picks an option of a select as the operator does.
	choose := func(id, value string) {
		t.Helper()
		var ok bool
		eval(fmt.Sprintf(`(() => { const s = document.getElementById(%q); s.value = %q; s.dispatchEvent(new Event('change')); return s.value === %q; })()`, id, value, value), &ok)
		if !ok {
			t.Fatalf("select %s has no option %q", id, value)
		}
	}
	setToken := func(tok string) {
		t.Helper()
		if err := chromedp.Do(bctx, chromedp.SetValue(chromedp.CSS("#token"), tok), chromedp.Click(chromedp.CSS("#token-save"))); err != nil {
			t.Fatalf("enter the token: %v", err)
		}
	}

	// The headers: a strict CSP, no framing, no sniffing.
	resp, err := http.Get(api + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for h, want := range map[string]string{
		"Content-Security-Policy": "default-src 'self'", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
	} {
		if got := resp.Header.Get(h); !strings.Contains(got, want) {
			t.Errorf("GET /: %s = %q, want it to contain %q", h, got, want)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("GET /: Content-Security-Policy %q", csp)
	}

	// A: the first converge. The page lists every node, verified.
	waitDash("revision A applied", func(s dashStatus) bool { return s.AppliedRevision == revA })
	if err := chromedp.Do(bctx, chromedp.Navigate(api+"/")); err != nil {
		t.Fatal(err)
	}
	poll("every node listed", fmt.Sprintf("document.querySelectorAll('#nodes-body tr.node').length === %d", len(loaded.Nodes)))
	poll("the applied revision", fmt.Sprintf("document.getElementById('rev-applied').textContent === %q", revA[:12]))
	var n float64
	eval(`document.querySelectorAll('#nodes-body tr.node td.state-verified').length`, &n)
	active := 0
	for _, nd := range loaded.Nodes {
		if nd.State == schema.StateActive {
			active++
		}
	}
	if int(n) != active {
		t.Errorf("%v nodes shown verified, want the %d active ones", n, active)
	}
	var disabled bool
	eval(`document.getElementById('act-suspend').disabled && document.getElementById('approve').disabled`, &disabled)
	if !disabled {
		t.Error("the action buttons are enabled without a token")
	}
	// Filtered server-side: rack e1 only.
	poll("the rack filter", `document.querySelector('#f-rack option[value="e1"]') !== null`)
	choose("f-rack", "e1")
	poll("rack e1's nodes only", `(() => { const r = [...document.querySelectorAll('#nodes-body tr.node')]; return r.length > 0 && r.every(tr => tr.dataset.node.startsWith('e1')); })()`)
	choose("f-rack", "")
	poll("every node listed again", fmt.Sprintf("document.querySelectorAll('#nodes-body tr.node').length === %d", len(loaded.Nodes)))

	// B: rack e1 to a new patch set. The canary stays in firmware for 5 s
	// (a lab fault), so the rollout runs while the page refreshes.
	send(t, http.MethodPut, control+"/lab/v1/faults", "", `{"nodeBootDelay": {"e1n01": "5s"}}`)
	edit(t, site, "nodes/east-e1.yaml", setPatchSet("2026-12"))
	git(t, site, "commit", "-q", "-am", "B: rack e1 to 2026-12")
	revB := git(t, site, "rev-parse", "HEAD")
	poll("B's rollout running", fmt.Sprintf(`(() => { const s = document.getElementById('rollout-summary').textContent;
		return s.includes(%q) && s.includes('running') && !document.getElementById('rollout-progress').hidden; })()`, revB[:12]))
	poll("a node provisioning", `[...document.querySelectorAll('#nodes-body td')].some(td => td.textContent.startsWith('provisioning'))`)
	waitDash("revision B applied", func(s dashStatus) bool { return s.AppliedRevision == revB })
	poll("B's rollout finished", fmt.Sprintf(`(() => { const s = document.getElementById('rollout-summary').textContent;
		return s.includes(%q) && /finished, (\d+) of \1 nodes done/.test(s); })()`, revB[:12]))

	// C: rack e2 leaves the site, more than maxRemovePercent: the plan
	// awaits approval, and the page shows it with its guard.
	git(t, site, "rm", "-q", "nodes/east-e2.yaml")
	git(t, site, "commit", "-q", "-m", "C: rack e2 leaves the site")
	revC := git(t, site, "rev-parse", "HEAD")
	pending := waitDash("C awaits approval", func(s dashStatus) bool { return s.PendingApproval != nil && s.PendingApproval.Revision == revC })
	poll("the pending approval", fmt.Sprintf(`!document.getElementById('approval-pending').hidden && document.getElementById('approval-revision').textContent === %q`, revC[:12]))
	poll("the guarded plan", `document.getElementById('plan-text').textContent.includes('guarded (')`)
	if got := text("plan-head"); !strings.Contains(got, "awaits approval of revision "+revC[:12]) {
		t.Errorf("plan head %q does not say it awaits C's approval", got)
	}
	// The history: C's row, awaiting approval, and the recent events.
	poll("the history", fmt.Sprintf(`[...document.querySelectorAll('#history-body tr')].some(tr => tr.textContent.includes(%q) && tr.textContent.includes('awaiting-approval'))`, revC[:12]))
	poll("the recent events", `document.querySelectorAll('#events li').length > 0`)
	if path := os.Getenv("ANNEAL_SCREENSHOT"); path != "" {
		shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}

	// Without a token the button is disabled; with a wrong one the API
	// refuses it and the page says so; nothing is approved.
	eval(`document.getElementById('approve').disabled`, &disabled)
	if !disabled {
		t.Error("approve is enabled without a token")
	}
	blog.mu.Lock()
	blog.expected = func(u string) bool { return strings.HasSuffix(u, "/api/v1/approve") }
	blog.mu.Unlock()
	setToken("not-the-token")
	poll("approve enabled with a token", `!document.getElementById('approve').disabled`)
	click("#approve")
	poll("the refusal", `document.getElementById('message').textContent.includes('403')`)
	if s := status(); s.PendingApproval == nil || s.Approved != nil {
		t.Fatalf("a wrong token changed the approval: %+v", s)
	}
	click("#token-forget")
	poll("approve disabled again", `document.getElementById('approve').disabled`)

	// The right token approves C.
	setToken("lab-api-token")
	poll("approve enabled", `!document.getElementById('approve').disabled`)
	click("#approve")
	st := waitDash("C approved", func(s dashStatus) bool { return s.Approved != nil && s.Approved.Revision == revC })
	if st.Approved.PlanDigest != pending.PendingApproval.PlanDigest {
		t.Errorf("approved plan %s, want the pending one %s", st.Approved.PlanDigest, pending.PendingApproval.PlanDigest)
	}
	poll("the approval shown", fmt.Sprintf(`document.getElementById('approval-last').textContent.includes(%q)`, revC[:12]))
	// Suspend and resume from the page.
	click("#act-suspend")
	poll("the suspended badge", `!document.getElementById('suspended').hidden`)
	if !status().Suspended {
		t.Error("the daemon is not suspended after the page's Suspend")
	}
	click("#act-resume")
	poll("the suspended badge gone", `document.getElementById('suspended').hidden`)
	if status().Suspended {
		t.Error("the daemon is still suspended after the page's Resume")
	}
	var stored string
	eval(`sessionStorage.getItem('anneal.token') + '|' + localStorage.length + '|' + location.href`, &stored)
	if want := "lab-api-token|0|" + api + "/"; stored != want {
		t.Errorf("token storage and location: %q, want %q", stored, want)
	}

	// The page's own check: an inline script is refused by the CSP, and
	// the listener sees it (so it would see any other violation).
	if err := chromedp.Do(bctx, chromedp.Evaluate[chromedp.Void](`document.body.append(Object.assign(document.createElement('script'), {textContent: 'window.injected = 1'}))`)); err != nil {
		t.Fatal(err)
	}
	var injected bool
	eval(`window.injected === 1`, &injected)
	if injected {
		t.Error("an inline script ran despite the CSP")
	}
	waitFor(t, "the CSP violation reported", func() bool {
		blog.mu.Lock()
		defer blog.mu.Unlock()
		return slices.ContainsFunc(blog.problems, func(p string) bool { return strings.Contains(p, "Content Security Policy") })
	})
	problems, urls := blog.take()
	var csp, others []string
	for _, p := range problems {
		if strings.Contains(p, "Content Security Policy") && strings.Contains(p, "inline script") {
			csp = append(csp, p)
		} else {
			others = append(others, p)
		}
	}
	if len(csp) == 0 {
		t.Error("the injected inline script's CSP violation was not seen: the console check cannot work")
	}
	for _, p := range others {
		t.Errorf("browser: %s", p)
	}
	for _, u := range urls {
		p, err := url.Parse(u)
		if err != nil || p.Hostname() != "127.0.0.1" || strings.Contains(u, "lab-api-token") {
			t.Errorf("the page requested %q: only the daemon's loopback address, never the token in a URL", u)
		}
	}
}
