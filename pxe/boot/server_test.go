package boot

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

func TestIPXEScript(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(f *fixture)
		mac     string
		status  int
		want    []string // substrings of the body
		notWant []string
		logs    []string // substrings of the logs
	}{
		{
			name:    "armed, boot MAC upper case with colons",
			prepare: func(f *fixture) { f.arm("e1n01") },
			mac:     "B0:7B:25:0B:01:01",
			status:  http.StatusOK,
			want: []string{"#!ipxe\n", "kernel --name vmlinuz http://boot.example.net/images/ubuntu-22.04.4/vmlinuz initrd=initrd console=ttyS0,115200n8 ip=dhcp anneal.node=e1n01 anneal.build=BUILD:e1n01 anneal.url=BASE anneal.token=",
				" autoinstall ds=nocloud-net;s=BASE/install/e1n01/", "initrd --name initrd http://boot.example.net/images/ubuntu-22.04.4/initrd || goto failed\n", "boot || goto failed\n"},
			logs: []string{`level=INFO msg="boot: serving install script" node=e1n01 mac=b0:7b:25:0b:01:01 build=BUILD:e1n01 installer=autoinstall`},
		},
		{
			name:    "armed, another interface's MAC with hyphens",
			prepare: func(f *fixture) { f.arm("e1n01") },
			mac:     "b0-7b-25-0b-03-01",
			status:  http.StatusOK,
			want:    []string{"anneal.node=e1n01 "},
		},
		{
			name:    "kickstart image",
			prepare: func(f *fixture) { f.arm("e2n05") },
			mac:     "3c:ec:ef:14:01:05",
			status:  http.StatusOK,
			want:    []string{"kernel --name vmlinuz http://boot.example.net/images/rocky-9.4/vmlinuz ", " inst.ks=BASE/install/e2n05/", "/ks.cfg ifname=eno1:3c:ec:ef:14:01:05 "},
		},
		{
			name:    "no record",
			mac:     "b0:7b:25:0b:01:01",
			status:  http.StatusOK,
			want:    []string{"#!ipxe\n", "echo anneal: e1n01 is not armed for an install: anneal has no record of it\n", "exit\n"},
			notWant: []string{"kernel", "token"},
			logs:    []string{`level=INFO msg="boot: node not armed, booting from local disk" node=e1n01`},
		},
		{
			name: "installed, not armed",
			prepare: func(f *fixture) {
				f.arm("e1n01")
				f.update("e1n01", func(r *node.Record) { r.State, r.Nonce = node.Installed, "" })
			},
			mac:     "b0:7b:25:0b:01:01",
			status:  http.StatusOK,
			want:    []string{`its state is "installed", not provisioning`, "exit\n"},
			notWant: []string{"kernel"},
		},
		{
			name: "arming expired",
			prepare: func(f *fixture) {
				f.arm("e1n01")
				f.setNow(t0.Add(2 * time.Hour))
			},
			mac:     "b0:7b:25:0b:01:01",
			status:  http.StatusOK,
			want:    []string{"its arming expired at 2026-11-20T11:00:00Z", "exit\n"},
			notWant: []string{"kernel"},
		},
		{
			name: "armed for another build",
			prepare: func(f *fixture) {
				f.arm("e1n01")
				f.update("e1n01", func(r *node.Record) { r.Target = "0000000000000000" })
			},
			mac:     "b0:7b:25:0b:01:01",
			status:  http.StatusOK,
			want:    []string{"it is armed for build 0000000000000000 but the site now wants BUILD:e1n01", "exit\n"},
			notWant: []string{"kernel"},
		},
		{
			name: "decommissioned",
			prepare: func(f *fixture) {
				f.arm("e1n01")
				f.site.Node("e1n01").State = schema.StateDecommissioned
			},
			mac:     "b0:7b:25:0b:01:01",
			status:  http.StatusOK,
			want:    []string{"the node is decommissioned", "exit\n"},
			notWant: []string{"kernel"},
		},
		{
			name:    "unknown MAC",
			mac:     "02-00-00-AA-BB-01",
			status:  http.StatusOK,
			want:    []string{"#!ipxe\necho anneal: MAC 02:00:00:aa:bb:01 is not in site lab1\nexit\n"},
			logs:    []string{`level=WARN msg="boot: netboot from a MAC not in the site" mac=02:00:00:aa:bb:01 site=lab1 remote=127.0.0.1`},
			notWant: []string{"kernel"},
		},
		{name: "not a MAC", mac: "nope", status: http.StatusBadRequest},
		{name: "EUI-64 is not an Ethernet MAC", mac: "02:00:00:00:00:00:00:01", status: http.StatusBadRequest},
		{
			name:    "no site loaded",
			prepare: func(f *fixture) { f.setSite(nil, true) },
			mac:     "b0:7b:25:0b:01:01",
			status:  http.StatusServiceUnavailable,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			sub := strings.NewReplacer("BASE", f.srv.BaseURL, "BUILD:e1n01", f.buildID("e1n01"))
			if tc.prepare != nil {
				tc.prepare(f)
			}
			status, body := f.get("/ipxe/" + tc.mac)
			if m := scriptToken.FindStringSubmatch(body); m != nil {
				f.secret(m[1])
			}
			if status != tc.status {
				t.Fatalf("status %d, want %d; body:\n%s", status, tc.status, body)
			}
			for _, w := range tc.want {
				if !strings.Contains(body, sub.Replace(w)) {
					t.Errorf("body lacks %q:\n%s", sub.Replace(w), body)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(body, w) {
					t.Errorf("body has %q:\n%s", w, body)
				}
			}
			for _, w := range tc.logs {
				if !strings.Contains(f.logs.String(), sub.Replace(w)) {
					t.Errorf("logs lack %q:\n%s", sub.Replace(w), f.logs.String())
				}
			}
		})
	}
}

func (f *fixture) update(name string, fn func(*node.Record)) {
	f.t.Helper()
	if err := f.store.UpdateNode(context.Background(), name, func(r *node.Record) error { fn(r); return nil }); err != nil {
		f.t.Fatal(err)
	}
}

func TestDiscovered(t *testing.T) {
	f := newFixture(t)
	for _, mac := range []string{"02:00:00:00:00:01", "02:00:00:00:00:02", "02-00-00-00-00-01"} {
		f.get("/ipxe/" + mac)
		f.setNow(f.clock().Add(time.Minute))
	}
	f.get("/ipxe/b0:7b:25:0b:01:01") // known: not discovered
	status, body := f.get("/api/v1/discovered")
	if status != http.StatusOK {
		t.Fatalf("status %d", status)
	}
	var got []Discovery
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	want := []Discovery{
		{MAC: "02:00:00:00:00:01", FirstSeen: t0, LastSeen: t0.Add(2 * time.Minute), Count: 2, RemoteAddr: "127.0.0.1"},
		{MAC: "02:00:00:00:00:02", FirstSeen: t0.Add(time.Minute), LastSeen: t0.Add(time.Minute), Count: 1, RemoteAddr: "127.0.0.1"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("discovered:\n%v\nwant:\n%v", got, want)
	}
}

func TestDiscoveryIsBounded(t *testing.T) {
	s := &Server{}
	for i := range MaxDiscovered + 10 {
		s.disc.seen(fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff), "10.0.0.1", t0.Add(time.Duration(i)*time.Second))
	}
	got := s.Discovered()
	if len(got) != MaxDiscovered || len(s.disc.byMAC) != MaxDiscovered {
		t.Fatalf("%d entries (%d indexed), want %d", len(got), len(s.disc.byMAC), MaxDiscovered)
	}
	if got[len(got)-1].MAC != "02:00:00:00:00:0a" || got[0].MAC != fmt.Sprintf("02:00:00:00:%02x:%02x", (MaxDiscovered+9)>>8, (MaxDiscovered+9)&0xff) {
		t.Errorf("oldest kept %s, newest %s: the ten oldest should be dropped", got[len(got)-1].MAC, got[0].MAC)
	}
}

func TestInstallFiles(t *testing.T) {
	tests := []struct {
		name   string
		node   string
		file   string
		mutate func(f *fixture, token string) (path string)
		status int
		want   []string
	}{
		{name: "user-data", node: "e1n01", file: FileUserData, status: http.StatusOK, want: []string{"#cloud-config\n", "autoinstall:\n", "hostname: e1n01"}},
		{name: "meta-data", node: "e1n01", file: FileMetaData, status: http.StatusOK, want: []string{"instance-id: e1n01-BUILD\n"}},
		{name: "vendor-data", node: "e1n01", file: FileVendorData, status: http.StatusOK, want: []string{"#cloud-config"}},
		{name: "network-config", node: "e1n01", file: FileNetworkConfig, status: http.StatusOK, want: []string{"network:\n  version: 2\n", "bond0.130:"}},
		{name: "build.json", node: "e1n01", file: FileBuild, status: http.StatusOK, want: []string{`"id": "BUILD"`, `"hostname": "e1n01"`}},
		{name: "agent.json", node: "e1n01", file: FileAgent, status: http.StatusOK, want: []string{`"url": "BASE"`, `"node": "e1n01"`, `"token": "AGENT"`}},
		{name: "ks.cfg for kickstart", node: "e2n05", file: FileKickstart, status: http.StatusOK, want: []string{"network --device=bond0 --bondslaves=enp65s0f0,enp65s0f1"}},
		{name: "ks.cfg for autoinstall", node: "e1n01", file: FileKickstart, status: http.StatusNotFound},
		{name: "user-data for kickstart", node: "e2n05", file: FileUserData, status: http.StatusNotFound},
		{name: "unknown file", node: "e1n01", file: "passwd", status: http.StatusNotFound},
		{
			name: "token of another node", node: "e1n01", file: FileUserData, status: http.StatusForbidden,
			mutate: func(f *fixture, token string) string {
				f.arm("e1n02")
				return "/install/e1n02/" + token + "/" + FileUserData
			},
		},
		{
			name: "forged token", node: "e1n01", file: FileUserData, status: http.StatusForbidden,
			mutate: func(f *fixture, token string) string {
				forged := MintInstallToken([]byte("attacker-key-0123456789abcdef"), "e1n01", f.buildID("e1n01"), "nonce-e1n01", t0.Add(time.Hour))
				return "/install/e1n01/" + forged + "/" + FileUserData
			},
		},
		{
			name: "expired token", node: "e1n01", file: FileUserData, status: http.StatusForbidden,
			mutate: func(f *fixture, token string) string {
				f.setNow(t0.Add(2 * time.Hour))
				return ""
			},
		},
		{
			name: "node re-armed with a new nonce", node: "e1n01", file: FileUserData, status: http.StatusForbidden,
			mutate: func(f *fixture, token string) string {
				f.update("e1n01", func(r *node.Record) { r.Nonce = "a-newer-nonce" })
				return ""
			},
		},
		{
			name: "node no longer provisioning", node: "e1n01", file: FileUserData, status: http.StatusForbidden,
			mutate: func(f *fixture, token string) string {
				f.update("e1n01", func(r *node.Record) { r.State = node.Failed })
				return ""
			},
		},
		{
			name: "site moved to another build", node: "e1n01", file: FileUserData, status: http.StatusConflict,
			mutate: func(f *fixture, token string) string {
				moved := loadSite(f.t)
				moved.Node("e1n01").PatchSet = "2026-10"
				f.setSite(moved, false)
				return ""
			},
		},
		{
			name: "node removed from the site", node: "e1n01", file: FileUserData, status: http.StatusNotFound,
			mutate: func(f *fixture, token string) string {
				f.setSite(withoutNode(f.t, "e1n01"), false)
				return ""
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			build := f.arm(tc.node)
			token := f.tokenOf(tc.node)
			path := "/install/" + tc.node + "/" + token + "/" + tc.file
			if tc.mutate != nil {
				if p := tc.mutate(f, token); p != "" {
					path = p
				}
			}
			status, body := f.get(path)
			if status != tc.status {
				t.Fatalf("status %d, want %d; body:\n%s", status, tc.status, body)
			}
			sub := strings.NewReplacer("BUILD", build, "BASE", f.srv.BaseURL, "AGENT", AgentToken(testKey, tc.node, agentGenOf(tc.node)))
			for _, w := range tc.want {
				if !strings.Contains(body, sub.Replace(w)) {
					t.Errorf("body lacks %q:\n%s", sub.Replace(w), body)
				}
			}
			if tc.status == http.StatusForbidden && !strings.Contains(f.logs.String(), "level=WARN") {
				t.Errorf("a refused token is not logged at warn:\n%s", f.logs.String())
			}
		})
	}
}

// withoutNode is the example site without one node (loaded from a copy).
func withoutNode(t *testing.T, node string) *schema.Site {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../../examples/site-repo")); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "nodes", "*.yaml"))
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var kept []string
		for _, doc := range strings.Split(string(data), "\n---\n") {
			if !strings.Contains(doc, "\nname: "+node+"\n") {
				kept = append(kept, doc)
			}
		}
		if err := os.WriteFile(p, []byte(strings.Join(kept, "\n---\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	site, _, err := schema.Load(context.Background(), os.DirFS(dir), schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if site.Node(node) != nil {
		t.Fatalf("%s still in the site", node)
	}
	return site
}

func TestInstallCallback(t *testing.T) {
	type req struct {
		path string
		body any
	}
	good := func(f *fixture) req {
		return req{"/api/v1/nodes/e1n01/installed", installedRequest{Token: f.tokenOf("e1n01"), BuildID: f.buildID("e1n01"), Facts: sampleFacts("e1n01")}}
	}
	tests := []struct {
		name      string
		prepare   func(f *fixture) req
		status    int
		wantState node.State
		wantNonce bool // the nonce is still there (nothing consumed it)
		reason    string
		reports   int
	}{
		{name: "good", prepare: good, status: http.StatusNoContent, wantState: node.Installed, reports: 1},
		{
			name: "replayed",
			prepare: func(f *fixture) req {
				r := good(f)
				if status, body := f.post(r.path, r.body, ""); status != http.StatusNoContent {
					f.t.Fatalf("first callback: %d %s", status, body)
				}
				f.takeReports()
				return r
			},
			status: http.StatusForbidden, wantState: node.Installed,
		},
		{
			name: "forged",
			prepare: func(f *fixture) req {
				r := good(f)
				forged := MintInstallToken([]byte("attacker-key-0123456789abcdef"), "e1n01", f.buildID("e1n01"), "nonce-e1n01", t0.Add(time.Hour))
				r.body = installedRequest{Token: forged, BuildID: f.buildID("e1n01")}
				return r
			},
			status: http.StatusForbidden, wantState: node.Provisioning, wantNonce: true,
		},
		{
			name: "guessed nonce with the right key is still single use",
			prepare: func(f *fixture) req {
				r := good(f)
				r.body = installedRequest{Token: MintInstallToken(testKey, "e1n01", f.buildID("e1n01"), "another-nonce", t0.Add(time.Hour)), BuildID: f.buildID("e1n01")}
				return r
			},
			status: http.StatusForbidden, wantState: node.Provisioning, wantNonce: true,
		},
		{
			name: "expired",
			prepare: func(f *fixture) req {
				r := good(f)
				f.setNow(t0.Add(time.Hour))
				return r
			},
			status: http.StatusForbidden, wantState: node.Provisioning, wantNonce: true,
		},
		{
			name: "wrong node",
			prepare: func(f *fixture) req {
				r := good(f)
				f.arm("e1n02")
				r.path = "/api/v1/nodes/e1n02/installed"
				return r
			},
			status: http.StatusForbidden, wantState: node.Provisioning, wantNonce: true,
		},
		{
			name: "wrong build",
			prepare: func(f *fixture) req {
				r := good(f)
				r.body = installedRequest{Token: f.tokenOf("e1n01"), BuildID: "deadbeefdeadbeef", Facts: sampleFacts("e1n01")}
				return r
			},
			status: http.StatusConflict, wantState: node.Failed, reason: "installed build deadbeefdeadbeef, expected BUILD", reports: 1,
		},
		{
			name: "no token",
			prepare: func(f *fixture) req {
				return req{"/api/v1/nodes/e1n01/installed", installedRequest{BuildID: f.buildID("e1n01")}}
			},
			status: http.StatusForbidden, wantState: node.Provisioning, wantNonce: true,
		},
		{
			name:    "not JSON",
			prepare: func(f *fixture) req { return req{"/api/v1/nodes/e1n01/installed", "{not json"} },
			status:  http.StatusBadRequest, wantState: node.Provisioning, wantNonce: true,
		},
		{
			name: "body too large",
			prepare: func(f *fixture) req {
				return req{"/api/v1/nodes/e1n01/installed", `{"token": "` + strings.Repeat("a", maxReportBody) + `"}`}
			},
			status: http.StatusRequestEntityTooLarge, wantState: node.Provisioning, wantNonce: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			build := f.arm("e1n01")
			r := tc.prepare(f)
			status, body := f.post(r.path, r.body, "")
			if status != tc.status {
				t.Fatalf("status %d, want %d; body: %s", status, tc.status, body)
			}
			rec := f.record("e1n01")
			if rec.State != tc.wantState || (rec.Nonce != "") != tc.wantNonce {
				t.Errorf("record state %q nonce set %v, want %q %v", rec.State, rec.Nonce != "", tc.wantState, tc.wantNonce)
			}
			if rec.Target != build {
				t.Errorf("target %q, want %q kept", rec.Target, build)
			}
			if reason := strings.ReplaceAll(tc.reason, "BUILD", build); rec.Reason != reason {
				t.Errorf("reason %q, want %q", rec.Reason, reason)
			}
			if reason := strings.ReplaceAll(tc.reason, "BUILD", build); reason != "" && !strings.Contains(body, reason) {
				t.Errorf("body %q lacks the reason %q", body, reason)
			}
			reports := f.takeReports()
			if len(reports) != tc.reports {
				t.Fatalf("%d reports, want %d", len(reports), tc.reports)
			}
			if tc.reports == 1 {
				if rep := reports[0]; rep.Node != "e1n01" || rep.Kind != node.ReportInstalled || !rep.Time.Equal(f.clock()) || rep.Facts.Kernel != "5.15.0-126-generic" {
					t.Errorf("report %+v", rep)
				}
				if rec.Facts == nil || rec.Facts.Hostname != "e1n01" || !rec.FactsAt.Equal(f.clock()) || !rec.Since.Equal(f.clock()) {
					t.Errorf("facts not stored: %+v at %s since %s", rec.Facts, rec.FactsAt, rec.Since)
				}
			}
			if status == http.StatusForbidden && !strings.Contains(f.logs.String(), `level=WARN msg="boot: refused install callback" node=`) {
				t.Errorf("a refused callback is not logged at warn with the node:\n%s", f.logs.String())
			}
		})
	}
}

// TestInstallCallbackOnce races callbacks with one token: exactly one wins.
func TestInstallCallbackOnce(t *testing.T) {
	f := newFixture(t)
	f.arm("e1n01")
	body := installedRequest{Token: f.tokenOf("e1n01"), BuildID: f.buildID("e1n01"), Facts: sampleFacts("e1n01")}
	var wg sync.WaitGroup
	statuses := make(chan int, 8)
	for range 8 {
		wg.Go(func() {
			data, _ := json.Marshal(body)
			resp, err := f.client.Post(f.ts.URL+"/api/v1/nodes/e1n01/installed", "application/json", strings.NewReader(string(data)))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		})
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if count[http.StatusNoContent] != 1 || count[http.StatusForbidden] != 7 {
		t.Errorf("statuses %v, want one 204 and seven 403", count)
	}
}

func TestAgentFacts(t *testing.T) {
	tests := []struct {
		name   string
		node   string
		bearer func(f *fixture) string
		status int
	}{
		{"good", "e1n01", func(f *fixture) string { return AgentToken(testKey, "e1n01", "") }, http.StatusNoContent},
		{"good, of the record's generation", "e1n01", func(f *fixture) string {
			f.update("e1n01", func(r *node.Record) { r.AgentGen = "g2" })
			return AgentToken(testKey, "e1n01", "g2")
		}, http.StatusNoContent},
		{"of an older generation", "e1n01", func(f *fixture) string {
			f.update("e1n01", func(r *node.Record) { r.AgentGen = "g2" })
			return AgentToken(testKey, "e1n01", "g1")
		}, http.StatusForbidden},
		{"without generation, once the record has one", "e1n01", func(f *fixture) string {
			f.update("e1n01", func(r *node.Record) { r.AgentGen = "g2" })
			return AgentToken(testKey, "e1n01", "")
		}, http.StatusForbidden},
		{"no token", "e1n01", func(f *fixture) string { return "" }, http.StatusForbidden},
		{"another node's token", "e1n01", func(f *fixture) string { return AgentToken(testKey, "e1n02", "") }, http.StatusForbidden},
		{"other key", "e1n01", func(f *fixture) string { return AgentToken([]byte("attacker-key-0123456789abcdef"), "e1n01", "") }, http.StatusForbidden},
		{"install token", "e1n01", func(f *fixture) string { f.arm("e1n01"); return f.tokenOf("e1n01") }, http.StatusForbidden},
		{"node not in the site", "ghost", func(f *fixture) string { return AgentToken(testKey, "ghost", "") }, http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.update(tc.node, func(r *node.Record) { r.State = node.Verified })
			bearer := tc.bearer(f)
			f.secret(bearer)
			status, body := f.post("/api/v1/nodes/"+tc.node+"/facts", factsRequest{BuildID: "0123456789abcdef", Facts: sampleFacts(tc.node)}, bearer)
			if status != tc.status {
				t.Fatalf("status %d, want %d; body %s", status, tc.status, body)
			}
			rec := f.record(tc.node)
			reports := f.takeReports()
			if tc.status != http.StatusNoContent {
				if rec.Facts != nil || len(reports) != 0 {
					t.Errorf("refused facts were stored (%v) or reported (%d)", rec.Facts, len(reports))
				}
				return
			}
			if rec.Facts == nil || rec.Facts.Hostname != tc.node || !rec.FactsAt.Equal(t0) || rec.State != node.Verified {
				t.Errorf("record %+v: want facts stored and state kept", rec)
			}
			if len(reports) != 1 || reports[0].Kind != node.ReportAgent || reports[0].BuildID != "0123456789abcdef" || reports[0].Node != tc.node {
				t.Errorf("reports %+v", reports)
			}
		})
	}
}

func TestAgentBinary(t *testing.T) {
	f := newFixture(t)
	if status, _ := f.get("/agent/anneal"); status != http.StatusNotFound {
		t.Errorf("without AgentBinary: %d, want 404", status)
	}
	g := newFixture(t)
	bin := filepath.Join(t.TempDir(), "anneal")
	if err := os.WriteFile(bin, []byte("\x7fELF pretend"), 0o755); err != nil {
		t.Fatal(err)
	}
	g.srv.AgentBinary = bin // set before its first request
	if status, body := g.get("/agent/anneal"); status != http.StatusOK || body != "\x7fELF pretend" {
		t.Errorf("agent binary: %d %q", status, body)
	}
}

func TestMisconfigured(t *testing.T) {
	tests := []struct {
		name string
		srv  *Server
	}{
		{"no site", &Server{Nodes: newMemStore(), Key: testKey, BaseURL: testBase}},
		{"no store", &Server{Site: func() *schema.Site { return nil }, Key: testKey, BaseURL: testBase}},
		{"short key", &Server{Site: func() *schema.Site { return nil }, Nodes: newMemStore(), Key: []byte("short"), BaseURL: testBase}},
		{"bad base URL", &Server{Site: func() *schema.Site { return nil }, Nodes: newMemStore(), Key: testKey, BaseURL: "10.0.0.1:8080"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logs lockedBuffer
			tc.srv.Log = newTestLogger(&logs)
			if err := tc.srv.Check(); err == nil {
				t.Fatal("Check passed")
			}
			if strings.Contains(logs.String(), string(testKey)) {
				t.Error("the key is in the logs")
			}
		})
	}
}

// TestNetbootMarks: the script serve marks the record netbooted; once the
// installer fetched its files, the next netboot (the installed system's
// reboot on a machine that netboots first) boots from disk.
func TestNetbootMarks(t *testing.T) {
	f := newFixture(t)
	f.arm("e1n01")
	if code, body := f.get("/ipxe/b0:7b:25:0b:01:01"); code != http.StatusOK || !strings.Contains(body, "kernel") {
		t.Fatalf("first netboot: %d %s", code, body)
	}
	if rec := f.record("e1n01"); rec.Netbooted.IsZero() || !rec.InstallFetched.IsZero() {
		t.Fatalf("after the script: %+v", rec)
	}
	if code, _ := f.get("/install/e1n01/" + f.tokenOf("e1n01") + "/" + FileNetworkConfig); code != http.StatusOK {
		t.Fatalf("install file: %d", code)
	}
	if rec := f.record("e1n01"); rec.InstallFetched.IsZero() {
		t.Fatal("install fetch not recorded")
	}
	code, body := f.get("/ipxe/b0:7b:25:0b:01:01")
	if code != http.StatusOK || strings.Contains(body, "kernel") || !strings.Contains(body, "already fetched its install") {
		t.Fatalf("netboot after the install started: %d %s", code, body)
	}
}
