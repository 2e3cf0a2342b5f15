// Package dashboard is anneal serve's web UI at /: the fleet by region and
// rack (each node's state, desired and running build, drift reason, last
// report), the applied and pending revisions with the plan as anneal plan
// renders it, the rollout's progress, pending approvals and the history.
//
// The page is a template and a script embedded in the binary (no build
// step, nothing fetched from elsewhere). The script reads the daemon's
// JSON: the API's status and actions (/api/v1/...) and the dashboard's own
// paged node list and rendered plan (/ui/api/...). It is read-only
// without the API token; the operator's actions (approve, retry, suspend,
// resume, reconcile) are the API's token-guarded routes, called with the
// token the operator types in, which the page keeps in sessionStorage.
// Every response carries a strict Content-Security-Policy: site data
// (node names, reasons, plans) is text, never markup or script.
package dashboard

import (
	"bytes"
	"cmp"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/api"
	"github.com/anneal-dev/anneal/internal/planview"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// Reconciler is what the dashboard reads of the reconcile loop;
// *reconcile.Reconciler implements it.
type Reconciler interface {
	Status() reconcile.Status
	LastPlan() *reconcile.Plan
	Site() *schema.Site
}

// Config is what New wires.
type Config struct {
	// Reconciler is the loop shown (required).
	Reconciler Reconciler
	// Nodes, when set (rebuilds enabled), add each node's live state.
	Nodes api.NodeRecords
	// Log logs what fails while serving; nil: not logged.
	Log *slog.Logger
}

//go:embed static
var static embed.FS

//go:embed page.html
var pageHTML string

var page = template.Must(template.New("page").Parse(pageHTML))

// Paging of the node list.
const (
	DefaultPerPage = 100
	MaxPerPage     = 500
)

// New returns the dashboard's handler:
//
//	GET /                the page
//	GET /ui/static/FILE  its script and style sheet
//	GET /ui/api/nodes    a page of the fleet: ?region=&rack=&state=&q=&page=&per=
//	GET /ui/api/plan     the last plan, rendered as anneal plan prints it
//
// Mount it at "GET /{$}" and "/ui/" beside the API.
func New(cfg Config) http.Handler {
	d := &dashboard{cfg: cfg}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.page)
	files := http.StripPrefix("/ui/", http.FileServerFS(static)) // /ui/static/F is static/F
	mux.HandleFunc("GET /ui/static/{file}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("file") == "" { // no directory listing
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})
	mux.HandleFunc("GET /ui/api/nodes", d.nodes)
	mux.HandleFunc("GET /ui/api/plan", d.plan)
	return secure(mux)
}

// csp allows only the dashboard's own script, style and requests, and no
// framing.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// secure adds the security headers to every response.
func secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

type dashboard struct{ cfg Config }

func (d *dashboard) page(w http.ResponseWriter, r *http.Request) {
	name := ""
	if s := d.cfg.Reconciler.Site(); s != nil && s.Config != nil {
		name = s.Config.Meta.Name
	}
	st := d.cfg.Reconciler.Status()
	var buf bytes.Buffer
	if err := page.Execute(&buf, struct {
		Site string
		Mode string
	}{name, string(st.Mode)}); err != nil {
		d.fail(w, http.StatusInternalServerError, fmt.Errorf("dashboard page: %w", err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

// Row is one node of the fleet as the dashboard lists it.
type Row struct {
	Name   string `json:"name"`
	Region string `json:"region"`
	Rack   string `json:"rack"`
	// State is the declared state (active, maintenance, decommissioned,
	// removed); Live the node's lifecycle state ("" when unknown).
	State string `json:"state"`
	Live  string `json:"live,omitempty"`
	// Desired is the build the site declares, Running the build the node
	// runs (as last verified or reported), Target the one it installs.
	Desired  string `json:"desired,omitempty"`
	Running  string `json:"running,omitempty"`
	Target   string `json:"target,omitempty"`
	UpToDate bool   `json:"upToDate"`
	// Drift says why the node is not as declared: the plan's rebuild
	// reasons, a hold, a decommission, firmware, or its failure.
	Drift string `json:"drift,omitempty"`
	// LastReport is when the node last reported its facts; Since when it
	// entered its live state.
	LastReport time.Time `json:"lastReport,omitzero"`
	Since      time.Time `json:"since,omitzero"`
	// Deploy is the installer's progress while it installs.
	Deploy string `json:"deploy,omitempty"`
}

// NodePage is a page of the fleet, with what the filters can choose.
type NodePage struct {
	// Total counts every node, Matched those the filters keep.
	Total   int `json:"total"`
	Matched int `json:"matched"`
	Page    int `json:"page"`
	Pages   int `json:"pages"`
	PerPage int `json:"perPage"`
	// Regions maps each region to its racks, sorted.
	Regions map[string][]string `json:"regions"`
	// States counts the nodes in each state (live state, or the declared
	// one when unknown), plus "drift": those not as declared.
	States map[string]int `json:"states"`
	Nodes  []Row          `json:"nodes"`
}

// Filter is a node list query: the region, rack and state (a live or
// declared state, or "drift") to keep ("" keeps all), a part of the name
// (lower case), and which page of how many nodes.
type Filter struct {
	Region, Rack, State, Query string
	Page, PerPage              int
}

func parseFilter(r *http.Request) (Filter, error) {
	q := r.URL.Query()
	f := Filter{Region: q.Get("region"), Rack: q.Get("rack"), State: q.Get("state"), Query: strings.ToLower(q.Get("q")), Page: 1, PerPage: DefaultPerPage}
	for _, p := range []struct {
		name     string
		dst      *int
		min, max int
	}{{"page", &f.Page, 1, 1 << 20}, {"per", &f.PerPage, 1, MaxPerPage}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < p.min || n > p.max {
			return f, fmt.Errorf("%s must be a number from %d to %d, got %q", p.name, p.min, p.max, v)
		}
		*p.dst = n
	}
	for _, s := range []string{f.Region, f.Rack, f.State, f.Query} {
		if len(s) > 256 {
			return f, fmt.Errorf("a filter is over 256 bytes")
		}
	}
	return f, nil
}

func (d *dashboard) nodes(w http.ResponseWriter, r *http.Request) {
	f, err := parseFilter(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	s := d.cfg.Reconciler.Site()
	if s == nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no valid revision loaded yet"})
		return
	}
	var recs map[string]*node.Record
	if d.cfg.Nodes != nil {
		if recs, err = d.cfg.Nodes.NodeRecords(r.Context()); err != nil {
			d.fail(w, http.StatusInternalServerError, fmt.Errorf("node records: %w", err))
			return
		}
	}
	writeJSON(w, http.StatusOK, Page(Rows(api.NodeViews(s, recs), d.cfg.Reconciler.LastPlan()), f))
}

// Rows joins the nodes with the plan's drift: why each is not as
// declared. They are sorted by region, rack and name.
func Rows(views []api.NodeView, plan *reconcile.Plan) []Row {
	drift := map[string]string{}
	add := func(n, why string) {
		if drift[n] != "" {
			drift[n] += "; "
		}
		drift[n] += why
	}
	if plan != nil && plan.Rebuilds != nil {
		rp := plan.Rebuilds
		for _, rb := range rp.Rebuilds {
			why := "rebuild: " + planview.Reasons(rb.Reasons)
			if rb.Canary {
				why += " (canary)"
			}
			if len(rb.Drift) > 0 {
				why += "; live: " + strings.Join(rb.Drift, ", ")
			}
			add(rb.Node, why)
		}
		for _, h := range rp.Held {
			add(h.Node, "held: "+h.Reason)
		}
		for _, n := range rp.Decommission {
			add(n, "to decommission")
		}
		for _, fw := range rp.Firmware {
			add(fw.Node, fmt.Sprintf("firmware: BIOS %q BMC %q, profile wants BIOS %q BMC %q", fw.Found.BIOS, fw.Found.BMC, fw.Want.BIOS, fw.Want.BMC))
		}
	}
	rows := make([]Row, 0, len(views))
	for _, v := range views {
		row := Row{Name: v.Name, Region: v.Region, Rack: v.Rack, State: v.State, Desired: v.BuildID, Drift: drift[v.Name]}
		if l := v.Live; l != nil {
			row.Live, row.Running, row.Target, row.UpToDate = l.State, l.BuildID, l.Target, l.UpToDate
			row.LastReport, row.Since = l.FactsAt, l.Since
			if l.Reason != "" && row.Drift == "" && !l.UpToDate {
				row.Drift = l.Reason
			}
			if dp := l.Deploy; dp != nil {
				row.Deploy = deployText(dp)
			}
		}
		rows = append(rows, row)
	}
	slices.SortFunc(rows, func(a, b Row) int {
		return cmp.Or(cmp.Compare(a.Region, b.Region), cmp.Compare(a.Rack, b.Rack), cmp.Compare(a.Name, b.Name))
	})
	return rows
}

// deployText is the installer's progress: its phase, and bytes written
// of the total when known.
func deployText(dp *node.DeployProgress) string {
	switch {
	case dp.Total > 0:
		return fmt.Sprintf("%s %d%% (%d of %d bytes)", dp.Phase, dp.Bytes*100/dp.Total, dp.Bytes, dp.Total)
	case dp.Bytes > 0:
		return fmt.Sprintf("%s (%d bytes)", dp.Phase, dp.Bytes)
	}
	return dp.Phase
}

// stateOf is the state a node is counted and filtered under.
func stateOf(r Row) string { return cmp.Or(r.Live, r.State) }

// drifted says whether a node is not as declared.
func drifted(r Row) bool {
	return r.Drift != "" || r.State == string(schema.StateActive) && r.Live != "" && !r.UpToDate
}

// Page filters the rows and returns page f.Page of them (the last when
// there are fewer pages); f.PerPage must be positive.
func Page(rows []Row, f Filter) NodePage {
	p := NodePage{Total: len(rows), PerPage: f.PerPage, Regions: map[string][]string{}, States: map[string]int{}, Nodes: []Row{}}
	var kept []Row
	for _, r := range rows {
		if !slices.Contains(p.Regions[r.Region], r.Rack) {
			p.Regions[r.Region] = append(p.Regions[r.Region], r.Rack)
		}
		p.States[stateOf(r)]++
		if drifted(r) {
			p.States["drift"]++
		}
		switch {
		case f.Region != "" && r.Region != f.Region,
			f.Rack != "" && r.Rack != f.Rack,
			f.State == "drift" && !drifted(r),
			f.State != "" && f.State != "drift" && stateOf(r) != f.State,
			f.Query != "" && !strings.Contains(strings.ToLower(r.Name), f.Query):
			continue
		}
		kept = append(kept, r)
	}
	for _, racks := range p.Regions {
		slices.Sort(racks)
	}
	p.Matched = len(kept)
	per := max(1, f.PerPage)
	p.Pages = max(1, (len(kept)+per-1)/per)
	p.Page = min(max(1, f.Page), p.Pages)
	start := (p.Page - 1) * per
	p.Nodes = append(p.Nodes, kept[start:min(start+per, len(kept))]...)
	return p
}

// PlanView is the last plan as the dashboard shows it.
type PlanView struct {
	// Available is false before the first plan.
	Available bool   `json:"available"`
	Site      string `json:"site,omitempty"`
	Digest    string `json:"digest,omitempty"`
	// Pending: the plan awaits approval (of Revision).
	Pending  bool   `json:"pending"`
	Revision string `json:"revision,omitempty"`
	// Changes says whether it changes anything.
	Changes bool `json:"changes"`
	// Text is the plan as anneal plan prints it (plain, no colours).
	Text string `json:"text"`
}

func (d *dashboard) plan(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, RenderPlan(d.cfg.Reconciler.LastPlan(), d.cfg.Reconciler.Status()))
}

// RenderPlan renders the plan (nil before the first) for the status.
func RenderPlan(p *reconcile.Plan, st reconcile.Status) PlanView {
	if p == nil {
		return PlanView{}
	}
	v := PlanView{Available: true, Site: p.Site, Digest: p.Digest, Changes: p.HasChanges() || p.HasFailures()}
	if a := st.PendingApproval; a != nil && a.PlanDigest == p.Digest {
		v.Pending, v.Revision = true, a.Revision
	}
	var b strings.Builder
	if p.DNS == nil { // the renderer reads the DNS layer
		c := *p
		c.DNS = &dns.Plan{}
		p = &c
	}
	planview.Text(&b, p, false, planview.Palette{})
	v.Text = b.String()
	return v
}

func (d *dashboard) fail(w http.ResponseWriter, code int, err error) {
	if d.cfg.Log != nil {
		d.cfg.Log.Error("dashboard", "err", err)
	}
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// writeJSON answers code with v.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
