package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"
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
		Long: `Status asks a running anneal serve for its status and its last plan (the
drift), and prints them. Three revisions are reported, and they differ:

  applied revision          the last revision fully applied (DNS, netboot and
                            its rollout all done)
  last good revision        the newest revision that validated: the one being
                            converged (applied once its plan has run)
  last attempted revision   the newest revision fetched, valid or not

A suspended daemon (anneal suspend) fetches and applies nothing until
anneal resume; status says so first.

With --wait REV it follows the daemon until REV is applied, printing every
node's state change as the rollout goes (canary, waves), and fails when a
reconcile after the wait began reports an error for REV, or --timeout passes.
REV is anything git accepts (a full or short commit id, a branch, a tag):
the daemon resolves it, and a revision it does not have fails at once. A
daemon that does not listen yet (just started) is waited for, within
--timeout.

-o json prints {"status": ..., "drift": ...}: the API's /api/v1/status and
/api/v1/drift answers.`,
		Args: noArgs,
	}
	server := addAPIFlags(c, "http://127.0.0.1:8080", "the anneal serve API (https with serve --tls-cert)")
	wait := c.Flags().String("wait", "", "wait until this revision (a commit id, short or full, a branch or a tag) is applied")
	timeout := c.Flags().Duration("timeout", 5*time.Minute, "give up waiting after this long")
	out := addOutputFlag(c, "text", "json")
	c.RunE = func(c *cobra.Command, _ []string) error {
		ctx := c.Context()
		w := c.OutOrStdout()
		if *wait != "" {
			if err := waitApplied(c, server, *wait, *timeout); err != nil {
				return err
			}
		}
		var st api.StatusView
		if err := apiCall(ctx, server, http.MethodGet, "/api/v1/status", "", &st); err != nil {
			return failure(err)
		}
		var plan *reconcile.Plan
		var ae *apiError
		if err := apiCall(ctx, server, http.MethodGet, "/api/v1/drift", "", &plan); errors.As(err, &ae) && ae.code == http.StatusServiceUnavailable {
			plan = nil // no plan computed yet
		} else if err != nil {
			return failure(err)
		}
		if out.value == "json" {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			if err := enc.Encode(struct {
				Status api.StatusView  `json:"status"`
				Drift  *reconcile.Plan `json:"drift"`
			}{st, plan}); err != nil {
				return failure(err)
			}
			return nil
		}
		unknown := -1 // nodes without a known build, when observing
		if !st.ObserveUntil.IsZero() && time.Now().Before(st.ObserveUntil) {
			var views []api.NodeView
			if err := apiCall(ctx, server, http.MethodGet, "/api/v1/nodes", "", &views); err == nil {
				unknown = 0
				for _, v := range views {
					if v.State != api.StateRemoved && (v.Live == nil || v.Live.State == string(node.Unknown)) {
						unknown++
					}
				}
			}
		}
		printStatus(w, server.server, &st, unknown)
		if plan == nil || plan.DNS == nil {
			fmt.Fprintln(w, "\ndrift: no plan computed yet")
			return nil
		}
		fmt.Fprintln(w, "\ndrift (the daemon's last plan):")
		renderText(w, plan, false, colorFor(w))
		return nil
	}
	return c
}

// printStatus prints the status as text: what an operator reads first
// (suspended, errors, approvals) first.
// unknown is how many nodes have no known build while the daemon
// observes (-1: not known).
func printStatus(w io.Writer, server string, st *api.StatusView, unknown int) {
	mode := ""
	if st.Mode != "" {
		mode = ", mode " + string(st.Mode)
	}
	fmt.Fprintf(w, "daemon:                  %s (%s%s)\n", server, cmp.Or(st.Version, "version unknown"), mode)
	if st.Suspended {
		fmt.Fprintln(w, "SUSPENDED:               reconciling is paused: nothing is fetched or applied until anneal resume")
	}
	fmt.Fprintf(w, "applied revision:        %s  (the last revision fully applied)\n", cmp.Or(st.AppliedRevision, "(none)"))
	fmt.Fprintf(w, "last good revision:      %s  (the newest that validated: the one converged to)\n", cmp.Or(st.LastGoodRevision, "(none)"))
	fmt.Fprintf(w, "last attempted revision: %s  (the newest fetched)\n", cmp.Or(st.LastAttemptedRevision, "(none)"))
	if !st.LastReconcile.IsZero() {
		fmt.Fprintf(w, "last reconcile:          %s (%.1fs; %d so far)\n", st.LastReconcile.Local().Format(time.RFC3339), st.LastDurationSeconds, st.Reconciles)
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
		switch {
		case unknown == 0:
			fmt.Fprintf(w, "observing until %s (the state had no node records): every node's build is known now; nothing waits on it\n", st.ObserveUntil.Format(time.RFC3339))
		default:
			held := ""
			if unknown > 0 {
				held = fmt.Sprintf(" (%s)", plural(unknown, "node"))
			}
			fmt.Fprintf(w, "observing: the state had no node records; until %s a node that is powered on and has no known build%s waits for its agent to report (it is adopted if it runs its desired build), and is never rebuilt\n", st.ObserveUntil.Format(time.RFC3339), held)
		}
	}
	if ro := st.Rollout; ro != nil {
		fmt.Fprintln(w, rolloutLine(ro))
	}
}

// rolloutLine is the rollout as the API reports it: progress while it
// runs, the outcome once it ended.
func rolloutLine(ro *reconcile.RolloutStatus) string {
	if ro.Running {
		s := fmt.Sprintf("rollout of %s: running: %d of %d done", short(ro.Revision), ro.Done, ro.Total)
		if len(ro.Canaries) > 0 {
			s += fmt.Sprintf(" (canaries: %s)", strings.Join(ro.Canaries, ", "))
		}
		return s
	}
	s := fmt.Sprintf("last rollout (%s): %d verified, %d decommissioned, %d failed, %d not started", short(ro.Revision), len(ro.Verified), len(ro.Decommissioned), len(ro.Failed), len(ro.NotStarted))
	if ro.Halted != "" {
		s += "; halted: " + ro.Halted + " (anneal nodes retry NODE... once fixed)"
	}
	return s
}

// resolveRevision asks the daemon for rev's full id (GET
// /api/v1/revisions/REV): a short id, a branch or a tag resolve as git
// resolves them; a revision the daemon does not have is an error now. A
// daemon without the route is taken at its word: rev as given.
func resolveRevision(ctx context.Context, server *apiFlags, rev string) (string, error) {
	var res struct {
		Revision string `json:"revision"`
	}
	err := apiCall(ctx, server, http.MethodGet, "/api/v1/revisions/"+url.PathEscape(rev), "", &res)
	var ae *apiError
	switch {
	case errors.As(err, &ae) && (ae.code == http.StatusNotImplemented || ae.code == http.StatusNotFound && !ae.api):
		return rev, nil
	case errors.As(err, &ae) && ae.code == http.StatusNotFound:
		return "", fmt.Errorf("--wait %s: the daemon does not have this revision: %s", rev, ae.msg)
	case err != nil:
		return "", fmt.Errorf("--wait %s: resolve: %w", rev, err)
	case res.Revision == "":
		return "", fmt.Errorf("--wait %s: the daemon resolved it to nothing", rev)
	}
	return res.Revision, nil
}

// supersededBy asks the daemon whether its applied revision is newer than
// rev and has rev in its history: the applied revision, or "".
func supersededBy(ctx context.Context, server *apiFlags, rev string) string {
	var res struct {
		SupersededBy string `json:"supersededBy"`
	}
	if err := apiCall(ctx, server, http.MethodGet, "/api/v1/revisions/"+url.PathEscape(rev), "", &res); err != nil {
		return "" // an older daemon, or none now: the wait goes on
	}
	return res.SupersededBy
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
	checkedApplied := "" // the applied revision last asked about (supersededBy)
	// A daemon just started (make demo, a script after systemctl start)
	// may not listen yet: the wait waits for it too.
	err := untilReachable(ctx, deadline, timeout, func() error {
		full, err := resolveRevision(ctx, api, rev)
		if err == nil {
			rev = full
		}
		return err
	})
	if err != nil {
		return failure(err)
	}
	// The status as the wait begins: an error or a halt it already holds
	// (a rollout halted before nodes retry) ends the wait only once a
	// reconcile after it has reported it again.
	var first reconcile.Status
	if err := untilReachable(ctx, deadline, timeout, func() error {
		return apiCall(ctx, api, http.MethodGet, "/api/v1/status", "", &first)
	}); err != nil {
		return failure(err)
	}
	// A halt of rev's rollout already there (nodes retry was just run) is
	// stale until a rollout is seen to move, or a second pass ends: the
	// pass under way as the wait began planned before the retry and halts
	// again without starting anything.
	staleHalt := first.Rollout != nil && first.Rollout.Revision == rev && first.Rollout.Halted != ""
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
			// A newer revision that has rev in its history was applied
			// (rev was skipped, or applied and then built upon): rev will
			// never be the applied revision itself.
			if a := st.AppliedRevision; a != "" && a != rev && a != checkedApplied && !(st.Rollout != nil && st.Rollout.Running) {
				checkedApplied = a
				if by := supersededBy(ctx, api, rev); by != "" {
					fmt.Fprintf(w, "%6.1fs  revision %s superseded: the applied revision %s contains it\n", time.Since(start).Seconds(), short(rev), short(by))
					return nil
				}
			}
			if ro, was := st.Rollout, first.Rollout; staleHalt && (st.Reconciles > first.Reconciles+1 || ro == nil || ro.Running ||
				ro.Revision != was.Revision || ro.Done != was.Done || ro.Halted != was.Halted) {
				staleHalt = false
			}
			halted := st.Rollout != nil && st.Rollout.Halted != ""
			if st.LastAttemptedRevision == rev && st.LastError != "" && st.Reconciles > first.Reconciles && !(halted && staleHalt) && !strings.Contains(st.LastError, "not signed") {
				if st.LastErrorClass == reconcile.FailInvalid || st.LastErrorClass == reconcile.FailApply {
					printNodeChanges(c, w, api, seen, start, nil, false)
					return failure(fmt.Errorf("revision %s: %s", short(rev), st.LastError))
				}
			}
		}
		if time.Now().After(deadline) {
			if err != nil {
				return failure(fmt.Errorf("revision %s not applied within %s: %w", short(rev), timeout, err))
			}
			return failure(fmt.Errorf("revision %s not applied within %s", short(rev), timeout))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// untilReachable calls f until the daemon answers it: while nothing
// listens at the address yet (connection refused: a daemon starting) it
// tries again every 250 ms, until deadline. Any other error (a refusal by
// the daemon, a TLS or DNS error) is returned at once.
func untilReachable(ctx context.Context, deadline time.Time, timeout time.Duration, f func() error) error {
	for {
		err := f()
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
			return err
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("the daemon did not answer within %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(min(250*time.Millisecond, time.Until(deadline))):
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
