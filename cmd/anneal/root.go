package main

import (
	"fmt"
	"io"
	"slices"

	"github.com/spf13/cobra"
)

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "anneal",
		Short: "GitOps reconciler for bare-metal fleets",
		Long: `anneal converges a fleet of physical servers to the site repo that declares it:
addresses, then DNS, then netboot, then immutable rebuilds, then verification.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%s: %w", c.CommandPath(), err)
	})
	root.AddCommand(newValidateCmd(), newPlanCmd(), newApplyCmd(), newServeCmd(), newNodesCmd(), newRenderCmd(), newAgentCmd(), newLabCmd(), newStatusCmd(), newApproveCmd(), newEnrollCmd(), newBackupCmd(), newDNSCmd(), newSchemaCmd())
	root.AddCommand(newEventsCmd(), newHistoryCmd())
	return root
}

// outputFlag is an -o/--output value restricted to a set of formats.
type outputFlag struct {
	value   string
	allowed []string
}

func (o *outputFlag) String() string { return o.value }
func (o *outputFlag) Type() string   { return "format" }
func (o *outputFlag) Set(v string) error {
	if !slices.Contains(o.allowed, v) {
		return fmt.Errorf("unknown output format %q (want one of %v)", v, o.allowed)
	}
	o.value = v
	return nil
}

func addOutputFlag(c *cobra.Command, allowed ...string) *outputFlag {
	o := &outputFlag{value: allowed[0], allowed: allowed}
	c.Flags().VarP(o, "output", "o", fmt.Sprintf("output format: %v", allowed))
	return o
}

func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%s takes no arguments, got %q", c.CommandPath(), args)
	}
	return nil
}
