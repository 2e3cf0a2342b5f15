// Package secret holds the operator's secrets: the grants file that says
// which secrets a site may name, where each value is read from and where it
// may be sent (anneal --secrets), and bounded reads of the operator's own
// references (env:NAME, file:PATH) given in flags. Errors name the secret or
// the reference, never a value.
package secret

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// MaxSize bounds a secret's value: a reference to /dev/zero or a log file
// is an error, not an out-of-memory kill.
const MaxSize = 64 << 10

// Resolver reads the operator's secret references: env:NAME or file:PATH,
// as given in flags (--token, --netboot-key, --git-token). The zero value
// reads the process environment and the file system; Env replaces the
// environment (tests).
type Resolver struct {
	Env func(string) (string, bool)
}

// Resolve returns the secret a reference points at, trimmed of one
// trailing newline (files written by echo).
func (r Resolver) Resolve(ref string) (string, error) {
	switch {
	case strings.HasPrefix(ref, "env:"):
		name := strings.TrimPrefix(ref, "env:")
		lookup := r.Env
		if lookup == nil {
			lookup = os.LookupEnv
		}
		v, ok := lookup(name)
		if !ok || v == "" {
			return "", fmt.Errorf("secret %s: environment variable %s is not set", ref, name)
		}
		if len(v) > MaxSize {
			return "", fmt.Errorf("secret %s: longer than %d bytes", ref, MaxSize)
		}
		return v, nil
	case strings.HasPrefix(ref, "file:"):
		v, err := readFile(strings.TrimPrefix(ref, "file:"))
		if err != nil {
			return "", fmt.Errorf("secret %s: %w", ref, err)
		}
		return v, nil
	}
	return "", fmt.Errorf("secret reference %q: want env:NAME or file:PATH", redact(ref))
}

// readFile reads a regular file of at most MaxSize bytes.
func readFile(path string) (string, error) {
	if !filepath.IsAbs(path) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return "", err
		}
		path = abs
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return "", err
	}
	if len(b) > MaxSize {
		return "", fmt.Errorf("%s is longer than %d bytes: not a secret", path, MaxSize)
	}
	v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if v == "" {
		return "", errors.New("file is empty")
	}
	return v, nil
}

// redact keeps a malformed reference's scheme-like prefix only: a
// malformed reference may be a secret pasted in by mistake.
func redact(s string) string {
	if i := strings.IndexByte(s, ':'); i > 0 && i < 8 {
		return s[:i+1] + "…"
	}
	return "…"
}

// equal compares two secrets in constant time (for their length).
func equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// SameHostRedirects is an http.Client's CheckRedirect for clients that
// carry a secret (a BMC session's password, a PowerDNS API key): a redirect
// to another host or port is refused, since Go replays a 307/308 body and
// keeps custom headers such as X-API-Key across hosts. The grant allowed
// one destination, not wherever it points.
func SameHostRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if len(via) > 0 && !strings.EqualFold(req.URL.Host, via[0].URL.Host) {
		return fmt.Errorf("redirect from %s to %s refused: a secret goes only where it was granted", via[0].URL.Host, req.URL.Host)
	}
	return nil
}
