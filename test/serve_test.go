package test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

type serveStatus struct {
	AppliedRevision       string `json:"appliedRevision"`
	LastGoodRevision      string `json:"lastGoodRevision"`
	LastAttemptedRevision string `json:"lastAttemptedRevision"`
	LastError             string `json:"lastError"`
	LastErrorClass        string `json:"lastErrorClass"`
	Suspended             bool   `json:"suspended"`
	Reconciles            int    `json:"reconciles"`
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func status(t *testing.T, api string) serveStatus {
	t.Helper()
	code, body := httpGet(t, api+"/api/v1/status")
	var st serveStatus
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatalf("status: %v\n%s", err, body)
		}
	}
	return st
}

// startServe runs `anneal serve` with args on a free address until the test
// ends (SIGTERM), printing its log if the test fails; it returns the API URL.
func startServe(t *testing.T, env []string, args ...string) (api string, cmd *exec.Cmd) {
	t.Helper()
	addr := freeAddr(t)
	cmd = exec.Command(annealBin, append([]string{"serve", "--listen", addr}, args...)...)
	cmd.Env = append(baseEnv(t.TempDir()), env...)
	logs := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("serve log:\n%s", logs.String())
		}
	})
	return "http://" + addr, cmd
}

// waitStatus polls the daemon's status until ok accepts it.
func waitStatus(t *testing.T, api, what string, ok func(serveStatus) bool) serveStatus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var st serveStatus
	for time.Now().Before(deadline) {
		st = status(t, api)
		if ok(st) {
			return st
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; last status %+v", what, st)
	return st
}

// TestServeFollowsGit: the daemon converges a real git repository's
// commits on real DNS servers: a commit, the next, a revert back, an
// invalid commit that is never applied, and the fix.
func TestServeFollowsGit(t *testing.T) {
	l := newDNSLab(t)
	git(t, l.site, "init", "-q", "-b", "main")
	commit := func(msg string) string {
		git(t, l.site, "add", "-A")
		git(t, l.site, "commit", "-q", "-m", msg)
		return git(t, l.site, "rev-parse", "HEAD")
	}
	a := commit("A: the site")

	api, cmd := startServe(t, append([]string{"ANNEAL_API_TOKEN=t0ken"}, l.env...),
		"--repo", l.site, "--state", l.state, "--interval", "200ms", "--token", "env:ANNEAL_API_TOKEN")

	waitStatus(t, api, "commit A applied", func(s serveStatus) bool { return s.AppliedRevision == a })
	l.assertConverged(t)

	// B: rename a node and move another's address.
	edit(t, l.site, "nodes/east-e1.yaml", func(s string) string { return strings.Replace(s, "name: e1n05\n", "name: e1n09\n", 1) })
	edit(t, l.site, "nodes/west-w1.yaml", func(s string) string { return strings.Replace(s, "hostIndex: 24", "hostIndex: 30", 1) })
	b := commit("B: rename e1n05, move w1n04")
	waitStatus(t, api, "commit B applied", func(s serveStatus) bool { return s.AppliedRevision == b })
	l.assertConverged(t)

	// Revert B: back to exactly A's records.
	git(t, l.site, "revert", "--no-edit", "HEAD")
	rv := git(t, l.site, "rev-parse", "HEAD")
	waitStatus(t, api, "revert applied", func(s serveStatus) bool { return s.AppliedRevision == rv })
	l.assertConverged(t)

	// C does not validate: never applied, the error is published.
	before := l.live(t, "bind", "west.example.net")
	edit(t, l.site, "nodes/west-w1.yaml", func(s string) string { return strings.Replace(s, "hostIndex: 24", "hostIndex: 23", 1) })
	c := commit("C: a duplicate address")
	st := waitStatus(t, api, "commit C refused", func(s serveStatus) bool { return s.LastAttemptedRevision == c && s.LastError != "" })
	if st.AppliedRevision != rv || st.LastGoodRevision != rv || st.LastErrorClass != "invalid-commit" || !strings.Contains(st.LastError, "duplicate-address") {
		t.Fatalf("invalid commit: status %+v", st)
	}
	if after := l.live(t, "bind", "west.example.net"); !slices.Equal(before, after) {
		t.Fatalf("an invalid commit changed the zone:\n%s", lineDiff(before, after))
	}
	// The metrics follow the status once the pass's status is saved.
	waitFor(t, "the invalid commit counted in the metrics", func() bool {
		code, body := httpGet(t, api+"/metrics")
		return code == 200 && strings.Contains(body, `anneal_reconcile_failures_total{class="invalid-commit"}`)
	})

	// D fixes it and converges.
	edit(t, l.site, "nodes/west-w1.yaml", func(s string) string { return strings.Replace(s, "hostIndex: 23\nbmc", "hostIndex: 24\nbmc", 1) })
	committed := time.Now()
	d := commit("D: fix")
	waitStatus(t, api, "commit D applied", func(s serveStatus) bool { return s.AppliedRevision == d && s.LastError == "" })
	t.Logf("a one-line commit was applied %.2f s after it was made (poll interval 0.2 s)", time.Since(committed).Seconds())
	l.assertConverged(t)

	// The API: nodes with build ids, metrics with the applied revision,
	// and mutating endpoints that need the token.
	if code, body := httpGet(t, api+"/api/v1/nodes"); code != 200 || !strings.Contains(body, `"buildId"`) {
		t.Fatalf("nodes: %d %s", code, body)
	}
	if _, body := httpGet(t, api+"/metrics"); !strings.Contains(body, fmt.Sprintf(`anneal_applied_revision_info{last_good="%s",revision="%s"} 1`, d, d)) {
		t.Fatalf("metrics lack the applied revision:\n%s", body)
	} else if applied := metricValue(body, "anneal_last_apply_timestamp_seconds"); applied < float64(committed.Unix()) {
		t.Fatalf("anneal_last_apply_timestamp_seconds %v, want at or after commit D (%d)", applied, committed.Unix())
	}
	resp, err := http.Post(api+"/api/v1/reconcile", "", nil)
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("reconcile without a token: %v %v", err, resp)
	}
	req, _ := http.NewRequest(http.MethodPost, api+"/api/v1/suspend", nil)
	req.Header.Set("Authorization", "Bearer t0ken")
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("suspend: %v %v", err, resp)
	}
	if !status(t, api).Suspended {
		t.Fatal("not suspended")
	}

	// SIGTERM: a clean exit.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
}

// TestServeWatchesDirectory: with a directory source and an hour-long
// interval, an edit is applied because the watcher triggers, and a signed
// webhook triggers a reconcile; a badly signed one is refused.
func TestServeWatchesDirectory(t *testing.T) {
	l := newDNSLab(t)
	api, _ := startServe(t, append([]string{"ANNEAL_API_TOKEN=t0ken"}, l.env...),
		"--site", l.site, "--state", l.state, "--interval", "1h", "--token", "env:ANNEAL_API_TOKEN")
	first := waitStatus(t, api, "first apply", func(s serveStatus) bool { return s.AppliedRevision != "" && s.LastError == "" })
	l.assertConverged(t)

	edited := time.Now()
	edit(t, l.site, "nodes/west-w1.yaml", func(s string) string { return strings.Replace(s, "aliases: [backup]", "aliases: [backup, vault]", 1) })
	waitStatus(t, api, "the edit applied", func(s serveStatus) bool { return s.AppliedRevision != first.AppliedRevision })
	t.Logf("a one-line edit was applied %.2f s after it was saved (debounce 0.5 s)", time.Since(edited).Seconds())
	l.assertConverged(t)

	post := func(sig string) int {
		req, _ := http.NewRequest(http.MethodPost, api+"/api/v1/webhook", strings.NewReader(`{"ref":"refs/heads/main"}`))
		req.Header.Set("X-Hub-Signature-256", sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	mac := hmac.New(sha256.New, []byte("t0ken"))
	mac.Write([]byte(`{"ref":"refs/heads/main"}`))
	before := status(t, api).Reconciles
	if code := post("sha256=" + hex.EncodeToString(mac.Sum(nil))); code != http.StatusAccepted {
		t.Fatalf("signed webhook: %d", code)
	}
	waitStatus(t, api, "a webhook-triggered reconcile", func(s serveStatus) bool { return s.Reconciles > before })
	if code := post("sha256=" + strings.Repeat("0", 64)); code != http.StatusForbidden {
		t.Fatalf("badly signed webhook: %d", code)
	}
}

// TestServeVerifiesSignatures: with --verify-signatures, a commit signed by
// a trusted SSH key is applied, an unsigned one never is (the daemon stays
// on the last good commit and says why), and the next signed one is.
func TestServeVerifiesSignatures(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		missingTool(t, "ssh-keygen (apt package openssh-client)")
	}
	l := newDNSLab(t)
	keys := t.TempDir()
	key := filepath.Join(keys, "signer")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops@example.net", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	allowed := filepath.Join(keys, "allowed_signers")
	if err := os.WriteFile(allowed, []byte(`ops@example.net namespaces="git" `+string(pub)), 0o644); err != nil {
		t.Fatal(err)
	}
	git(t, l.site, "init", "-q", "-b", "main")
	signed := func(msg string) string {
		git(t, l.site, "add", "-A")
		git(t, l.site, "-c", "gpg.format=ssh", "-c", "user.signingkey="+key+".pub", "commit", "-q", "-S", "-m", msg)
		return git(t, l.site, "rev-parse", "HEAD")
	}
	a := signed("A: signed")

	api, _ := startServe(t, l.env, "--repo", l.site, "--state", l.state, "--interval", "200ms", "--verify-signatures", allowed)
	waitStatus(t, api, "signed commit A applied", func(s serveStatus) bool { return s.AppliedRevision == a })

	before := l.live(t, "bind", "west.example.net")
	edit(t, l.site, "nodes/west-w1.yaml", func(s string) string { return strings.Replace(s, "aliases: [backup]", "aliases: [backup, vault]", 1) })
	git(t, l.site, "commit", "-q", "-am", "B: unsigned")
	b := git(t, l.site, "rev-parse", "HEAD")
	st := waitStatus(t, api, "unsigned commit B refused", func(s serveStatus) bool { return s.LastAttemptedRevision == b && s.LastError != "" })
	if st.AppliedRevision != a || st.LastErrorClass != "signature" || !strings.Contains(st.LastError, "not signed") {
		t.Fatalf("unsigned commit: %+v", st)
	}
	if after := l.live(t, "bind", "west.example.net"); !slices.Equal(before, after) {
		t.Fatalf("an unsigned commit reached the zone:\n%s", lineDiff(before, after))
	}

	edit(t, l.site, "nodes/west-w1.yaml", func(s string) string {
		return strings.Replace(s, "aliases: [backup, vault]", "aliases: [backup, vault, safe]", 1)
	})
	c := signed("C: signed again")
	waitStatus(t, api, "signed commit C applied", func(s serveStatus) bool { return s.AppliedRevision == c && s.LastError == "" })
	l.assertConverged(t)
}

// TestServeRefusesRewrite: a force-push that rewrites applied history is
// refused (the daemon stays on what it applied) unless --allow-rewrite;
// --mode report publishes the drift and writes nothing.
func TestServeRefusesRewrite(t *testing.T) {
	l := newDNSLab(t)
	git(t, l.site, "init", "-q", "-b", "main")
	git(t, l.site, "add", "-A")
	git(t, l.site, "commit", "-q", "-m", "A")
	edit(t, l.site, "nodes/west-w1.yaml", func(s string) string { return strings.Replace(s, "aliases: [backup]", "aliases: [backup, vault]", 1) })
	git(t, l.site, "commit", "-q", "-am", "B")
	b := git(t, l.site, "rev-parse", "HEAD")

	// Report mode first: drift is published, nothing is written.
	api, cmd := startServe(t, l.env, "--repo", l.site, "--state", l.state, "--interval", "200ms", "--mode", "report")
	waitStatus(t, api, "a report", func(s serveStatus) bool { return s.Reconciles > 0 })
	if code, body := httpGet(t, api+"/api/v1/drift"); code != 200 || !strings.Contains(body, `"op": "create"`) {
		t.Fatalf("drift: %d\n%.400s", code, body)
	}
	if lines := l.live(t, "bind", "west.example.net"); len(lines) != 0 {
		t.Fatalf("report mode wrote to bind: %v", lines[:1])
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()

	api, cmd = startServe(t, l.env, "--repo", l.site, "--state", l.state, "--interval", "200ms")
	waitStatus(t, api, "B applied", func(s serveStatus) bool { return s.AppliedRevision == b })

	// Rewrite history: B is replaced by B' that does not descend from it.
	edit(t, l.site, "nodes/west-w1.yaml", func(s string) string {
		return strings.Replace(s, "aliases: [backup, vault]", "aliases: [backup, safe]", 1)
	})
	git(t, l.site, "commit", "-q", "--amend", "-am", "B rewritten")
	rewritten := git(t, l.site, "rev-parse", "HEAD")
	st := waitStatus(t, api, "the rewrite refused", func(s serveStatus) bool { return s.LastAttemptedRevision == rewritten && s.LastError != "" })
	if st.AppliedRevision != b || st.LastErrorClass != "history-rewrite" {
		t.Fatalf("rewrite: %+v", st)
	}
	if slices.ContainsFunc(l.live(t, "bind", "west.example.net"), func(s string) bool { return strings.HasPrefix(s, "safe.") }) {
		t.Fatal("the rewritten commit reached the zone")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()

	// Explicitly allowed: it converges.
	api, _ = startServe(t, l.env, "--repo", l.site, "--state", l.state, "--interval", "200ms", "--allow-rewrite")
	waitStatus(t, api, "the rewrite applied", func(s serveStatus) bool { return s.AppliedRevision == rewritten && s.LastError == "" })
	l.assertConverged(t)
}

// TestServeOwnershipSurvivesStateLoss: anneal's state is lost while a
// commit removes a node. Ownership rebuilt from the site's git history
// still removes that node's records, and a foreign record stays.
func TestServeOwnershipSurvivesStateLoss(t *testing.T) {
	l := newDNSLab(t)
	git(t, l.site, "init", "-q", "-b", "main")
	git(t, l.site, "add", "-A")
	git(t, l.site, "commit", "-q", "-m", "A")
	a := git(t, l.site, "rev-parse", "HEAD")
	api, cmd := startServe(t, l.env, "--repo", l.site, "--state", l.state, "--interval", "200ms")
	waitStatus(t, api, "A applied", func(s serveStatus) bool { return s.AppliedRevision == a })
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()

	l.bind.Nsupdate(t, "zone east.example.net\nupdate add printer.east.example.net 300 A 192.0.2.7\nsend\n")
	edit(t, l.site, "nodes/east-e1.yaml", func(s string) string {
		docs := strings.Split(s, "---\n")
		return strings.Join(slices.DeleteFunc(docs, func(d string) bool { return strings.Contains(d, "name: e1n04\n") }), "---\n")
	})
	git(t, l.site, "commit", "-q", "-am", "B: remove e1n04")
	b := git(t, l.site, "rev-parse", "HEAD")
	if err := os.Remove(l.state); err != nil {
		t.Fatal(err)
	}

	api, _ = startServe(t, l.env, "--repo", l.site, "--state", l.state, "--interval", "200ms")
	waitStatus(t, api, "B applied with a fresh state", func(s serveStatus) bool { return s.AppliedRevision == b && s.LastError == "" })
	l.assertConverged(t, "bind east.example.net printer.east.example.net A 300 192.0.2.7")
}

// metricValue is the value of an unlabelled series in a /metrics body, or
// -1 when it is absent.
func metricValue(body, series string) float64 {
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}
