package test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
	"github.com/miekg/dns"
)

// labPower is a lab node's power and boots, from the lab's control API.
type labPower struct {
	Name  string `json:"name"`
	Power string `json:"power"`
	Boots int    `json:"boots"`
}

// trustStatus is the part of the daemon's status these tests read.
type trustStatus struct {
	serveStatus
	PendingApproval *reconcile.Approval `json:"pendingApproval"`
	ObserveUntil    time.Time           `json:"observeUntil"`
}

// startServeLogged is startServe with the log readable while it runs;
// stop ends the daemon (SIGTERM) and waits for it.
func startServeLogged(t *testing.T, env []string, args ...string) (api string, logs *lockedBuffer, stop func()) {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(annealBin, append([]string{"serve", "--listen", addr}, args...)...)
	cmd.Env = append(baseEnv(t.TempDir()), env...)
	logs = &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("serve log:\n%s", logs.String())
		}
	})
	api = "http://" + addr
	waitFor(t, "serve to answer", func() bool { code, _ := httpGet(t, api+"/healthz"); return code == 200 })
	return api, logs, stop
}

// soaSerials reads the SOA serial of every zone of the site from the DNS
// server that answers for it.
func soaSerials(t *testing.T, zones []string, servers ...string) map[string]uint32 {
	t.Helper()
	out := map[string]uint32{}
	for _, z := range zones {
		for _, srv := range servers {
			m := new(dns.Msg)
			m.SetQuestion(dns.Fqdn(z), dns.TypeSOA)
			r, _, err := new(dns.Client).Exchange(m, srv)
			if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
				continue
			}
			if soa, ok := r.Answer[0].(*dns.SOA); ok {
				out[z] = soa.Serial
			}
		}
		if _, ok := out[z]; !ok {
			t.Fatalf("no server answers the SOA of zone %s", z)
		}
	}
	return out
}

// TestLabTrust is issue 12's "done when", on the demo's setup (the lab and
// serve following a git copy of the example site):
//   - a node removed from the site is powered off (within 60 s), its DNS
//     names are removed after, and the API lists it as removed;
//   - a daemon restarted on an empty state file power-cycles no node and
//     changes no RRset: the running nodes are adopted from their agents;
//   - a rack removal waits for approval (published, logged once), and
//     anneal approve lets it apply without a restart.
func TestLabTrust(t *testing.T) {
	bindAddr, pdnsDNS, pdnsAPI := freeAddr(t), freeAddr(t), freeAddr(t)
	site := copySite(t, "../examples/site-repo", map[string]string{
		"127.0.0.1:5301":        bindAddr,
		"127.0.0.1:5302":        pdnsDNS,
		"http://127.0.0.1:8081": "http://" + pdnsAPI,
	})
	git(t, site, "init", "-q", "-b", "main")
	git(t, site, "add", "-A")
	git(t, site, "commit", "-q", "-m", "A")
	revA := git(t, site, "rev-parse", "HEAD")

	boot := freeAddr(t)
	labDir := t.TempDir()
	control := startLab(t, site, labDir, "http://"+boot)
	state := filepath.Join(t.TempDir(), "state.db")
	serveArgs := []string{"--repo", site, "--interval", "1s", "--state", state, "--netboot-listen", boot, "--lab", labDir,
		"--install-timeout", "20s", "--token", "env:ANNEAL_API_TOKEN", "--observe-grace", "20s"}
	api, _, stop := startServeLogged(t, labEnv, serveArgs...)
	var logs *lockedBuffer

	status := func() trustStatus {
		var st trustStatus
		getJSON(t, api+"/api/v1/status", &st)
		return st
	}
	waitTrust := func(what string, ok func(trustStatus) bool) trustStatus {
		t.Helper()
		var st trustStatus
		waitFor(t, what, func() bool { st = status(); return ok(st) })
		return st
	}
	lab := func() map[string]labPower {
		var list []labPower
		getJSON(t, control+"/lab/v1/nodes", &list)
		out := map[string]labPower{}
		for _, n := range list {
			out[n.Name] = n
		}
		return out
	}
	applied := func(rev string) {
		t.Helper()
		waitStatus(t, api, "revision "+rev[:8]+" applied", func(s serveStatus) bool { return s.AppliedRevision == rev })
	}
	loaded, _, err := schema.LoadDir(context.Background(), site, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var zones []string
	for _, z := range loaded.DNS.Zones {
		zones = append(zones, z.Name)
	}
	resolveA := func(name string) []string {
		return append(queryA(t, bindAddr, name), queryA(t, pdnsDNS, name)...)
	}
	applied(revA)
	if got := resolveA("e2n01.east.example.net."); len(got) == 0 {
		t.Fatal("e2n01.east.example.net has no A record after A")
	}

	// B: w1n04 leaves the site (its document deleted).
	edit(t, site, "nodes/west-w1.yaml", func(s string) string {
		i := strings.LastIndex(s, "---\n")
		if i < 0 || !strings.Contains(s[i:], "name: w1n04") {
			t.Fatal("w1n04 is not the last document of west-w1.yaml")
		}
		return s[:i]
	})
	if got := resolveA("w1n04.west.example.net."); len(got) == 0 {
		t.Fatal("w1n04.west.example.net has no A record before its removal")
	}
	git(t, site, "commit", "-q", "-am", "B: w1n04 leaves the site")
	revB := git(t, site, "rev-parse", "HEAD")
	removedAt := time.Now()
	waitFor(t, "w1n04 powered off", func() bool { return lab()["w1n04"].Power == string(node.PowerOff) })
	t.Logf("w1n04 powered off %.1fs after its removal was committed (the daemon polls every 1s)", time.Since(removedAt).Seconds())
	applied(revB)
	if got := resolveA("w1n04.west.example.net."); len(got) != 0 {
		t.Errorf("w1n04.west.example.net still resolves to %v after its decommission", got)
	}
	var views []nodeState
	getJSON(t, api+"/api/v1/nodes", &views)
	i := slices.IndexFunc(views, func(v nodeState) bool { return v.Name == "w1n04" })
	if i < 0 || views[i].State != "removed" || views[i].Live == nil || views[i].Live.State != string(node.Retired) {
		t.Errorf("the API does not list w1n04 as removed and decommissioned: %+v", views)
	}

	// B2: w1n03 leaves the site while the daemon is suspended, and the
	// state is lost before its decommission ran: the daemon restarts on an
	// empty state file (its netboot key, a separate file, is kept).
	send(t, http.MethodPost, api+"/api/v1/suspend", "lab-api-token", "")
	edit(t, site, "nodes/west-w1.yaml", func(s string) string {
		i := strings.LastIndex(s, "---\n")
		if i < 0 || !strings.Contains(s[i:], "name: w1n03") {
			t.Fatal("w1n03 is not the last document of west-w1.yaml")
		}
		return s[:i]
	})
	git(t, site, "commit", "-q", "-am", "B2: w1n03 leaves the site")
	revB2 := git(t, site, "rev-parse", "HEAD")
	before := lab()
	serials := soaSerials(t, zones, bindAddr, pdnsDNS)
	stop()
	if err := os.Rename(state, state+".lost"); err != nil {
		t.Fatal(err)
	}
	api, logs, _ = startServeLogged(t, labEnv, serveArgs...)
	st := waitTrust("the fresh daemon's observation", func(s trustStatus) bool { return !s.ObserveUntil.IsZero() })
	var nodes []apiNode
	waitFor(t, "every running node adopted", func() bool {
		getJSON(t, api+"/api/v1/nodes", &nodes)
		for _, n := range nodes {
			if before[n.Name].Power == string(node.PowerOn) && n.Name != "w1n03" && (n.Live == nil || !n.Live.UpToDate) {
				return false
			}
		}
		return true
	})
	// w1n03 is on, and only the site's history says it left: powering it
	// off waits for approval (w1n04, found off, is simply retired).
	st = waitTrust("w1n03's decommission awaits approval", func(s trustStatus) bool {
		return s.PendingApproval != nil && s.PendingApproval.Revision == revB2
	})
	if !slices.ContainsFunc(st.PendingApproval.Reasons, func(r string) bool { return strings.Contains(r, "w1n03") && strings.Contains(r, "lost track") }) ||
		slices.ContainsFunc(st.PendingApproval.Reasons, func(r string) bool { return strings.Contains(r, "w1n04") }) {
		t.Errorf("pending approval reasons %q: want w1n03's power-off, not w1n04's", st.PendingApproval.Reasons)
	}
	for name, b := range lab() {
		if b.Boots != before[name].Boots || b.Power != before[name].Power {
			t.Errorf("%s: boots %d power %s after the restart on an empty state, was %d %s", name, b.Boots, b.Power, before[name].Boots, before[name].Power)
		}
	}
	if got := soaSerials(t, zones, bindAddr, pdnsDNS); !mapsEqual(got, serials) {
		t.Errorf("a zone was written after the restart on an empty state: serials %v, were %v", got, serials)
	}
	if got := resolveA("w1n03.west.example.net."); len(got) == 0 {
		t.Error("w1n03's names were deleted while it runs, before its decommission was approved")
	}
	r := anneal(t, labEnv, "approve", "--server", api, "--token", "env:ANNEAL_API_TOKEN", "--plan", st.PendingApproval.PlanDigest, revB2)
	mustExit(t, r, 0, "approved")
	applied(revB2)
	if p := lab()["w1n03"].Power; p != string(node.PowerOff) {
		t.Errorf("w1n03: power %s after its approved decommission", p)
	}
	if got := resolveA("w1n03.west.example.net."); len(got) != 0 {
		t.Errorf("w1n03.west.example.net still resolves to %v after its decommission", got)
	}
	// The new state holds what the daemon rebuilt (ownership from the
	// site's history, the adopted nodes): anneal plan on a copy of it sees
	// nothing to do, as the daemon does.
	r = anneal(t, labEnv, "plan", "--site", site, "--state", stateBackup(t, api))
	mustExit(t, r, 0, "No changes")
	before = lab()

	// C: rack e2 leaves the site: more than maxRemovePercent, so the plan
	// waits for approval.
	git(t, site, "rm", "-q", "nodes/east-e2.yaml")
	git(t, site, "commit", "-q", "-m", "C: rack e2 leaves the site")
	revC := git(t, site, "rev-parse", "HEAD")
	st = waitTrust("C awaits approval", func(s trustStatus) bool {
		return s.PendingApproval != nil && s.PendingApproval.Revision == revC
	})
	if !slices.ContainsFunc(st.PendingApproval.Reasons, func(r string) bool { return strings.Contains(r, "maxRemovePercent") }) {
		t.Errorf("pending approval reasons %q do not name maxRemovePercent", st.PendingApproval.Reasons)
	}
	passes := st.Reconciles
	waitTrust("two more passes", func(s trustStatus) bool { return s.Reconciles >= passes+2 })
	for name, n := range lab() {
		if strings.HasPrefix(name, "e2") && n.Power != before[name].Power {
			t.Errorf("%s: power %s before the approval, was %s", name, n.Power, before[name].Power)
		}
	}
	if got := len(regexp.MustCompile(`the plan awaits approval[^\n]*revision=`+revC).FindAllString(logs.String(), -1)); got != 1 {
		t.Errorf("the daemon logged the pending approval %d times over %d passes, want once", got, passes+2)
	}
	r = anneal(t, labEnv, "status", "--server", api)
	if !strings.Contains(r.stdout, "awaiting approval: revision "+revC[:8]) {
		t.Errorf("anneal status does not say C awaits approval:\n%s", r.stdout)
	}
	// Without --plan, approve shows what waits and approves nothing; it
	// needs no token for that.
	r = anneal(t, labEnv, "approve", "--server", api, revC[:10])
	mustExit(t, r, 1, st.PendingApproval.PlanDigest, "--plan")
	if s := status(); s.PendingApproval == nil {
		t.Fatal("approve without --plan approved the plan")
	}
	// Another digest is refused.
	r = anneal(t, labEnv, "approve", "--server", api, "--token", "env:ANNEAL_API_TOKEN", "--plan", "0123456789abcdef", revC[:10])
	mustExit(t, r, 1, "409", "is not the plan")
	r = anneal(t, labEnv, "approve", "--server", api, "--token", "env:ANNEAL_API_TOKEN", "--plan", st.PendingApproval.PlanDigest[:12], revC[:10])
	mustExit(t, r, 0, "approved: revision "+revC)
	applied(revC)
	for name, n := range lab() {
		if strings.HasPrefix(name, "e2") && n.Power != string(node.PowerOff) {
			t.Errorf("%s: power %s after the approved rack removal", name, n.Power)
		}
		if !strings.HasPrefix(name, "e2") && name != "w1n04" && (n.Power != before[name].Power || n.Boots != before[name].Boots) {
			t.Errorf("%s was touched by the rack removal: %+v, was %+v", name, n, before[name])
		}
	}
	if got := resolveA("e2n01.east.example.net."); len(got) != 0 {
		t.Errorf("e2n01.east.example.net still resolves to %v after the rack removal", got)
	}
}

// nodeState is a node's declared and live state from the API.
type nodeState struct {
	Name  string `json:"name"`
	State string `json:"state"`
	Live  *struct {
		State string `json:"state"`
	} `json:"live"`
}

func mapsEqual(a, b map[string]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
