package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// labGrants points the CLI at the example's secret grants, with values.
func labGrants(t *testing.T) {
	t.Helper()
	grants, err := filepath.Abs("../../examples/lab-secrets.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("ANNEAL_SECRETS", grants)
	t.Setenv("ANNEAL_TSIG_SECRET", "c2VjcmV0c2VjcmV0c2VjcmV0")
	t.Setenv("ANNEAL_PDNS_API_KEY", "k")
	t.Setenv("ANNEAL_BMC_PASSWORD", "p")
}

// TestPlanCreatesNoState: plan on a state that does not exist reads it as
// empty and leaves no file (nor directory) behind; apply creates it.
func TestPlanCreatesNoState(t *testing.T) {
	labGrants(t)
	site := exampleWithoutDNS(t)
	xdg := t.TempDir()
	t.Setenv("XDG_STATE_HOME", xdg)
	explicit := filepath.Join(t.TempDir(), "sub", "state.db")
	for _, args := range [][]string{{"plan", "--site", site}, {"plan", "--site", site, "--state", explicit}} {
		code, out, errs := runCLI(t, args...)
		if code != exitOK {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errs)
		}
	}
	for _, p := range []string{filepath.Join(xdg, "anneal"), filepath.Dir(explicit)} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("plan created %s (%v)", p, err)
		}
	}
	if code, _, errs := runCLI(t, "apply", "--site", site, "--state", explicit); code != exitOK {
		t.Fatalf("apply: exit %d: %s", code, errs)
	}
	if _, err := os.Stat(explicit); err != nil {
		t.Fatalf("apply created no state: %v", err)
	}
}

// TestApplySavedPlanSource: apply PLAN.json reads the site the plan
// records, needs no --site, and refuses clearly when it cannot.
func TestApplySavedPlanSource(t *testing.T) {
	labGrants(t)
	site := exampleWithoutDNS(t)
	state := filepath.Join(t.TempDir(), "state.db")
	code, out, errs := runCLI(t, "plan", "--site", site, "--state", state, "-o", "json")
	if code != exitOK {
		t.Fatalf("plan: exit %d: %s", code, errs)
	}
	var p map[string]any
	if err := json.Unmarshal([]byte(out), &p); err != nil || p["source"] != site {
		t.Fatalf("plan records source %v, want %s (%v)", p["source"], site, err)
	}
	dir := t.TempDir()
	save := func(name string, edit func(map[string]any)) string {
		t.Helper()
		var q map[string]any
		if err := json.Unmarshal([]byte(out), &q); err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			edit(q)
		}
		b, err := json.Marshal(q)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := save("plan.json", nil)
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"the recorded site", []string{"apply", good, "--state", state}, exitOK, "site: " + site + " (recorded in " + good + ")"},
		{"a relative source", []string{"apply", save("rel.json", func(q map[string]any) { q["source"] = "site" }), "--state", state}, exitError,
			`records its site as "site", a relative path (written by an older anneal): give the site with --site DIR or --repo URL`},
		{"no source", []string{"apply", save("none.json", func(q map[string]any) { delete(q, "source") }), "--state", state}, exitError,
			"does not record the site it was made from: give it with --site DIR or --repo URL"},
		{"a site gone", []string{"apply", save("gone.json", func(q map[string]any) { q["source"] = "/nonexistent/site" }), "--state", state}, exitError,
			"was made from the site in /nonexistent/site, which cannot be read here"},
		{"--site wins", []string{"apply", save("gone2.json", func(q map[string]any) { q["source"] = "/nonexistent/site" }), "--site", site, "--state", state}, exitOK, ""},
		{"not a plan", []string{"apply", save("bad.json", func(q map[string]any) { q["source"] = 7 }), "--state", state}, exitError, "is not a plan written by anneal plan -o json"},
	}
	for _, tc := range tests {
		code, out, errs := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.stderr) {
			t.Errorf("%s: exit %d (want %d)\nstdout: %s\nstderr: %s\nwant %q", tc.name, code, tc.code, out, errs, tc.stderr)
		}
	}
}

// TestApplySavedPlanFromRepo: a plan of a repository records it at the
// planned commit; apply reads that commit, not the tip.
func TestApplySavedPlanFromRepo(t *testing.T) {
	labGrants(t)
	repo := exampleWithoutDNS(t)
	git := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.net", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	git("init", "-q")
	git("add", "-A")
	git("commit", "-q", "-m", "site")
	state := filepath.Join(t.TempDir(), "state.db")
	code, out, errs := runCLI(t, "plan", "--repo", repo, "--state", state, "-o", "json")
	if code != exitOK {
		t.Fatalf("plan: exit %d: %s", code, errs)
	}
	plan := filepath.Join(t.TempDir(), "plan.json")
	if err := os.WriteFile(plan, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	// A later commit changes the site: the plan's commit is still applied.
	if err := os.WriteFile(filepath.Join(repo, "site.yaml"), []byte("garbage: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	git("commit", "-q", "-am", "broken")
	code, _, errs = runCLI(t, "apply", plan, "--state", state)
	if code != exitOK || !strings.Contains(errs, "site: "+repo+"@") {
		t.Fatalf("apply of a repo plan: exit %d: %s", code, errs)
	}
}

// TestPlanFailureOnce: a DNS target that cannot be read is named once on
// its error line (not "dns bind zone Z: dns target bind: zone Z ...").
func TestPlanFailureOnce(t *testing.T) {
	labGrants(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	site := t.TempDir()
	copyTree(t, example, site)
	b, err := os.ReadFile(filepath.Join(site, "dns.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer("127.0.0.1:5301", closed, "127.0.0.1:5302", closed, "http://127.0.0.1:8081", "http://"+closed).Replace(string(b))
	if err := os.WriteFile(filepath.Join(site, "dns.yaml"), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI(t, "plan", "--site", site, "--state", filepath.Join(t.TempDir(), "s.db"))
	if code != exitError || !strings.Contains(out, "error: dns bind zone example.net: ") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "error: ") && strings.Contains(l, "dns target") {
			t.Errorf("the error line names its target twice: %s", l)
		}
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if e.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}
