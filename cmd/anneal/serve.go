package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/anneal-dev/anneal/api"
	"github.com/anneal-dev/anneal/dashboard"
	"github.com/anneal-dev/anneal/netlimit"
	"github.com/anneal-dev/anneal/providers/secret"
	"github.com/anneal-dev/anneal/providers/source"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/schema"
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

Every plan is the one anneal plan shows. A plan with a guarded change
(more than the site's maxRemovePercent of the nodes decommissioned,
maxRebuildPercent rebuilt, dnsMassDeletePercent of a DNS target deleted, or
a rebuild of a node anneal lost track of) runs nothing until anneal approve
(POST /api/v1/approve) names its revision and digest. On a state with no
node records, the fleet is observed first (BMC power, agent reports for
--observe-grace) and nodes running their desired build are adopted.

The dashboard is at / on --listen (read-only without the token).
HTTP API on --listen: GET /healthz, /readyz, /api/v1/status, /api/v1/drift,
/api/v1/nodes, /api/v1/events (?follow=1: server-sent events),
/api/v1/history, /api/v1/revisions/REV (a short id, branch or tag resolved to
the full id), /metrics; POST /api/v1/reconcile, /api/v1/suspend,
/api/v1/resume, /api/v1/approve, /api/v1/nodes/NODE/retry,
/api/v1/nodes/NODE/revoke-agent and GET /api/v1/state/backup (bearer token
from --token, a secret reference; without one the mutating endpoints are
disabled) and /api/v1/webhook (the bearer token,
or a body signed with it: X-Hub-Signature-256 over the whole body, at most
25 MiB; a delivery id or signature seen in the last 24 h is refused as a
replay). A --site directory is watched: a burst of edits triggers a
reconcile once it settles.

With --notify FILE, events go to the webhooks (JSON signed with
HMAC-SHA256, or a Slack-compatible line) and the forge commit statuses
(GitHub, GitLab) that the operator's file configures (docs/operations.md).

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
	allowMass := c.Flags().Bool("allow-mass-delete", false, "apply even when deletes exceed the site's dnsMassDeletePercent (lifts that guard for every revision; anneal approve lifts it for one plan)")
	eventsF := addEventFlags(c)
	observeGrace := c.Flags().Duration("observe-grace", reconcile.DefaultObserveGrace, "on a state with no node records, how long to wait for agents to report before a powered-on node without a known build may be rebuilt (at least two agent intervals)")
	tlsCert := c.Flags().String("tls-cert", "", "serve the API over HTTPS with this PEM certificate (chain) file, read again when it changes")
	tlsKey := c.Flags().String("tls-key", "", "the PEM private key of --tls-cert")
	pprofListen := c.Flags().String("pprof-listen", "", "serve Go's /debug/pprof profiles on this address (off by default; keep it on loopback)")
	notifyFile := c.Flags().String("notify", "", "send events to the webhooks and forge commit statuses this file configures (YAML or JSON; see docs/operations.md)")
	netboot := addNetbootFlags(c)
	httpLimits := addHTTPLimitFlags(c)
	netboot.http = httpLimits
	c.RunE = func(c *cobra.Command, _ []string) error {
		if err := eventsF.check(); err != nil {
			return err
		}
		if err := site.checkRepoFlags(); err != nil {
			return err
		}
		ctx := c.Context()
		log := newLogger(c, c.ErrOrStderr(), slog.LevelInfo)
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
		notifier, err := loadNotifier(*notifyFile, site, log)
		if err != nil {
			return failure(err)
		}
		src, name, err := serveSource(ctx, site)
		if err != nil {
			return failure(err)
		}
		if *trustFile != "" {
			branch, ok := src.(*source.Branch)
			if !ok {
				return usagef("--verify-signatures needs --repo (a directory has no commits to verify)")
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
			key, _, err := netboot.key(statePath)
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
		m := api.NewMetrics()
		resolve := grants.Resolve
		targets := func(s *schema.Site) (map[string]dns.Target, error) {
			// Before a pass acts: every secret the revision names can be
			// read (a BMC password missing is this error, not a canary's
			// failure in the middle of a rollout).
			uses := []schema.SecretUse{schema.UseDNS}
			if netboot.listen != "" {
				uses = append(uses, schema.UseBMC) // rebuilds reach the BMCs
			}
			if err := grants.CheckSources(s.SecretNames(uses...)...); err != nil {
				return nil, fmt.Errorf("secret grants: %w", err) // each line names the file
			}
			return dnsTargets(s, resolve)
		}
		r := &reconcile.Reconciler{Source: src, Targets: targets, Secrets: grants, State: st, Mode: reconcile.Mode(mode.value),
			Interval: *interval, AllowRewrite: *allowRewrite, AllowMassDelete: *allowMass, Log: log, Observe: m.Observe}
		if r.Events, err = eventsF.recorder(c, st, log); err != nil {
			return err
		}
		stopNetboot, err := netboot.start(ctx, r, st, statePath, resolve, log)
		if err != nil {
			return failure(err)
		}
		if stopNetboot != nil {
			defer stopNetboot(context.WithoutCancel(ctx))
		}
		if r.Rebuild != nil {
			if *observeGrace <= 0 {
				return usagef("--observe-grace must be positive, got %s", *observeGrace)
			}
			r.Rebuild.ObserveGrace = *observeGrace
		}
		if (*tlsCert == "") != (*tlsKey == "") {
			return usagef("--tls-cert and --tls-key go together")
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
		apiConfig := api.Config{Reconciler: r, Metrics: m, Token: token, Backup: st.Backup, Log: log}
		apiConfig.Version, apiConfig.Revision = buildVersion()
		if r.Rebuild != nil {
			apiConfig.Nodes = r.Rebuild.Nodes
		}
		apiConfig.Events, apiConfig.StreamsDone = r.Events, ctx.Done()
		srv := netlimit.NewServer(withDashboard(api.New(apiConfig), dashboard.Config{Reconciler: r, Nodes: apiConfig.Nodes, Log: log}), apiLimits)
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
		if notifier != nil {
			notifyCtx, stopNotify := context.WithCancel(ctx)
			if err := notifier.Start(notifyCtx, r.Events); err != nil {
				stopNotify()
				return failure(err)
			}
			defer func() { stopNotify(); notifier.Wait() }()
		}
		// anneal_events_total follows the recorder until serve stops.
		var counting sync.WaitGroup
		countCtx, stopCounting := context.WithCancel(ctx)
		counting.Go(func() { m.CountEvents(countCtx, r.Events) })
		defer func() { stopCounting(); counting.Wait() }()
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

// withDashboard serves the dashboard at / and /ui/ beside the API.
func withDashboard(apiHandler http.Handler, cfg dashboard.Config) http.Handler {
	d := dashboard.New(cfg)
	mux := http.NewServeMux()
	mux.Handle("/", apiHandler)
	mux.Handle("GET /{$}", d)
	mux.Handle("/ui/", d)
	return mux
}
