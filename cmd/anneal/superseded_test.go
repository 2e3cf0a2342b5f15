package main

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/api"
	"github.com/anneal-dev/anneal/providers/source"
	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/schema"
)

// TestStatusWaitSuperseded: status --wait on a revision that a newer
// applied revision contains ends at once, saying so; one the applied
// revision does not contain (a newer commit not fetched yet) waits.
func TestStatusWaitSuperseded(t *testing.T) {
	repo := exampleWithoutDNS(t)
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.net", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main"}, args...)...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", "-A")
	git("commit", "-q", "-m", "A")
	a := git("rev-parse", "HEAD")
	git("commit", "-q", "--allow-empty", "-m", "B")
	b := git("rev-parse", "HEAD")

	ctx := context.Background()
	r, err := source.Open(ctx, source.Options{URL: repo, CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	rec := &reconcile.Reconciler{Source: &source.Branch{Repo: r}, State: st, Mode: reconcile.ModeConverge, Interval: time.Hour,
		Targets: func(s *schema.Site) (map[string]dns.Target, error) { return dnsTargets(s, nil) },
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil))}
	rec.ReconcileOnce(ctx)
	if got := rec.Status().AppliedRevision; got != b {
		t.Fatalf("applied %q, want B %s (%+v)", got, b, rec.Status())
	}
	srv := httptest.NewServer(api.New(api.Config{Reconciler: rec}))
	t.Cleanup(srv.Close)

	code, out, errs := runCLI(t, "status", "--server", srv.URL, "--wait", a[:9], "--timeout", "30s")
	if code != exitOK || !strings.Contains(out, "revision "+short(a)+" superseded: the applied revision "+short(b)+" contains it") {
		t.Fatalf("--wait A after B applied: exit %d\n%s%s", code, out, errs)
	}
	// C is committed but not fetched: B does not contain it; the wait
	// goes on until its timeout.
	git("commit", "-q", "--allow-empty", "-m", "C")
	c := git("rev-parse", "HEAD")
	code, out, errs = runCLI(t, "status", "--server", srv.URL, "--wait", c, "--timeout", "1s")
	if code != exitError || !strings.Contains(errs, "not applied within 1s") || strings.Contains(out, "superseded") {
		t.Fatalf("--wait C, not fetched: exit %d\n%s%s", code, out, errs)
	}
}

// TestObservingLine: while the daemon observes after a state with no node
// records, status says how many nodes it holds, and says plainly when
// none is left to learn about.
func TestObservingLine(t *testing.T) {
	until := time.Now().Add(10 * time.Minute)
	for _, tc := range []struct {
		unknown int
		want    string
	}{
		{-1, "has no known build waits for its agent"},
		{3, "has no known build (3 nodes) waits for its agent"},
		{0, "every node's build is known now; nothing waits on it"},
	} {
		var b strings.Builder
		st := &api.StatusView{}
		st.ObserveUntil = until
		printStatus(&b, "http://x", st, tc.unknown)
		if !strings.Contains(b.String(), tc.want) {
			t.Errorf("%d unknown: %q lacks %q", tc.unknown, b.String(), tc.want)
		}
	}
}
