package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestHelpTypes: every flag's help shows a real type (pflag takes the
// first backquoted word of a usage as its type name: "--lab anneal lab").
func TestHelpTypes(t *testing.T) {
	known := []string{"", "string", "strings", "duration", "int", "uint32"}
	choices := regexp.MustCompile(`^[a-z0-9-]+(\|[a-z0-9-]+)+$`)
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			n++
			typ, _ := pflag.UnquoteUsage(f)
			o, isChoice := f.Value.(*outputFlag)
			switch {
			case isChoice && typ != strings.Join(o.allowed, "|"):
				t.Errorf("%s --%s shows type %q, want its values %q", c.CommandPath(), f.Name, typ, strings.Join(o.allowed, "|"))
			case !isChoice && !slices.Contains(known, typ):
				t.Errorf("%s --%s shows type %q", c.CommandPath(), f.Name, typ)
			case isChoice && !choices.MatchString(typ):
				t.Errorf("%s --%s shows type %q", c.CommandPath(), f.Name, typ)
			}
		})
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(newRoot(io.Discard, io.Discard))
	if n < 100 {
		t.Fatalf("only %d flags seen", n)
	}
	// And as --help prints them.
	for _, args := range [][]string{{"serve", "--help"}, {"plan", "--help"}, {"status", "--help"}} {
		code, out, _ := runCLI(t, args...)
		if code != exitOK {
			t.Fatalf("%v: exit %d", args, code)
		}
		for _, bad := range []string{"--lab anneal lab", "--output format", "--only format"} {
			if strings.Contains(out, bad) {
				t.Errorf("%v shows %q:\n%s", args, bad, out)
			}
		}
	}
}

// TestErrorPrefixes: each error is printed once, under the command's
// path, with the hint to --help only after a mistake on the command line.
func TestErrorPrefixes(t *testing.T) {
	for _, v := range []string{"ANNEAL_TSIG_SECRET", "ANNEAL_PDNS_API_KEY", "ANNEAL_BMC_PASSWORD", "ANNEAL_SECRETS"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		first  string // stderr's first line starts so
		hint   bool   // "Run '... --help' for usage." follows
		notErr string
		// multiline: the error has several lines (errors.Join); the
		// first is checked.
		multiline bool
	}{
		{"unknown command", []string{"frobnicate"}, exitUsage, `anneal: unknown command "frobnicate" for "anneal"`, true, "", false},
		{"unknown flag", []string{"plan", "--frob"}, exitUsage, "anneal plan: unknown flag: --frob", true, "", false},
		{"bad --only", []string{"plan", "--only", "nodes"}, exitUsage, `anneal plan: invalid argument "nodes" for "--only" flag: "nodes" is not one of all, dns`, true, "", false},
		{"stray argument", []string{"validate", "extra"}, exitUsage, `anneal validate: takes no arguments, got ["extra"]`, true, "", false},
		{"missing required option", []string{"render", "--site", example}, exitUsage, "anneal render: --node is required", true, "anneal render: anneal render", false},
		{"unknown node", []string{"render", "--site", example, "--node", "nosuch"}, exitUsage, `anneal render: node "nosuch" is not in the site`, true, "", false},
		{"connection refused", []string{"status", "--server", "http://127.0.0.1:1"}, exitError, "anneal status: GET /api/v1/status: cannot reach the daemon at http://127.0.0.1:1: dial tcp 127.0.0.1:1: connect: connection refused", false, "", false},
		{"missing site", []string{"nodes", "--site", "/nonexistent/site"}, exitError, "anneal nodes: ", false, "anneal nodes: anneal", false},
		{"approve without token", []string{"approve", "--plan", "0123456789ab", "abc"}, exitUsage, "anneal approve: approving needs the API's token", true, "", false},
		{"serve --branch without --repo", []string{"serve", "--site", example, "--branch", "main"}, exitUsage, "anneal serve: --branch needs --repo", true, "", false},
		{"serve keeping no events", []string{"serve", "--events-max", "0"}, exitUsage, "anneal serve: --events-max and --events-max-age must be positive", true, "", false},
		{"--path without --repo", []string{"validate", "--path", "examples/site-repo"}, exitUsage, "anneal validate: --path needs --repo", true, "", false},
		{"--rev without --repo", []string{"nodes", "--site", example, "--rev", "HEAD"}, exitUsage, "anneal nodes: --rev needs --repo", true, "", false},
		{"review --path without --repo", []string{"plan", "--base", "HEAD~1", "--path", "examples/site-repo"}, exitUsage, "anneal plan: --path needs --repo", true, "", false},
		{"enroll without token", []string{"enroll", "e1n01"}, exitUsage, "anneal enroll: enrolling needs the API's token", true, "", false},
		{"enroll without --out", []string{"enroll", "e1n01", "--token", "env:ANNEAL_TEST_TOKEN"}, exitUsage, "anneal enroll: --out DIR is required", true, "", false},
		{"enroll a bad name", []string{"enroll", "../x", "--token", "env:ANNEAL_TEST_TOKEN", "--out", "-"}, exitUsage, `anneal enroll: "../x" is not a node name`, true, "", false},
		{"grants not readable", []string{"plan", "--site", example, "--secrets", "../../examples/lab-secrets.yaml"}, exitError,
			"anneal plan: secret grants: ../../examples/lab-secrets.yaml:", false, "secret grants ../../", true},
		{"log format", []string{"validate", "--log-format", "xml", "--site", example}, exitUsage, `anneal validate: invalid argument "xml" for "--log-format" flag: "xml" is not one of text, json`, true, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLI(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errs)
			}
			if tc.multiline {
				errs = errs[:strings.Index(errs, "\n")+1] // the first line
			}
			if !strings.HasPrefix(errs, tc.first) {
				t.Errorf("stderr does not start with %q:\n%s", tc.first, errs)
			}
			if strings.Contains(errs, "anneal: anneal") || (tc.notErr != "" && strings.Contains(errs, tc.notErr)) {
				t.Errorf("stderr repeats a prefix:\n%s", errs)
			}
			if got := strings.Contains(errs, "--help' for usage."); got != tc.hint {
				t.Errorf("--help hint printed: %t, want %t:\n%s", got, tc.hint, errs)
			}
			if strings.Count(errs, "\n") != map[bool]int{true: 2, false: 1}[tc.hint] {
				t.Errorf("stderr is not one error line (and the hint):\n%s", errs)
			}
		})
	}
}

// TestVersion: --version, anneal version and the daemon's status agree.
func TestVersion(t *testing.T) {
	v, _ := buildVersion()
	for _, args := range [][]string{{"--version"}, {"version"}} {
		code, out, _ := runCLI(t, args...)
		if code != exitOK || !strings.HasPrefix(out, "anneal "+v) {
			t.Errorf("%v: exit %d: %q", args, code, out)
		}
	}
	d := startDaemon(t, exampleWithoutDNS(t))
	st, _ := statusJSON(t, d)
	if st.Version != "v9.9.9-test" {
		t.Errorf("status version %q", st.Version)
	}
	code, body := httpGetBody(t, d.url+"/metrics")
	if code != 200 || !strings.Contains(body, `anneal_build_info{revision="c0ffee",version="v9.9.9-test"} 1`) {
		t.Errorf("metrics lack anneal_build_info:\n%s", body)
	}
}

// TestVersionOverride: the ldflags variable wins over the build info.
func TestVersionOverride(t *testing.T) {
	old := versionOverride
	versionOverride = "v1.2.3"
	t.Cleanup(func() { versionOverride = old })
	if v, _ := buildVersion(); v != "v1.2.3" {
		t.Fatalf("version %q", v)
	}
	if code, out, _ := runCLI(t, "--version"); code != exitOK || !strings.HasPrefix(out, "anneal v1.2.3") {
		t.Fatalf("--version: %q", out)
	}
}

// TestLogFormat: --log-format json makes every log line of serve a JSON
// object; text keeps logfmt.
func TestLogFormat(t *testing.T) {
	labGrants(t)
	site := exampleWithoutDNS(t)
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// The log is read once serve says it stopped.
			logs := &signalWriter{want: "anneal serve stopped", seen: make(chan struct{})}
			// Stopped once a pass applied the site (not while it starts).
			started := &signalWriter{want: "revision applied", seen: make(chan struct{})}
			done := make(chan int, 1)
			go func() {
				done <- run(ctx, []string{"serve", "--site", site, "--listen", "127.0.0.1:0",
					"--state", filepath.Join(t.TempDir(), "s.db"), "--log-format", format}, io.Discard, io.MultiWriter(logs, started))
			}()
			select {
			case <-started.seen:
			case code := <-done:
				t.Fatalf("serve ended at once (exit %d):\n%s", code, logs.String())
			}
			cancel()
			<-done
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if len(lines) < 2 {
				t.Fatalf("serve logged %d lines:\n%s", len(lines), logs.String())
			}
			for _, l := range lines {
				var m map[string]any
				isJSON := json.Unmarshal([]byte(l), &m) == nil
				if isJSON != (format == "json") || (format == "text" && !strings.HasPrefix(l, "time=")) {
					t.Errorf("not a %s log line: %q", format, l)
				}
			}
		})
	}
}

// signalWriter collects what is written and closes seen once want was
// written.
type signalWriter struct {
	mu   sync.Mutex
	b    strings.Builder
	want string
	seen chan struct{}
	once sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if strings.Contains(w.b.String(), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func httpGetBody(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// TestLabBrownfieldUnknown: a --brownfield node the site does not declare
// is refused once, under the command's name, before the lab listens.
func TestLabBrownfieldUnknown(t *testing.T) {
	t.Setenv("ANNEAL_BMC_PASSWORD", "lab-bmc-password")
	t.Setenv("ANNEAL_PDNS_API_KEY", "lab-pdns-api-key")
	t.Setenv("ANNEAL_TSIG_SECRET", "bGFiLXRzaWctc2VjcmV0LWZvci10aGUtZGVtbw==")
	code, _, errs := runCLI(t, "lab", "--site", example, "--secrets", "../../examples/lab-secrets.yaml", "--dir", t.TempDir(),
		"--bmc-listen", "127.0.0.1:0", "--brownfield", "nosuch")
	if code != exitError || !strings.HasPrefix(errs, `anneal lab: --brownfield: node "nosuch" is not in the site`) || strings.Contains(errs, "anneal lab: anneal lab") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}
