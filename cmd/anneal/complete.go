package main

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/api"
	"github.com/anneal-dev/anneal/reconcile/events"
	"github.com/spf13/cobra"
)

// completeNodes completes node names: the daemon's when --server is
// given, else the local site's (site's flags, or the current directory).
func completeNodes(site *siteFlags, server *apiFlags) cobra.CompletionFunc {
	return func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		names := nodeNames(c, site, server)
		var out []cobra.Completion
		for _, n := range names {
			if strings.HasPrefix(n, toComplete) && !slices.Contains(args, n) {
				out = append(out, n)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

func nodeNames(c *cobra.Command, site *siteFlags, server *apiFlags) []string {
	if server != nil && server.server != "" && (site == nil || c.Flags().Changed("server")) {
		var views []api.NodeView
		// A shell waits on this: a daemon that does not answer soon is
		// skipped.
		ctx, cancel := context.WithTimeout(c.Context(), 3*time.Second)
		err := apiCall(ctx, server, http.MethodGet, "/api/v1/nodes", "", &views)
		cancel()
		if err == nil {
			names := make([]string, 0, len(views))
			for _, v := range views {
				names = append(names, v.Name)
			}
			return names
		}
		if c.Flags().Changed("server") {
			return nil
		}
	}
	if site == nil {
		site = &siteFlags{dir: "."}
	}
	s, _, err := site.load(c.Context())
	if err != nil || s == nil {
		return nil
	}
	names := make([]string, 0, len(s.Nodes))
	for _, n := range s.Nodes {
		names = append(names, n.Name)
	}
	return names
}

// completeValues completes a flag from a fixed list.
func completeValues(values ...string) cobra.CompletionFunc {
	return cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp)
}

// completeKinds completes --kind's comma-separated event kinds: the last
// element, after the ones already given.
func completeKinds(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	done, last := "", toComplete
	if i := strings.LastIndex(toComplete, ","); i >= 0 {
		done, last = toComplete[:i+1], toComplete[i+1:]
	}
	given := strings.Split(done, ",")
	var out []cobra.Completion
	for _, k := range events.Kinds() {
		if strings.HasPrefix(string(k), last) && !slices.Contains(given, string(k)) {
			out = append(out, done+string(k))
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
}
