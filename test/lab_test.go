package test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/lab"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/schema"
	mdns "github.com/miekg/dns"
)

// labEnv are the example site's secrets as the lab and anneal both
// resolve them.
var labEnv = []string{
	"ANNEAL_BMC_PASSWORD=lab-bmc-password",
	"ANNEAL_TSIG_SECRET=bGFiLXRzaWctc2VjcmV0LWZvci10aGUtZGVtbw==",
	"ANNEAL_PDNS_API_KEY=lab-pdns-api-key",
	"ANNEAL_API_TOKEN=lab-api-token",
}

// labNode is a virtual node as the lab's control API shows it.
type labNode struct {
	Name           string `json:"name"`
	Boots          int    `json:"boots"`
	Installs       int    `json:"installs"`
	InstalledBuild string `json:"installedBuild"`
}

// apiNode is a node as anneal's API shows it.
type apiNode struct {
	Name    string `json:"name"`
	BuildID string `json:"buildId"`
	Live    *struct {
		State    string `json:"state"`
		BuildID  string `json:"buildId"`
		Reason   string `json:"reason"`
		UpToDate bool   `json:"upToDate"`
	} `json:"live"`
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	code, body := httpGet(t, url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

func send(t *testing.T, method, url, token, body string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s", method, url, resp.Status)
	}
}

// startLab runs `anneal lab` for a site (with extra flags) until the test
// ends and returns its control URL.
func startLab(t *testing.T, site, dir, bootURL string, extra ...string) string {
	t.Helper()
	cmd := exec.Command(annealBin, append([]string{"lab", "--site", site, "--dir", dir, "--boot-url", bootURL, "--boot-delay", "300ms", "--agent-interval", "1s"}, extra...)...)
	cmd.Env = append(baseEnv(t.TempDir()), labEnv...)
	logs := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("lab log:\n%s", logs.String())
		}
	})
	e, err := lab.WaitEndpoints(t.Context(), dir, 30*time.Second)
	if err != nil || e.Control == "" {
		t.Fatalf("the lab did not start (%v):\n%s", err, logs.String())
	}
	return e.Control
}

// labSite is the example site in a git repository (commit A), its DNS
// targets moved to free loopback ports; it returns the repository, the
// BIND stand-in's address and A's hash.
func labSite(t *testing.T) (site, bindAddr, revA string) {
	t.Helper()
	bindAddr, pdnsDNS, pdnsAPI := freeAddr(t), freeAddr(t), freeAddr(t)
	site = copySite(t, "../examples/site-repo", map[string]string{
		"127.0.0.1:5301":        bindAddr,
		"127.0.0.1:5302":        pdnsDNS,
		"http://127.0.0.1:8081": "http://" + pdnsAPI,
	})
	git(t, site, "init", "-q", "-b", "main")
	git(t, site, "add", "-A")
	git(t, site, "commit", "-q", "-m", "A")
	return site, bindAddr, git(t, site, "rev-parse", "HEAD")
}

// TestLabRollout runs the demo's scenario against the lab with assertions
// at every step: the first converge rebuilds every active node once and
// fills DNS; a patch set bump of rack e1 rebuilds exactly its nodes, one
// at a time, canary first; a revert whose canary install fails halts the
// rollout and leaves every other node on its build; a retry after the
// fault is cleared converges back.
func TestLabRollout(t *testing.T) {
	site, bindAddr, revA := labSite(t)

	boot := freeAddr(t)
	labDir := t.TempDir()
	control := startLab(t, site, labDir, "http://"+boot)
	// e1n03's BMC reports an old BIOS: firmware drift, reported only.
	send(t, http.MethodPut, control+"/lab/v1/faults", "", `{"firmware": {"e1n03": {"bios": "1.2.0", "bmc": "6.10.30.00"}}}`)
	api, _ := startServe(t, labEnv, "--repo", site, "--interval", "1s", "--state", filepath.Join(t.TempDir(), "state.db"),
		"--netboot-listen", boot, "--lab", labDir, "--install-timeout", "20s", "--token", "env:ANNEAL_API_TOKEN")

	loaded, _, err := schema.LoadDir(context.Background(), site, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	active := map[string]bool{}
	for _, n := range loaded.Nodes {
		active[n.Name] = n.State == schema.StateActive
	}
	nodes := func() map[string]apiNode {
		var list []apiNode
		getJSON(t, api+"/api/v1/nodes", &list)
		out := map[string]apiNode{}
		for _, n := range list {
			out[n.Name] = n
		}
		return out
	}
	boots := func() map[string]int {
		var list []labNode
		getJSON(t, control+"/lab/v1/nodes", &list)
		out := map[string]int{}
		for _, n := range list {
			out[n.Name] = n.Boots
		}
		return out
	}
	applied := func(rev string) {
		t.Helper()
		waitStatus(t, api, "revision "+rev[:8]+" applied", func(s serveStatus) bool { return s.AppliedRevision == rev })
	}

	// A: every active node is rebuilt once and verified; the maintenance
	// node is left alone; DNS holds the site's records.
	applied(revA)
	atA := nodes()
	for name, n := range atA {
		if !active[name] {
			if n.Live != nil && n.Live.State != "" {
				t.Errorf("%s (maintenance) was touched: %+v", name, n.Live)
			}
			continue
		}
		if n.Live == nil || !n.Live.UpToDate {
			t.Errorf("%s not verified on its build after A: %+v", name, n.Live)
		}
	}
	for name, b := range boots() {
		if want := map[bool]int{true: 1, false: 0}[active[name]]; b != want {
			t.Errorf("%s booted %d times, want %d", name, b, want)
		}
	}
	var drift reconcile.Plan
	waitFor(t, "e1n03's firmware drift in the plan", func() bool {
		getJSON(t, api+"/api/v1/drift", &drift)
		return drift.Rebuilds != nil && len(drift.Rebuilds.Firmware) == 1 && drift.Rebuilds.Firmware[0].Node == "e1n03" &&
			drift.Rebuilds.Firmware[0].Found.BIOS == "1.2.0"
	})
	desired, err := dns.Compile(loaded)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, z := range desired.Zones {
		for _, s := range z.RRsets {
			if strings.TrimSuffix(s.Name, ".") == "api.example.net" && s.Type == dns.TypeA {
				want = slices.Sorted(slices.Values(s.Data))
			}
		}
	}
	if got := queryA(t, bindAddr, "api.example.net."); len(want) == 0 || !slices.Equal(got, want) {
		t.Errorf("api.example.net A on the lab's BIND stand-in = %v, want %v", got, want)
	}

	// B: rack e1 to patch set 2026-12: its five nodes, and only they, are
	// rebuilt.
	edit(t, site, "nodes/east-e1.yaml", setPatchSet("2026-12"))
	git(t, site, "commit", "-q", "-am", "B: rack e1 to 2026-12")
	revB := git(t, site, "rev-parse", "HEAD")
	applied(revB)
	atB := nodes()
	bootsB := boots()
	for name, n := range atB {
		e1 := strings.HasPrefix(name, "e1")
		switch {
		case !active[name]:
		case n.Live == nil || !n.Live.UpToDate:
			t.Errorf("%s not verified after B: %+v", name, n.Live)
		case e1 && n.BuildID == atA[name].BuildID:
			t.Errorf("%s: build unchanged by the patch set bump", name)
		case !e1 && n.BuildID != atA[name].BuildID:
			t.Errorf("%s outside rack e1 changed build", name)
		}
		if wantBoots := map[bool]int{true: 2, false: 1}[e1]; active[name] && bootsB[name] != wantBoots {
			t.Errorf("%s booted %d times after B, want %d", name, bootsB[name], wantBoots)
		}
	}

	// C = revert B, with the canary's install failing: the rollout halts
	// and every other node stays on B's build.
	send(t, http.MethodPut, control+"/lab/v1/faults", "", `{"installFail": {"e1n01": "wrong-interface"}}`)
	git(t, site, "revert", "--no-edit", "HEAD")
	revC := git(t, site, "rev-parse", "HEAD")
	st := waitStatus(t, api, "the canary's failure", func(s serveStatus) bool {
		return s.LastAttemptedRevision == revC && strings.Contains(s.LastError, "canary e1n01 failed")
	})
	if st.AppliedRevision != revB {
		t.Errorf("applied revision %s after a halted rollout, want B", st.AppliedRevision)
	}
	atC := nodes()
	if l := atC["e1n01"].Live; l == nil || l.State != "failed" || !strings.Contains(l.Reason, "facts differ") {
		t.Errorf("e1n01 after its failed install: %+v", l)
	}
	for name, b := range boots() {
		if name != "e1n01" && b != bootsB[name] {
			t.Errorf("%s booted during a halted rollout", name)
		}
		if name != "e1n01" && active[name] && atC[name].Live.BuildID != atB[name].Live.BuildID {
			t.Errorf("%s left B's build during a halted rollout", name)
		}
	}
	// The next passes do not pick another canary: the halt holds. Two
	// more passes end (a pass that went on would end only once its
	// rebuilds did, after their netboots), still halted.
	after := st.Reconciles + 2
	held := waitStatus(t, api, "two more passes of the halted rollout", func(s serveStatus) bool { return s.Reconciles >= after })
	if held.LastAttemptedRevision != revC || !strings.Contains(held.LastError, "halted") {
		t.Errorf("after two more passes: %+v, want C's rollout still halted", held)
	}
	if b := boots(); b["e1n02"] != bootsB["e1n02"] {
		t.Fatal("a halted rollout went on with another node")
	}

	// The fault is fixed; a retry converges back to A's builds.
	send(t, http.MethodPut, control+"/lab/v1/faults", "", `{}`)
	send(t, http.MethodPost, api+"/api/v1/nodes/e1n01/retry", "lab-api-token", "")
	applied(revC)
	for name, n := range nodes() {
		if active[name] && (n.Live == nil || !n.Live.UpToDate || n.BuildID != atA[name].BuildID) {
			t.Errorf("%s after the revert: build %s live %+v, want A's %s", name, n.BuildID, n.Live, atA[name].BuildID)
		}
	}
	if got := queryA(t, bindAddr, "api.example.net."); !slices.Equal(got, want) {
		t.Errorf("api.example.net A after the revert = %v, want %v", got, want)
	}

	// D bumps rack e1 again and is reverted (E) while its rollout runs:
	// the rollout stops for the newer revision, and E converges.
	edit(t, site, "nodes/east-e1.yaml", setPatchSet("2026-12"))
	git(t, site, "commit", "-q", "-am", "D: rack e1 to 2026-12 again")
	waitFor(t, "D's rollout to start", func() bool {
		for _, n := range nodes() {
			if n.Live != nil && n.Live.State == "provisioning" {
				return true
			}
		}
		return false
	})
	git(t, site, "revert", "--no-edit", "HEAD")
	revE := git(t, site, "rev-parse", "HEAD")
	applied(revE)
	for name, n := range nodes() {
		if active[name] && (n.Live == nil || !n.Live.UpToDate || n.BuildID != atA[name].BuildID) {
			t.Errorf("%s after reverting D mid-rollout: build %s live %+v, want A's %s", name, n.BuildID, n.Live, atA[name].BuildID)
		}
	}
}

// waitFor polls ok for up to 30 s.
func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

var patchSetLine = regexp.MustCompile(`(?m)^patchSet: .*$`)
var hardwareLine = regexp.MustCompile(`(?m)^hardwareProfile: .*$`)

// setPatchSet sets every node's patch set in a rack file.
func setPatchSet(ps string) func(string) string {
	return func(s string) string {
		line := `patchSet: "` + ps + `"`
		docs := strings.Split(s, "\n---\n")
		for i, d := range docs {
			if patchSetLine.MatchString(d) {
				docs[i] = patchSetLine.ReplaceAllString(d, line)
			} else {
				docs[i] = hardwareLine.ReplaceAllString(d, "$0\n"+line)
			}
		}
		return strings.Join(docs, "\n---\n")
	}
}

// queryA asks a DNS server for a name's A records.
func queryA(t *testing.T, server, name string) []string {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(name, mdns.TypeA)
	r, _, err := new(mdns.Client).Exchange(m, server)
	if err != nil {
		t.Fatalf("query %s at %s: %v", name, server, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return out
}

// TestLabKillDuringRollout: kill -9 the daemon while nodes are installing;
// the restarted daemon resumes the rollout from its records and finishes
// it without power-cycling any node a second time.
func TestLabKillDuringRollout(t *testing.T) {
	site, _, revA := labSite(t)
	boot := freeAddr(t)
	labDir := t.TempDir()
	control := startLab(t, site, labDir, "http://"+boot)
	send(t, http.MethodPut, control+"/lab/v1/faults", "", `{"bootDelay": "1500ms"}`)
	state := filepath.Join(t.TempDir(), "state.db")
	args := []string{"--repo", site, "--interval", "1s", "--state", state, "--netboot-listen", boot, "--lab", labDir,
		"--install-timeout", "60s", "--netboot-timeout", "4s"}
	api, cmd := startServe(t, labEnv, args...)

	// Kill it once the canary is done and the next wave is installing.
	waitFor(t, "the second wave installing", func() bool {
		var list []apiNode
		if code, body := httpGet(t, api+"/api/v1/nodes"); code != http.StatusOK || json.Unmarshal([]byte(body), &list) != nil {
			return false // not up yet
		}
		verified, installing := 0, 0
		for _, n := range list {
			if n.Live != nil && n.Live.State == "verified" {
				verified++
			}
			if n.Live != nil && n.Live.State == "provisioning" {
				installing++
			}
		}
		return verified >= 1 && installing >= 2
	})
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	time.Sleep(2 * time.Second) // the installing nodes finish while no anneal listens

	api, _ = startServe(t, labEnv, args...)
	waitStatus(t, api, "revision A applied after the restart", func(s serveStatus) bool { return s.AppliedRevision == revA })
	var list []labNode
	getJSON(t, control+"/lab/v1/nodes", &list)
	var nodes []apiNode
	getJSON(t, api+"/api/v1/nodes", &nodes)
	recycled := 0
	for _, n := range list {
		if n.Name == "e2n03" { // maintenance
			continue
		}
		// Every node installs exactly once. A node that powered on while
		// no anneal answered its netboot booted its disk and was cycled
		// again; no other node boots twice.
		if n.Installs != 1 || n.Boots > 2 {
			t.Errorf("%s: %d installs, %d boots across the crash; want 1 install", n.Name, n.Installs, n.Boots)
		}
		if n.Boots == 2 {
			recycled++
		}
	}
	t.Logf("%d node(s) missed their netboot while anneal was down and were cycled again", recycled)
	for _, n := range nodes {
		if n.Name != "e2n03" && (n.Live == nil || !n.Live.UpToDate) {
			t.Errorf("%s not verified after the restart: %+v", n.Name, n.Live)
		}
	}
}
