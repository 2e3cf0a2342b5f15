package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"

	"github.com/spf13/cobra"
)

func newApplyCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "apply [PLAN.json]",
		Short: "Converge the live fleet to the site",
		Long: `Apply plans, prints the plan, then writes it: per DNS target, PTR deletes
first, then forward zones, then PTR creates, every update carrying
prerequisites for what the plan saw. Records anneal did not create are never
changed. A target that fails does not stop the others. Applying twice in a
row sends nothing the second time.

With a saved plan (anneal plan -o json > plan.json), apply writes exactly
that plan, and refuses if the site's content or any zone's live state
(its SOA serial) has changed since the plan was made. The site is read
from where the plan records it was made (its directory, or its repository
at the planned commit) unless --site or --repo names it.

Exit codes: 0 converged, 1 error (nothing or only part applied; the next
apply completes it), 64 usage error.`,
		Args: cobra.MaximumNArgs(1),
	}
	f := addPlanFlags(c)
	allowMass := c.Flags().Bool("allow-mass-delete", false, "apply even when deletes exceed the site's dnsMassDeletePercent")
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		if len(args) == 1 {
			if err := siteFromPlan(c, f.site, args[0]); err != nil {
				return err
			}
		}
		s, err := f.open(ctx, true)
		if err != nil {
			return err
		}
		defer s.close()
		log := logger(c)
		var plan *reconcile.Plan
		saved := len(args) == 1
		if saved {
			plan, err = s.savedPlan(ctx, args[0], log)
		} else {
			plan, err = s.plan(ctx, log, f.only.value)
		}
		if err != nil {
			return err
		}
		w := c.OutOrStdout()
		color := colorFor(w)
		renderText(w, plan, f.full, color)
		for _, g := range plan.Guards {
			if g.Kind != reconcile.GuardDNSMassDelete {
				return failure(fmt.Errorf("this change is guarded (%s: %s): the daemon runs it once anneal approve names its plan", g.Kind, g.Reason))
			}
		}
		if n := plan.Rebuilds.Count(); n > 0 {
			// apply writes DNS; rebuilds and decommissions need the
			// netboot server and the BMCs, which only the daemon runs.
			return failure(fmt.Errorf("this plan rebuilds or decommissions %s: only anneal serve --netboot-listen executes that layer; apply --only dns writes the DNS layer alone", plural(n, "node")))
		}
		if !plan.DNS.HasChanges() && plan.DNS.Interrupted == nil {
			if plan.HasFailures() {
				return &silentError{code: exitError}
			}
			return nil
		}
		fmt.Fprintln(w)
		prog := newProgress(c.ErrOrStderr(), plan.DNS)
		applier := dns.Applier{Targets: s.targets, State: s.state, Log: log, Progress: prog.update}
		res, err := applier.Apply(ctx, plan.DNS, s.desired, dns.ApplyOptions{AllowMassDelete: *allowMass, Revision: s.source, Saved: saved})
		prog.finish()
		var mass *dns.MassDeleteError
		if errors.As(err, &mass) {
			return failure(err)
		}
		if res != nil {
			renderResult(w, res)
		}
		if err != nil {
			return failure(err)
		}
		if res.Failed() || plan.HasFailures() {
			return &silentError{code: exitError}
		}
		return nil
	}
	return c
}

// savedPlan reads a plan written by `anneal plan -o json` and checks that
// it still describes this site and the live zones.
func (s *session) savedPlan(ctx context.Context, path string, log *slog.Logger) (*reconcile.Plan, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, failure(fmt.Errorf("read plan: %w", err))
	}
	var plan reconcile.Plan
	if err := json.Unmarshal(data, &plan); err != nil {
		return nil, failure(fmt.Errorf("plan %s is not a plan written by anneal plan -o json: %w", path, err))
	}
	switch {
	case plan.FormatVersion != reconcile.PlanFormatVersion:
		return nil, failure(fmt.Errorf("plan %s has format version %d; this anneal applies version %d", path, plan.FormatVersion, reconcile.PlanFormatVersion))
	case plan.DNS == nil:
		return nil, failure(fmt.Errorf("plan %s holds no DNS plan", path))
	case plan.Site != s.site.Config.Name || plan.SiteDigest != s.site.Digest:
		return nil, failure(fmt.Errorf("refusing to apply plan %s: it was made from site %q content %.12s (%s), the site is now %q content %.12s (%s); run plan again",
			path, plan.Site, plan.SiteDigest, plan.Source, s.site.Config.Name, s.site.Digest, s.source))
	case len(plan.DNS.Failures) > 0:
		return nil, failure(fmt.Errorf("refusing to apply plan %s: it could not read %d target(s) or zone(s)", path, len(plan.DNS.Failures)))
	}
	if err := dns.CheckFresh(ctx, plan.DNS, s.targets); err != nil {
		return nil, failure(err)
	}
	// What runs is what was reviewed: the plan made now, by the same
	// planner, must make the same decisions.
	if plan.Digest == "" || plan.ComputeDigest() != plan.Digest {
		return nil, failure(fmt.Errorf("refusing to apply plan %s: its digest is missing or does not match its content (written by an older anneal, or edited); run plan again", path))
	}
	now, err := s.plan(ctx, log, plan.Only)
	if err != nil {
		return nil, err
	}
	if now.Digest != plan.Digest {
		return nil, failure(fmt.Errorf("refusing to apply plan %s (digest %.12s): the plan made now differs (digest %.12s); the live state changed since it was saved: run plan again", path, plan.Digest, now.Digest))
	}
	// The same decisions: what runs is the plan made now (its checks and
	// guards are this anneal's, not fields of a file).
	return now, nil
}
