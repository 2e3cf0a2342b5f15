package secret

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/anneal-dev/anneal/schema"
)

// maxGrantsFile bounds the grants file.
const maxGrantsFile = 1 << 20

// Grants are the operator's secrets (anneal --secrets FILE): for each
// secret a site may name (secret:NAME), where its value is read from and the
// destinations it may be sent to, by use. A site can only name what is
// granted, and only aim it at an allowed address; it never chooses where a
// value is read from. Grants implement schema.SecretGrants.
//
//	secrets:
//	  bmc-password:
//	    from: env:ANNEAL_BMC_PASSWORD     # or file:/etc/anneal/bmc-password
//	    bmc: [10.20.0.0/16]               # BMC addresses: IPs, CIDRs, host names; :PORT pins a port
//	  tsig-key:
//	    from: file:/etc/anneal/tsig.key
//	    dns: ["10.0.0.53:53"]             # DNS servers (RFC 2136) and PowerDNS API hosts
//
// The daemon's own credentials (its API token, netboot key, state) can
// never be granted: see Forbid.
type Grants struct {
	file    string
	secrets map[string]*grant
	// forbidden are the daemon's own credentials.
	forbidden []forbidden
	// Env replaces the process environment (tests).
	Env func(string) (string, bool)
}

type grant struct {
	name string
	from string // env:NAME or file:PATH (absolute, cleaned)
	line int
	to   map[schema.SecretUse][]dest
}

func (g *grant) where(file string) string { return fmt.Sprintf("%s:%d", file, g.line) }

// dest is one allowed destination: an IP prefix or a host name, with an
// optional port (0: any).
type dest struct {
	prefix netip.Prefix
	host   string
	port   int
}

func (d dest) allows(to schema.SecretDest) bool {
	if d.port != 0 && d.port != to.Port {
		return false
	}
	if a, err := netip.ParseAddr(to.Host); err == nil {
		return d.prefix.IsValid() && d.prefix.Contains(a.Unmap().WithZone(""))
	}
	return d.host != "" && strings.EqualFold(d.host, strings.TrimSuffix(to.Host, "."))
}

type forbidden struct {
	what  string
	env   string
	path  string
	value string
}

// LoadGrants reads a grants file. Errors name the file, the line and the
// field.
func LoadGrants(path string) (*Grants, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxGrantsFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxGrantsFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxGrantsFile)
	}
	return ParseGrants(path, data)
}

// ParseGrants parses a grants file's content; file names it in errors.
func ParseGrants(file string, data []byte) (*Grants, error) {
	g := &Grants{file: file, secrets: map[string]*grant{}}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty: want a mapping with secrets", file)
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
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	errf := func(n *yaml.Node, format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s", file, n.Line, fmt.Sprintf(format, args...))
	}
	if root.Kind != yaml.MappingNode {
		return nil, errf(root, "want a mapping with the key secrets")
	}
	var secrets *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Value != "secrets" {
			return nil, errf(k, "unknown field %q (want secrets)", k.Value)
		}
		secrets = v
	}
	if secrets == nil || secrets.Kind != yaml.MappingNode {
		return nil, errf(root, "secrets: want a mapping of secret names to grants")
	}
	for i := 0; i+1 < len(secrets.Content); i += 2 {
		k, v := secrets.Content[i], secrets.Content[i+1]
		name := k.Value
		if schema.SecretRef(schema.SecretPrefix+name).Name() == "" || !validName(name) {
			return nil, errf(k, "secret name %q: want letters, digits, '.', '_' and '-' (at most 63)", name)
		}
		if _, dup := g.secrets[name]; dup {
			return nil, errf(k, "secret %q is granted twice", name)
		}
		gr, err := parseGrant(name, v, errf)
		if err != nil {
			return nil, err
		}
		gr.line = k.Line // errors point at the secret's name
		g.secrets[name] = gr
	}
	return g, nil
}

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

func parseGrant(name string, n *yaml.Node, errf func(*yaml.Node, string, ...any) error) (*grant, error) {
	if n.Kind != yaml.MappingNode {
		return nil, errf(n, "secret %q: want a mapping with from and the uses it is granted for (bmc, dns)", name)
	}
	gr := &grant{name: name, line: n.Line, to: map[schema.SecretUse][]dest{}}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "from":
			if v.Kind != yaml.ScalarNode {
				return nil, errf(v, "secret %q: from: want env:NAME or file:PATH", name)
			}
			from, err := checkFrom(v.Value)
			if err != nil {
				return nil, errf(v, "secret %q: from: %v", name, err)
			}
			gr.from = from
		case string(schema.UseBMC), string(schema.UseDNS):
			if v.Kind != yaml.SequenceNode {
				return nil, errf(v, "secret %q: %s: want a list of addresses (IP, CIDR or host name, with an optional :PORT)", name, k.Value)
			}
			for _, e := range v.Content {
				d, err := parseDest(e.Value)
				if e.Kind != yaml.ScalarNode || err != nil {
					return nil, errf(e, "secret %q: %s: %q: %v", name, k.Value, e.Value, err)
				}
				gr.to[schema.SecretUse(k.Value)] = append(gr.to[schema.SecretUse(k.Value)], d)
			}
		default:
			return nil, errf(k, "secret %q: unknown field %q (want from, bmc, dns)", name, k.Value)
		}
	}
	if gr.from == "" {
		return nil, errf(n, "secret %q: from is required (env:NAME or file:PATH)", name)
	}
	if len(gr.to) == 0 {
		return nil, errf(n, "secret %q: grants no destination: list the addresses it may be sent to under bmc or dns", name)
	}
	return gr, nil
}

// checkFrom validates where a value is read from and canonicalizes a
// file's path.
func checkFrom(from string) (string, error) {
	switch {
	case strings.HasPrefix(from, "env:"):
		name := strings.TrimPrefix(from, "env:")
		if name == "" || strings.ContainsAny(name, "= \t") {
			return "", fmt.Errorf("bad environment variable name %q (want env:NAME)", redact(name))
		}
		return from, nil
	case strings.HasPrefix(from, "file:"):
		p := strings.TrimPrefix(from, "file:")
		if !filepath.IsAbs(p) {
			return "", fmt.Errorf("file %q: want an absolute path", p)
		}
		p = filepath.Clean(p)
		for _, sys := range []string{"/proc", "/sys", "/dev"} {
			if p == sys || strings.HasPrefix(p, sys+"/") {
				return "", fmt.Errorf("file %q: %s is not a place for secrets", p, sys)
			}
		}
		return "file:" + p, nil
	}
	return "", fmt.Errorf("want env:NAME or file:PATH, got %q", redact(from))
}

// parseDest parses an allowed destination: 10.0.0.0/8, 10.0.0.5,
// 10.0.0.5:623, [2001:db8::1]:443, bmc1.mgmt.example.net(:443).
func parseDest(s string) (dest, error) {
	if s == "" {
		return dest{}, errors.New("empty")
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return dest{prefix: p.Masked()}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return dest{prefix: netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())}, nil
	}
	host, port := s, 0
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return dest{}, fmt.Errorf("bad port %q", p)
		}
		host, port = h, n
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return dest{prefix: netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), port: port}, nil
	}
	if strings.Contains(s, "/") {
		if _, err := netip.ParsePrefix(s); err != nil {
			return dest{}, fmt.Errorf("not a CIDR: %v", strings.TrimPrefix(err.Error(), "netip.ParsePrefix("+strconv.Quote(s)+"): "))
		}
	}
	if isNumeric(host) {
		return dest{}, errors.New("not an IP address (and a host name's last label is never all digits)")
	}
	if !validHost(host) {
		return dest{}, errors.New("want an IP address, a CIDR or a host name")
	}
	return dest{host: strings.TrimSuffix(host, "."), port: port}, nil
}

// isNumeric reports whether a would-be host name's last label is all
// digits: a mistyped IP address (10.10.0.300), never a host name.
func isNumeric(h string) bool {
	h = strings.TrimSuffix(h, ".")
	last := h[strings.LastIndexByte(h, '.')+1:]
	return last != "" && strings.Trim(last, "0123456789") == ""
}

func validHost(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Names lists the granted secrets, sorted.
func (g *Grants) Names() []string {
	if g == nil {
		return nil
	}
	out := make([]string, 0, len(g.secrets))
	for n := range g.secrets {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// File is the grants file's path ("" for no grants).
func (g *Grants) File() string {
	if g == nil {
		return ""
	}
	return g.file
}

// AllowSecret implements schema.SecretGrants: nil when the secret is
// granted for dest. A nil *Grants grants nothing.
func (g *Grants) AllowSecret(name string, to schema.SecretDest) error {
	if g == nil || len(g.secrets) == 0 {
		return fmt.Errorf("secret %q is not granted: no --secrets file grants any secret", name)
	}
	gr, ok := g.secrets[name]
	if !ok {
		return fmt.Errorf("secret %q is not granted by %s", name, g.file)
	}
	dests, ok := gr.to[to.Use]
	if !ok {
		return fmt.Errorf("secret %q is not granted for %s use (%s)", name, to.Use, gr.where(g.file))
	}
	for _, d := range dests {
		if d.allows(to) {
			return nil
		}
	}
	return fmt.Errorf("secret %q may not be sent to %s: not among its allowed destinations (%s)", name, to, gr.where(g.file))
}

// Forbid declares one of the daemon's own credentials: what names it in
// errors; ref is the operator's reference to it (env:NAME or file:PATH, as
// given to a flag, or a plain path such as the state file); value, when
// known, is the credential itself. A grant that reads the same variable or
// file is an error now; a granted secret whose value equals it is refused
// when resolved (a hard link, a copy).
func (g *Grants) Forbid(what, ref, value string) error {
	if g == nil {
		return nil
	}
	f := forbidden{what: what, value: value}
	switch {
	case strings.HasPrefix(ref, "env:"):
		f.env = strings.TrimPrefix(ref, "env:")
	case strings.HasPrefix(ref, "file:"):
		f.path = canonicalPath(strings.TrimPrefix(ref, "file:"))
	case ref != "":
		f.path = canonicalPath(ref)
	}
	g.forbidden = append(g.forbidden, f)
	for _, name := range g.Names() {
		gr := g.secrets[name]
		env, isEnv := strings.CutPrefix(gr.from, "env:")
		switch {
		case f.env != "" && isEnv && env == f.env:
			return fmt.Errorf("%s: secret %q reads %s, the daemon's own %s: it can never be granted", gr.where(g.file), name, gr.from, what)
		case f.path != "" && strings.HasPrefix(gr.from, "file:") && canonicalPath(strings.TrimPrefix(gr.from, "file:")) == f.path:
			return fmt.Errorf("%s: secret %q reads %s, the daemon's own %s: it can never be granted", gr.where(g.file), name, gr.from, what)
		}
	}
	return nil
}

// canonicalPath is an absolute path with symbolic links resolved: of the
// file, or of its folder when the file does not exist yet (a netboot key
// the daemon is about to write).
func canonicalPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	if dir, err := filepath.EvalSymlinks(filepath.Dir(p)); err == nil {
		return filepath.Join(dir, filepath.Base(p))
	}
	return filepath.Clean(p)
}

// Resolve returns the value of a site's secret reference for one
// destination, checking the grant again (the site was checked at load;
// this is where the value leaves). The value is read anew each time, so a
// rotated file is picked up; it is bounded by MaxSize.
func (g *Grants) Resolve(ref schema.SecretRef, to schema.SecretDest) (string, error) {
	name := ref.Name()
	if name == "" {
		return "", fmt.Errorf("secret reference %q: want secret:NAME", redact(string(ref)))
	}
	if err := g.AllowSecret(name, to); err != nil {
		return "", err
	}
	gr := g.secrets[name]
	if strings.HasPrefix(gr.from, "file:") && g.forbiddenPath(canonicalPath(strings.TrimPrefix(gr.from, "file:"))) {
		return "", fmt.Errorf("secret %q: reads one of the daemon's own credentials (%s)", name, gr.where(g.file))
	}
	v, err := Resolver{Env: g.Env}.Resolve(gr.from)
	if err != nil {
		return "", fmt.Errorf("secret %q (%s): %w", name, gr.where(g.file), err)
	}
	for _, f := range g.forbidden {
		if f.value != "" && equal(v, f.value) {
			return "", fmt.Errorf("secret %q: its value is the daemon's own %s: refused", name, f.what)
		}
	}
	return v, nil
}

func (g *Grants) forbiddenPath(p string) bool {
	return slices.ContainsFunc(g.forbidden, func(f forbidden) bool { return f.path != "" && f.path == p })
}

// CheckSources reads the named granted secrets once (every granted one
// when no name is given), as a command that sends them will: every
// variable not set, file not readable or value refused is reported at
// once, before anything is sent, instead of as one node's or target's
// failure in the middle of a rollout. Values are read and dropped; names
// not granted are left to the grant check.
func (g *Grants) CheckSources(names ...string) error {
	if g == nil {
		return nil
	}
	if len(names) == 0 {
		names = g.Names()
	}
	var errs []error
	for _, name := range names {
		gr, ok := g.secrets[name]
		if !ok {
			continue
		}
		v, err := Resolver{Env: g.Env}.Resolve(gr.from)
		if err == nil {
			for _, f := range g.forbidden {
				if f.value != "" && equal(v, f.value) {
					err = fmt.Errorf("its value is the daemon's own %s", f.what)
				}
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: secret %q: %w", gr.where(g.file), name, err))
		}
	}
	return errors.Join(errs...)
}
