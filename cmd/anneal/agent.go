package main

import (
	"errors"
	"log/slog"
	"time"

	"github.com/anneal-dev/anneal/agent"
	"github.com/spf13/cobra"
)

func newAgentCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "agent",
		Short: "Report this machine's facts to anneal (runs on installed nodes)",
		Long: `Agent reads this machine's facts (os-release, kernel, interfaces with MACs,
bonds, VLANs, bridges, addresses, default routes, resolvers) and posts them to
the anneal server named in --config, so that drift made by hand after an
install is seen. Its first report after an install is what verifies the
install: the callback alone does not. The token in --config is this install's:
every reinstall replaces it and anneal can revoke it (reports are then refused,
403); the file is read again before every report.

With --install-token-file it posts the install callback once instead: what
anneal-installed.service runs on the first boot of a rebuilt node, with the
single-use token the install wrote to /etc/anneal/install-token (mode 0600).
--install-token takes the token itself, which then shows in ps; prefer the
file. When the server refuses the callback for good (token used, expired or
superseded, node not armed, another build installed) the agent exits 3, so
that the unit stops retrying (RestartPreventExitStatus=3); other failures
exit 1.`,
		Args: noArgs,
	}
	config := c.Flags().String("config", "/etc/anneal/agent.json", "the agent's config, written by the install")
	buildFile := c.Flags().String("build-id-file", "/etc/anneal/build-id", "the installed build id, written by the install")
	root := c.Flags().String("root", "/", "the filesystem root to read facts from")
	interval := c.Flags().Duration("interval", 5*time.Minute, "report interval")
	once := c.Flags().Bool("once", false, "report once and exit")
	installToken := c.Flags().String("install-token", "", "post the install callback with this single-use token, then exit (visible in ps: prefer --install-token-file)")
	installTokenFile := c.Flags().String("install-token-file", "", "post the install callback with the single-use token read from this file, then exit")
	c.MarkFlagsMutuallyExclusive("install-token", "install-token-file")
	c.RunE = func(c *cobra.Command, _ []string) error {
		ctx := c.Context()
		log := newLogger(c, c.ErrOrStderr(), slog.LevelInfo)
		if *interval <= 0 {
			return usagef("--interval must be positive, got %s", *interval)
		}
		token := *installToken
		if *installTokenFile != "" {
			var err error
			if token, err = agent.ReadInstallToken(*installTokenFile, log); err != nil {
				return failure(err)
			}
		}
		a, err := agent.New(agent.Options{ConfigPath: *config, BuildIDFile: *buildFile, Root: *root, Interval: *interval, Log: log})
		if err != nil {
			return failure(err)
		}
		switch {
		case token != "":
			err := a.Installed(ctx, token)
			var se *agent.StatusError
			if errors.As(err, &se) && se.Permanent() {
				return &codedError{code: exitAgentRefused, err: err}
			}
			if err != nil {
				return failure(err)
			}
			return nil
		case *once:
			if err := a.Report(ctx); err != nil {
				return failure(err)
			}
			return nil
		}
		return a.Run(ctx)
	}
	return c
}

// exitAgentRefused is the exit status of a refused install callback;
// anneal-installed.service (pxe/boot) names it in RestartPreventExitStatus.
const exitAgentRefused = 3
