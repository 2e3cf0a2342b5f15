package test

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/node"
)

// TestLabRevokedAgentCannotRebuild: the netboot window hijack's second
// half, end to end on the lab. Once a node's agent token is revoked
// (`anneal nodes revoke-agent`), drift it reports with that token is
// refused and never makes the daemon wipe the node; the same drift on a
// node whose agent holds its current token is rebuilt (the control), and
// its reinstall gives its agent a new token, with which it confirms the
// install.
func TestLabRevokedAgentCannotRebuild(t *testing.T) {
	site, _, revA := labSite(t)
	boot := freeAddr(t)
	labDir := t.TempDir()
	control := startLab(t, site, labDir, "http://"+boot)

	addr := freeAddr(t)
	api := "http://" + addr
	serve := exec.Command(annealBin, "serve", "--listen", addr, "--repo", site, "--interval", "1s",
		"--state", filepath.Join(t.TempDir(), "state.db"), "--netboot-listen", boot, "--lab", labDir,
		"--install-timeout", "20s", "--token", "env:ANNEAL_API_TOKEN")
	serve.Env = append(baseEnv(t.TempDir()), labEnv...)
	logs := &lockedBuffer{}
	serve.Stdout, serve.Stderr = logs, logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = serve.Process.Signal(syscall.SIGTERM)
		_ = serve.Wait()
		if t.Failed() {
			t.Logf("serve log:\n%s", logs.String())
		}
	})
	waitStatus(t, api, "revision A applied", func(s serveStatus) bool { return s.AppliedRevision == revA })

	boots := func() map[string]int {
		var list []labNode
		getJSON(t, control+"/lab/v1/nodes", &list)
		out := map[string]int{}
		for _, n := range list {
			out[n.Name] = n.Boots
		}
		return out
	}
	live := func(node string) (state, build string) {
		var list []apiNode
		getJSON(t, api+"/api/v1/nodes", &list)
		for _, n := range list {
			if n.Name == node && n.Live != nil {
				return n.Live.State, n.Live.BuildID
			}
		}
		return "", ""
	}
	before := boots()
	_, buildE1n01 := live("e1n01")

	revoke := exec.Command(annealBin, "nodes", "revoke-agent", "e1n01", "--server", api, "--token", "env:ANNEAL_API_TOKEN")
	revoke.Env = append(baseEnv(t.TempDir()), labEnv...)
	if out, err := revoke.CombinedOutput(); err != nil || !strings.Contains(string(out), "e1n01: agent token revoked") {
		t.Fatalf("anneal nodes revoke-agent: %v\n%s", err, out)
	}

	// A VLAN made by hand on both nodes: drift, as their agents report it.
	for _, name := range []string{"e1n01", "e1n02"} {
		var facts node.Facts
		getJSON(t, control+"/lab/v1/nodes/"+name+"/facts", &facts)
		facts.Interfaces = append(facts.Interfaces, node.FactInterface{Name: "bond0.999", Kind: node.KindVLAN, VLANID: 999, Link: "bond0"})
		body, err := json.Marshal(facts)
		if err != nil {
			t.Fatal(err)
		}
		send(t, http.MethodPut, control+"/lab/v1/nodes/"+name+"/facts", "", string(body))
	}

	// The control: e1n02 is rebuilt for its drift and verified again.
	waitFor(t, "e1n02 rebuilt for its drift and verified", func() bool {
		state, _ := live("e1n02")
		return boots()["e1n02"] == before["e1n02"]+1 && state == "verified"
	})
	// e1n01's reports are refused; a full pass after one of them plans no
	// rebuild of it.
	refused := func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, `msg="boot: refused agent facts"`) && strings.Contains(line, "node=e1n01") && strings.Contains(line, "status=403") {
				return true
			}
		}
		return false
	}
	waitFor(t, "a refused report of e1n01's revoked agent", refused)
	passes := status(t, api).Reconciles
	waitStatus(t, api, "two more passes", func(s serveStatus) bool { return s.Reconciles >= passes+2 })
	var drift reconcile.Plan
	getJSON(t, api+"/api/v1/drift", &drift)
	if drift.Rebuilds != nil {
		for _, r := range drift.Rebuilds.Rebuilds {
			if r.Node == "e1n01" {
				t.Errorf("the drift a revoked agent reported plans a rebuild of e1n01: %+v", r)
			}
		}
	}
	if b := boots()["e1n01"]; b != before["e1n01"] {
		t.Errorf("e1n01 booted %d times after its agent was revoked, want %d", b, before["e1n01"])
	}
	if state, build := live("e1n01"); state != "verified" || build != buildE1n01 {
		t.Errorf("e1n01: %s on %s, want verified on %s still", state, build, buildE1n01)
	}
}
