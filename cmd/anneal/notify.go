package main

import (
	"log/slog"
	"path"
	"path/filepath"
	"strings"

	"github.com/anneal-dev/anneal/providers/notify"
	"github.com/anneal-dev/anneal/providers/secret"
)

// loadNotifier builds the notifier of serve --notify FILE (nil without
// one). Its secrets are the daemon's own: declared to the grants so that
// a site can never be granted them, like --token's.
func loadNotifier(file string, site *siteFlags, log *slog.Logger) (*notify.Notifier, error) {
	if file == "" {
		return nil, nil
	}
	c, err := notify.Load(file)
	if err != nil {
		return nil, err
	}
	if err := site.forbid("notify file (--notify)", file, ""); err != nil {
		return nil, err
	}
	for _, s := range c.Secrets() {
		v, _ := secret.Resolver{}.Resolve(s.Ref.String()) // unreadable: New says so
		if err := site.forbid(s.What, s.Ref.String(), v); err != nil {
			return nil, err
		}
	}
	return notify.New(c, notify.Options{Log: log.With("component", "notify"), Site: notifySite(site)})
}

// notifySite names the site in notifications when the notify file does
// not: the repository's or the directory's base name.
func notifySite(f *siteFlags) string {
	name := filepath.Base(filepath.Clean(f.dir))
	if f.repo != "" {
		name = strings.TrimSuffix(path.Base(strings.TrimRight(f.repo, "/")), ".git")
		if i := strings.LastIndexAny(name, ":"); i >= 0 {
			name = name[i+1:]
		}
	}
	if f.path != "" && f.path != "." {
		name += "-" + strings.ReplaceAll(strings.Trim(f.path, "/"), "/", "-")
	}
	name = strings.Trim(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, name), ".-")
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}
