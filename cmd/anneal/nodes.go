package main

import (
	"bytes"
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
	"text/tabwriter"
	"time"

	"github.com/anneal-dev/anneal/api"
	"github.com/anneal-dev/anneal/providers/secret"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
	"github.com/spf13/cobra"
)

func newNodesCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "nodes [NODE...]",
		Short: "List the site's nodes with their derived addresses, or a running daemon's nodes with their live state",
		Long: `Without --server, nodes lists the local site's nodes (--site, or --repo) with
their derived addresses and desired build.

With --server, the daemon's nodes: its site (the last good revision) and
what it knows of each node (live state, running build, why its last plan
rebuilds or holds it). No local checkout is read. A node not running its
desired build is marked in the ON BUILD column: "no" (a different build
runs), "?" (nothing known yet), "yes".

NODE arguments, --rack, --role and --state select nodes (all must match;
--state matches the declared state, e.g. active, or the live one, e.g.
failed).`,
	}
	site := addSiteFlags(c)
	out := addOutputFlag(c, "text", "json")
	server := addAPIFlags(c, "", "a running anneal serve's API (http://127.0.0.1:8080): list its nodes with their live state and build")
	var filter nodeFilter
	c.Flags().StringVar(&filter.rack, "rack", "", "only the nodes in this rack")
	c.Flags().StringVar(&filter.role, "role", "", "only the nodes with this role")
	c.Flags().StringVar(&filter.state, "state", "", "only the nodes in this state: declared (active, maintenance, decommissioned, removed) or live (verified, failed, provisioning, ...)")
	c.AddCommand(newNodesRetryCmd())
	c.AddCommand(newNodesRevokeAgentCmd())
	c.ValidArgsFunction = completeNodes(site, server)
	_ = c.RegisterFlagCompletionFunc("state", completeValues(nodeStates...))
	c.RunE = func(c *cobra.Command, args []string) error {
		filter.names = args
		var (
			views []api.NodeView
			s     *schema.Site
		)
		if server.server != "" {
			filter.live = true
			if err := apiCall(c.Context(), server, http.MethodGet, "/api/v1/nodes", "", &views); err != nil {
				return failure(err)
			}
		} else {
			var err error
			if s, err = site.loadValid(c.Context()); err != nil {
				return err
			}
			views = api.NodeViews(s, nil)
		}
		views, err := filter.apply(views)
		if err != nil {
			return failure(err)
		}
		w := c.OutOrStdout()
		if out.value == "json" {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			if err := enc.Encode(views); err != nil {
				return failure(err)
			}
			return nil
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		if server.server != "" {
			fmt.Fprintln(tw, "NODE\tREGION/RACK\tROLES\tSTATE\tBUILD\tLIVE\tLIVE BUILD\tON BUILD\tSINCE\tDRIFT\tREASON")
			for _, v := range views {
				live, lb, since, reason := "unknown", "-", "-", ""
				if l := v.Live; l != nil {
					live, lb, reason = liveState(l), cmp.Or(l.BuildID, "-"), l.Reason
					if !l.Since.IsZero() {
						since = l.Since.Local().Format("15:04:05")
					}
				}
				fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Region, v.Rack, cmp.Or(strings.Join(v.Roles, ","), "-"), v.State,
					cmp.Or(v.BuildID, "-"), live, lb, onBuild(v), since, cmp.Or(v.Drift, "-"), reason)
			}
		} else {
			fmt.Fprintln(tw, "NODE\tREGION/RACK\tSTATE\tIMAGE\tPATCHES\tROLES\tBMC\tPROVISIONING\tINTERNAL\tBUILD")
			for _, v := range views {
				fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Region, v.Rack, v.State, v.Image, v.PatchSet,
					strings.Join(v.Roles, ","), v.BMC, addrOn(v.Addresses, s, schema.RoleProvisioning), addrOn(v.Addresses, s, schema.RoleInternal), v.BuildID)
			}
		}
		if err := tw.Flush(); err != nil {
			return failure(err)
		}
		return nil
	}
	return c
}

// onBuild says whether a node runs its desired build: yes, no, ? (not
// known), - (no desired build: the node left the site).
func onBuild(v api.NodeView) string {
	switch {
	case v.BuildID == "":
		return "-"
	case v.Live == nil || v.Live.BuildID == "":
		return "?"
	case v.Live.BuildID == v.BuildID:
		return "yes"
	}
	return "no"
}

// nodeFilter selects nodes by name, rack, role and state.
type nodeFilter struct {
	names             []string
	rack, role, state string
	live              bool // the views are the daemon's: a node without a record is live "unknown"
}

// liveState is v's live state as the LIVE column shows it ("unknown",
// "enrolled" included), so that --state matches what the table says; ""
// for a local site's views, which have no live state.
func (f nodeFilter) liveState(v api.NodeView) string {
	switch {
	case v.Live != nil:
		return liveState(v.Live)
	case f.live:
		return "unknown"
	}
	return ""
}

// nodeStates are --state's values, for completion: declared, then live.
var nodeStates = []string{"active", "maintenance", "decommissioned", api.StateRemoved,
	"unknown", "enrolled", string(node.Pending), string(node.Provisioning), string(node.Installed), string(node.Verified),
	string(node.Failed), string(node.Retiring)}

func (f nodeFilter) apply(views []api.NodeView) ([]api.NodeView, error) {
	known := map[string]bool{}
	for _, v := range views {
		known[v.Name] = true
	}
	var unknown []string
	for _, n := range f.names {
		if !known[n] {
			unknown = append(unknown, n)
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("no node named %s", strings.Join(unknown, ", "))
	}
	out := views[:0:0]
	for _, v := range views {
		switch {
		case len(f.names) > 0 && !slices.Contains(f.names, v.Name),
			f.rack != "" && v.Rack != f.rack,
			f.role != "" && !slices.Contains(v.Roles, f.role),
			f.state != "" && v.State != f.state && f.liveState(v) != f.state:
			continue
		}
		out = append(out, v)
	}
	return out, nil
}

func addrOn(as []schema.Address, s *schema.Site, role schema.NetworkRole) string {
	for _, a := range as {
		if n := s.Network(a.Network); n != nil && n.Role == role {
			var parts []string
			if a.IPv4.IsValid() {
				parts = append(parts, a.IPv4.String())
			}
			if a.IPv6.IsValid() {
				parts = append(parts, a.IPv6.String())
			}
			return strings.Join(parts, " ")
		}
	}
	return "-"
}

func newSchemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the embedded CUE schema every site document is checked against",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			_, err := c.OutOrStdout().Write(schema.SchemaSource())
			if err != nil {
				return failure(err)
			}
			return nil
		},
	}
}

func newNodesRetryCmd() *cobra.Command {
	return newNodesActionCmd("retry", "Retry nodes whose rebuild failed (through a running anneal serve)", "retry requested")
}

func newNodesRevokeAgentCmd() *cobra.Command {
	return newNodesActionCmd("revoke-agent", "Revoke nodes' agent tokens (through a running anneal serve): their reports are refused until their next install", "agent token revoked")
}

// newNodesActionCmd is `anneal nodes ACTION NODE...`: POST
// /api/v1/nodes/NODE/ACTION on a running serve for each node, with its
// bearer token.
func newNodesActionCmd(action, short, done string) *cobra.Command {
	c := &cobra.Command{
		Use:   action + " NODE...",
		Short: short,
		Args:  cobra.MinimumNArgs(1),
	}
	api := addAPIFlags(c, "http://127.0.0.1:8080", "the anneal serve API (https with serve --tls-cert)")
	tokenRef := c.Flags().String("token", "", "secret reference (env:NAME or file:PATH) of the API's bearer token")
	c.ValidArgsFunction = completeNodes(nil, api)
	c.RunE = func(c *cobra.Command, args []string) error {
		if *tokenRef == "" {
			return usagef("%s needs the API's token: --token REF (env:NAME or file:PATH)", action)
		}
		token, err := resolveToken(*tokenRef)
		if err != nil {
			return failure(err)
		}
		for _, n := range args {
			if err := apiCall(c.Context(), api, http.MethodPost, "/api/v1/nodes/"+n+"/"+action, token, nil); err != nil {
				return failure(err)
			}
			fmt.Fprintf(c.OutOrStdout(), "%s: %s\n", n, done)
		}
		return nil
	}
	return c
}

func resolveToken(ref string) (string, error) {
	if ref == "" {
		return "", nil
	}
	return secret.Resolver{}.Resolve(ref)
}

// apiCall calls a running anneal serve and decodes its JSON answer into
// out (when not nil).
func apiCall(ctx context.Context, api *apiFlags, method, path, token string, out any) error {
	return apiSend(ctx, api, method, path, token, nil, out)
}

// apiSend is apiCall with a JSON request body (when in is not nil).
func apiSend(ctx context.Context, api *apiFlags, method, path, token string, in, out any) error {
	client, err := api.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var reqBody io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		reqBody = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(api.server, "/")+path, reqBody)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its "Get URL:" would say again what is said here
		}
		return fmt.Errorf("%s %s: cannot reach the daemon at %s: %w", method, path, api.server, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return newAPIError(method, path, resp.StatusCode, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}
