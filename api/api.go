// Package api is anneal serve's HTTP API: health and readiness, the
// reconciler's status, drift and nodes, the operator's actions (reconcile,
// suspend, resume, retry, revoke an agent's token, a state backup), the
// push webhook, the Prometheus metrics, and the history: events (listed or
// streamed) and revisions (events.go). It drives the reconcile loop
// through the Reconciler interface; cmd wires *reconcile.Reconciler.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MaxBody bounds the API's request bodies (the server's limit): the
// webhook's is the largest.
const MaxBody = maxWebhookBody

// Reconciler is what the API needs of the reconcile loop;
// *reconcile.Reconciler implements it.
type Reconciler interface {
	// Status is the current status.
	Status() reconcile.Status
	// LastPlan is the last computed plan (the drift), or nil.
	LastPlan() *reconcile.Plan
	// Site is the site being converged (the last good), or nil.
	Site() *schema.Site
	// Trigger asks for a reconcile now.
	Trigger()
	// SetSuspended suspends or resumes reconciling.
	SetSuspended(ctx context.Context, suspended bool) error
	// Retry lifts a node's failed rebuild.
	Retry(ctx context.Context, node string) error
	// RevokeAgent invalidates a node's agent token.
	RevokeAgent(ctx context.Context, node string) error
	// Approve approves the plan that awaits approval, named by its
	// revision and digest.
	Approve(ctx context.Context, revision, planDigest string) (*reconcile.Approval, error)
}

// NodeRecords lists the node records (node.Store has it).
type NodeRecords interface {
	NodeRecords(ctx context.Context) (map[string]*node.Record, error)
}

// Backup writes a consistent copy of the state store to w, calling sized
// with its length before the first byte.
type Backup func(ctx context.Context, w io.Writer, sized func(int64)) (int64, error)

// Config is what New wires.
type Config struct {
	// Reconciler is the loop the API reports on and acts on (required).
	Reconciler Reconciler
	// Metrics are served on /metrics and follow suspend and resume; nil
	// serves a new, empty set.
	Metrics *Metrics
	// Token is the bearer token of the mutating routes and the webhook's
	// HMAC key; empty disables them.
	Token string
	// Nodes, when set (rebuilds enabled), add each node's live state to
	// /api/v1/nodes.
	Nodes NodeRecords
	// Backup serves GET /api/v1/state/backup; nil answers 501.
	Backup Backup
	// Log logs a backup that fails after its header was sent; nil: not
	// logged.
	Log *slog.Logger
	// Events serves GET /api/v1/events and /api/v1/history; nil answers
	// 501. StreamsDone, when closed, ends the event streams (a shutdown
	// does not wait for its followers).
	Events      Events
	StreamsDone <-chan struct{}
	// Version and Revision are the daemon's build: the version is in
	// /api/v1/status, both in the metric anneal_build_info.
	Version, Revision string
}

// New returns the API's handler:
//
//	GET  /healthz, /readyz, /metrics
//	GET  /api/v1/status, /api/v1/drift, /api/v1/nodes, /api/v1/revisions/{rev}
//	POST /api/v1/reconcile, /api/v1/suspend, /api/v1/resume, /api/v1/approve,
//	     /api/v1/nodes/{node}/retry, /api/v1/nodes/{node}/revoke-agent (bearer token)
//	GET  /api/v1/state/backup (bearer token)
//	POST /api/v1/webhook (bearer token, or a body signed with it)
//	GET  /api/v1/events (?follow=1: server-sent events), /api/v1/history
func New(cfg Config) http.Handler {
	r, token := cfg.Reconciler, cfg.Token
	m := cfg.Metrics
	if m == nil {
		m = NewMetrics()
	}
	m.serve(r, cfg.Nodes) // the fleet's metrics, read at scrape time
	m.setBuildInfo(cfg.Version, cfg.Revision)
	mux := http.NewServeMux()
	authorized := func(w http.ResponseWriter, req *http.Request) bool {
		if !bearerOK(req, token) {
			writeJSON(w, http.StatusForbidden, forbidden(token))
			return false
		}
		return true
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if st := r.Status(); st.Reconciles == 0 {
			http.Error(w, "not ready: no reconcile has finished yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, _ *http.Request) { writeStatus(w, r, cfg) })
	mux.HandleFunc("GET /api/v1/revisions/{rev...}", handleRevision(r))
	mux.HandleFunc("GET /api/v1/drift", func(w http.ResponseWriter, _ *http.Request) {
		p := r.LastPlan()
		if p == nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no plan computed yet"})
			return
		}
		writeJSON(w, http.StatusOK, p)
	})
	mux.HandleFunc("GET /api/v1/nodes", func(w http.ResponseWriter, req *http.Request) {
		s := r.Site()
		if s == nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "no valid revision loaded yet"})
			return
		}
		var recs map[string]*node.Record
		if cfg.Nodes != nil {
			var err error
			if recs, err = cfg.Nodes.NodeRecords(req.Context()); err != nil {
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
				return
			}
		}
		views := NodeViews(s, recs)
		annotateDrift(views, r.LastPlan())
		writeJSON(w, http.StatusOK, views)
	})
	mux.HandleFunc("POST /api/v1/nodes/{node}/retry", func(w http.ResponseWriter, req *http.Request) {
		if !authorized(w, req) {
			return
		}
		if err := r.Retry(req.Context(), req.PathValue("node")); err != nil {
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "retry requested; reconcile triggered"})
	})
	// Revoke a node's agent token (leaked, or the node left anneal): its
	// reports are refused until its next install hands it a new one.
	mux.HandleFunc("POST /api/v1/nodes/{node}/revoke-agent", func(w http.ResponseWriter, req *http.Request) {
		if !authorized(w, req) {
			return
		}
		if err := r.RevokeAgent(req.Context(), req.PathValue("node")); err != nil {
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "agent token revoked"})
	})
	// Approve the guarded plan that waits (anneal approve): the body names
	// its revision and plan digest; another plan is refused (409).
	mux.HandleFunc("POST /api/v1/approve", func(w http.ResponseWriter, req *http.Request) {
		if !authorized(w, req) {
			return
		}
		var body struct {
			Revision   string `json:"revision"`
			PlanDigest string `json:"planDigest"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, req.Body, approveMaxBody))
		dec.DisallowUnknownFields()
		err := dec.Decode(&body)
		if err == nil && dec.More() {
			err = errors.New("more than one JSON value")
		}
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("the body is over %d bytes", approveMaxBody)})
			return
		case err != nil || body.Revision == "" || body.PlanDigest == "":
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the body must be JSON {\"revision\": REV, \"planDigest\": DIGEST}"})
			return
		}
		a, err := r.Approve(req.Context(), body.Revision, body.PlanDigest)
		switch {
		case errors.Is(err, reconcile.ErrNothingToApprove) || errors.Is(err, reconcile.ErrNotPending):
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
			return
		case err != nil:
			if cfg.Log != nil {
				cfg.Log.Error("approve", "err", err)
			}
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, a)
	})
	// A push webhook: signed with the token as the HMAC key (GitHub's
	// X-Hub-Signature-256, Gitea's and GitLab-style bearer tokens alike);
	// each delivery accepted once.
	mux.Handle("POST /api/v1/webhook", newWebhook(token, r.Trigger))
	mux.Handle("POST /api/v1/nodes/{node}/enroll", newEnroll(cfg)) // enroll.go
	mux.HandleFunc("POST /api/v1/reconcile", func(w http.ResponseWriter, req *http.Request) {
		if authorized(w, req) {
			r.Trigger()
			writeJSON(w, http.StatusAccepted, map[string]string{"status": "reconcile triggered"})
		}
	})
	for path, v := range map[string]bool{"POST /api/v1/suspend": true, "POST /api/v1/resume": false} {
		mux.HandleFunc(path, func(w http.ResponseWriter, req *http.Request) {
			if !authorized(w, req) {
				return
			}
			if err := r.SetSuspended(req.Context(), v); err != nil {
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
				return
			}
			m.setSuspended(v)
			if !v {
				r.Trigger()
			}
			writeStatus(w, r, cfg)
		})
	}
	// A consistent copy of the state store, taken while the daemon runs
	// (it holds install nonces: the token is required).
	mux.HandleFunc("GET /api/v1/state/backup", func(w http.ResponseWriter, req *http.Request) {
		if !authorized(w, req) {
			return
		}
		if cfg.Backup == nil {
			writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "no state backup in this server"})
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="anneal-state.db"`)
		started := false
		sized := func(n int64) { started = true; w.Header().Set("Content-Length", strconv.FormatInt(n, 10)) }
		_, err := cfg.Backup(req.Context(), w, sized)
		switch {
		case err != nil && !started:
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		case err != nil && cfg.Log != nil:
			// Past the header, a body shorter than its Content-Length is
			// how the client learns of it.
			cfg.Log.Error("state backup", "err", err)
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	newEventsAPI(cfg.Events, cfg.Log, cfg.StreamsDone).register(mux)
	return withActor(mux)
}

// approveMaxBody bounds an approval's body.
const approveMaxBody = 4 << 10

// writeJSON answers code with v, indented.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
