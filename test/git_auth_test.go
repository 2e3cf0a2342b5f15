package test

import (
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/test/servers"
)

// bareSite is a bare git repository holding the example site, as a git
// server hosts it.
func bareSite(t *testing.T) string {
	t.Helper()
	work := copySite(t, "../examples/site-repo", nil)
	git(t, work, "init", "-q", "-b", "main")
	git(t, work, "add", "-A")
	git(t, work, "commit", "-q", "-m", "site")
	bare := filepath.Join(t.TempDir(), "site.git")
	if out, err := exec.Command("git", "clone", "-q", "--bare", work, bare).CombinedOutput(); err != nil {
		t.Fatalf("git clone --bare: %v\n%s", err, out)
	}
	return bare
}

// TestGitTokenAuth: a repository behind HTTP basic auth (git's own
// http-backend) is read with --git-token, refused clearly without it or
// with a wrong one, and the token is never printed.
func TestGitTokenAuth(t *testing.T) {
	backend := "/usr/lib/git-core/git-http-backend"
	if _, err := os.Stat(backend); err != nil {
		servers.Unavailable(t, "git-http-backend (package git): "+err.Error())
	}
	bare := bareSite(t)
	const token = "glpat-test-token-0123456789"
	h := &cgi.Handler{Path: backend, Env: []string{"GIT_PROJECT_ROOT=" + filepath.Dir(bare), "GIT_HTTP_EXPORT_ALL=1"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pass, ok := r.BasicAuth(); !ok || user == "" || pass != token {
			w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	url := srv.URL + "/site.git"
	env := []string{"GIT_TOKEN=" + token, "WRONG_TOKEN=not-it"}
	cache := func() string { return t.TempDir() }

	r := anneal(t, env, "validate", "--repo", url, "--cache", cache(), "--git-token", "env:GIT_TOKEN")
	mustExit(t, r, 0, "valid")
	for _, tc := range []struct{ name, flag string }{{"no token", ""}, {"wrong token", "env:WRONG_TOKEN"}} {
		args := []string{"validate", "--repo", url, "--cache", cache()}
		if tc.flag != "" {
			args = append(args, "--git-token", tc.flag)
		}
		r := anneal(t, env, args...)
		if r.code == 0 || !strings.Contains(r.stdout+r.stderr, "authentication required") {
			t.Errorf("%s: want a refusal naming authentication:\n%s", tc.name, r)
		}
	}
	if r := anneal(t, env, "validate", "--repo", url, "--cache", cache(), "--git-token", "env:GIT_TOKEN", "--git-ssh-key", "/nonexistent"); r.code == 0 ||
		!strings.Contains(r.stderr, "give one") {
		t.Errorf("both credentials: %s", r)
	}
	if strings.Contains(r.stdout+r.stderr, token) {
		t.Fatal("the token was printed")
	}
}

// TestGitSSHKeyAuth: a repository behind a real sshd is read with
// --git-ssh-key and --git-known-hosts; a key sshd does not know, or a host
// key that is not the known one, is refused.
func TestGitSSHKeyAuth(t *testing.T) {
	sshd := servers.StartSSHD(t)
	bare := bareSite(t)
	url := fmt.Sprintf("ssh://root@127.0.0.1:%d%s", sshd.Port, bare)
	other := filepath.Join(t.TempDir(), "other")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	wrongHosts := filepath.Join(t.TempDir(), "known_hosts")
	pub, _ := os.ReadFile(other + ".pub")
	if err := os.WriteFile(wrongHosts, []byte(fmt.Sprintf("[127.0.0.1]:%d %s", sshd.Port, pub)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, key, hosts string
		ok               bool
		want             string
	}{
		{"the authorized key, the known host", sshd.ClientKey, sshd.KnownHosts, true, "valid"},
		{"a key sshd does not know", other, sshd.KnownHosts, false, "unable to authenticate"},
		{"a host key that is not the known one", sshd.ClientKey, wrongHosts, false, "key mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctxArgs := []string{"validate", "--repo", url, "--cache", t.TempDir(), "--git-ssh-key", tc.key, "--git-known-hosts", tc.hosts}
			start := time.Now()
			r := anneal(t, nil, ctxArgs...)
			if (r.code == 0) != tc.ok || !strings.Contains(r.stdout+r.stderr, tc.want) {
				t.Fatalf("want ok=%v and %q (took %s):\n%s", tc.ok, tc.want, time.Since(start), r)
			}
		})
	}
}
