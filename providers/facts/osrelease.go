package facts

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// osRelease reads /etc/os-release, or /usr/lib/os-release when the first
// does not exist; nil when neither does.
func osRelease(root string) (map[string]string, error) {
	for _, rel := range []string{"etc/os-release", "usr/lib/os-release"} {
		f, err := os.Open(filepath.Join(root, rel))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("facts: os-release: %w", err)
		}
		m, err := parseOSRelease(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("facts: /%s: %w", rel, err)
		}
		return m, nil
	}
	return nil, nil
}

// parseOSRelease parses os-release(5): newline-separated KEY=VALUE
// assignments, "#" comments and blank lines ignored; a value may be
// enclosed in double or single quotes, and shell special characters ("$",
// quotes, backslash, backquote) may be escaped with a backslash (in double
// quotes or unquoted). Lines that are not valid assignments are skipped.
func parseOSRelease(r io.Reader) (map[string]string, error) {
	m := map[string]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, raw, ok := strings.Cut(line, "=")
		if !ok || !validKey(key) {
			continue
		}
		val, ok := unquote(raw)
		if !ok {
			continue
		}
		m[key] = val
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

// validKey reports whether k is a shell variable name.
func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// unquote decodes one os-release value. Single quotes are literal; in
// double quotes a backslash escapes $ " ` and \ (and is kept before any
// other character, as in the shell); unquoted, a backslash escapes the
// next character and the rest is taken as written (as systemd reads an
// unquoted "NAME=Foo Linux", which the shell would not). Text after a
// closing quote makes the line invalid.
func unquote(s string) (string, bool) {
	if s == "" {
		return "", true
	}
	switch s[0] {
	case '\'':
		end := strings.IndexByte(s[1:], '\'')
		if end < 0 || end+2 != len(s) {
			return "", false
		}
		return s[1 : end+1], true
	case '"':
		var b strings.Builder
		for i := 1; i < len(s); i++ {
			c := s[i]
			switch {
			case c == '\\' && i+1 < len(s) && strings.IndexByte("$\"`\\", s[i+1]) >= 0:
				b.WriteByte(s[i+1])
				i++
			case c == '"':
				return b.String(), i+1 == len(s)
			default:
				b.WriteByte(c)
			}
		}
		return "", false // no closing quote
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			b.WriteByte(s[i+1])
			i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}
