package lab

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/providers/bmc"
	"github.com/anneal-dev/anneal/reconcile/node"
)

func waitNode(t testing.TB, n *Node, what string, cond func(NodeStatus) bool) NodeStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := n.WaitFor(ctx, cond)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return s
}

// TestRedfishThroughProvider drives a virtual BMC with providers/bmc, the
// real bmclib Redfish path, through RedirectClient: the site's BMC address
// (10.10.0.11:443) reaches the lab's listener.
func TestRedfishThroughProvider(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	var logs logBuffer
	f := startFleet(t, Config{Site: site, Logger: debugLogger(&logs)})
	b := labBMC(t, f, site, "e1n01", labPassword, 5*time.Second)
	n := f.Node("e1n01")
	ctx := t.Context()

	if st, err := b.PowerState(ctx); err != nil || st != node.PowerOff {
		t.Fatalf("PowerState = %v, %v; want off", st, err)
	}
	if err := b.BootOnce(ctx, node.BootPXE); err != nil {
		t.Fatal(err)
	}
	if s := n.Status(); s.BootOverride != "Pxe" || s.BootOverrideEnabled != "Once" || s.Power != node.PowerOff {
		t.Fatalf("after BootOnce(pxe): %+v", s)
	}
	// Cycle when off powers on (the contract); the boot consumes the
	// one-time override. No boot server answers: the netboot fails and the
	// empty disk boots nothing.
	if err := b.SetPower(ctx, node.ActionCycle); err != nil {
		t.Fatal(err)
	}
	s := waitNode(t, n, "no OS", func(s NodeStatus) bool { return s.Phase == PhaseNoOS })
	if s.Power != node.PowerOn || s.Boots != 1 || s.BootOverride != "" || s.LastError == "" {
		t.Fatalf("after cycle: %+v", s)
	}
	if st, err := b.PowerState(ctx); err != nil || st != node.PowerOn {
		t.Fatalf("PowerState = %v, %v; want on", st, err)
	}
	// Cycle when on restarts (ResetType ForceRestart): a second boot, from
	// disk since the override was consumed.
	logs.Reset()
	if err := b.SetPower(ctx, node.ActionCycle); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "path=/redfish/v1/Systems/System.Embedded.1/Actions/ComputerSystem.Reset status=204") {
		t.Fatalf("no reset request logged:\n%s", logs.String())
	}
	s = waitNode(t, n, "second boot", func(s NodeStatus) bool { return s.Boots == 2 && s.Phase == PhaseNoOS })
	if s.LastError != "" {
		t.Fatalf("a disk boot tried the network: %+v", s)
	}
	if err := b.BootOnce(ctx, node.BootDisk); err != nil {
		t.Fatal(err)
	}
	if s := n.Status(); s.BootOverride != "Hdd" {
		t.Fatalf("after BootOnce(disk): %+v", s)
	}
	if err := b.SetPower(ctx, node.ActionOff); err != nil {
		t.Fatal(err)
	}
	if st, err := b.PowerState(ctx); err != nil || st != node.PowerOff {
		t.Fatalf("PowerState = %v, %v; want off", st, err)
	}

	// Firmware: the hardware profile's, then a drifted BIOS.
	fw, err := b.Firmware(ctx)
	if err != nil || fw != (node.Firmware{BIOS: "1.13.2", BMC: "7.10.50.00"}) {
		t.Fatalf("Firmware = %+v, %v; want the dell-r650 profile's", fw, err)
	}
	if err := f.SetFaults(Faults{Firmware: map[string]node.Firmware{"e1n01": {BIOS: "1.12.0", BMC: "7.10.50.00"}}}); err != nil {
		t.Fatal(err)
	}
	if fw, err := b.Firmware(ctx); err != nil || fw.BIOS != "1.12.0" {
		t.Fatalf("Firmware after drift = %+v, %v", fw, err)
	}
	if strings.Contains(logs.String(), labPassword) {
		t.Fatal("the log carries the BMC password")
	}
}

// TestRequestsBmclibMakes pins what bmclib v2.3.5 and gofish v0.20.0
// request for each call, as the lab logs it, with both Id styles: iDRAC's
// (e1n02, a Dell profile) and Supermicro's (w1n01). Each call's effect is
// checked on the node.
func TestRequestsBmclibMakes(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	for _, style := range []struct {
		node, system, manager, chassis string
		firmware                       []string // the inventory's members, in any order
		fw                             node.Firmware
	}{
		{"e1n02", "/redfish/v1/Systems/System.Embedded.1", "/redfish/v1/Managers/iDRAC.Embedded.1", "/redfish/v1/Chassis/System.Embedded.1",
			[]string{"Installed-159-1.13.2__BIOS.Setup.1-1", "Installed-25227-7.10.50.00__iDRAC.Embedded.1-1"},
			node.Firmware{BIOS: "1.13.2", BMC: "7.10.50.00"}},
		{"w1n01", "/redfish/v1/Systems/1", "/redfish/v1/Managers/1", "/redfish/v1/Chassis/1",
			[]string{"BIOS", "BMC"}, node.Firmware{BIOS: "1.9", BMC: "01.04.08"}},
	} {
		t.Run(style.node, func(t *testing.T) {
			t.Parallel()
			var logs logBuffer
			f := startFleet(t, Config{Site: site, Logger: debugLogger(&logs)})
			b := labBMC(t, f, site, style.node, labPassword, 5*time.Second)
			n := f.Node(style.node)
			open := []string{"GET /redfish/v1/", "POST /redfish/v1/SessionService/Sessions"}
			system := []string{"GET /redfish/v1/Systems", "GET " + style.system}
			firmware := []string{"GET /redfish/v1/UpdateService", "GET /redfish/v1/UpdateService/FirmwareInventory"}
			for _, m := range style.firmware {
				firmware = append(firmware, "GET /redfish/v1/UpdateService/FirmwareInventory/"+m)
			}
			cat := func(parts ...[]string) []string {
				var out []string
				for _, p := range parts {
					out = append(out, p...)
				}
				return out
			}
			var fw node.Firmware
			for _, tc := range []struct {
				name  string
				call  func(context.Context) error
				want  []string
				check func() bool
			}{
				{"PowerState", func(ctx context.Context) error {
					st, err := b.PowerState(ctx)
					if err == nil && st != node.PowerOff {
						err = fmt.Errorf("power %v, want off", st)
					}
					return err
				}, cat(open, system), nil},
				{"BootOnce pxe", func(ctx context.Context) error { return b.BootOnce(ctx, node.BootPXE) },
					cat(open, system, []string{"PATCH " + style.system}),
					func() bool { s := n.Status(); return s.BootOverride == "Pxe" && s.BootOverrideEnabled == "Once" }},
				{"SetPower on", func(ctx context.Context) error { return b.SetPower(ctx, node.ActionOn) },
					cat(open, system, []string{"POST " + style.system + "/Actions/ComputerSystem.Reset"}),
					func() bool { return n.Status().Power == node.PowerOn }},
				{"SetPower cycle (on)", func(ctx context.Context) error { return b.SetPower(ctx, node.ActionCycle) },
					cat(open, system, system, []string{"POST " + style.system + "/Actions/ComputerSystem.Reset"}),
					func() bool { return n.Status().Power == node.PowerOn }},
				{"Firmware", func(ctx context.Context) error { var err error; fw, err = b.Firmware(ctx); return err },
					cat(open, firmware, []string{"GET /redfish/v1/Chassis", "GET " + style.chassis}, system,
						[]string{"GET /redfish/v1/Managers", "GET " + style.manager}),
					func() bool { return fw == style.fw }},
			} {
				logs.Reset()
				if err := tc.call(t.Context()); err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if tc.check != nil && !tc.check() {
					t.Errorf("%s: no effect: %+v, firmware %+v", tc.name, n.Status(), fw)
				}
				want := append(tc.want, "DELETE /redfish/v1/SessionService/Sessions/*")
				got := requests(logs.String())
				sortConcurrent(got)
				sortConcurrent(want)
				if len(got) != len(want) {
					t.Errorf("%s: requests\n%s\nwant\n%s", tc.name, strings.Join(got, "\n"), strings.Join(want, "\n"))
					continue
				}
				for i := range got {
					if !matchRequest(want[i], got[i]) {
						t.Errorf("%s: request %d is %q, want %q", tc.name, i, got[i], want[i])
					}
				}
			}
		})
	}
}

// sortConcurrent sorts the firmware inventory's members, which gofish
// requests concurrently.
func sortConcurrent(reqs []string) {
	member := func(r string) bool { return strings.HasPrefix(r, "GET /redfish/v1/UpdateService/FirmwareInventory/") }
	for i := 0; i < len(reqs); i++ {
		j := i
		for j < len(reqs) && member(reqs[j]) {
			j++
		}
		slices.Sort(reqs[i:j])
		i = j
	}
}

var requestLine = regexp.MustCompile(`msg="lab bmc" node=\S+ method=(\S+) path=(\S+) status=(\d+)`)

func requests(log string) []string {
	var out []string
	for _, m := range requestLine.FindAllStringSubmatch(log, -1) {
		out = append(out, m[1]+" "+m[2])
	}
	return out
}

func matchRequest(pattern, got string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(got, p)
	}
	return pattern == got
}

func TestWrongPassword(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	var logs logBuffer
	f := startFleet(t, Config{Site: site, Logger: debugLogger(&logs)})
	b := labBMC(t, f, site, "e1n03", wrongPassword, 5*time.Second)
	start := time.Now()
	_, err := b.PowerState(t.Context())
	took := time.Since(start)
	if !errors.Is(err, bmc.ErrAuth) {
		t.Fatalf("PowerState with a wrong password: %v, want bmc.ErrAuth", err)
	}
	// A refusal does not wait for the call's timeout (30 s by default);
	// the bound is loose for loaded CI machines.
	if took > 15*time.Second {
		t.Errorf("refusal took %s", took)
	}
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v %#v", err, err), logs.String()} {
		if strings.Contains(s, wrongPassword) || strings.Contains(s, labPassword) {
			t.Fatalf("a password leaked: %s", s)
		}
	}
	if !strings.Contains(err.Error(), "e1n03") {
		t.Errorf("error does not name the node: %v", err)
	}
	if !strings.Contains(logs.String(), "path=/redfish/v1/SessionService/Sessions status=401") {
		t.Errorf("no 401 logged:\n%s", logs.String())
	}
}

// TestBMCTimeoutFault: a BMC that stops answering fails the provider's
// call as unreachable within its timeout; other BMCs keep answering;
// clearing the fault heals it.
func TestBMCTimeoutFault(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	f := startFleet(t, Config{Site: site, Faults: Faults{BMCTimeout: []string{"e1n04"}}})
	const timeout = 2 * time.Second
	b := labBMC(t, f, site, "e1n04", labPassword, timeout)
	start := time.Now()
	_, err := b.PowerState(t.Context())
	took := time.Since(start)
	t.Logf("hung BMC: %s: %v", took, err)
	if !errors.Is(err, bmc.ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PowerState of a hung BMC: %v, want bmc.ErrUnreachable and DeadlineExceeded", err)
	}
	if took < timeout-time.Second || took > timeout+5*time.Second { // loose: loaded CI machines
		t.Errorf("took %s, timeout %s", took, timeout)
	}
	other := labBMC(t, f, site, "e1n05", labPassword, timeout)
	if _, err := other.PowerState(t.Context()); err != nil {
		t.Fatalf("another BMC: %v", err)
	}
	// In process, the same fault holds the call until ctx ends.
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := f.Node("e1n04").PowerState(ctx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "e1n04") {
		t.Fatalf("in-process PowerState of a hung BMC: %v", err)
	}
	if err := f.SetFaults(Faults{}); err != nil {
		t.Fatal(err)
	}
	if st, err := b.PowerState(t.Context()); err != nil || st != node.PowerOff {
		t.Fatalf("after clearing the fault: %v, %v", st, err)
	}
}

// rawClient reaches the lab's BMCs with net/http, verifying the lab's
// certificate for the site's names.
func rawClient(f *Fleet) *http.Client {
	c := RedirectClient(f.Addr())
	tr := c.Transport.(*http.Transport)
	tr.TLSClientConfig = &tls.Config{RootCAs: f.CertPool()}
	return c
}

func TestRawRedfish(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	f := startFleet(t, Config{Site: site})
	c := rawClient(f)
	get := func(url, user, pw string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, pw)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	// The certificate verifies for the BMC's address and its DNS name.
	if code, body := get("https://10.10.0.21/redfish/v1/", "", ""); code != 200 || !strings.Contains(body, `"RedfishVersion"`) {
		t.Fatalf("service root: %d %s", code, body)
	}
	if code, _ := get("https://w1n01.bmc.west.example.net/redfish/v1/", "", ""); code != 200 {
		t.Fatalf("service root by name: %d", code)
	}
	if code, body := get("https://10.10.0.21/redfish/v1/Systems/1", "anneal", labPassword); code != 200 || !strings.Contains(body, `"PowerState":"Off"`) {
		t.Fatalf("system with basic auth: %d %s", code, body)
	}
	if code, _ := get("https://10.10.0.21/redfish/v1/Systems/1", "anneal", wrongPassword); code != 401 {
		t.Fatalf("system with wrong basic auth: %d", code)
	}
	if code, _ := get("https://10.10.0.21/redfish/v1/Systems/1", "", ""); code != 401 {
		t.Fatalf("system without credentials: %d", code)
	}
	if code, _ := get("https://10.10.0.21/redfish/v1/Nope", "anneal", labPassword); code != 404 {
		t.Fatalf("unknown resource: %d", code)
	}
	// A host that is no BMC of the site: nothing there.
	insecure := RedirectClient(f.Addr())
	resp, err := insecure.Get("https://10.99.0.1/redfish/v1/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown host: %d", resp.StatusCode)
	}
}
