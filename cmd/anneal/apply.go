package main

import (
	"errors"
	"fmt"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/spf13/cobra"
)

func newApplyCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "apply",
		Short: "Converge the live fleet to the site",
		Long: `Apply plans, prints the plan, then writes it: per DNS target, PTR deletes
first, then forward zones, then PTR creates, every update carrying
prerequisites for what the plan saw. Records anneal did not create are never
changed. A target that fails does not stop the others. Applying twice in a
row sends nothing the second time.

Exit codes: 0 converged, 1 error (nothing or only part applied; the next
apply completes it), 64 usage error.`,
		Args: noArgs,
	}
	f := addPlanFlags(c)
	allowMass := c.Flags().Bool("allow-mass-delete", false, "apply even when deletes exceed the site's dnsMassDeletePercent")
	c.RunE = func(c *cobra.Command, _ []string) error {
		ctx := c.Context()
		s, err := f.open(ctx)
		if err != nil {
			return err
		}
		defer s.close()
		log := logger(c)
		plan, err := s.plan(ctx, log)
		if err != nil {
			return err
		}
		w := c.OutOrStdout()
		color := colorFor(w)
		renderText(w, plan, f.full, color)
		if !plan.DNS.HasChanges() {
			if plan.HasFailures() {
				return &silentError{code: exitError}
			}
			return nil
		}
		fmt.Fprintln(w)
		applier := reconcile.DNSApplier{Targets: s.targets, State: s.state, Log: log,
			Progress: func(r reconcile.ZoneResult) { renderZoneResult(c.ErrOrStderr(), r) }}
		res, err := applier.Apply(ctx, plan.DNS, s.desired, reconcile.ApplyOptions{AllowMassDelete: *allowMass, Revision: s.source})
		var mass *reconcile.MassDeleteError
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
