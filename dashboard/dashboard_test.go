package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/rollout"
	"github.com/anneal-dev/anneal/schema"
)

// fixed is a reconciler frozen at one status, plan and site.
type fixed struct {
	st   reconcile.Status
	plan *reconcile.Plan
	site *schema.Site
}

func (f fixed) Status() reconcile.Status  { return f.st }
func (f fixed) LastPlan() *reconcile.Plan { return f.plan }
func (f fixed) Site() *schema.Site        { return f.site }

func exampleSite(t *testing.T) *schema.Site {
	t.Helper()
	s, _, err := schema.LoadDir(context.Background(), "../examples/site-repo", schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func get(t *testing.T, h http.Handler, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

func TestRoutes(t *testing.T) {
	site := exampleSite(t)
	plan := &reconcile.Plan{Site: "lab1", DNS: &dns.Plan{}, Digest: "0123456789abcdef0123",
		Rebuilds: &rollout.RebuildPlan{Rebuilds: []rollout.NodeRebuild{{Node: "e1n01", Region: "east", Rack: "e1", To: "b2", Reasons: []node.RebuildReason{"patchSet"}, Canary: true}}},
		Guards:   []reconcile.Guard{{Kind: reconcile.GuardDNSMassDelete, Reason: "<script>alert(1)</script>"}}}
	st := reconcile.Status{Mode: reconcile.ModeConverge, PendingApproval: &reconcile.Approval{Revision: "abc", PlanDigest: plan.Digest}}
	h := New(Config{Reconciler: fixed{st: st, plan: plan, site: site}})
	for _, tc := range []struct {
		path, contentType string
		code              int
		contains          []string
	}{
		{"/", "text/html", 200, []string{`<script src="/ui/static/app.js" defer></script>`, "anneal · lab1"}},
		{"/ui/static/app.js", "javascript", 200, []string{"textContent"}},
		{"/ui/static/app.css", "text/css", 200, nil},
		{"/ui/static/nothing.js", "", 404, nil},
		{"/ui/static/", "", 404, nil},
		{"/ui/static/favicon.svg", "image/svg+xml", 200, []string{"<svg"}},
		{"/ui/api/nodes", "application/json", 200, []string{`"total":14`, `"e1n01"`, `rebuild: patchSet (canary)`}},
		{"/ui/api/nodes?page=0", "application/json", 400, []string{"page must be a number from 1"}},
		{"/ui/api/nodes?per=100000", "application/json", 400, []string{"per must be"}},
		{"/ui/api/plan", "application/json", 200, []string{`"pending":true`, `~ rebuild e1n01 (canary) [east/e1]: never built → b2: patchSet`, `\u003cscript\u003e`}},
		{"/nothing", "", 404, nil},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res, body := get(t, h, tc.path)
			if res.StatusCode != tc.code {
				t.Fatalf("%d %s, want %d", res.StatusCode, body, tc.code)
			}
			if ct := res.Header.Get("Content-Type"); !strings.Contains(ct, tc.contentType) {
				t.Errorf("Content-Type %q, want %q", ct, tc.contentType)
			}
			for h, want := range map[string]string{"Content-Security-Policy": "default-src 'self'; script-src 'self'", "X-Content-Type-Options": "nosniff",
				"Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"} {
				if got := res.Header.Get(h); !strings.Contains(got, want) {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
			for _, s := range tc.contains {
				if !strings.Contains(body, s) {
					t.Errorf("body does not contain %q:\n%s", s, body)
				}
			}
		})
	}
}

// TestPageEscapes: the site's name is text in the page, never markup.
func TestPageEscapes(t *testing.T) {
	site := exampleSite(t)
	site.Config.Meta.Name = `x"><script>alert(1)</script>`
	_, body := get(t, New(Config{Reconciler: fixed{site: site}}), "/")
	if strings.Contains(body, "<script>alert") || !strings.Contains(body, "&lt;script&gt;") {
		t.Errorf("the site name is not escaped:\n%s", body)
	}
}

func TestNodesBeforeFirstRevision(t *testing.T) {
	res, body := get(t, New(Config{Reconciler: fixed{}}), "/ui/api/nodes")
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "no valid revision") {
		t.Errorf("%d %s", res.StatusCode, body)
	}
	res, body = get(t, New(Config{Reconciler: fixed{}}), "/ui/api/plan")
	if res.StatusCode != 200 || !strings.Contains(body, `"available":false`) {
		t.Errorf("%d %s", res.StatusCode, body)
	}
}

// TestPage pages and filters a 1,000-node fleet.
func TestPage(t *testing.T) {
	var rows []Row
	for i := range 1000 {
		r := Row{Name: fmt.Sprintf("n%04d", i), Region: []string{"east", "west"}[i%2], Rack: fmt.Sprintf("r%02d", i%20), State: "active", Live: "verified", UpToDate: true}
		if i%100 == 0 {
			r.Live, r.UpToDate, r.Drift = "failed", false, "install failed"
		}
		rows = append(rows, r)
	}
	for _, tc := range []struct {
		name                   string
		f                      Filter
		matched, pages, page   int
		first                  string
		shown                  int
		failed, drift, regions int
	}{
		{"first page", Filter{Page: 1, PerPage: 100}, 1000, 10, 1, "n0000", 100, 10, 10, 2},
		{"last page", Filter{Page: 10, PerPage: 100}, 1000, 10, 10, "n0900", 100, 10, 10, 2},
		{"past the end", Filter{Page: 99, PerPage: 100}, 1000, 10, 10, "n0900", 100, 10, 10, 2},
		{"a region", Filter{Region: "west", Page: 1, PerPage: 500}, 500, 1, 1, "n0001", 500, 10, 10, 2},
		{"a rack", Filter{Region: "east", Rack: "r02", Page: 1, PerPage: 100}, 50, 1, 1, "n0002", 50, 10, 10, 2},
		{"failed", Filter{State: "failed", Page: 1, PerPage: 100}, 10, 1, 1, "n0000", 10, 10, 10, 2},
		{"drift", Filter{State: "drift", Page: 2, PerPage: 5}, 10, 2, 2, "n0500", 5, 10, 10, 2},
		{"name", Filter{Query: "N099", Page: 1, PerPage: 100}, 10, 1, 1, "n0990", 10, 10, 10, 2},
		{"nothing", Filter{Query: "zz", Page: 3, PerPage: 100}, 0, 1, 1, "", 0, 10, 10, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.f.Query = strings.ToLower(tc.f.Query)
			p := Page(rows, tc.f)
			first := ""
			if len(p.Nodes) > 0 {
				first = p.Nodes[0].Name
			}
			if p.Total != 1000 || p.Matched != tc.matched || p.Pages != tc.pages || p.Page != tc.page || len(p.Nodes) != tc.shown || first != tc.first ||
				p.States["failed"] != tc.failed || p.States["drift"] != tc.drift || len(p.Regions) != tc.regions || len(p.Regions["east"]) != 10 {
				t.Errorf("total %d matched %d pages %d page %d shown %d first %q failed %d drift %d regions %v",
					p.Total, p.Matched, p.Pages, p.Page, len(p.Nodes), first, p.States["failed"], p.States["drift"], p.Regions)
			}
			if _, err := json.Marshal(p); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRenderPlan renders plans as anneal plan prints them: one without a
// DNS layer too; pending only when the approval names this plan.
func TestRenderPlan(t *testing.T) {
	pending := reconcile.Status{PendingApproval: &reconcile.Approval{Revision: "r1", PlanDigest: "d1"}}
	for _, tc := range []struct {
		name   string
		plan   *reconcile.Plan
		st     reconcile.Status
		want   PlanView
		inText string
	}{
		{"none", nil, pending, PlanView{}, ""},
		{"no DNS layer", &reconcile.Plan{Site: "s", Digest: "d1"}, pending, PlanView{Available: true, Site: "s", Digest: "d1", Pending: true, Revision: "r1"}, `No changes: the live DNS matches site "s" on 0 targets.`},
		{"another plan", &reconcile.Plan{Site: "s", Digest: "d2", DNS: &dns.Plan{}}, pending, PlanView{Available: true, Site: "s", Digest: "d2"}, "No changes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := RenderPlan(tc.plan, tc.st)
			text := got.Text
			got.Text = ""
			if got != tc.want || !strings.Contains(text, tc.inText) {
				t.Errorf("RenderPlan = %+v %q, want %+v with %q", got, text, tc.want, tc.inText)
			}
		})
	}
}
