package main

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/spf13/cobra"
)

func newApproveCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "approve REVISION",
		Short: "Approve the guarded plan a running anneal serve waits on",
		Long: `A plan with a guarded change (a rack leaving the site, a DNS mass delete, a
rebuild of nodes anneal lost track of, more rebuilds than the site's policy
allows) waits: anneal status shows the revision, the plan's digest and why.
approve lets exactly that plan run, without a restart. A different plan for
the same revision (the live state or the revision moved since) waits for a
new approval; the daemon refuses an approval that names another plan.

Without --plan, approve shows the plan that waits (revision, digest,
reasons) and approves nothing (no token needed): --plan DIGEST (its first 12 characters are
enough) names the plan you reviewed.`,
		Args: cobra.ExactArgs(1),
	}
	api := addAPIFlags(c, "http://127.0.0.1:8080", "the anneal serve API (https with serve --tls-cert)")
	tokenRef := c.Flags().String("token", "", "secret reference (env:NAME or file:PATH) of the API's bearer token")
	digest := c.Flags().String("plan", "", "the digest of the plan to approve, as anneal status shows it (without it: show the plan that waits, approve nothing)")
	c.RunE = func(c *cobra.Command, args []string) error {
		ctx := c.Context()
		rev := args[0]
		w := c.OutOrStdout()
		if *digest == "" {
			// Show what waits, and approve nothing: an approval names the
			// plan its approver reviewed, not whatever waits by then.
			var st reconcile.Status
			if err := apiCall(ctx, api, http.MethodGet, "/api/v1/status", "", &st); err != nil {
				return failure(err)
			}
			p := st.PendingApproval
			if p == nil {
				return failure(fmt.Errorf("no plan awaits approval on %s", api.server))
			}
			if !strings.HasPrefix(p.Revision, rev) {
				return failure(fmt.Errorf("revision %s does not await approval; %s does", rev, p.Revision))
			}
			fmt.Fprintf(w, "revision %s, plan %s awaits approval:\n", p.Revision, p.PlanDigest)
			for _, r := range p.Reasons {
				fmt.Fprintf(w, "  - %s\n", r)
			}
			return failure(fmt.Errorf("review the plan (anneal status --server, GET /api/v1/drift), then approve exactly it: anneal approve --plan %s %s", shortDigest(p.PlanDigest), short(p.Revision)))
		}
		if *tokenRef == "" {
			return usagef("approving needs the API's token: --token REF (env:NAME or file:PATH)")
		}
		token, err := resolveToken(*tokenRef)
		if err != nil {
			return failure(fmt.Errorf("--token: %w", err))
		}
		var a reconcile.Approval
		if err := apiSend(ctx, api, http.MethodPost, "/api/v1/approve", token, map[string]string{"revision": rev, "planDigest": *digest}, &a); err != nil {
			return failure(err)
		}
		fmt.Fprintf(w, "approved: revision %s, plan %s; the daemon runs it at its next pass\n", a.Revision, a.PlanDigest)
		return nil
	}
	return c
}
