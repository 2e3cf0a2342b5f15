package lab

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
)

func TestParseIPXE(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, script string
		want         ipxeScript
		err          string
	}{
		{"kernel", "#!ipxe\nkernel --name vmlinuz http://x/vmlinuz a=b anneal.node=n1\ninitrd http://x/initrd\nboot\n",
			ipxeScript{args: []string{"a=b", "anneal.node=n1"}}, ""},
		{"exit", "\n#!ipxe\n# unknown node\necho no\nexit\n", ipxeScript{exit: true}, ""},
		{"sanboot", "#!ipxe\nsanboot --no-describe --drive 0x80\n", ipxeScript{exit: true}, ""},
		{"chain", "#!ipxe\nchain --autofree http://boot/ipxe/${net0/mac}\n", ipxeScript{chain: "http://boot/ipxe/${net0/mac}"}, ""},
		{"crlf", "#!ipxe\r\nkernel http://x/k anneal.build=b\r\n", ipxeScript{args: []string{"anneal.build=b"}}, ""},
		{"no signature", "kernel http://x/k\n", ipxeScript{}, "#!ipxe"},
		{"html", "<html>404</html>", ipxeScript{}, "#!ipxe"},
		{"nothing to boot", "#!ipxe\necho hello\n", ipxeScript{}, "neither"},
		{"kernel without image", "#!ipxe\nkernel --name x\n", ipxeScript{}, "without an image"},
		{"images", "#!ipxe\nimgfree\nkernel --name vmlinuz /artifacts/k/vmlinuz a=b || goto failed\ninitrd --name initrd http://x/i || goto failed\n" +
			"initrd --name deploy http://x/deploy/anneal.cpio\nboot || goto failed\n:failed\ninitrd http://x/never\nexit 1\n",
			ipxeScript{kernel: "/artifacts/k/vmlinuz", args: []string{"a=b"}, initrds: []string{"http://x/i", "http://x/deploy/anneal.cpio"}}, ""},
	} {
		got, err := parseIPXE([]byte(tc.script))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || mustJSON(t, got.args) != mustJSON(t, tc.want.args) || got.exit != tc.want.exit || got.chain != tc.want.chain ||
			(tc.want.kernel != "" && (got.kernel != tc.want.kernel || !slices.Equal(got.initrds, tc.want.initrds))) {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

func TestInstallParams(t *testing.T) {
	t.Parallel()
	p, err := installParamsOf([]string{"console=ttyS0", "anneal.node=n1", "anneal.build=abc", "anneal.url=http://a:8080/", "anneal.token=t0k"})
	if err != nil || p != (installParams{node: "n1", build: "abc", url: "http://a:8080", token: "t0k"}) {
		t.Fatalf("%+v, %v", p, err)
	}
	if _, err := installParamsOf([]string{"anneal.node=n1", "anneal.url=http://a"}); err == nil || !strings.Contains(err.Error(), "anneal.build, anneal.token") {
		t.Fatalf("missing arguments: %v", err)
	}
	if _, err := installParamsOf([]string{"anneal.node=n", "anneal.build=b", "anneal.token=t", "anneal.url=ftp://a"}); err == nil {
		t.Fatal("an ftp anneal.url was accepted")
	}
}

var testNICs = []physNIC{{"eno1", "aa:00:00:00:00:01"}, {"eno2", "aa:00:00:00:00:02"}, {"ens1f0", "aa:00:00:00:00:03"}, {"ens1f1", "aa:00:00:00:00:04"}}

func applyYAML(t *testing.T, doc string) ([]node.FactInterface, []node.FactRoute, []string, error) {
	t.Helper()
	np, err := parseNetplan([]byte(doc))
	if err != nil {
		return nil, nil, nil, err
	}
	return applyNetplan(np, testNICs)
}

func TestApplyNetplan(t *testing.T) {
	t.Parallel()
	// Renamed ports, a bridge over a bond, a VLAN over the bridge, legacy
	// gateway keys, no top-level "network:".
	ifaces, routes, resolvers, err := applyYAML(t, `
version: 2
ethernets:
  lan0: {match: {macaddress: "AA:00:00:00:00:01"}, set-name: lan0, addresses: [10.0.0.5/24], gateway4: 10.0.0.1,
         nameservers: {addresses: [10.0.0.2, 10.0.0.2, "fd00::2"]}}
  ens1f0: {}
  ens1f1: {}
  ghost: {match: {macaddress: "aa:00:00:00:00:99"}, set-name: ghost}
bonds:
  bond0: {interfaces: [ens1f0, ens1f1], mtu: 9000}
bridges:
  br0: {interfaces: [bond0], parameters: {stp: false}, mtu: 9000}
vlans:
  br0.7: {id: 7, link: br0, mtu: 9216, addresses: ["fd00:7::5/64"], routes: [{to: "::/0", via: "fd00:7::1"}]}
`)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]node.FactInterface{}
	var names []string
	for _, i := range ifaces {
		byName[i.Name] = i
		names = append(names, i.Name)
	}
	if got := strings.Join(names, ","); got != "lan0,eno2,ens1f0,ens1f1,bond0,br0,br0.7" {
		t.Fatalf("devices %s", got)
	}
	for name, want := range map[string]node.FactInterface{
		"lan0":   {Name: "lan0", Kind: "ether", MAC: "aa:00:00:00:00:01", MTU: 1500, Addresses: []string{"10.0.0.5/24"}},
		"eno2":   {Name: "eno2", Kind: "ether", MAC: "aa:00:00:00:00:02", MTU: 1500},
		"ens1f0": {Name: "ens1f0", Kind: "ether", MAC: "aa:00:00:00:00:03", MTU: 9000, Master: "bond0"},
		"bond0":  {Name: "bond0", Kind: "bond", MAC: "aa:00:00:00:00:03", MTU: 9000, BondMode: "balance-rr", Master: "br0"},
		"br0":    {Name: "br0", Kind: "bridge", MAC: "aa:00:00:00:00:03", MTU: 9000},
		// 9216 > its link's 9000: the kernel keeps the link's.
		"br0.7": {Name: "br0.7", Kind: "vlan", MAC: "aa:00:00:00:00:03", MTU: 9000, VLANID: 7, Link: "br0", Addresses: []string{"fd00:7::5/64"}},
	} {
		if g, w := mustJSON(t, byName[name]), mustJSON(t, want); g != w {
			t.Errorf("%s:\n got %s\nwant %s", name, g, w)
		}
	}
	if mustJSON(t, routes) != mustJSON(t, []node.FactRoute{{Gateway: "10.0.0.1", Device: "lan0"}, {Gateway: "fd00:7::1", Device: "br0.7"}}) {
		t.Errorf("routes %+v", routes)
	}
	if strings.Join(resolvers, ",") != "10.0.0.2,fd00::2" {
		t.Errorf("resolvers %v", resolvers)
	}

	for _, tc := range []struct{ name, doc, err string }{
		{"version 1", "network: {version: 1}", "version 1"},
		{"not yaml", "network: [", "network-config"},
		{"vlan on nothing", "network: {version: 2, vlans: {v5: {id: 5, link: bond9}}}", "vlans.v5 (link bond9): no such device"},
		{"vlan without id", "network: {version: 2, ethernets: {eno1: {}}, vlans: {v5: {link: eno1}}}", "id and link"},
		{"bond of nothing", "network: {version: 2, bonds: {bond0: {interfaces: [eth7]}}}", "not a configured ethernet"},
		{"bad address", "network: {version: 2, ethernets: {eno1: {addresses: [10.0.0.5]}}}", `address "10.0.0.5"`},
		{"port in two bonds", "network: {version: 2, ethernets: {eno1: {}}, bonds: {b0: {interfaces: [eno1]}, b1: {interfaces: [eno1]}}}", "already in b0"},
		{"bad gateway", "network: {version: 2, ethernets: {eno1: {routes: [{to: default, via: gw}]}}}", `via "gw"`},
	} {
		if _, _, _, err := applyYAML(t, tc.doc); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.err)
		}
	}
}

func TestFaultsFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	yamlFile := filepath.Join(dir, "faults.yaml")
	if err := os.WriteFile(yamlFile, []byte(`
bmcTimeout: [e1n01]
installFail: {e1n02: no-callback, e1n03: wrong-interface}
bootDelay: 1s
nodeBootDelay: {e1n04: 250ms}
firmware: {e1n05: {bios: "1.12.0", bmc: "7.00.00.00"}}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := LoadFaults(yamlFile)
	if err != nil {
		t.Fatal(err)
	}
	want := Faults{BMCTimeout: []string{"e1n01"},
		InstallFail:   map[string]InstallFault{"e1n02": InstallNoCallback, "e1n03": InstallWrongInterface},
		BootDelay:     Duration(time.Second),
		NodeBootDelay: map[string]Duration{"e1n04": Duration(250 * time.Millisecond)},
		Firmware:      map[string]node.Firmware{"e1n05": {BIOS: "1.12.0", BMC: "7.00.00.00"}}}
	if mustJSON(t, f) != mustJSON(t, want) {
		t.Fatalf("from YAML: %s\nwant %s", mustJSON(t, f), mustJSON(t, want))
	}
	// JSON is read the same, and writes durations as text.
	js := mustJSON(t, want)
	if !strings.Contains(js, `"bootDelay":"1s"`) {
		t.Errorf("JSON: %s", js)
	}
	if g, err := ParseFaults([]byte(js)); err != nil || mustJSON(t, g) != js {
		t.Errorf("from JSON: %+v, %v", g, err)
	}
	if g, err := ParseFaults(nil); err != nil || mustJSON(t, g) != "{}" {
		t.Errorf("empty: %+v, %v", g, err)
	}
	for _, bad := range []string{"bmcTimout: [e1n01]", "bootDelay: -1s", "bootDelay: soon"} {
		if _, err := ParseFaults([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}

	fleet, err := New(Config{Site: exampleSite(t), Resolve: resolver(), BootURL: "http://127.0.0.1:1", Faults: f})
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	if err := fleet.SetFaults(Faults{BMCTimeout: []string{"zz9"}, InstallFail: map[string]InstallFault{"e1n01": "explode"}}); err == nil ||
		!strings.Contains(err.Error(), "no such node: zz9") || !strings.Contains(err.Error(), `"explode"`) {
		t.Fatalf("bad faults: %v", err)
	}
	if mustJSON(t, fleet.Faults()) != mustJSON(t, want) {
		t.Fatal("a refused SetFaults changed the faults")
	}
}

func TestControlAPI(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	boot := newTestBootServer(t, site)
	f := startFleet(t, Config{Site: site, BootURL: boot.URL})
	c := rawClient(f)
	base := "https://127.0.0.1/lab/v1"
	do := func(method, path string, body any) (int, []byte) {
		t.Helper()
		var r io.Reader
		if body != nil {
			r = bytes.NewReader([]byte(mustJSON(t, body)))
		}
		req, err := http.NewRequestWithContext(t.Context(), method, base+path, r)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	faults := Faults{BMCTimeout: []string{"w1n02"}, BootDelay: Duration(time.Second)}
	if code, body := do("PUT", "/faults", faults); code != 200 || !strings.Contains(string(body), `"bootDelay":"1s"`) {
		t.Fatalf("PUT faults: %d %s", code, body)
	}
	if !f.bmcTimeout("w1n02") {
		t.Fatal("PUT faults did not set the fault")
	}
	if code, body := do("GET", "/faults", nil); code != 200 || string(body) != mustJSON(t, faults)+"\n" {
		t.Fatalf("GET faults: %d %s", code, body)
	}
	if code, body := do("PUT", "/faults", map[string]any{"bmcTimeouts": []string{"w1n02"}}); code != 400 || !strings.Contains(string(body), "unknown field") {
		t.Fatalf("PUT misspelt faults: %d %s", code, body)
	}
	if code, _ := do("PUT", "/faults", Faults{}); code != 200 {
		t.Fatal("clearing faults")
	}

	pxeCycle(t, f, "e1n03")
	waitNode(t, f.Node("e1n03"), "installed", func(s NodeStatus) bool { return s.Phase == PhaseRunning })
	code, body := do("GET", "/nodes", nil)
	var nodes []NodeStatus
	if err := json.Unmarshal(body, &nodes); code != 200 || err != nil || len(nodes) != len(site.Nodes) {
		t.Fatalf("GET nodes: %d %v %s", code, err, body)
	}
	for _, s := range nodes {
		if s.Name == "e1n03" && (s.Power != node.PowerOn || s.Boots != 1 || s.BuildID == "" || s.BMC != "10.10.0.13") {
			t.Fatalf("e1n03 listed as %+v", s)
		}
	}
	code, body = do("GET", "/nodes/e1n03/facts", nil)
	var facts node.Facts
	if err := json.Unmarshal(body, &facts); code != 200 || err != nil || facts.Hostname != "e1n03" {
		t.Fatalf("GET facts: %d %s", code, body)
	}
	facts.Resolvers = []string{"192.0.2.53"}
	if code, body := do("PUT", "/nodes/e1n03/facts", facts); code != 200 {
		t.Fatalf("PUT facts: %d %s", code, body)
	}
	if got, _ := f.Node("e1n03").Facts(); strings.Join(got.Resolvers, ",") != "192.0.2.53" {
		t.Fatalf("facts after PUT: %+v", got.Resolvers)
	}
	if code, _ := do("PUT", "/nodes/e1n01/facts", facts); code != 409 {
		t.Fatalf("PUT facts of a node with nothing installed: %d", code)
	}
	if code, _ := do("GET", "/nodes/zz9", nil); code != 404 {
		t.Fatalf("GET unknown node: %d", code)
	}
}
