package boot

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/rollout"
	"github.com/anneal-dev/anneal/schema"
)

// The netboot window hijack (issue 11): while a node is armed, anyone who
// reaches the netboot port used to get its install token from GET
// /ipxe/MAC, fetch its files (agent.json: an agent token that never
// expired), post the build's facts to /installed and have the node marked
// verified with no install. These tests play the node and the attacker
// from distinct loopback addresses against the default source binding.

// Loopback addresses of the players. loopbackSite puts the provisioning
// network on 127.0.1.0/24, so e1n01 (host index 11) is at 127.0.1.11 and
// e1n02 at 127.0.1.12.
var (
	fromNode     = netip.MustParseAddr("127.0.1.11") // e1n01's provisioning address
	fromNeighbor = netip.MustParseAddr("127.0.1.12") // e1n02's: another node of the site
	fromAttacker = netip.MustParseAddr("127.0.0.2")  // anything else that reaches the port
	fromProxy    = netip.MustParseAddr("127.0.0.3")  // a trusted proxy, in the NAT tests
)

// loopbackSite is the example site with its provisioning network moved
// to 127.0.1.0/24.
func loopbackSite(t testing.TB) *schema.Site {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../../examples/site-repo")); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "networks.yaml")
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	moved := strings.NewReplacer("cidr: 10.10.1.0/24", "cidr: 127.0.1.0/24", "gateway: 10.10.1.1", "gateway: 127.0.1.1",
		`pattern: "{node}.prov.{region}.{domain}"`, `pattern: "{node}.prov.{region}.{domain}"`+"\n  reverse: false").Replace(string(data))
	if moved == string(data) {
		t.Fatal("networks.yaml: the provisioning network moved from 10.10.1.0/24")
	}
	if err := os.WriteFile(p, []byte(moved), 0o644); err != nil {
		t.Fatal(err)
	}
	site, diags, err := schema.Load(context.Background(), os.DirFS(dir), schema.LoadOptions{})
	if err != nil {
		t.Fatalf("load the loopback site: %v %v", err, diags)
	}
	if got := nodeSources(site, site.Node("e1n01")); len(got) == 0 || got[0] != fromNode {
		t.Fatalf("e1n01's provisioning addresses %v, want %s first", got, fromNode)
	}
	return site
}

// bound is a fixture over the loopback site with the default binding.
func bound(opts ...func(*fixture)) func(*fixture) {
	return func(f *fixture) {
		f.site = loopbackSite(f.t)
		f.srv.Binding = ""
		for _, o := range opts {
			o(f)
		}
	}
}

// from sends a request from a loopback source address.
func (f *fixture) from(src netip.Addr, method, path string, body any, header map[string]string) (int, string) {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, f.ts.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}).DialContext,
		DisableKeepAlives: true,
	}}
	resp, err := client.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s from %s: %v", method, path, src, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.StatusCode, string(out)
}

// scriptFrom netboots e1n01 from src and returns the status and the
// install token (when served).
func (f *fixture) scriptFrom(src netip.Addr) (int, string) {
	f.t.Helper()
	status, body := f.from(src, http.MethodGet, "/ipxe/"+f.site.Node("e1n01").Interfaces[0].MAC, nil, nil)
	m := scriptToken.FindStringSubmatch(body)
	if status != http.StatusOK || m == nil {
		return status, ""
	}
	f.secret(m[1])
	return status, m[1]
}

// wantHijackLogged checks a refusal was logged at warn as a possible
// hijack, naming the client.
func (f *fixture) wantHijackLogged(client netip.Addr) {
	f.t.Helper()
	for _, line := range strings.Split(f.logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "possible netboot hijack") && strings.Contains(line, client.String()) {
			return
		}
	}
	f.t.Errorf("no warning of a possible hijack by %s:\n%s", client, f.logs.String())
}

// TestNetbootAnswersOnlyTheNode (a): an armed node's script, install
// files, callback and agent reports are answered only from its
// provisioning address; from anywhere else they are refused (403) and
// logged, and nothing is consumed or stored.
func TestNetbootAnswersOnlyTheNode(t *testing.T) {
	routes := []struct {
		name string
		// do sends the route's request from src, with a valid token got
		// by the node itself, and returns the status.
		do func(f *fixture, src netip.Addr, token string) int
	}{
		{"iPXE script", func(f *fixture, src netip.Addr, _ string) int {
			status, _ := f.scriptFrom(src)
			return status
		}},
		{"install file", func(f *fixture, src netip.Addr, token string) int {
			status, _ := f.from(src, http.MethodGet, "/install/e1n01/"+token+"/"+FileUserData, nil, nil)
			return status
		}},
		{"install callback", func(f *fixture, src netip.Addr, token string) int {
			status, _ := f.from(src, http.MethodPost, "/api/v1/nodes/e1n01/installed",
				installedRequest{Token: token, BuildID: f.buildID("e1n01"), Facts: sampleFacts("e1n01")}, nil)
			return status
		}},
		{"agent report", func(f *fixture, src netip.Addr, _ string) int {
			status, _ := f.from(src, http.MethodPost, "/api/v1/nodes/e1n01/facts",
				factsRequest{BuildID: f.buildID("e1n01"), Facts: sampleFacts("e1n01")},
				map[string]string{"Authorization": "Bearer " + AgentToken(testKey, "e1n01", agentGenOf("e1n01"))})
			return status
		}},
	}
	for _, rt := range routes {
		for _, src := range []netip.Addr{fromAttacker, fromNeighbor} {
			t.Run(rt.name+" from "+src.String(), func(t *testing.T) {
				f := newFixture(t, bound())
				f.arm("e1n01")
				_, token := f.scriptFrom(fromNode)
				if token == "" {
					t.Fatal("the node itself got no install script")
				}
				before := f.record("e1n01")
				if status := rt.do(f, src, token); status != http.StatusForbidden {
					t.Fatalf("from %s: status %d, want 403", src, status)
				}
				f.wantHijackLogged(src)
				after := f.record("e1n01")
				if after.State != before.State || after.Nonce != before.Nonce || len(after.Fetched) != 0 || after.Facts != nil || len(f.takeReports()) != 0 {
					t.Fatalf("a refused request changed the record: %+v", after)
				}
				// The node itself is still served.
				if status := rt.do(f, fromNode, token); status/100 != 2 {
					t.Fatalf("from the node: status %d, want 2xx", status)
				}
			})
		}
	}
}

// TestNetbootSourceOptions: the NAT options. A trusted proxy's
// X-Forwarded-For names the client; nobody else's is believed; binding
// off answers anyone; the lab binding lets loopback stand for any node.
func TestNetbootSourceOptions(t *testing.T) {
	proxy := func(f *fixture) { f.srv.TrustedProxies = []netip.Prefix{netip.PrefixFrom(fromProxy, 32)} }
	tests := []struct {
		name    string
		opts    []func(*fixture)
		src     netip.Addr
		forward string // X-Forwarded-For
		want    int
	}{
		{"trusted proxy for the node", []func(*fixture){proxy}, fromProxy, fromNode.String(), http.StatusOK},
		{"trusted proxy for the node, behind a client's own header", []func(*fixture){proxy}, fromProxy, "127.0.1.11, " + fromNode.String(), http.StatusOK},
		{"trusted proxy for the node, the client lying", []func(*fixture){proxy}, fromProxy, fromNode.String() + ", " + fromAttacker.String(), http.StatusForbidden},
		{"trusted proxy without a header", []func(*fixture){proxy}, fromProxy, "", http.StatusForbidden},
		{"trusted proxy, header not an address", []func(*fixture){proxy}, fromProxy, "e1n01", http.StatusForbidden},
		{"untrusted client claiming the node", []func(*fixture){proxy}, fromAttacker, fromNode.String(), http.StatusForbidden},
		{"binding off", []func(*fixture){func(f *fixture) { f.srv.Binding = BindOff }}, fromAttacker, "", http.StatusOK},
		{"lab binding, loopback", []func(*fixture){func(f *fixture) { f.srv.Binding = BindLab }}, fromAttacker, "", http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, bound(tc.opts...))
			f.arm("e1n01")
			var header map[string]string
			if tc.forward != "" {
				header = map[string]string{"X-Forwarded-For": tc.forward}
			}
			status, _ := f.from(tc.src, http.MethodGet, "/ipxe/"+f.site.Node("e1n01").Interfaces[0].MAC, nil, header)
			if status != tc.want {
				t.Fatalf("status %d, want %d", status, tc.want)
			}
		})
	}
	t.Run("unknown binding", func(t *testing.T) {
		srv := &Server{Site: func() *schema.Site { return nil }, Nodes: newMemStore(), Key: testKey, BaseURL: "http://127.0.0.1:1", Binding: "nat",
			Log: slog.New(slog.DiscardHandler)}
		if err := srv.Check(); err == nil || !strings.Contains(err.Error(), `source binding "nat"`) {
			t.Fatalf("Check = %v", err)
		}
	})
}

// TestInstallFilesServedOnce (b): every install file, agent.json
// included, is served once per arming; a second fetch is 410 and logged
// as a possible hijack; concurrent fetches serve exactly one; a new
// arming serves them again.
func TestInstallFilesServedOnce(t *testing.T) {
	f := newFixture(t, bound())
	f.arm("e1n01")
	_, token := f.scriptFrom(fromNode)
	files := filesFor(schema.InstallerAutoinstall)
	for _, file := range files {
		path := "/install/e1n01/" + token + "/" + file
		if status, body := f.from(fromNode, http.MethodGet, path, nil, nil); status != http.StatusOK {
			t.Fatalf("%s, first fetch: %d %s", file, status, body)
		}
		if status, body := f.from(fromNode, http.MethodGet, path, nil, nil); status != http.StatusGone {
			t.Fatalf("%s, second fetch: %d %s, want 410", file, status, body)
		}
	}
	f.wantHijackLogged(fromNode)
	if rec := f.record("e1n01"); len(rec.Fetched) != len(files) || rec.InstallFetched.IsZero() {
		t.Fatalf("record: fetched %v at %s", rec.Fetched, rec.InstallFetched)
	}

	// A race for one file: exactly one wins.
	f.arm("e1n01")
	_, token = f.scriptFrom(fromNode)
	var mu sync.Mutex
	count := map[int]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			status, _ := f.from(fromNode, http.MethodGet, "/install/e1n01/"+token+"/"+FileAgent, nil, nil)
			mu.Lock()
			count[status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if count[http.StatusOK] != 1 || count[http.StatusGone] != 7 {
		t.Fatalf("concurrent fetches of agent.json: %v, want one 200 and seven 410", count)
	}
}

// TestInstalledCallbackDoesNotVerify (c): the install callback, even with
// the build's exact facts, leaves the node installed, awaiting its agent:
// not verified, no build recorded, not confirmed. Only a report of the
// agent of this install confirms it.
func TestInstalledCallbackDoesNotVerify(t *testing.T) {
	f := newFixture(t, bound())
	build := f.arm("e1n01")
	_, token := f.scriptFrom(fromNode)
	if status, _ := f.from(fromNode, http.MethodGet, "/install/e1n01/"+token+"/"+FileBuild, nil, nil); status != http.StatusOK {
		t.Fatalf("build.json: %d", status)
	}
	spec := node.BuildSpecOf(f.site, f.site.Node("e1n01"))
	exact := node.FactsOfBuild(spec)
	status, body := f.from(fromNode, http.MethodPost, "/api/v1/nodes/e1n01/installed", installedRequest{Token: token, BuildID: build, Facts: exact}, nil)
	if status != http.StatusNoContent {
		t.Fatalf("callback: %d %s", status, body)
	}
	rec := f.record("e1n01")
	if rec.State != node.Installed || rec.BuildID != "" || rec.Confirmed() || rec.FactsFrom != node.ReportInstalled {
		t.Fatalf("after the callback: state %q build %q confirmed %v facts from %q; want installed, awaiting the agent",
			rec.State, rec.BuildID, rec.Confirmed(), rec.FactsFrom)
	}
	// The agent of this install reports: that confirms.
	f.setNow(t0.Add(time.Minute))
	status, body = f.from(fromNode, http.MethodPost, "/api/v1/nodes/e1n01/facts", factsRequest{BuildID: build, Facts: exact},
		map[string]string{"Authorization": "Bearer " + AgentToken(testKey, "e1n01", agentGenOf("e1n01"))})
	if status != http.StatusNoContent {
		t.Fatalf("agent report: %d %s", status, body)
	}
	if rec := f.record("e1n01"); !rec.Confirmed() || rec.FactsBuild != build {
		t.Fatalf("after the agent's report: confirmed %v build %q", rec.Confirmed(), rec.FactsBuild)
	}
}

// TestOldAgentTokens (d): an agent token of a previous install, or one
// revoked, is refused (403), and the drifted facts posted with it do not
// make the daemon rebuild the node; the current token's do (the control).
func TestOldAgentTokens(t *testing.T) {
	drifted := func(f *fixture) node.Facts {
		facts := node.FactsOfBuild(node.BuildSpecOf(f.site, f.site.Node("e1n01")))
		facts.Interfaces = append(facts.Interfaces, node.FactInterface{Name: "bond0.999", Kind: node.KindVLAN, VLANID: 999, Link: "bond0"})
		return facts
	}
	tests := []struct {
		name string
		// steal returns the agent token an attacker kept, after what
		// made it old.
		steal   func(f *fixture) string
		status  int
		rebuild bool
	}{
		{"the current token (control)", func(f *fixture) string {
			return f.agentTokenOfInstall()
		}, http.StatusNoContent, true},
		{"a token from before a reinstall", func(f *fixture) string {
			old := f.agentTokenOfInstall()
			f.agentTokenOfInstall() // the next install rotates it
			return old
		}, http.StatusForbidden, false},
		{"a revoked token", func(f *fixture) string {
			old := f.agentTokenOfInstall()
			r := &reconcile.Reconciler{Rebuild: &reconcile.RebuildConfig{Nodes: f.store}}
			if err := r.RevokeAgent(context.Background(), "e1n01"); err != nil {
				f.t.Fatal(err)
			}
			return old
		}, http.StatusForbidden, false},
		{"a token from before generations, once the node was reinstalled", func(f *fixture) string {
			f.agentTokenOfInstall()
			return AgentToken(testKey, "e1n01", "")
		}, http.StatusForbidden, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, bound())
			stolen := tc.steal(f)
			f.verified("e1n01")
			status, _ := f.from(fromNode, http.MethodPost, "/api/v1/nodes/e1n01/facts",
				factsRequest{BuildID: f.buildID("e1n01"), Facts: drifted(f)}, map[string]string{"Authorization": "Bearer " + stolen})
			if status != tc.status {
				t.Fatalf("drifted facts with the token: %d, want %d", status, tc.status)
			}
			recs, err := f.store.NodeRecords(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			rebuilt := false
			for _, r := range rollout.PlanRebuilds(f.site, recs, f.clock()).Rebuilds {
				rebuilt = rebuilt || r.Node == "e1n01"
			}
			if rebuilt != tc.rebuild {
				t.Fatalf("e1n01 rebuilt: %v, want %v", rebuilt, tc.rebuild)
			}
		})
	}
}

// agentTokenOfInstall arms e1n01 with a new agent generation (as the
// rebuild engine does at every install) and fetches agent.json as its
// installer does; it returns the agent token in it.
func (f *fixture) agentTokenOfInstall() string {
	f.t.Helper()
	var prev string
	if rec := f.record("e1n01"); rec != nil {
		prev = rec.AgentGen
	}
	f.arm("e1n01")
	gen := prev + "+"
	f.update("e1n01", func(r *node.Record) { r.AgentGen = gen })
	_, token := f.scriptFrom(fromNode)
	status, body := f.from(fromNode, http.MethodGet, "/install/e1n01/"+token+"/"+FileAgent, nil, nil)
	var agent agentFile
	if status != http.StatusOK || json.Unmarshal([]byte(body), &agent) != nil || agent.Token == "" {
		f.t.Fatalf("agent.json: %d %s", status, body)
	}
	f.secret(agent.Token)
	return agent.Token
}

// verified records e1n01 verified on the build the site wants, with the
// facts of that build.
func (f *fixture) verified(name string) {
	f.t.Helper()
	spec := node.BuildSpecOf(f.site, f.site.Node(name))
	facts := node.FactsOfBuild(spec)
	f.update(name, func(r *node.Record) {
		r.State, r.Nonce, r.Target = node.Verified, "", ""
		r.BuildID, r.Spec, r.BuiltAt = spec.ID(), &spec, f.clock()
		r.Facts, r.FactsAt, r.FactsFrom, r.FactsBuild = &facts, f.clock(), node.ReportAgent, spec.ID()
	})
}

// oldDiskBMC is the BMC of a machine that, power-cycled for a netboot,
// boots its old disk instead: nothing of the install happens.
type oldDiskBMC struct{}

func (oldDiskBMC) PowerState(context.Context) (node.PowerState, error) {
	return node.PowerOn, nil
}
func (oldDiskBMC) SetPower(context.Context, node.PowerAction) error { return nil }
func (oldDiskBMC) BootOnce(context.Context, node.BootDevice) error  { return nil }
func (oldDiskBMC) Firmware(context.Context) (node.Firmware, error) {
	return node.Firmware{}, nil
}

// TestHijackedCallbackDoesNotVerify (c), the attack end to end:
// the rebuild engine arms a node, whose machine then boots its old disk;
// an attacker who can act as the node (binding off: behind a NAT) fetches
// its script and build.json and posts the build's facts to /installed.
// The node is never verified: the rollout waits for the agent of the
// install, which never reports, and fails the rebuild.
func TestHijackedCallbackDoesNotVerify(t *testing.T) {
	wake := &rollout.Waker{}
	f := newFixture(t, bound(func(f *fixture) {
		f.srv.Binding, f.srv.Now = BindOff, nil // real time: the rollout arms with it
		f.srv.OnReport = func(r node.Report) { wake.Notify(r.Node) }
	}))
	armed := make(chan struct{})
	ro := &rollout.Engine{Site: f.site, Nodes: f.store, Wake: wake, InstallTimeout: 1500 * time.Millisecond, PollInterval: 50 * time.Millisecond,
		BMC: func(*schema.Node) (node.BMC, error) { return oldDiskBMC{}, nil },
		Progress: func(e rollout.Event) {
			if e.Step == rollout.StepPower {
				close(armed)
			}
		}}
	plan := rollout.PlanRebuilds(f.site, nil, time.Now())
	plan.Rebuilds = slices.DeleteFunc(plan.Rebuilds, func(r rollout.NodeRebuild) bool { return r.Node != "e1n01" })
	plan.Rebuilds[0].Canary = false
	done := make(chan *rollout.Result, 1)
	go func() {
		res, err := ro.Run(context.Background(), plan)
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	<-armed

	_, token := f.scriptFrom(fromAttacker)
	if token == "" {
		t.Fatal("binding off: the attacker got no script")
	}
	status, body := f.from(fromAttacker, http.MethodGet, "/install/e1n01/"+token+"/"+FileBuild, nil, nil)
	var build struct {
		node.BuildSpec
		ID string `json:"id"`
	}
	if status != http.StatusOK || json.Unmarshal([]byte(body), &build) != nil {
		t.Fatalf("build.json: %d %s", status, body)
	}
	status, body = f.from(fromAttacker, http.MethodPost, "/api/v1/nodes/e1n01/installed",
		installedRequest{Token: token, BuildID: build.ID, Facts: node.FactsOfBuild(build.BuildSpec)}, nil)
	if status != http.StatusNoContent {
		t.Fatalf("the attacker's callback: %d %s", status, body)
	}

	res := <-done
	rec := f.record("e1n01")
	if len(res.Verified) != 0 || rec.State != node.Failed || rec.BuildID != "" ||
		!strings.Contains(res.Failed["e1n01"], "its agent did not report") {
		t.Fatalf("after a callback with no install: result %+v, record state %q build %q; want failed, waiting for its agent", res, rec.State, rec.BuildID)
	}
}
