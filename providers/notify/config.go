package notify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/anneal-dev/anneal/reconcile/events"
	"go.yaml.in/yaml/v3"
)

// Format is a webhook's body.
type Format string

// Webhook body formats.
const (
	// FormatJSON posts the event as JSON, with the site's name.
	FormatJSON Format = "json"
	// FormatSlack posts {"text": "..."}: a Slack (or Mattermost, Rocket.Chat)
	// incoming webhook's body.
	FormatSlack Format = "slack"
)

// Forge providers of commit statuses.
const (
	GitHub = "github"
	GitLab = "gitlab"
)

// Bounds of a notify file.
const (
	maxConfigFile  = 1 << 20
	maxWebhooks    = 64
	DefaultTimeout = 10 * time.Second
	maxTimeout     = 2 * time.Minute
)

// DefaultKinds are the kinds a webhook that names none is sent: a
// revision's outcomes and failures, reconciling paused and resumed, and
// (see Webhook.Kinds) failed node steps; not every node step.
var DefaultKinds = []events.Kind{events.RevisionRefused, events.ApprovalPending, events.Approved,
	events.Applied, events.ApplyFailed, events.RolloutHalted, events.Suspended, events.Resumed}

// Ref is the operator's reference to a secret: env:NAME or file:PATH. Its
// String is the reference, never the value.
type Ref string

// String returns the reference.
func (r Ref) String() string { return string(r) }

// Config is an operator's notify file: where events are sent.
type Config struct {
	// File names the file in errors.
	File string
	// Site names the site in webhook bodies and the default status
	// context (empty: Options.Site).
	Site         string
	Webhooks     []Webhook
	CommitStatus *CommitStatus
}

// Webhook is one outbound webhook.
type Webhook struct {
	Name string
	// URL is the address, or URLRef the secret holding it (a Slack
	// incoming webhook's address is a credential).
	URL    string
	URLRef Ref
	// Kinds are the event kinds sent. Nil: DefaultKinds and failed node
	// steps.
	Kinds  []events.Kind
	Format Format
	// Secret, if set, is the HMAC-SHA256 key of X-Anneal-Signature-256.
	Secret  Ref
	Timeout time.Duration
	// where is file:line of its entry.
	where string
}

// CommitStatus posts a revision's outcome to the forge as a commit status.
type CommitStatus struct {
	Provider string
	// URL is the API's base: https://api.github.com, a GitHub Enterprise
	// server's https://HOST/api/v3, or a GitLab server's https://HOST.
	URL string
	// Repository (GitHub: owner/name) or Project (GitLab: a numeric id or
	// a path such as group/project).
	Repository string
	Project    string
	Token      Ref
	// Context is the status's name (default anneal/SITE).
	Context string
	// TargetURL, if set, is linked from the status (a dashboard).
	TargetURL string
	Timeout   time.Duration
	where     string
}

// Secret is one secret a notify file reads: what names it in errors.
type Secret struct {
	What string
	Ref  Ref
}

// Secrets lists the secrets the file reads, for the daemon to declare as
// its own (a site's grants can never read them).
func (c *Config) Secrets() []Secret {
	var out []Secret
	for _, w := range c.Webhooks {
		if w.URLRef != "" {
			out = append(out, Secret{What: fmt.Sprintf("notify webhook %q url", w.Name), Ref: w.URLRef})
		}
		if w.Secret != "" {
			out = append(out, Secret{What: fmt.Sprintf("notify webhook %q secret", w.Name), Ref: w.Secret})
		}
	}
	if c.CommitStatus != nil {
		out = append(out, Secret{What: "notify commit status token", Ref: c.CommitStatus.Token})
	}
	return out
}

// Load reads and validates a notify file (YAML or JSON). Errors name the
// file, the line and the field, never a secret's value.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("notify file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return nil, fmt.Errorf("notify file %s: %w", path, err)
	}
	if len(data) > maxConfigFile {
		return nil, fmt.Errorf("notify file %s: larger than %d bytes", path, maxConfigFile)
	}
	return Parse(path, data)
}

// Parse parses and validates a notify file's content; file names it in
// errors. It reads no secret (New does).
func Parse(file string, data []byte) (*Config, error) {
	p := parser{file: file}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty: want a mapping with webhooks or commitStatus", file)
		}
		// yaml.v3 says "yaml: line N: ...": say file:N like every other error.
		msg := err.Error()
		if rest, ok := strings.CutPrefix(msg, "yaml: line "); ok {
			if n, after, ok := strings.Cut(rest, ":"); ok {
				return nil, fmt.Errorf("%s:%s:%s", file, n, after)
			}
		}
		return nil, fmt.Errorf("%s: %s", file, strings.TrimPrefix(msg, "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: want one document", file)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	c := &Config{File: file}
	var hooks, status *yaml.Node
	err := p.fields(root, "", []string{"site", "webhooks", "commitStatus"}, func(name string, v *yaml.Node) error {
		var err error
		switch name {
		case "site":
			c.Site, err = p.str(v, "site")
			if err == nil && !validName(c.Site) {
				err = p.errf(v, "site", "want letters, digits, '.', '_' and '-' (at most 63)")
			}
		case "webhooks":
			hooks = v
		case "commitStatus":
			status = v
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if hooks != nil {
		if hooks.Kind != yaml.SequenceNode {
			return nil, p.errf(hooks, "webhooks", "want a list of webhooks")
		}
		if len(hooks.Content) > maxWebhooks {
			return nil, p.errf(hooks, "webhooks", "more than %d webhooks", maxWebhooks)
		}
		names := map[string]bool{}
		for i, n := range hooks.Content {
			w, err := p.webhook(n, fmt.Sprintf("webhooks[%d]", i))
			if err != nil {
				return nil, err
			}
			if names[w.Name] {
				return nil, p.errf(n, fmt.Sprintf("webhooks[%d].name", i), "webhook %q is named twice", w.Name)
			}
			names[w.Name] = true
			c.Webhooks = append(c.Webhooks, w)
		}
	}
	if status != nil {
		if c.CommitStatus, err = p.commitStatus(status, "commitStatus"); err != nil {
			return nil, err
		}
	}
	if len(c.Webhooks) == 0 && c.CommitStatus == nil {
		return nil, p.errf(root, "", "configures no webhook and no commitStatus")
	}
	return c, nil
}

type parser struct{ file string }

// errf is an error at n: file:line:column: field: message.
func (p parser) errf(n *yaml.Node, field, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if field != "" {
		msg = field + ": " + msg
	}
	return fmt.Errorf("%s:%d:%d: %s", p.file, n.Line, n.Column, msg)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// fields walks a mapping whose keys are among names, once each.
func (p parser) fields(n *yaml.Node, path string, names []string, set func(name string, v *yaml.Node) error) error {
	if n.Kind != yaml.MappingNode {
		what := path
		if what == "" {
			what = "the file"
		}
		return p.errf(n, path, "want a mapping with %s (%s is not one)", strings.Join(names, ", "), what)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return p.errf(k, path, "want a field name")
		}
		if !slices.Contains(names, k.Value) {
			return p.errf(k, join(path, k.Value), "unknown field (want %s)", strings.Join(names, ", "))
		}
		if seen[k.Value] {
			return p.errf(k, join(path, k.Value), "given twice")
		}
		seen[k.Value] = true
		if err := set(k.Value, v); err != nil {
			return err
		}
	}
	return nil
}

// str is a scalar's value (not a null, a list or an alias).
func (p parser) str(v *yaml.Node, field string) (string, error) {
	if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
		return "", p.errf(v, field, "want a string")
	}
	if len(v.Value) > 4096 {
		return "", p.errf(v, field, "longer than 4096 bytes")
	}
	return v.Value, nil
}

func (p parser) duration(v *yaml.Node, field string) (time.Duration, error) {
	s, err := p.str(v, field)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second || d > maxTimeout {
		return 0, p.errf(v, field, "want a duration from 1s to %s, such as 10s", maxTimeout)
	}
	return d, nil
}

// ref parses a secret reference: {env: NAME}, {file: /PATH}, or the
// flags' form env:NAME, file:/PATH. Errors never quote a value that may
// be a secret pasted in by mistake.
func (p parser) ref(v *yaml.Node, field string) (Ref, error) {
	const want = "want {env: NAME} or {file: /PATH} (the secret is read from the operator's environment or file)"
	var r string
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return "", p.errf(v, field, "%s", want)
		}
		r = v.Value
	case yaml.MappingNode:
		err := p.fields(v, field, []string{"env", "file"}, func(name string, v *yaml.Node) error {
			s, err := p.str(v, join(field, name))
			if err != nil {
				return err
			}
			if r != "" {
				return p.errf(v, field, "give env or file, not both")
			}
			r = name + ":" + s
			return nil
		})
		if err != nil {
			return "", err
		}
	default:
		return "", p.errf(v, field, "%s", want)
	}
	switch {
	case strings.HasPrefix(r, "env:"):
		name := strings.TrimPrefix(r, "env:")
		if !envName.MatchString(name) {
			return "", p.errf(v, field, "env: want an environment variable's name")
		}
	case strings.HasPrefix(r, "file:"):
		path := strings.TrimPrefix(r, "file:")
		if !filepath.IsAbs(path) {
			return "", p.errf(v, field, "file: want an absolute path")
		}
		path = filepath.Clean(path)
		for _, sys := range []string{"/proc", "/sys", "/dev"} {
			if path == sys || strings.HasPrefix(path, sys+"/") {
				return "", p.errf(v, field, "file: %s is not a place for secrets", sys)
			}
		}
		r = "file:" + path
	default:
		return "", p.errf(v, field, "%s", want)
	}
	return Ref(r), nil
}

var (
	envName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	repoPart = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,100}$`)
	numeric  = regexp.MustCompile(`^[0-9]{1,20}$`)
)

func validName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, c := range s {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

// checkURL says why u may not receive events (nil: it may): https, or
// http to a loopback address; no credentials in it (give the address as a
// secret instead); no fragment. Errors never quote the URL: its path or
// query may be a credential (a Slack webhook's).
func checkURL(u string) error {
	pu, err := url.Parse(u)
	if err != nil {
		return errors.New("not a URL")
	}
	switch {
	case pu.Scheme != "https" && pu.Scheme != "http":
		return fmt.Errorf("scheme %q: want https (or http to a loopback address)", pu.Scheme)
	case pu.Host == "" || pu.Hostname() == "":
		return errors.New("want an absolute URL with a host")
	case pu.User != nil:
		return errors.New("credentials in the URL: give the whole URL as a secret ({env: NAME} or {file: PATH})")
	case pu.Fragment != "" || strings.Contains(u, "#"):
		return errors.New("a fragment is never sent: remove it")
	case pu.Scheme == "http" && !loopback(pu.Hostname()):
		return fmt.Errorf("http to %s: want https (plain http only to a loopback address)", pu.Hostname())
	}
	return nil
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// printable says whether s has no control character.
func printable(s string) bool {
	return !strings.ContainsFunc(s, unicode.IsControl)
}

func (p parser) webhook(n *yaml.Node, path string) (Webhook, error) {
	w := Webhook{Format: FormatJSON, Timeout: DefaultTimeout, where: fmt.Sprintf("%s:%d", p.file, n.Line)}
	err := p.fields(n, path, []string{"name", "url", "kinds", "format", "secret", "timeout"}, func(name string, v *yaml.Node) error {
		field := join(path, name)
		var err error
		switch name {
		case "name":
			if w.Name, err = p.str(v, field); err == nil && !validName(w.Name) {
				err = p.errf(v, field, "want letters, digits, '.', '_' and '-' (at most 63)")
			}
		case "url":
			if v.Kind == yaml.MappingNode {
				w.URLRef, err = p.ref(v, field)
				return err
			}
			if w.URL, err = p.str(v, field); err == nil {
				if e := checkURL(w.URL); e != nil {
					err = p.errf(v, field, "%v", e)
				}
			}
		case "kinds":
			if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
				return p.errf(v, field, "want a list of event kinds (omit it for the default: %s)", kindList(DefaultKinds))
			}
			w.Kinds = []events.Kind{}
			for i, e := range v.Content {
				s, err := p.str(e, fmt.Sprintf("%s[%d]", field, i))
				if err != nil {
					return err
				}
				k := events.Kind(s)
				if !k.Valid() {
					return p.errf(e, fmt.Sprintf("%s[%d]", field, i), "unknown event kind %q (want one of %s)", s, kindList(events.Kinds()))
				}
				if !slices.Contains(w.Kinds, k) {
					w.Kinds = append(w.Kinds, k)
				}
			}
		case "format":
			var s string
			if s, err = p.str(v, field); err == nil {
				w.Format = Format(s)
				if w.Format != FormatJSON && w.Format != FormatSlack {
					err = p.errf(v, field, "unknown format %q (want json or slack)", s)
				}
			}
		case "secret":
			w.Secret, err = p.ref(v, field)
		case "timeout":
			w.Timeout, err = p.duration(v, field)
		}
		return err
	})
	if err != nil {
		return Webhook{}, err
	}
	switch {
	case w.Name == "":
		return Webhook{}, p.errf(n, join(path, "name"), "required")
	case w.URL == "" && w.URLRef == "":
		return Webhook{}, p.errf(n, join(path, "url"), "required (a URL, or {env: NAME} or {file: PATH} holding it)")
	}
	return w, nil
}

func (p parser) commitStatus(n *yaml.Node, path string) (*CommitStatus, error) {
	s := &CommitStatus{Timeout: DefaultTimeout, where: fmt.Sprintf("%s:%d", p.file, n.Line)}
	lines := map[string]*yaml.Node{}
	err := p.fields(n, path, []string{"provider", "url", "repository", "project", "token", "context", "targetURL", "timeout"}, func(name string, v *yaml.Node) error {
		field := join(path, name)
		lines[name] = v
		var err error
		switch name {
		case "provider":
			if s.Provider, err = p.str(v, field); err == nil && s.Provider != GitHub && s.Provider != GitLab {
				err = p.errf(v, field, "unknown provider %q (want github or gitlab)", s.Provider)
			}
		case "url":
			if s.URL, err = p.str(v, field); err == nil {
				if e := checkURL(s.URL); e != nil {
					err = p.errf(v, field, "%v", e)
				} else if u, _ := url.Parse(s.URL); u.RawQuery != "" || u.ForceQuery {
					err = p.errf(v, field, "want the API's base URL, without a query")
				}
			}
		case "repository":
			if s.Repository, err = p.str(v, field); err == nil {
				owner, repo, ok := strings.Cut(s.Repository, "/")
				if !ok || !repoPart.MatchString(owner) || !repoPart.MatchString(repo) || repo == "." || repo == ".." || owner == "." || owner == ".." {
					err = p.errf(v, field, "want owner/name")
				}
			}
		case "project":
			if s.Project, err = p.str(v, field); err == nil && !validProject(s.Project) {
				err = p.errf(v, field, "want a numeric project id or a path such as group/project")
			}
		case "token":
			s.Token, err = p.ref(v, field)
		case "context":
			if s.Context, err = p.str(v, field); err == nil && (s.Context == "" || len(s.Context) > 255 || !printable(s.Context)) {
				err = p.errf(v, field, "want a name of 1 to 255 printable characters")
			}
		case "targetURL":
			if s.TargetURL, err = p.str(v, field); err == nil {
				u, e := url.Parse(s.TargetURL)
				if e != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" || len(s.TargetURL) > 2048 {
					err = p.errf(v, field, "want an absolute http(s) URL")
				}
			}
		case "timeout":
			s.Timeout, err = p.duration(v, field)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	switch {
	case s.Provider == "":
		return nil, p.errf(n, join(path, "provider"), "required (github or gitlab)")
	case s.Token == "":
		return nil, p.errf(n, join(path, "token"), "required ({env: NAME} or {file: PATH})")
	case s.Provider == GitHub && s.Project != "":
		return nil, p.errf(lines["project"], join(path, "project"), "is GitLab's: give repository (owner/name) for github")
	case s.Provider == GitHub && s.Repository == "":
		return nil, p.errf(n, join(path, "repository"), "required for github (owner/name)")
	case s.Provider == GitLab && s.Repository != "":
		return nil, p.errf(lines["repository"], join(path, "repository"), "is GitHub's: give project (an id or group/project) for gitlab")
	case s.Provider == GitLab && s.Project == "":
		return nil, p.errf(n, join(path, "project"), "required for gitlab (a numeric id or group/project)")
	case s.Provider == GitLab && s.URL == "":
		return nil, p.errf(n, join(path, "url"), "required for gitlab (such as https://gitlab.com)")
	}
	if s.URL == "" {
		s.URL = "https://api.github.com"
	}
	s.URL = strings.TrimSuffix(s.URL, "/")
	return s, nil
}

func validProject(s string) bool {
	if numeric.MatchString(s) {
		return true
	}
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 20 {
		return false
	}
	for _, part := range parts {
		if !repoPart.MatchString(part) || part == "." || part == ".." {
			return false
		}
	}
	return true
}

func kindList(ks []events.Kind) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}
