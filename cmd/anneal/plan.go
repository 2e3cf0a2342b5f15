package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/schema"
	"github.com/spf13/cobra"
)

// planFlags are shared by plan and apply.
type planFlags struct {
	site  *siteFlags
	state *stateFlags
	only  *outputFlag
	full  bool
}

func addPlanFlags(c *cobra.Command) *planFlags {
	f := &planFlags{site: addSiteFlags(c), state: addStateFlags(c)}
	f.only = &outputFlag{value: "all", allowed: []string{reconcile.LayerAll, reconcile.LayerDNS}}
	c.Flags().Var(f.only, "only", "plan one layer only: all (DNS, and the nodes when the state has node records) or dns")
	c.Flags().BoolVar(&f.full, "full", false, "print every change (default: at most 100 per zone)")
	return f
}

// session is a loaded site with its providers and state, ready to plan.
type session struct {
	site    *schema.Site
	desired *dns.Desired
	targets map[string]dns.Target
	state   *bolt.Store
	source  string
	flags   *siteFlags
	tmp     string // the empty state's directory, when the state file did not exist
}

// open loads the site and opens the state. A plan (create false) on a
// state file that does not exist plans from an empty state, in a
// temporary file removed on close: planning creates no state file.
func (f *planFlags) open(ctx context.Context, create bool) (*session, error) {
	f.site.resolving = true
	site, err := f.site.loadValid(ctx)
	if err != nil {
		return nil, err
	}
	desired, err := dns.Compile(site)
	if err != nil {
		return nil, failure(err)
	}
	// Before any secret is read: the state and its netboot key are never
	// a site's to send.
	if statePath, err := f.state.file(site); err == nil {
		if err := f.site.forbidState(statePath); err != nil {
			return nil, failure(err)
		}
	}
	if err := f.site.checkSources(site, schema.UseDNS); err != nil {
		return nil, failure(err)
	}
	targets, err := dnsTargets(site, f.site.resolver())
	if err != nil {
		return nil, failure(err)
	}
	s := &session{site: site, desired: desired, targets: targets, source: f.site.recorded(), flags: f.site}
	statePath, err := f.state.file(site)
	if err != nil {
		return nil, failure(err)
	}
	if _, err := os.Stat(statePath); !create && errors.Is(err, fs.ErrNotExist) {
		tmp, err := os.MkdirTemp("", "anneal-plan-")
		if err != nil {
			return nil, failure(err)
		}
		s.tmp = tmp
		s.state, err = bolt.Open(filepath.Join(tmp, "empty.db"), 5*time.Second)
		if err != nil {
			_ = os.RemoveAll(tmp)
			return nil, failure(err)
		}
		return s, nil
	}
	if s.state, err = f.state.open(site); err != nil {
		return nil, failure(err)
	}
	return s, nil
}

func (s *session) close() {
	s.state.Close()
	if s.tmp != "" {
		_ = os.RemoveAll(s.tmp)
	}
}

// appliedPolicies are the policies of the revision the state says was
// applied last, read from the site's git history as the daemon does (its
// guards take the stricter of those and the site's). nil when the site is
// not in git or the revision cannot be loaded: the site's own then.
func (s *session) appliedPolicies(ctx context.Context, rev string) *schema.Policies {
	if rev == "" || s.flags == nil {
		return nil
	}
	repo, path := s.flags.repo, s.flags.path
	if repo == "" {
		top, rel, err := gitTop(s.flags.dir)
		if err != nil {
			return nil
		}
		repo, path = top, rel
	}
	f := *s.flags
	f.parsed = schema.NewCache()
	site, err := loadReviewed(ctx, &f, repo, rev, path)
	if err != nil {
		return nil
	}
	return &site.Config.Policies
}

// plan is the one planner's plan (the daemon's): DNS, and when the state
// holds node records (anneal rebuilds this site's nodes), the rebuild
// layer with DNS following the nodes' availability, the guards and the
// action DAG.
func (s *session) plan(ctx context.Context, log *slog.Logger, only string) (*reconcile.Plan, error) {
	p := reconcile.Planner{Targets: s.targets, State: s.state, Log: log}
	recs, err := s.state.NodeRecords(ctx)
	if err != nil {
		return nil, failure(err)
	}
	if len(recs) > 0 {
		p.Nodes = s.state
	}
	var observe time.Time
	var applied *schema.Policies
	if st, err := s.state.LoadStatus(ctx); err == nil && st != nil {
		observe = st.ObserveUntil
		applied = s.appliedPolicies(ctx, st.AppliedRevision)
	}
	plan, desired, err := p.Plan(ctx, reconcile.PlanInput{Site: s.site, Source: s.source, Only: only, Now: time.Now(), ObserveUntil: observe, Applied: applied})
	if err != nil {
		return nil, failure(err)
	}
	s.desired = desired
	return plan, nil
}

func newPlanCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "plan",
		Short: "Show what converging the live fleet to the site would change",
		Long: `Plan reads the live state of every DNS target the site names and prints, per
target and zone, what an apply would add, change and delete, and what it leaves
alone (conflicts with records anneal did not create).

With --base REV (review mode, for pull requests), plan compares the desired
state of two revisions instead: which nodes would be rebuilt and why (field by
field), which DNS records change, and which policies the change runs into. It
reads no live state and needs no secrets, so it is safe on untrusted changes.

Exit codes: 0 no changes, 2 changes present, 1 error (a target could not be
read, or the site is invalid), 64 usage error. CI can gate on drift.`,
		Args: noArgs,
	}
	f := addPlanFlags(c)
	out := addOutputFlag(c, "text", "json", "markdown")
	base := c.Flags().String("base", "", "review mode: compare the desired state of this revision with --head; reads no live state and needs no credentials")
	head := c.Flags().String("head", "", "review mode: the revision to review (default: the working tree, or the branch tip of a remote --repo)")
	c.RunE = func(c *cobra.Command, _ []string) error {
		ctx := c.Context()
		if *base != "" || *head != "" {
			return runReview(c, f, out.value, *base, *head)
		}
		s, err := f.open(ctx, false)
		if err != nil {
			return err
		}
		defer s.close()
		plan, err := s.plan(ctx, logger(c), f.only.value)
		if err != nil {
			return err
		}
		w := c.OutOrStdout()
		switch out.value {
		case "json":
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			if err := enc.Encode(plan); err != nil {
				return failure(err)
			}
		case "markdown":
			renderMarkdown(w, plan, f.full)
		default:
			renderText(w, plan, f.full, colorFor(w))
		}
		return planExit(plan)
	}
	return c
}

// planExit decides plan's exit code: an error first, then changes.
func planExit(p *reconcile.Plan) error {
	switch {
	case p.HasFailures():
		return &silentError{code: exitError}
	case p.HasChanges():
		return &silentError{code: exitChanges}
	}
	return nil
}

func logger(c *cobra.Command) *slog.Logger {
	return newLogger(c, c.ErrOrStderr(), slog.LevelWarn)
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// runReview is plan's review mode: base and head revisions of the site,
// compared without the live fleet.
func runReview(c *cobra.Command, f *planFlags, format, baseRev, headRev string) error {
	ctx := c.Context()
	if baseRev == "" {
		return usagef("--head needs --base")
	}
	if err := f.site.checkRepoFlags(); err != nil {
		return err
	}
	repo, path := f.site.repo, f.site.path
	if repo == "" {
		top, rel, err := gitTop(f.site.dir)
		if err != nil {
			return failure(err)
		}
		repo, path = top, rel
	}
	baseFlags := *f.site
	baseFlags.parsed = schema.NewCache() // the head reuses every file the change did not touch
	base, err := loadReviewed(ctx, &baseFlags, repo, baseRev, path)
	if err != nil {
		return err
	}
	headFlags := *f.site
	headFlags.parsed = baseFlags.parsed
	var head *schema.Site
	switch {
	case headRev != "":
		head, err = loadReviewed(ctx, &headFlags, repo, headRev, path)
	case f.site.repo != "":
		head, err = loadReviewed(ctx, &headFlags, repo, "", path)
	default:
		headFlags.repo = ""
		head, err = headFlags.loadValid(ctx)
		headFlags.label = f.site.dir + " (working tree)"
	}
	if err != nil {
		return err
	}
	r, err := reconcile.ReviewRange(base, head, baseFlags.where(), headFlags.where())
	if err != nil {
		return failure(err)
	}
	w := c.OutOrStdout()
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return failure(err)
		}
	case "markdown":
		renderReviewMarkdown(w, r, f.full)
	default:
		renderReviewText(w, r, f.full, colorFor(w))
	}
	if r.HasChanges() {
		return &silentError{code: exitChanges}
	}
	return nil
}

func loadReviewed(ctx context.Context, f *siteFlags, repo, rev, path string) (*schema.Site, error) {
	f.repo, f.rev, f.path = repo, rev, path
	return f.loadValid(ctx)
}
