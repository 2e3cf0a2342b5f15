package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/schema"
	"github.com/spf13/cobra"
)

// nodeView is one row of `anneal nodes -o json`.
type nodeView struct {
	Name            string           `json:"name"`
	Region          string           `json:"region"`
	Rack            string           `json:"rack"`
	State           string           `json:"state"`
	HardwareProfile string           `json:"hardwareProfile"`
	Image           string           `json:"image"`
	PatchSet        string           `json:"patchSet"`
	Roles           []string         `json:"roles"`
	BMC             string           `json:"bmc"`
	PrimaryFQDN     string           `json:"primaryFqdn,omitempty"`
	Addresses       []schema.Address `json:"addresses"`
	// BuildID is the desired build: a hash of the node's build spec.
	BuildID string `json:"buildId"`
}

func newNodesCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "nodes",
		Short: "List the site's nodes with their derived addresses",
		Args:  noArgs,
	}
	site := addSiteFlags(c)
	out := addOutputFlag(c, "text", "json")
	c.RunE = func(c *cobra.Command, _ []string) error {
		s, err := site.loadValid(c.Context())
		if err != nil {
			return err
		}
		views := nodeViews(s)
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
		fmt.Fprintln(tw, "NODE\tREGION/RACK\tSTATE\tIMAGE\tPATCHES\tROLES\tBMC\tPROVISIONING\tINTERNAL")
		for _, v := range views {
			fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Region, v.Rack, v.State, v.Image, v.PatchSet,
				strings.Join(v.Roles, ","), v.BMC, addrOn(v.Addresses, s, schema.RoleProvisioning), addrOn(v.Addresses, s, schema.RoleInternal))
		}
		if err := tw.Flush(); err != nil {
			return failure(err)
		}
		return nil
	}
	return c
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

// nodeViews lists a site's nodes as `anneal nodes -o json` and the API show them.
func nodeViews(s *schema.Site) []nodeView {
	views := make([]nodeView, 0, len(s.Nodes))
	for _, n := range s.Nodes {
		roles := n.Roles
		if roles == nil {
			roles = []string{}
		}
		views = append(views, nodeView{
			Name: n.Name, Region: n.Region, Rack: n.Rack, State: string(n.State),
			HardwareProfile: n.HardwareProfile, Image: n.Image, PatchSet: n.PatchSet,
			Roles: roles, BMC: n.BMC.Address, PrimaryFQDN: n.PrimaryFQDN, Addresses: n.Addresses,
			BuildID: reconcile.BuildSpecOf(s, n).ID(),
		})
	}
	return views
}
