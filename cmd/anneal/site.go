package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/spf13/cobra"

	"github.com/anneal-dev/anneal/providers/secret"
	"github.com/anneal-dev/anneal/providers/source"
	"github.com/anneal-dev/anneal/schema"
)

// siteFlags select where a site is read from: a directory (--site), or a
// commit of a git repository (--repo, --rev, --path).
type siteFlags struct {
	dir    string
	repo   string
	rev    string
	path   string
	branch string
	cache  string
	// Credentials for a remote --repo.
	sshKey, sshKeyPass, knownHosts string
	token, tokenUser               string

	// The operator's secret grants (--secrets FILE). A command that sends
	// the site's secrets sets resolving: without grants, a site naming any
	// secret is then invalid for it.
	secretsFile string
	grants      *secret.Grants
	resolving   bool

	label  string        // where the last load read from, for messages
	parsed *schema.Cache // when set, shared by loads (review: base then head)
}

func addSiteFlags(c *cobra.Command) *siteFlags {
	f := &siteFlags{}
	c.Flags().StringVar(&f.dir, "site", ".", "directory holding the site's YAML files")
	c.Flags().StringVar(&f.repo, "repo", "", "read the site from a git repository (URL or local path) instead of --site")
	c.Flags().StringVar(&f.rev, "rev", "", "with --repo: the commit, tag or branch (default: the branch tip)")
	c.Flags().StringVar(&f.path, "path", "", "with --repo: the site's folder inside the repository")
	c.Flags().StringVar(&f.branch, "branch", "", "with --repo: the branch to follow (default: the remote's default, else main)")
	c.Flags().StringVar(&f.cache, "cache", "", "with a remote --repo: clone cache (default $XDG_CACHE_HOME/anneal/repos)")
	c.Flags().StringVar(&f.sshKey, "git-ssh-key", "", "with an ssh --repo: the private key file to authenticate with (default: the SSH agent)")
	c.Flags().StringVar(&f.sshKeyPass, "git-ssh-key-passphrase", "", "secret reference (env:NAME or file:PATH) of --git-ssh-key's passphrase")
	c.Flags().StringVar(&f.knownHosts, "git-known-hosts", "", "with an ssh --repo: the known_hosts file the server's host key must be in (default: SSH_KNOWN_HOSTS, else ~/.ssh/known_hosts)")
	c.Flags().StringVar(&f.token, "git-token", "", "with an https --repo: secret reference (env:NAME or file:PATH) of a token sent as the HTTP basic-auth password")
	c.Flags().StringVar(&f.secretsFile, "secrets", "", "the operator's secret grants (YAML): the secrets the site may name (secret:NAME), where each value is read from and where it may be sent; default $ANNEAL_SECRETS; see docs/security.md")
	c.Flags().StringVar(&f.tokenUser, "git-user", "anneal", "with --git-token: the basic-auth user name (GitHub and GitLab accept any with a personal token; GitLab wants oauth2 with an OAuth token)")
	return f
}

// auth builds the credentials for a remote repository from the flags (nil:
// none given, go-git's defaults: the SSH agent, or anonymous HTTP).
func (f *siteFlags) auth(url string) (transport.AuthMethod, error) {
	if f.sshKey != "" && f.token != "" {
		return nil, errors.New("--git-ssh-key and --git-token are for different transports: give one")
	}
	if f.token != "" {
		tok, err := secret.Resolver{}.Resolve(f.token)
		if err != nil {
			return nil, fmt.Errorf("--git-token: %w", err)
		}
		return &githttp.BasicAuth{Username: f.tokenUser, Password: tok}, nil
	}
	if f.sshKey == "" && f.knownHosts == "" {
		return nil, nil
	}
	if f.sshKey == "" {
		return nil, errors.New("--git-known-hosts needs --git-ssh-key")
	}
	pass := ""
	if f.sshKeyPass != "" {
		p, err := secret.Resolver{}.Resolve(f.sshKeyPass)
		if err != nil {
			return nil, fmt.Errorf("--git-ssh-key-passphrase: %w", err)
		}
		pass = p
	}
	user := "git"
	if ep, err := transport.NewEndpoint(url); err == nil && ep.User != "" {
		user = ep.User
	}
	keys, err := gitssh.NewPublicKeysFromFile(user, f.sshKey, pass)
	if err != nil {
		return nil, fmt.Errorf("--git-ssh-key %s: %w", f.sshKey, err)
	}
	var files []string
	if f.knownHosts != "" {
		files = []string{f.knownHosts}
	}
	cb, err := gitssh.NewKnownHostsCallback(files...)
	if err != nil {
		return nil, fmt.Errorf("known hosts: %w", err)
	}
	keys.HostKeyCallback = cb
	return keys, nil
}

// load reads and checks the site. Diagnostics come back for an invalid site
// (err is then a *schema.InvalidError); err alone means it could not be read.
func (f *siteFlags) load(ctx context.Context) (*schema.Site, schema.Diagnostics, error) {
	if err := f.checkRepoFlags(); err != nil {
		return nil, nil, err
	}
	opts, err := f.loadOptions()
	if err != nil {
		return nil, nil, err
	}
	if f.repo == "" {
		f.label = f.dir
		return schema.LoadDir(ctx, f.dir, opts)
	}
	return f.loadRev(ctx, f.repo, f.rev, f.path)
}

// checkRepoFlags refuses --path, --rev and --branch without --repo: they
// would be ignored, and the site read from --site (by default the current
// directory) instead of the folder meant.
func (f *siteFlags) checkRepoFlags() error {
	if f.repo != "" {
		return nil
	}
	for _, fl := range []struct{ name, value string }{{"path", f.path}, {"rev", f.rev}, {"branch", f.branch}} {
		if fl.value != "" {
			return usagef("--%s needs --repo (a site in a directory is read with --site DIR)", fl.name)
		}
	}
	return nil
}

// loadRev reads the site at one revision of a repository.
func (f *siteFlags) loadRev(ctx context.Context, repoURL, rev, path string) (*schema.Site, schema.Diagnostics, error) {
	repo, err := f.openRepo(ctx, repoURL)
	if err != nil {
		return nil, nil, err
	}
	defer repo.Close()
	hash, err := repo.Resolve(rev)
	if err != nil {
		return nil, nil, err
	}
	fsys, err := repo.FS(hash, path)
	if err != nil {
		return nil, nil, err
	}
	f.label = fmt.Sprintf("%s@%s", repoURL, hash.String()[:12])
	if path != "" {
		f.label += ":" + path
	}
	opts, err := f.loadOptions()
	if err != nil {
		return nil, nil, err
	}
	return schema.Load(ctx, fsys, opts)
}

// loadOptions are the options of every load: the shared cache, and the
// operator's grants when given (or none at all for a command that sends
// secrets: every secret the site names is then refused).
func (f *siteFlags) loadOptions() (schema.LoadOptions, error) {
	opts := schema.LoadOptions{Cache: f.parsed}
	g, err := f.secretGrants()
	if err != nil {
		return opts, err
	}
	if g == nil && f.resolving {
		return opts, errors.New("no secret grants: give --secrets FILE (or set $ANNEAL_SECRETS), the operator's grants of the secrets the site names and where each may be sent; for the example site and the lab: --secrets examples/lab-secrets.yaml (see docs/security.md)")
	}
	if g != nil {
		opts.Secrets = g
	}
	return opts, nil
}

// secretGrants reads --secrets once, refusing a grant of the credentials
// the site flags themselves name (the git token, key and passphrase) or of
// the grants file.
func (f *siteFlags) secretGrants() (*secret.Grants, error) {
	what := "--secrets"
	if f.secretsFile == "" {
		f.secretsFile, what = os.Getenv("ANNEAL_SECRETS"), "$ANNEAL_SECRETS"
	}
	if f.grants != nil || f.secretsFile == "" {
		return f.grants, nil
	}
	g, err := secret.LoadGrants(f.secretsFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	own := []struct{ what, ref string }{
		{"--secrets file", f.secretsFile}, {"--git-token", f.token}, {"--git-ssh-key", f.sshKey},
		{"--git-ssh-key-passphrase", f.sshKeyPass},
	}
	for _, o := range own {
		if o.ref == "" {
			continue
		}
		if err := g.Forbid(o.what, o.ref, ""); err != nil {
			return nil, fmt.Errorf("--secrets: %w", err)
		}
	}
	f.grants = g
	return g, nil
}

// forbid declares one of the daemon's own credentials to the grants (see
// secret.Grants.Forbid); nothing to do without --secrets.
func (f *siteFlags) forbid(what, ref, value string) error {
	g, err := f.secretGrants()
	if err != nil || g == nil {
		return err
	}
	if err := g.Forbid(what, ref, value); err != nil {
		return fmt.Errorf("--secrets: %w", err)
	}
	return nil
}

// forbidState declares the state file and the netboot key kept beside it
// (with its value, when it exists: a copy or a hard link is refused too).
func (f *siteFlags) forbidState(statePath string) error {
	if statePath == "" {
		return nil
	}
	if err := f.forbid("state file", statePath, ""); err != nil {
		return err
	}
	key, _ := os.ReadFile(statePath + ".netboot-key")
	return f.forbid("netboot key", statePath+".netboot-key", string(key))
}

// checkSources reads every secret the site names for uses (all when none
// is given) once, before anything is sent: a variable not set or a file
// not readable stops the command at start, all of them named at once.
func (f *siteFlags) checkSources(site *schema.Site, uses ...schema.SecretUse) error {
	g, err := f.secretGrants()
	if err != nil || g == nil {
		return err
	}
	if err := g.CheckSources(site.SecretNames(uses...)...); err != nil {
		return fmt.Errorf("secret grants: %w", err) // each line names the file
	}
	return nil
}

// resolver sends the site's secrets: the grants, asked per destination.
// Without --secrets it refuses every secret.
func (f *siteFlags) resolver() func(schema.SecretRef, schema.SecretDest) (string, error) {
	return f.grants.Resolve
}

func (f *siteFlags) openRepo(ctx context.Context, url string) (*source.Repo, error) {
	cache := f.cache
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			if home, err := os.UserHomeDir(); err == nil {
				base = filepath.Join(home, ".cache")
			}
		}
		cache = filepath.Join(base, "anneal", "repos")
	}
	auth, err := f.auth(url)
	if err != nil {
		return nil, err
	}
	repo, err := source.Open(ctx, source.Options{URL: url, Branch: f.branch, CacheDir: cache, Auth: auth})
	if err != nil {
		return nil, err
	}
	if err := repo.Fetch(ctx); err != nil {
		return nil, err
	}
	return repo, nil
}

// where names what the last load read: a directory or repo@commit:path.
func (f *siteFlags) where() string {
	if f.label != "" {
		return f.label
	}
	return f.dir
}

// display turns a site-relative file into a path the user can open.
func (f *siteFlags) display(file string) string {
	if f.repo != "" {
		if file == "" {
			return f.label
		}
		return f.label + ":" + strings.TrimPrefix(filepath.ToSlash(filepath.Join(f.path, file)), "/")
	}
	if file == "" {
		return f.dir
	}
	return filepath.Join(f.dir, filepath.FromSlash(file))
}

// loadValid loads a site that must be valid, for commands other than validate.
func (f *siteFlags) loadValid(ctx context.Context) (*schema.Site, error) {
	if err := f.checkRepoFlags(); err != nil {
		return nil, err // a usage error: exit 64
	}
	site, _, err := f.load(ctx)
	var inv *schema.InvalidError
	if errors.As(err, &inv) {
		return nil, failure(errors.New(f.relocate(inv)))
	}
	if err != nil {
		return nil, failure(err)
	}
	return site, nil
}

func (f *siteFlags) relocate(inv *schema.InvalidError) string {
	ds := make(schema.Diagnostics, len(inv.Diagnostics))
	for i, d := range inv.Diagnostics {
		d.File = f.display(d.File)
		ds[i] = d
	}
	return (&schema.InvalidError{Diagnostics: ds}).Error() + " (run anneal validate for all of them)"
}

// gitTop finds the work tree containing dir and dir's path inside it.
func gitTop(dir string) (top, rel string, err error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", "", err
	}
	for d := abs; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, ".git")); err == nil {
			rel, err := filepath.Rel(d, abs)
			if err != nil {
				return "", "", err
			}
			if rel == "." {
				rel = ""
			}
			return d, filepath.ToSlash(rel), nil
		}
		if filepath.Dir(d) == d {
			return "", "", fmt.Errorf("%s is not inside a git work tree: give --repo", dir)
		}
	}
}
