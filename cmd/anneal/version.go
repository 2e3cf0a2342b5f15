package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// versionOverride is set at link time by a release build:
//
//	go build -ldflags "-X main.versionOverride=v0.2.0" ./cmd/anneal
//
// Empty: the version is read from the binary's build information.
var versionOverride string

// buildVersion is this binary's version and the commit it was built from:
// the ldflags override, else the module version (a go install of a tag),
// else the VCS revision of a build in a checkout (with "+dirty" when the
// tree had local changes).
func buildVersion() (version, revision string) {
	version = "(devel)"
	info, ok := debug.ReadBuildInfo()
	if ok {
		if v := info.Main.Version; v != "" {
			version = v
		}
		modified := false
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && revision != "" {
			revision += "+dirty"
		}
	}
	if versionOverride != "" {
		version = versionOverride
	}
	return version, revision
}

// versionLine is what --version and anneal version print.
func versionLine() string {
	v, rev := buildVersion()
	if rev == "" {
		return "anneal " + v
	}
	return fmt.Sprintf("anneal %s (commit %s)", v, rev)
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print anneal's version and the commit it was built from",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			fmt.Fprintln(c.OutOrStdout(), versionLine())
			return nil
		},
	}
}
