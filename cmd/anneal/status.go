package main

import (
	"cmp"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/api"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/spf13/cobra"
)

func newStatusCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "status",
		Short: "Show a running anneal serve's status and drift; optionally wait for a revision to converge",
		Long: `Status asks a running anneal serve for its status (applied and last good
revisions, last error, the rollout in progress) and its last plan (the drift),
and prints them. With --wait REV it follows the daemon until REV is applied,
printing every node's state change as the rollout goes (canary, waves), and
fails when the reconcile reports an error for REV or --timeout passes.`,
		Args: noArgs,
	}
	api := addAPIFlags(c, "http://127.0.0.1:8080", "the anneal serve API (https with serve --tls-cert)")
	wait := c.Flags().String("wait", "", "wait until this revision (a full commit hash) is applied")
	timeout := c.Flags().Duration("timeout", 5*time.Minute, "give up waiting after this long")
	c.RunE = func(c *cobra.Command, _ []string) error {
		ctx := c.Context()
		w := c.OutOrStdout()
		if *wait != "" {
			if err := waitApplied(c, api, *wait, *timeout); err != nil {
				return err
			}
		}
		var st reconcile.Status
		if err := apiCall(ctx, api, http.MethodGet, "/api/v1/status", "", &st); err != nil {
			return failure(err)
		}
		fmt.Fprintf(w, "applied revision:   %s\nlast good revision: %s\n", cmp.Or(st.AppliedRevision, "(none)"), cmp.Or(st.LastGoodRevision, "(none)"))
		if st.Suspended {
			fmt.Fprintln(w, "suspended: reconciling is paused (resume with POST /api/v1/resume)")
		}
		if st.LastError != "" {
			fmt.Fprintf(w, "last error (%s): %s\n", st.LastErrorClass, st.LastError)
		}
		if p := st.PendingApproval; p != nil {
			fmt.Fprintf(w, "awaiting approval: revision %s, plan %s (since %s); nothing of it runs until anneal approve %s:\n",
				short(p.Revision), shortDigest(p.PlanDigest), p.Since.Format(time.RFC3339), short(p.Revision))
			for _, r := range p.Reasons {
				fmt.Fprintf(w, "  - %s\n", r)
			}
		}
		if !st.ObserveUntil.IsZero() && time.Now().Before(st.ObserveUntil) {
			fmt.Fprintf(w, "observing: the state had no node records; until %s a node that is powered on and has no known build waits for its agent to report (it is adopted if it runs its desired build), and is never rebuilt\n", st.ObserveUntil.Format(time.RFC3339))
		}
		if ro := st.Rollout; ro != nil {
			fmt.Fprintf(w, "last rollout (%s): %d verified, %d decommissioned, %d failed, %d not started", short(ro.Revision), len(ro.Verified), len(ro.Decommissioned), len(ro.Failed), len(ro.NotStarted))
			if ro.Halted != "" {
				fmt.Fprintf(w, "; halted: %s", ro.Halted)
			}
			fmt.Fprintln(w)
		}
		var plan reconcile.Plan
		if err := apiCall(ctx, api, http.MethodGet, "/api/v1/drift", "", &plan); err != nil {
			return failure(err)
		}
		fmt.Fprintln(w, "\ndrift (the daemon's last plan):")
		if plan.DNS != nil {
			renderText(w, &plan, false, colorFor(w))
		}
		return nil
	}
	return c
}

func shortDigest(d string) string { return d[:min(len(d), 12)] }

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

// waitApplied follows the daemon until rev is applied, printing node
// state changes.
func waitApplied(c *cobra.Command, api *apiFlags, rev string, timeout time.Duration) error {
	ctx := c.Context()
	w := c.OutOrStdout()
	deadline := time.Now().Add(timeout)
	seen := map[string]string{}
	start := time.Now()
	seeded, seenPending := false, false
	for {
		var st reconcile.Status
		err := apiCall(ctx, api, http.MethodGet, "/api/v1/status", "", &st)
		if err == nil {
			var canaries []string
			if st.Rollout != nil && st.Rollout.Running {
				canaries = st.Rollout.Canaries
			}
			// The first look only learns where nodes are; changes print.
			printNodeChanges(c, w, api, seen, start, canaries, !seeded)
			seeded = true
			if p := st.PendingApproval; p != nil && strings.HasPrefix(p.Revision, rev) && !seenPending {
				seenPending = true
				fmt.Fprintf(w, "%6.1fs  revision %s awaits approval (plan %s): %s\n", time.Since(start).Seconds(), short(rev), shortDigest(p.PlanDigest), strings.Join(p.Reasons, "; "))
			}
			if st.AppliedRevision == rev && !(st.Rollout != nil && st.Rollout.Running) {
				fmt.Fprintf(w, "%6.1fs  revision %s applied\n", time.Since(start).Seconds(), short(rev))
				return nil
			}
			if st.LastAttemptedRevision == rev && st.LastError != "" && st.Reconciles > 0 && !strings.Contains(st.LastError, "not signed") {
				if st.LastErrorClass == reconcile.FailInvalid || st.LastErrorClass == reconcile.FailApply {
					printNodeChanges(c, w, api, seen, start, nil, false)
					return failure(fmt.Errorf("revision %s: %s", short(rev), st.LastError))
				}
			}
		}
		if time.Now().After(deadline) {
			return failure(fmt.Errorf("revision %s not applied within %s (last: %v)", short(rev), timeout, err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// printNodeChanges prints each node whose live state changed since the
// last call.
func printNodeChanges(c *cobra.Command, w io.Writer, server *apiFlags, seen map[string]string, start time.Time, canaries []string, quiet bool) {
	var nodes []api.NodeView
	if err := apiCall(c.Context(), server, http.MethodGet, "/api/v1/nodes", "", &nodes); err != nil {
		return
	}
	slices.SortFunc(nodes, func(a, b api.NodeView) int { return strings.Compare(a.Name, b.Name) })
	for _, n := range nodes {
		if n.Live == nil {
			continue
		}
		now := n.Live.State
		if n.Live.State == string(node.Verified) {
			now += " on build " + n.Live.BuildID
		} else if n.Live.Target != "" {
			now += " → build " + n.Live.Target
		}
		if n.Live.Reason != "" {
			now += ": " + n.Live.Reason
		}
		if seen[n.Name] != now {
			seen[n.Name] = now
			if quiet {
				continue
			}
			tag := ""
			if slices.Contains(canaries, n.Name) {
				tag = " (canary)"
			}
			fmt.Fprintf(w, "%6.1fs  %-6s %s%s\n", time.Since(start).Seconds(), n.Name, now, tag)
		}
	}
}
