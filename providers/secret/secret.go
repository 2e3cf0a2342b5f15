// Package secret resolves the secret references a site repo carries
// (env:NAME, file:PATH) to their values. Errors name the reference, never
// the value.
package secret

import (
	"fmt"
	"os"
	"strings"

	"github.com/anneal-dev/anneal/schema"
)

// Resolver reads secrets. The zero value reads the process environment and
// the file system; Env replaces the environment (tests, the lab).
type Resolver struct {
	Env func(string) (string, bool)
}

// Resolve returns the secret a reference points at, trimmed of one
// trailing newline (files written by echo).
func (r Resolver) Resolve(ref schema.SecretRef) (string, error) {
	s := string(ref)
	switch {
	case strings.HasPrefix(s, "env:"):
		name := strings.TrimPrefix(s, "env:")
		lookup := r.Env
		if lookup == nil {
			lookup = os.LookupEnv
		}
		v, ok := lookup(name)
		if !ok || v == "" {
			return "", fmt.Errorf("secret %s: environment variable %s is not set", s, name)
		}
		return v, nil
	case strings.HasPrefix(s, "file:"):
		path := strings.TrimPrefix(s, "file:")
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("secret %s: %w", s, err)
		}
		v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if v == "" {
			return "", fmt.Errorf("secret %s: file is empty", s)
		}
		return v, nil
	}
	return "", fmt.Errorf("secret reference %q: want env:NAME or file:PATH", redact(s))
}

// redact keeps a malformed reference's scheme-like prefix only: a
// malformed reference may be a secret pasted in by mistake.
func redact(s string) string {
	if i := strings.IndexByte(s, ':'); i > 0 && i < 8 {
		return s[:i+1] + "…"
	}
	return "…"
}
