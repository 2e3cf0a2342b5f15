package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/anneal-dev/anneal/netlimit"
	"github.com/anneal-dev/anneal/providers/secret"
	"github.com/anneal-dev/anneal/providers/source"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/schema"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
)

func newServeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the reconciler: follow the site repo and converge the fleet",
		Long: `Serve follows a site repository (polled at --interval, or triggered through
the API) or a directory, validates every new revision, and converges the
fleet to it (--mode converge) or only computes and publishes drift
(--mode report). A revision that does not validate is never applied: the
reconciler stays on the last good one and reports the error. A force-push
that rewrites applied history is refused unless --allow-rewrite.

HTTP API on --listen: GET /healthz, /readyz, /api/v1/status, /api/v1/drift,
/api/v1/nodes, /metrics; POST /api/v1/reconcile, /api/v1/suspend,
/api/v1/resume (bearer token from --token, a secret reference; without one
the mutating endpoints are disabled) and /api/v1/webhook (the bearer token,
or a body signed with it: X-Hub-Signature-256 over the whole body, at most
25 MiB; a delivery id or signature seen in the last 24 h is refused as a
replay). A --site directory is watched: a burst of edits triggers a
reconcile once it settles.

Every HTTP server (API, netboot, pprof) keeps at most --max-conns
connections open, --max-conns-per-source from one client address, and
closes a client that sends too slowly (--http-read-timeout), stops reading
(--http-write-timeout, a progress deadline) or idles (--http-idle-timeout).`,
		Args: noArgs,
	}
	site := addSiteFlags(c)
	state := addStateFlags(c)
	listen := c.Flags().String("listen", "127.0.0.1:8080", "HTTP API address")
	interval := c.Flags().Duration("interval", 30*time.Second, "poll interval")
	mode := &outputFlag{value: string(reconcile.ModeConverge), allowed: []string{string(reconcile.ModeConverge), string(reconcile.ModeReport)}}
	c.Flags().Var(mode, "mode", "converge (apply) or report (publish drift only)")
	tokenRef := c.Flags().String("token", "", "secret reference (env:NAME or file:PATH) of the bearer token for mutating endpoints")
	allowRewrite := c.Flags().Bool("allow-rewrite", false, "accept a revision that does not descend from the applied one (force-push)")
	trustFile := c.Flags().String("verify-signatures", "", "apply only commits signed by a key in this file: an armored OpenPGP keyring or an SSH allowed-signers file")
	allowMass := c.Flags().Bool("allow-mass-delete", false, "apply even when deletes exceed the site's dnsMassDeletePercent")
	tlsCert := c.Flags().String("tls-cert", "", "serve the API over HTTPS with this PEM certificate (chain) file, read again when it changes")
	tlsKey := c.Flags().String("tls-key", "", "the PEM private key of --tls-cert")
	pprofListen := c.Flags().String("pprof-listen", "", "serve Go's /debug/pprof profiles on this address (off by default; keep it on loopback)")
	netboot := addNetbootFlags(c)
	httpLimits := addHTTPLimitFlags(c)
	netboot.http = httpLimits
	c.RunE = func(c *cobra.Command, _ []string) error {
		ctx := c.Context()
		log := slog.New(slog.NewTextHandler(c.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelInfo}))
		var token string
		if *tokenRef != "" {
			t, err := secret.Resolver{}.Resolve(*tokenRef)
			if err != nil {
				return failure(err)
			}
			token = t
		}
		// The daemon's own credentials can never be granted to a site.
		site.resolving = true
		if err := site.forbid("API token (--token)", *tokenRef, token); err != nil {
			return failure(err)
		}
		if err := site.forbid("TLS key (--tls-key)", *tlsKey, ""); err != nil {
			return failure(err)
		}
		src, name, err := serveSource(ctx, site)
		if err != nil {
			return failure(err)
		}
		if *trustFile != "" {
			branch, ok := src.(*source.Branch)
			if !ok {
				return fmt.Errorf("%s: --verify-signatures needs --repo (a directory has no commits to verify)", c.CommandPath())
			}
			if branch.Trust, err = source.LoadTrust(*trustFile); err != nil {
				return failure(err)
			}
		}
		named := &schema.Site{Config: &schema.SiteConfig{Meta: schema.Meta{Name: name}}}
		st, err := state.open(named)
		if err != nil {
			return failure(err)
		}
		defer st.Close()
		statePath, _ := state.file(named)
		if err := site.forbidState(statePath); err != nil {
			return failure(err)
		}
		if netboot.listen != "" {
			// The key the netboot server signs with, by value too.
			key, err := netboot.key(statePath)
			if err != nil {
				return failure(err)
			}
			if err := site.forbid("netboot key (--netboot-key)", netboot.keyRef, string(key)); err != nil {
				return failure(err)
			}
		}
		grants, err := site.secretGrants()
		if err != nil {
			return failure(err)
		}
		if grants == nil {
			_, err := site.loadOptions() // says what to give
			return failure(err)
		}
		// Every pass reads the secrets its revision names before it acts
		// (targets, below); a grant that cannot be read at all is said now.
		if err := grants.CheckSources(); err != nil {
			log.Warn("secret grants that cannot be read: a revision naming them is not converged", "grants", grants.File(), "err", err)
		}
		m := newMetrics()
		resolve := grants.Resolve
		targets := func(s *schema.Site) (map[string]reconcile.DNSTarget, error) {
			// Before a pass acts: every secret the revision names can be
			// read (a BMC password missing is this error, not a canary's
			// failure in the middle of a rollout).
			uses := []schema.SecretUse{schema.UseDNS}
			if netboot.listen != "" {
				uses = append(uses, schema.UseBMC) // rebuilds reach the BMCs
			}
			if err := grants.CheckSources(s.SecretNames(uses...)...); err != nil {
				return nil, fmt.Errorf("secret grants %s: %w", grants.File(), err)
			}
			return dnsTargets(s, resolve)
		}
		r := &reconcile.Reconciler{Source: src, Targets: targets, Secrets: grants, State: st, Mode: reconcile.Mode(mode.value),
			Interval: *interval, AllowRewrite: *allowRewrite, AllowMassDelete: *allowMass, Log: log, Observe: m.observe}
		stopNetboot, err := netboot.start(ctx, r, st, statePath, resolve, log)
		if err != nil {
			return failure(err)
		}
		if stopNetboot != nil {
			defer stopNetboot(context.WithoutCancel(ctx))
		}
		if (*tlsCert == "") != (*tlsKey == "") {
			return fmt.Errorf("%s: --tls-cert and --tls-key go together", c.CommandPath())
		}
		tlsConfig, err := serverTLS(*tlsCert, *tlsKey, log)
		if err != nil {
			return failure(err)
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return failure(fmt.Errorf("listen: %w", err))
		}
		apiLimits := httpLimits.limits(apiMaxBody)
		srv := netlimit.NewServer(apiHandler(r, m, token, st.Backup), apiLimits)
		srv.TLSConfig = tlsConfig
		ln = netlimit.NewListener(ln, apiLimits, log.With("server", "api"))
		go func() {
			var err error
			if tlsConfig != nil {
				err = srv.ServeTLS(ln, "", "")
			} else {
				err = srv.Serve(ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http server", "err", err)
			}
		}()
		if *pprofListen != "" {
			stop, err := servePprof(*pprofListen, httpLimits.limits(0), log)
			if err != nil {
				return failure(err)
			}
			defer stop()
		}
		if site.repo == "" {
			// A local directory: reconcile as soon as a burst of edits settles.
			go func() {
				if err := source.WatchDir(ctx, site.dir, 500*time.Millisecond, r.Trigger); err != nil {
					log.Warn("directory watch stopped; polling only", "err", err)
				}
			}()
		}
		log.Info("anneal serve", "listen", ln.Addr().String(), "tls", tlsConfig != nil, "source", name, "mode", mode.value, "interval", *interval)
		runErr := r.Run(ctx)
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
		log.Info("anneal serve stopped")
		if runErr != nil {
			return failure(runErr)
		}
		return nil
	}
	return c
}

// servePprof serves the runtime profiles on a listener of their own, so
// that they are never reachable through the API's address.
func servePprof(addr string, limits netlimit.Limits, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := netlimit.NewServer(mux, limits)
	go func() {
		if err := srv.Serve(netlimit.NewListener(ln, limits, log.With("server", "pprof"))); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("pprof server", "err", err)
		}
	}()
	log.Info("pprof", "listen", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}

// serveSource opens the reconciler's source: a repository's branch, or a
// directory. It also names the state file.
func serveSource(ctx context.Context, f *siteFlags) (reconcile.Source, string, error) {
	if f.repo == "" {
		return source.Dir{Path: f.dir}, "dir-" + shortHash(f.dir), nil
	}
	repo, err := f.openRepo(ctx, f.repo)
	if err != nil {
		return nil, "", err
	}
	return &source.Branch{Repo: repo, Path: f.path}, "repo-" + shortHash(f.repo+"#"+f.path), nil
}

func shortHash(s string) string {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint32(s[i])) * 16777619
	}
	return fmt.Sprintf("%08x", h)
}

// metrics are the daemon's Prometheus metrics, on a registry of its own.
type metrics struct {
	reg       *prometheus.Registry
	duration  prometheus.Histogram
	runs      prometheus.Counter
	failures  *prometheus.CounterVec
	drift     *prometheus.GaugeVec
	revision  *prometheus.GaugeVec
	suspended prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "anneal_reconcile_duration_seconds",
			Help: "Duration of one reconcile.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)}),
		runs:      prometheus.NewCounter(prometheus.CounterOpts{Name: "anneal_reconciles_total", Help: "Reconciles run."}),
		failures:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "anneal_reconcile_failures_total", Help: "Failed reconciles by class."}, []string{"class"}),
		drift:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anneal_drift", Help: "What the last plan would change, by kind."}, []string{"kind"}),
		revision:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anneal_applied_revision_info", Help: "The applied and last good revisions (value 1)."}, []string{"revision", "last_good"}),
		suspended: prometheus.NewGauge(prometheus.GaugeOpts{Name: "anneal_suspended", Help: "1 while reconciling is suspended."}),
	}
	m.reg.MustRegister(m.duration, m.runs, m.failures, m.drift, m.revision, m.suspended)
	return m
}

func (m *metrics) observe(st reconcile.Status, d time.Duration) {
	m.duration.Observe(d.Seconds())
	m.runs.Inc()
	if st.LastErrorClass != "" {
		m.failures.WithLabelValues(st.LastErrorClass).Inc()
	}
	m.drift.WithLabelValues("create").Set(float64(st.Drift.Creates))
	m.drift.WithLabelValues("update").Set(float64(st.Drift.Updates))
	m.drift.WithLabelValues("delete").Set(float64(st.Drift.Deletes))
	m.drift.WithLabelValues("conflict").Set(float64(st.Drift.Conflicts))
	m.drift.WithLabelValues("rebuild").Set(float64(st.Drift.Rebuilds))
	m.drift.WithLabelValues("held").Set(float64(st.Drift.Held))
	m.revision.Reset()
	m.revision.WithLabelValues(st.AppliedRevision, st.LastGoodRevision).Set(1)
	m.setSuspended(st.Suspended)
}

func (m *metrics) setSuspended(v bool) {
	if v {
		m.suspended.Set(1)
	} else {
		m.suspended.Set(0)
	}
}

func apiHandler(r *reconcile.Reconciler, m *metrics, token string, backup func(context.Context, io.Writer, func(int64)) (int64, error)) http.Handler {
	mux := http.NewServeMux()
	writeJSON := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	}
	authorized := func(w http.ResponseWriter, req *http.Request) bool {
		if !bearerOK(req, token) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "a valid bearer token is required (serve --token)"})
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
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, r.Status()) })
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
		var recs map[string]*reconcile.NodeRecord
		if r.Rebuild != nil {
			var err error
			if recs, err = r.Rebuild.Nodes.NodeRecords(req.Context()); err != nil {
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
				return
			}
		}
		writeJSON(w, http.StatusOK, nodeViews(s, recs))
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
	// A push webhook: signed with the token as the HMAC key (GitHub's
	// X-Hub-Signature-256, Gitea's and GitLab-style bearer tokens alike);
	// each delivery accepted once.
	mux.Handle("POST /api/v1/webhook", newWebhook(token, r.Trigger))
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
			writeJSON(w, http.StatusOK, r.Status())
		})
	}
	// A consistent copy of the state store, taken while the daemon runs
	// (it holds install nonces: the token is required).
	mux.HandleFunc("GET /api/v1/state/backup", func(w http.ResponseWriter, req *http.Request) {
		if !authorized(w, req) {
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="anneal-state.db"`)
		started := false
		sized := func(n int64) { started = true; w.Header().Set("Content-Length", strconv.FormatInt(n, 10)) }
		_, err := backup(req.Context(), w, sized)
		switch {
		case err != nil && !started:
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		case err != nil && r.Log != nil:
			// Past the header, a body shorter than its Content-Length is
			// how the client learns of it.
			r.Log.Error("state backup", "err", err)
		}
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return mux
}
