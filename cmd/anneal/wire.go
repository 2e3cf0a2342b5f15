package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/anneal-dev/anneal/providers/dns/powerdns"
	"github.com/anneal-dev/anneal/providers/dns/rfc2136"
	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/schema"
	"github.com/spf13/cobra"
)

// dnsTargets builds a provider for every DNS target of the site. Secrets
// are resolved here through the operator's grants (resolve), once; a
// missing or refused one fails before anything is read or sent.
func dnsTargets(site *schema.Site, resolve func(schema.SecretRef, schema.SecretDest) (string, error)) (map[string]dns.Target, error) {
	out := map[string]dns.Target{}
	if site.DNS == nil {
		return out, nil
	}
	for _, t := range site.DNS.Targets {
		var (
			target dns.Target
			err    error
		)
		switch t.Kind {
		case schema.TargetRFC2136:
			target, err = rfc2136.FromSite(t, resolve)
		case schema.TargetPowerDNS:
			target, err = powerdns.FromSite(t, resolve)
		default:
			err = fmt.Errorf("dns target %s: unknown kind %q", t.Name, t.Kind)
		}
		if err != nil {
			return nil, err // the provider names the target
		}
		out[t.Name] = target
	}
	return out, nil
}

// stateFlags select the state store.
type stateFlags struct {
	path string
	cmd  *cobra.Command // its stderr gets the note of a migration
}

func addStateFlags(c *cobra.Command) *stateFlags {
	f := &stateFlags{cmd: c}
	c.Flags().StringVar(&f.path, "state", "", "state file (default $XDG_STATE_HOME/anneal/SITE.db, or ~/.local/state/anneal/SITE.db)")
	return f
}

func (f *stateFlags) open(site *schema.Site) (*bolt.Store, error) {
	path, err := f.file(site)
	if err != nil {
		return nil, err
	}
	st, err := bolt.Open(path, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if m := st.Migrated(); m != nil {
		newLogger(f.cmd, f.cmd.ErrOrStderr(), slog.LevelInfo).Info("state file migrated to this anneal's format",
			"file", m.Path, "from", m.From, "to", m.To)
	}
	return st, nil
}

// file is the state file's path.
func (f *stateFlags) file(site *schema.Site) (string, error) {
	if f.path != "" {
		return f.path, nil
	}
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("no --state and no home directory: %w", err)
		}
		base = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(base, "anneal", site.Config.Name+".db"), nil
}
