package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/internal/testenv"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// Real Redfish clients against the lab's BMCs: DMTF's redfishtool and
// OpenStack Ironic's sushy, as Debian packages them. A client reaches a BMC
// at its address, and the lab tells its BMCs apart by the Host the client
// asked for: the test declares one node's BMC at 127.0.0.1, where the lab
// listens, so the client's own Host names that node.

// clientProfiles are a node of each vendor Id style in the example site.
var clientProfiles = []struct {
	name, node, systemID, managerID string
}{
	{"supermicro", "w1n01", "1", "1"},
	{"dell", "e1n01", "System.Embedded.1", "iDRAC.Embedded.1"},
}

// loopbackFleet serves the example site with the node's BMC at 127.0.0.1;
// it returns the fleet, the BMC's host:port and the lab's certificate as a
// PEM file.
func loopbackFleet(t *testing.T, name string) (*Fleet, string, string) {
	t.Helper()
	site := exampleSite(t)
	sn := site.Node(name)
	if sn == nil {
		t.Fatalf("no node %s in the site", name)
	}
	sn.BMC.Address = "127.0.0.1"
	// The grant of the example site covers its BMC networks, not loopback.
	resolve := func(schema.SecretRef, schema.SecretDest) (string, error) { return labPassword, nil }
	f := startFleet(t, Config{Site: site, Resolve: resolve})
	if f.byBMC["127.0.0.1"] != f.Node(name) {
		t.Fatalf("the lab's BMC at 127.0.0.1 is not %s's", name)
	}
	ca := filepath.Join(t.TempDir(), "lab-ca.pem")
	if err := os.WriteFile(ca, f.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	return f, f.Addr(), ca
}

// clientEnv is the environment of a client: no proxy, no CA bundle that
// would override the client's own verification setting.
func clientEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "NO_PROXY=*")
}

func runClient(t *testing.T, ctx context.Context, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = clientEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	if s := stderr.String(); strings.TrimSpace(s) != "" {
		t.Logf("%s %s: stderr: %s", name, strings.Join(args, " "), s)
	}
	return stdout.String()
}

func decodeObject(t *testing.T, what, s string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%s: no JSON object: %v\n%s", what, err, s)
	}
	return v
}

// checkStatus compares the lab's own view of the node.
func checkStatus(t *testing.T, n *Node, after string, power node.PowerState, boots int, override, enabled string) {
	t.Helper()
	s := n.Status()
	if s.Power != power || s.Boots != boots || s.BootOverride != override || s.BootOverrideEnabled != enabled {
		t.Fatalf("after %s: lab node power %s, boots %d, override %q/%q; want %s, %d, %q/%q",
			after, s.Power, s.Boots, s.BootOverride, s.BootOverrideEnabled, power, boots, override, enabled)
	}
}

func TestRedfishtool(t *testing.T) {
	t.Parallel()
	tool := testenv.LookPath(t, "redfishtool", "redfishtool")
	for _, p := range clientProfiles {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			f, addr, _ := loopbackFleet(t, p.node)
			n := f.Node(p.node)
			fw, err := n.Firmware(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			// -S Always: HTTPS for every request (redfishtool does not
			// verify the certificate); -T: no hang if the lab hangs.
			rft := func(auth string, args ...string) string {
				t.Helper()
				base := []string{"-r", addr, "-u", "anneal", "-p", labPassword, "-S", "Always", "-A", auth, "-T", "30"}
				return runClient(t, ctx, tool, append(base, args...)...)
			}
			system := "/redfish/v1/Systems/" + p.systemID

			root := decodeObject(t, "root", rft("Basic", "root"))
			if root["RedfishVersion"] != "1.15.0" || root["@odata.id"] != "/redfish/v1/" {
				t.Errorf("service root %v", root)
			}
			systems := decodeObject(t, "Systems", rft("Basic", "Systems"))
			if ms, _ := systems["Members"].([]any); len(ms) != 1 || ms[0].(map[string]any)["@odata.id"] != system {
				t.Errorf("Systems: %v", systems)
			}
			checkStatus(t, n, "start", node.PowerOff, 0, "", "")
			sys := decodeObject(t, "Systems get", rft("Basic", "Systems", "-I", p.systemID, "get"))
			if sys["Id"] != p.systemID || sys["PowerState"] != "Off" || sys["BiosVersion"] != fw.BIOS {
				t.Errorf("system: Id %v, PowerState %v, BiosVersion %v; want %s, Off, %s", sys["Id"], sys["PowerState"], sys["BiosVersion"], p.systemID, fw.BIOS)
			}

			rft("Session", "Systems", "-I", p.systemID, "setBootOverride", "Once", "Pxe")
			checkStatus(t, n, "setBootOverride Once Pxe", node.PowerOff, 0, "Pxe", "Once")
			boot := decodeObject(t, "Systems get -P Boot", rft("Basic", "Systems", "-I", p.systemID, "get", "-P", "Boot"))
			if b, _ := boot["Boot"].(map[string]any); b["BootSourceOverrideTarget"] != "Pxe" || b["BootSourceOverrideEnabled"] != "Once" {
				t.Errorf("Boot after setBootOverride: %v", boot)
			}

			rft("Session", "Systems", "-I", p.systemID, "reset", "On")
			// The power-on took the one-time override (a netboot, which
			// fails: the fleet has no boot server).
			checkStatus(t, n, "reset On", node.PowerOn, 1, "", "")
			ps := decodeObject(t, "Systems get -P PowerState", rft("Basic", "Systems", "-I", p.systemID, "get", "-P", "PowerState"))
			if ps["PowerState"] != "On" {
				t.Errorf("PowerState after reset On: %v", ps)
			}
			rft("Basic", "Systems", "-I", p.systemID, "reset", "ForceRestart")
			checkStatus(t, n, "reset ForceRestart", node.PowerOn, 2, "", "")
			rft("Basic", "Systems", "-I", p.systemID, "reset", "ForceOff")
			checkStatus(t, n, "reset ForceOff", node.PowerOff, 2, "", "")

			mgr := decodeObject(t, "Managers get", rft("Basic", "Managers", "-I", p.managerID, "get"))
			if mgr["Id"] != p.managerID || mgr["ManagerType"] != "BMC" || mgr["FirmwareVersion"] != fw.BMC {
				t.Errorf("manager: Id %v, ManagerType %v, FirmwareVersion %v; want %s, BMC, %s", mgr["Id"], mgr["ManagerType"], mgr["FirmwareVersion"], p.managerID, fw.BMC)
			}

			inv := decodeObject(t, "FirmwareInventory", rft("Basic", "raw", "GET", pathFWInv))
			ms, _ := inv["Members"].([]any)
			versions := map[string]bool{}
			for _, m := range ms {
				link, _ := m.(map[string]any)["@odata.id"].(string)
				item := decodeObject(t, link, rft("Basic", "raw", "GET", link))
				v, _ := item["Version"].(string)
				versions[v] = true
			}
			if len(ms) != 2 || !versions[fw.BIOS] || !versions[fw.BMC] {
				t.Errorf("firmware inventory %v: versions %v, want %s and %s", inv, versions, fw.BIOS, fw.BMC)
			}
			if s := n.Status(); s.Power != node.PowerOff {
				t.Errorf("end: power %s", s.Power)
			}
		})
	}
}

// sushyScript drives sushy: argv is the URL, user, password, CA file,
// system and manager paths. It prints one JSON object: what sushy read and
// did, in order, with the errors it raised.
const sushyScript = `
import json, sys
import sushy

url, user, password, ca, system_path, manager_path = sys.argv[1:7]
out = {}

def val(v):
    return getattr(v, "value", v)

root = sushy.Sushy(url, username=user, password=password, verify=ca)
out["redfish_version"] = root.redfish_version
out["systems"] = [m for m in root.get_system_collection().members_identities]
system = root.get_system(system_path)
out["system_id"] = system.identity
out["power_state_before"] = val(system.power_state)
out["bios_version"] = system.bios_version
out["allowed_reset"] = sorted(val(v) for v in system.get_allowed_reset_system_values())
system.set_system_boot_options(sushy.BOOT_SOURCE_TARGET_PXE, enabled=sushy.BOOT_SOURCE_ENABLED_ONCE)
system.refresh()
out["boot_after_set"] = {"target": val(system.boot.target), "enabled": val(system.boot.enabled)}
system.reset_system(sushy.RESET_ON)
system.refresh()
out["power_state_after_on"] = val(system.power_state)
out["boot_after_on"] = {"target": val(system.boot.target), "enabled": val(system.boot.enabled)}
system.reset_system(sushy.RESET_FORCE_RESTART)
system.refresh()
out["power_state_after_restart"] = val(system.power_state)
manager = root.get_manager(manager_path)
out["manager"] = {"id": manager.identity, "type": val(manager.manager_type), "firmware": manager.firmware_version}
update = root.get_update_service()
out["firmware"] = sorted([{"id": i.identity, "version": i.version} for i in update.firmware_inventory.get_members()], key=lambda x: x["id"])
print(json.dumps(out))
`

type sushyResult struct {
	RedfishVersion    string        `json:"redfish_version"`
	Systems           []string      `json:"systems"`
	SystemID          string        `json:"system_id"`
	PowerBefore       string        `json:"power_state_before"`
	BIOSVersion       string        `json:"bios_version"`
	AllowedReset      []string      `json:"allowed_reset"`
	BootAfterSet      sushyOverride `json:"boot_after_set"`
	PowerAfterOn      string        `json:"power_state_after_on"`
	BootAfterOn       sushyOverride `json:"boot_after_on"`
	PowerAfterRestart string        `json:"power_state_after_restart"`
	Manager           struct{ ID, Type, Firmware string }
	Firmware          []struct{ ID, Version string }
}

type sushyOverride struct{ Target, Enabled string }

func TestSushy(t *testing.T) {
	t.Parallel()
	const python = "/usr/bin/python3" // Debian's, whose dist-packages hold sushy
	if _, err := os.Stat(python); err != nil {
		testenv.Unavailable(t, "no "+python+" (apt package python3-sushy, in .ci/run's PACKAGES): "+err.Error())
	}
	if out, err := exec.Command(python, "-c", "import sushy").CombinedOutput(); err != nil {
		testenv.Unavailable(t, "python3 cannot import sushy (apt package python3-sushy, in .ci/run's PACKAGES): "+err.Error()+": "+string(out))
	}
	for _, p := range clientProfiles {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			f, addr, ca := loopbackFleet(t, p.node)
			n := f.Node(p.node)
			fw, err := n.Firmware(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			system, manager := "/redfish/v1/Systems/"+p.systemID, "/redfish/v1/Managers/"+p.managerID
			out := runClient(t, ctx, python, "-c", sushyScript, "https://"+addr, "anneal", labPassword, ca, system, manager)
			var r sushyResult
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("sushy's output: %v\n%s", err, out)
			}
			t.Logf("sushy: %s", out)
			if r.RedfishVersion != "1.15.0" || len(r.Systems) != 1 || r.Systems[0] != system || r.SystemID != p.systemID {
				t.Errorf("sushy read version %q, systems %v, system Id %q", r.RedfishVersion, r.Systems, r.SystemID)
			}
			if r.PowerBefore != "Off" || r.BIOSVersion != fw.BIOS {
				t.Errorf("sushy read power %q, BIOS %q; want Off, %s", r.PowerBefore, r.BIOSVersion, fw.BIOS)
			}
			if !slices.Contains(r.AllowedReset, "On") || !slices.Contains(r.AllowedReset, "ForceRestart") {
				t.Errorf("reset types sushy allows: %v", r.AllowedReset)
			}
			if (r.BootAfterSet != sushyOverride{"Pxe", "Once"}) {
				t.Errorf("override after sushy set it: %+v", r.BootAfterSet)
			}
			if r.PowerAfterOn != "On" || r.PowerAfterRestart != "On" || (r.BootAfterOn != sushyOverride{"None", "Disabled"}) {
				t.Errorf("after On: power %q, override %+v; after ForceRestart: power %q", r.PowerAfterOn, r.BootAfterOn, r.PowerAfterRestart)
			}
			// The lab's own view: on, booted twice, the override consumed by
			// the first boot.
			checkStatus(t, n, "sushy", node.PowerOn, 2, "", "")
			if r.Manager.ID != p.managerID || r.Manager.Type != "BMC" || r.Manager.Firmware != fw.BMC {
				t.Errorf("manager %+v; want %s, BMC, %s", r.Manager, p.managerID, fw.BMC)
			}
			var inv []string
			for _, it := range n.firmwareInventory() {
				inv = append(inv, it.id+"="+it.version)
			}
			var got []string
			for _, it := range r.Firmware {
				got = append(got, it.ID+"="+it.Version)
			}
			slices.Sort(inv)
			slices.Sort(got)
			if !slices.Equal(got, inv) {
				t.Errorf("firmware inventory through sushy %v; the lab's %v", got, inv)
			}
		})
	}
}
