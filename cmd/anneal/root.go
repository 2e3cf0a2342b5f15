package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
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
		return &usageError{err}
	})
	addLogFormatFlag(root)
	root.Version = versionLine()
	root.SetVersionTemplate("{{.Version}}\n")
	defer completeChoices(root)
	root.AddCommand(newValidateCmd(), newPlanCmd(), newApplyCmd(), newServeCmd(), newNodesCmd(), newRenderCmd(), newAgentCmd(), newLabCmd(), newStatusCmd(), newApproveCmd(), newEnrollCmd(), newBackupCmd(), newDNSCmd(), newSchemaCmd(), newVersionCmd(),
		newSuspendCmd(), newResumeCmd(), newReconcileCmd())
	root.AddCommand(newEventsCmd(), newHistoryCmd())
	return root
}

// outputFlag is an -o/--output value restricted to a set of formats.
type outputFlag struct {
	value   string
	allowed []string
	typ     string // the type help shows (default "format")
}

func (o *outputFlag) String() string { return o.value }
func (o *outputFlag) Type() string {
	if o.typ != "" {
		return o.typ
	}
	return strings.Join(o.allowed, "|")
}
func (o *outputFlag) Set(v string) error {
	if !slices.Contains(o.allowed, v) {
		return fmt.Errorf("%q is not one of %s", v, strings.Join(o.allowed, ", "))
	}
	o.value = v
	return nil
}

func addOutputFlag(c *cobra.Command, allowed ...string) *outputFlag {
	o := &outputFlag{value: allowed[0], allowed: allowed}
	c.Flags().VarP(o, "output", "o", "output format")
	return o
}

func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("takes no arguments, got %q", args)
	}
	return nil
}

// completeChoices registers, on every command, the completion of each
// flag restricted to a set of values (-o, --only, --mode, --log-format).
func completeChoices(c *cobra.Command) {
	for _, fs := range []*pflag.FlagSet{c.LocalNonPersistentFlags(), c.PersistentFlags()} {
		fs.VisitAll(func(f *pflag.Flag) {
			if o, ok := f.Value.(*outputFlag); ok {
				_ = c.RegisterFlagCompletionFunc(f.Name, completeValues(o.allowed...))
			}
		})
	}
	for _, sub := range c.Commands() {
		completeChoices(sub)
	}
}
