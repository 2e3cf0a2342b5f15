// Package test holds end-to-end tests: the real anneal binary against real
// servers (BIND, PowerDNS) on 127.0.0.1, with sites copied into temp dirs.
package test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/test/servers"
)

// annealBin is the binary under test, built once by TestMain.
var annealBin string

// testGrants is the operator's secret grants every run of the binary gets
// (ANNEAL_SECRETS): examples/lab-secrets.yaml, the example site's secrets
// from the environment variables the tests set, for its BMC network and DNS
// servers on loopback. Tests of generated sites give gen.Grants instead.
var testGrants string

// baseEnv is the minimal environment of a run of the binary.
func baseEnv(home string) []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "ANNEAL_SECRETS=" + testGrants}
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "anneal-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	annealBin = filepath.Join(dir, "anneal")
	if testGrants, err = filepath.Abs("../examples/lab-secrets.yaml"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-race", "-o", annealBin, "../cmd/anneal")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build anneal:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one run of the binary.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

// anneal runs the binary with env added to a minimal environment.
func anneal(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, annealBin, args...)
	cmd.Env = append(baseEnv(t.TempDir()), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run anneal %v: %v", args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// copySite copies a site folder into a temp dir, rewriting strings (the
// fixed server addresses of the example become the test servers').
func copySite(t *testing.T, src string, replace map[string]string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		s := string(b)
		for old, new := range replace {
			s = strings.ReplaceAll(s, old, new)
		}
		return os.WriteFile(filepath.Join(dst, rel), []byte(s), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// edit rewrites one file of a site.
func edit(t *testing.T, site, file string, f func(string) string) {
	t.Helper()
	p := filepath.Join(site, file)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	out := f(string(b))
	if out == string(b) {
		t.Fatalf("edit of %s changed nothing", file)
	}
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
}

// missingTool skips a test whose tool is not installed, loudly, or fails it
// under CI, where .ci/run must have installed everything.
func missingTool(t *testing.T, what string) {
	t.Helper()
	servers.Unavailable(t, what+" is not installed; .ci/run installs it")
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
