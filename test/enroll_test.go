package test

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/rollout"
)

// enrollLabNode is a lab node as its control API shows it.
type enrollLabNode struct {
	Name         string `json:"name"`
	Power        string `json:"power"`
	Phase        string `json:"phase"`
	BootOverride string `json:"bootOverride"`
	BuildID      string `json:"buildId"`
	Boots        int    `json:"boots"`
	Installs     int    `json:"installs"`
	AgentReports int    `json:"agentReports"`
	LastError    string `json:"lastError"`
}

// enrollAPINode is a node as /api/v1/nodes shows it.
type enrollAPINode struct {
	Name    string `json:"name"`
	BuildID string `json:"buildId"`
	Live    *struct {
		State    string    `json:"state"`
		BuildID  string    `json:"buildId"`
		Reason   string    `json:"reason"`
		UpToDate bool      `json:"upToDate"`
		Enrolled time.Time `json:"enrolled"`
	} `json:"live"`
}

// TestLabEnroll onboards two brownfield machines of the lab (running the
// site's build, installed by something else, no record in anneal) with
// `anneal enroll` against a running daemon: w1n01 runs exactly its build
// and is adopted (verified) when its agent reports with the enrolled
// files; w1n02's hostname differs from its build, so it is not adopted,
// and the API shows why. Neither is power-cycled nor installed. Enroll
// needs the token (403), refuses a node not in the site and one anneal
// built (409); a re-enroll revokes the previous token; no token reaches
// the daemon's log or enroll's stdout.
func TestLabEnroll(t *testing.T) {
	site, _, _ := labSite(t)
	boot := freeAddr(t)
	labDir := t.TempDir()
	control := startLab(t, site, labDir, "http://"+boot, "--brownfield", "w1n01,w1n02")
	labNode := func(name string) enrollLabNode {
		var n enrollLabNode
		getJSON(t, control+"/lab/v1/nodes/"+name, &n)
		return n
	}
	for _, name := range []string{"w1n01", "w1n02"} {
		waitFor(t, name+" running its disk", func() bool { return labNode(name).Phase == "running" })
	}
	// w1n02 was set up by hand with another hostname than its build's.
	var facts node.Facts
	getJSON(t, control+"/lab/v1/nodes/w1n02/facts", &facts)
	facts.Hostname = "legacy-db-7"
	body, _ := json.Marshal(facts)
	send(t, http.MethodPut, control+"/lab/v1/nodes/w1n02/facts", "", string(body))
	before := map[string]enrollLabNode{"w1n01": labNode("w1n01"), "w1n02": labNode("w1n02")}
	for name, n := range before {
		if n.Power != "on" || n.Boots != 1 || n.Installs != 0 || n.AgentReports != 0 {
			t.Fatalf("%s before enrolling: %+v, want on, booted once by the lab, nothing installed, no report", name, n)
		}
	}

	// A fresh state: the daemon observes (the brownfield nodes are on, so
	// they are held) and installs the nodes that are off.
	api, logs, _ := startServeLogged(t, labEnv, "--repo", site, "--interval", "1s", "--state", filepath.Join(t.TempDir(), "state.db"),
		"--netboot-listen", boot, "--lab", labDir, "--install-timeout", "30s", "--token", "env:ANNEAL_API_TOKEN", "--observe-grace", "10m")
	waitStatus(t, api, "a first pass", func(s serveStatus) bool { return s.Reconciles >= 1 })
	nodes := func() map[string]enrollAPINode {
		var list []enrollAPINode
		getJSON(t, api+"/api/v1/nodes", &list)
		out := map[string]enrollAPINode{}
		for _, n := range list {
			out[n.Name] = n
		}
		return out
	}

	// Without the token: refused, nothing enrolled.
	resp, err := http.Post(api+"/api/v1/nodes/w1n01/enroll", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("enroll without the token: %s, want 403", resp.Status)
	}
	r := anneal(t, labEnv, "enroll", "w1n01", "--server", api, "--out", t.TempDir())
	mustExit(t, r, 64, "--token")
	r = anneal(t, labEnv, "enroll", "w1n01", "--server", api, "--token", "env:ANNEAL_API_TOKEN")
	mustExit(t, r, 64, "--out")
	if l := nodes()["w1n01"].Live; l != nil && !l.Enrolled.IsZero() {
		t.Fatalf("w1n01 enrolled without the token: %+v", l)
	}
	r = anneal(t, labEnv, "enroll", "ghost", "--server", api, "--token", "env:ANNEAL_API_TOKEN", "--out", t.TempDir())
	mustExit(t, r, 1, "409", "not in the site")

	out := t.TempDir()
	r = anneal(t, labEnv, "enroll", "w1n01", "w1n02", "--server", api, "--token", "env:ANNEAL_API_TOKEN", "--out", out)
	mustExit(t, r, 0, "enrolled w1n01", "enrolled w1n02", "/etc/anneal/agent.json", "systemctl enable --now anneal-agent.service")
	t.Logf("anneal enroll w1n01 w1n02 --out DIR:\n%s", r.stdout)
	desired := nodes()
	tokens := map[string]string{}
	configure := func(name, dir string) {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, name, "agent.json"))
		if err != nil {
			t.Fatal(err)
		}
		var agent struct{ URL, Node, Token string }
		if err := json.Unmarshal(data, &agent); err != nil {
			t.Fatal(err)
		}
		build, err := os.ReadFile(filepath.Join(dir, name, "build-id"))
		if err != nil {
			t.Fatal(err)
		}
		if agent.URL != "http://"+boot || agent.Node != name || agent.Token == "" || strings.TrimSpace(string(build)) != desired[name].BuildID {
			t.Fatalf("%s's files: agent %s %s, build %q; want the netboot URL, the node, a token and build %s", name, agent.URL, agent.Node, build, desired[name].BuildID)
		}
		for _, f := range []string{"agent.json", "build-id", "anneal-agent.service"} {
			if st, err := os.Stat(filepath.Join(dir, name, f)); err != nil || st.Mode().Perm() != 0o600 {
				t.Errorf("%s/%s: %v, mode %v, want 0600", name, f, err, st.Mode().Perm())
			}
		}
		tokens[name+" "+dir] = agent.Token
		// What the operator copies to /etc/anneal/ on the machine.
		cfg, _ := json.Marshal(map[string]any{"agent": map[string]string{"url": agent.URL, "node": agent.Node, "token": agent.Token}, "buildId": strings.TrimSpace(string(build))})
		send(t, http.MethodPut, control+"/lab/v1/nodes/"+name+"/agent", "", string(cfg))
	}
	configure("w1n01", out)
	configure("w1n02", out)
	for _, tok := range tokens {
		if strings.Contains(r.stdout+r.stderr, tok) {
			t.Error("anneal enroll printed an agent token")
		}
	}

	var w1n02 enrollAPINode
	waitFor(t, "w1n01 adopted and w1n02 refused", func() bool {
		ns := nodes()
		w1n02 = ns["w1n02"]
		a := ns["w1n01"].Live
		return a != nil && a.State == string(node.Verified) && w1n02.Live != nil && w1n02.Live.Reason != ""
	})
	if a := nodes()["w1n01"]; !a.Live.UpToDate || a.Live.BuildID != a.BuildID || a.Live.Enrolled.IsZero() || a.Live.Reason != "" {
		t.Errorf("w1n01 after its report: %+v, want verified on its build, enrolled", a.Live)
	}
	if l := w1n02.Live; l.State != "" || l.Enrolled.IsZero() || !strings.Contains(l.Reason, "not adopted") ||
		!strings.Contains(l.Reason, `hostname is "legacy-db-7"`) {
		t.Errorf("w1n02 after its report: %+v, want unknown, enrolled, the hostname difference as the reason", l)
	}
	r = anneal(t, labEnv, "nodes", "--site", site, "--server", api)
	mustExit(t, r, 0)
	for _, line := range strings.Split(r.stdout, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "w1n02" && (!strings.Contains(line, " enrolled ") || !strings.Contains(line, "legacy-db-7")) {
			t.Errorf("anneal nodes shows w1n02 as %q, want enrolled with the difference", line)
		}
	}
	// The plan holds w1n02 with why; it rebuilds neither.
	var plan reconcile.Plan
	waitFor(t, "w1n02 held in the plan", func() bool {
		getJSON(t, api+"/api/v1/drift", &plan)
		return plan.Rebuilds != nil && slices.ContainsFunc(plan.Rebuilds.Held, func(h rollout.HeldNode) bool {
			return h.Node == "w1n02" && strings.Contains(h.Reason, "legacy-db-7") && strings.Contains(h.Reason, "never rebuilt")
		})
	})
	if slices.ContainsFunc(plan.Rebuilds.Rebuilds, func(r rollout.NodeRebuild) bool { return r.Node == "w1n01" || r.Node == "w1n02" }) {
		t.Errorf("the plan rebuilds an enrolled node: %+v", plan.Rebuilds.Rebuilds)
	}

	// An installed node is refused: wait for the rollout to verify e1n01.
	waitFor(t, "e1n01 installed by anneal", func() bool {
		l := nodes()["e1n01"].Live
		return l != nil && l.State == string(node.Verified)
	})
	r = anneal(t, labEnv, "enroll", "e1n01", "--server", api, "--token", "env:ANNEAL_API_TOKEN", "--out", t.TempDir())
	mustExit(t, r, 1, "409", "node e1n01 is verified")
	if strings.Contains(r.stderr, "update node") {
		t.Errorf("the refusal carries the store's wrapping:\n%s", r.stderr)
	}

	// Enrolling w1n02 again revokes the first token: its agent, still on
	// it, is refused; with the new files it reports again.
	again := t.TempDir()
	r = anneal(t, labEnv, "enroll", "w1n02", "--server", api, "--token", "env:ANNEAL_API_TOKEN", "--out", again)
	mustExit(t, r, 0, "enrolled w1n02")
	old := tokens["w1n02 "+out]
	report, _ := json.Marshal(map[string]any{"buildId": desired["w1n02"].BuildID, "facts": facts})
	req, err := http.NewRequest(http.MethodPost, "http://"+boot+"/api/v1/nodes/w1n02/facts", strings.NewReader(string(report)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+old)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a report with the first enrollment's token: %s, want 403", resp.Status)
	}
	configure("w1n02", again)
	reports := labNode("w1n02").AgentReports
	waitFor(t, "w1n02 reporting with its new token", func() bool { return labNode("w1n02").AgentReports > reports })
	if l := nodes()["w1n02"].Live; l == nil || l.State != "" || !strings.Contains(l.Reason, "legacy-db-7") {
		t.Errorf("w1n02 after its re-enroll: %+v, want still unknown, not adopted", l)
	}

	// Nothing was power-cycled, booted or installed because of an
	// enrollment.
	for name, b := range before {
		n := labNode(name)
		if n.Boots != b.Boots || n.Installs != 0 || n.Power != "on" || n.BootOverride != "" {
			t.Errorf("%s after enrolling: %+v, was %+v: want no boot, install or boot override", name, n, b)
		}
	}
	log := logs.String()
	for what, tok := range tokens {
		if strings.Contains(log, tok) {
			t.Errorf("the agent token of %s is in the daemon's log", what)
		}
	}
	if !strings.Contains(log, "node enrolled") || !strings.Contains(log, "event=node.enrolled") || !strings.Contains(log, "event=node.adopted") || !strings.Contains(log, "enrolled node not adopted") {
		t.Errorf("the daemon's log does not say what enroll did")
	}
}
