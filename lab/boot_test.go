package lab

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// pxeCycle arms a one-time PXE boot and power-cycles the node through
// providers/bmc, as the rebuild engine will.
func pxeCycle(t testing.TB, f *Fleet, name string) {
	t.Helper()
	b := labBMC(t, f, f.cfg.Site, name, labPassword, 5*time.Second)
	if err := b.BootOnce(t.Context(), node.BootPXE); err != nil {
		t.Fatal(err)
	}
	if err := b.SetPower(t.Context(), node.ActionCycle); err != nil {
		t.Fatal(err)
	}
}

func iface(facts node.Facts, name string) *node.FactInterface {
	for i := range facts.Interfaces {
		if facts.Interfaces[i].Name == name {
			return &facts.Interfaces[i]
		}
	}
	return nil
}

// TestNetbootBondedVLANNode: e1n01 (eno1 for provisioning, bond0 of two
// 25G ports in 802.3ad with three VLANs) netboots, installs and reports
// the facts the boot server's netplan gave it; then its agent reports.
func TestNetbootBondedVLANNode(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	boot := newTestBootServer(t, site)
	f := startFleet(t, Config{Site: site, BootURL: boot.URL, AgentInterval: 50 * time.Millisecond})
	pxeCycle(t, f, "e1n01")
	boot.waitFor(t, "the install callback", func() bool { _, _, cbs, _ := boot.snapshot("e1n01"); return len(cbs) > 0 })
	scripts, files, cbs, _ := boot.snapshot("e1n01")
	if scripts != 1 || !slices.Equal(files, []string{"build.json", "network-config", "agent.json"}) || len(cbs) != 1 {
		t.Fatalf("boot server saw %d scripts, files %v, %d callbacks", scripts, files, len(cbs))
	}
	spec := node.BuildSpecOf(site, site.Node("e1n01"))
	cb := cbs[0]
	if cb.BuildID != spec.ID() {
		t.Errorf("callback build %q, want %q", cb.BuildID, spec.ID())
	}
	got := cb.Facts
	if got.Hostname != "e1n01" || got.Kernel != "5.15.0-126-generic" ||
		got.OSRelease["ID"] != "ubuntu" || got.OSRelease["VERSION_ID"] != "22.04.4" {
		t.Errorf("system facts: hostname %q kernel %q os %v", got.Hostname, got.Kernel, got.OSRelease)
	}
	want := []node.FactInterface{
		{Name: "eno1", Kind: "ether", MAC: "b0:7b:25:0b:01:01", MTU: 1500, Addresses: []string{"10.10.1.11/24", "fd00:a:0:110::b/64"}},
		{Name: "ens1f0", Kind: "ether", MAC: "b0:7b:25:0b:02:01", MTU: 9000, Master: "bond0"},
		{Name: "ens1f1", Kind: "ether", MAC: "b0:7b:25:0b:03:01", MTU: 9000, Master: "bond0"},
		{Name: "bond0", Kind: "bond", MAC: "b0:7b:25:0b:02:01", MTU: 9000, BondMode: "802.3ad"},
		{Name: "bond0.120", Kind: "vlan", MAC: "b0:7b:25:0b:02:01", MTU: 9000, VLANID: 120, Link: "bond0", Addresses: []string{"10.10.2.11/24", "fd00:a:0:120::b/64"}},
		{Name: "bond0.130", Kind: "vlan", MAC: "b0:7b:25:0b:02:01", MTU: 9000, VLANID: 130, Link: "bond0", Addresses: []string{"203.0.113.11/24", "2001:db8:130::b/64"}},
		{Name: "bond0.140", Kind: "vlan", MAC: "b0:7b:25:0b:02:01", MTU: 9000, VLANID: 140, Link: "bond0", Addresses: []string{"10.10.4.11/24", "fd00:a:0:140::b/64"}},
	}
	if g, w := mustJSON(t, got.Interfaces), mustJSON(t, want); g != w {
		t.Errorf("interfaces\n got %s\nwant %s", g, w)
	}
	wantRoutes := []node.FactRoute{{Gateway: "203.0.113.1", Device: "bond0.130"}, {Gateway: "2001:db8:130::1", Device: "bond0.130"}}
	if !slices.Equal(got.Routes, wantRoutes) {
		t.Errorf("routes %v, want %v", got.Routes, wantRoutes)
	}
	if !slices.Equal(got.Resolvers, spec.Network.Resolvers) {
		t.Errorf("resolvers %v, want %v", got.Resolvers, spec.Network.Resolvers)
	}
	// Every address of the spec is on its device.
	for _, a := range spec.Network.Addresses {
		d := iface(got, a.Device)
		if d == nil || !slices.Contains(d.Addresses, a.IPv4) || !slices.Contains(d.Addresses, a.IPv6) {
			t.Errorf("address %s/%s of %s not on %s: %+v", a.IPv4, a.IPv6, a.Network, a.Device, d)
		}
	}

	// The installed system runs its agent: reports with the agent token,
	// the build and the same facts.
	n := f.Node("e1n01")
	s := waitNode(t, n, "agent reports", func(s NodeStatus) bool { return s.AgentReports >= 2 })
	if s.Phase != PhaseRunning || s.BuildID != spec.ID() || s.Installs != 1 || s.Power != node.PowerOn {
		t.Fatalf("status after install: %+v", s)
	}
	_, _, _, reps := boot.snapshot("e1n01")
	if len(reps) < 2 || reps[0].BuildID != spec.ID() || mustJSON(t, reps[0].Facts) != mustJSON(t, got) {
		t.Fatalf("agent reports: %+v", reps)
	}

	// Drift by hand: a VLAN added on the live system shows in the next
	// report.
	if err := n.SetFacts(func(fs *node.Facts) {
		fs.Interfaces = append(fs.Interfaces, node.FactInterface{Name: "bond0.150", Kind: node.KindVLAN, VLANID: 150, Link: "bond0", MTU: 9000})
	}); err != nil {
		t.Fatal(err)
	}
	boot.waitFor(t, "a report with the hand-made VLAN", func() bool {
		_, _, _, reps := boot.snapshot("e1n01")
		return iface(reps[len(reps)-1].Facts, "bond0.150") != nil
	})

	// Power off: the agent stops.
	b := labBMC(t, f, site, "e1n01", labPassword, 5*time.Second)
	if err := b.SetPower(t.Context(), node.ActionOff); err != nil {
		t.Fatal(err)
	}
	waitNode(t, n, "off", func(s NodeStatus) bool { return s.Phase == PhaseOff })
	_, _, _, before := boot.snapshot("e1n01")
	time.Sleep(200 * time.Millisecond)
	if _, _, _, after := boot.snapshot("e1n01"); len(after) > len(before)+1 {
		t.Fatalf("agent reports went on after power off: %d then %d", len(before), len(after))
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestNetbootExitBootsDisk: a script that exits installs nothing: an empty
// disk boots nothing; an installed one boots its old build and reports it.
func TestNetbootExitBootsDisk(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	boot := newTestBootServer(t, site)
	f := startFleet(t, Config{Site: site, BootURL: boot.URL, AgentInterval: 50 * time.Millisecond})
	n := f.Node("w1n01")

	boot.setMode("w1n01", "exit")
	pxeCycle(t, f, "w1n01")
	s := waitNode(t, n, "no OS", func(s NodeStatus) bool { return s.Phase == PhaseNoOS })
	scripts, files, cbs, _ := boot.snapshot("w1n01")
	if scripts != 1 || len(files) != 0 || len(cbs) != 0 || s.BuildID != "" || s.LastError != "" {
		t.Fatalf("exit script: %d scripts, files %v, %d callbacks, status %+v", scripts, files, len(cbs), s)
	}

	boot.setMode("w1n01", "")
	pxeCycle(t, f, "w1n01")
	s = waitNode(t, n, "installed", func(s NodeStatus) bool { return s.Phase == PhaseRunning })
	build := s.BuildID
	if build == "" {
		t.Fatalf("not installed: %+v", s)
	}
	// w1n01 is a rocky-9 node with an active-backup bond.
	facts, _ := n.Facts()
	if facts.OSRelease["ID"] != "rocky" || iface(facts, "bond0").BondMode != "active-backup" {
		t.Fatalf("w1n01 facts: %+v", facts)
	}

	boot.setMode("w1n01", "exit")
	pxeCycle(t, f, "w1n01")
	s = waitNode(t, n, "old build running", func(s NodeStatus) bool { return s.Boots == 3 && s.Phase == PhaseRunning })
	if s.BuildID != build || s.Installs != 1 {
		t.Fatalf("after an exit script: %+v, want build %s kept", s, build)
	}
	_, _, cbs, _ = boot.snapshot("w1n01")
	before := len(cbs)
	boot.waitFor(t, "a report after the disk boot", func() bool {
		_, _, _, reps := boot.snapshot("w1n01")
		return len(reps) > 0 && reps[len(reps)-1].BuildID == build
	})
	if _, _, cbs, _ := boot.snapshot("w1n01"); len(cbs) != before {
		t.Fatal("a disk boot posted an install callback")
	}
}

// TestInstallFailures: the no-callback fault, a missing install file and a
// refused callback never install; the wrong-interface fault installs a
// system whose facts are wrong.
func TestInstallFailures(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	boot := newTestBootServer(t, site)
	f := startFleet(t, Config{Site: site, BootURL: boot.URL, AgentInterval: time.Hour,
		Faults: Faults{InstallFail: map[string]InstallFault{"e2n01": InstallNoCallback, "e2n02": InstallWrongInterface}}})

	t.Run("no callback", func(t *testing.T) {
		pxeCycle(t, f, "e2n01")
		n := f.Node("e2n01")
		waitNode(t, n, "hung install", func(s NodeStatus) bool { return s.Phase == PhaseHung })
		scripts, files, cbs, _ := boot.snapshot("e2n01")
		if scripts != 1 || len(files) != 3 || len(cbs) != 0 {
			t.Fatalf("no-callback fault: %d scripts, files %v, %d callbacks", scripts, files, len(cbs))
		}
		if s := n.Status(); s.BuildID != "" || s.Installs != 0 {
			t.Fatalf("a hung install wrote the disk: %+v", s)
		}
		// Powered off, it is off; the fault cleared, the next boot installs.
		if err := f.SetFaults(Faults{InstallFail: map[string]InstallFault{"e2n02": InstallWrongInterface}}); err != nil {
			t.Fatal(err)
		}
		pxeCycle(t, f, "e2n01")
		waitNode(t, n, "installed", func(s NodeStatus) bool { return s.Phase == PhaseRunning && s.Installs == 1 })
	})

	t.Run("wrong interface", func(t *testing.T) {
		pxeCycle(t, f, "e2n02")
		waitNode(t, f.Node("e2n02"), "installed", func(s NodeStatus) bool { return s.Phase == PhaseRunning })
		_, _, cbs, _ := boot.snapshot("e2n02")
		spec := node.BuildSpecOf(site, site.Node("e2n02"))
		last := spec.Network.VLANs[len(spec.Network.VLANs)-1]
		var wrong []string
		for _, v := range spec.Network.VLANs {
			if got := iface(cbs[0].Facts, v.Name); got == nil || got.VLANID != v.ID {
				wrong = append(wrong, v.Name)
			}
		}
		if len(cbs) != 1 || len(wrong) != 1 {
			t.Fatalf("wrong-interface fault: %d callbacks, wrong VLANs %v (spec's last by name: %s)", len(cbs), wrong, last.Name)
		}
	})

	t.Run("install file missing", func(t *testing.T) {
		boot.setMode("e2n03", "no-network-config")
		pxeCycle(t, f, "e2n03")
		s := waitNode(t, f.Node("e2n03"), "no OS", func(s NodeStatus) bool { return s.Phase == PhaseNoOS })
		if _, _, cbs, _ := boot.snapshot("e2n03"); len(cbs) != 0 || !strings.Contains(s.LastError, "network-config: 404") {
			t.Fatalf("missing network-config: %d callbacks, status %+v", len(cbs), s)
		}
		boot.mu.Lock()
		tok := boot.tokens["e2n03"]
		boot.mu.Unlock()
		if strings.Contains(s.LastError, tok) {
			t.Fatalf("the error carries the install token: %s", s.LastError)
		}
	})

	t.Run("callback refused", func(t *testing.T) {
		// The disk is written before the callback: the node runs its new
		// build, which its agent will report.
		boot.setMode("e2n04", "callback-403")
		pxeCycle(t, f, "e2n04")
		s := waitNode(t, f.Node("e2n04"), "running", func(s NodeStatus) bool { return s.Phase == PhaseRunning })
		spec := node.BuildSpecOf(site, site.Node("e2n04"))
		if s.BuildID != spec.ID() || s.Callbacks != 0 || !strings.Contains(s.LastError, "403") {
			t.Fatalf("refused callback: %+v", s)
		}
	})
}

// TestNetbootRetries: a boot server that answers 503 for a while (anneal
// restarting) is retried: the script, each install file, the callback.
func TestNetbootRetries(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	boot := newTestBootServer(t, site)
	f := startFleet(t, Config{Site: site, BootURL: boot.URL, RetryFor: 10 * time.Second})
	boot.setFailing("e1n04", 2)
	pxeCycle(t, f, "e1n04")
	n := f.Node("e1n04")
	waitNode(t, n, "installing", func(s NodeStatus) bool { return s.Phase == PhaseInstalling })
	boot.setFailing("e1n04", 2) // the install files and the callback
	// The callback is counted before the node reboots into its disk: wait
	// for both.
	s := waitNode(t, n, "called back and running", func(s NodeStatus) bool { return s.Callbacks == 1 && s.Phase == PhaseRunning })
	if s.LastError != "" || s.Boots != 1 {
		t.Fatalf("after retries: %+v", s)
	}
	if scripts, files, cbs, _ := boot.snapshot("e1n04"); scripts != 1 || len(files) != 3 || len(cbs) != 1 {
		t.Fatalf("boot server saw %d scripts, files %v, %d callbacks", scripts, files, len(cbs))
	}
}

// TestBootDelay: a node stays in firmware for its boot delay.
func TestBootDelay(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	boot := newTestBootServer(t, site)
	const delay = 300 * time.Millisecond
	f := startFleet(t, Config{Site: site, BootURL: boot.URL,
		Faults: Faults{BootDelay: Duration(time.Hour), NodeBootDelay: map[string]Duration{"e1n05": Duration(delay)}}})
	n := f.Node("e1n05")
	start := time.Now()
	pxeCycle(t, f, "e1n05")
	waitNode(t, n, "installed", func(s NodeStatus) bool { return s.Phase == PhaseRunning })
	if took := time.Since(start); took < delay {
		t.Fatalf("installed %s after power on, boot delay %s", took, delay)
	}
	// The fleet-wide delay holds another node in firmware.
	pxeCycle(t, f, "e1n04")
	time.Sleep(100 * time.Millisecond)
	if s := f.Node("e1n04").Status(); s.Phase != PhasePOST {
		t.Fatalf("fleet-wide boot delay: %+v", s)
	}
}

// TestStateSurvivesRestart: a lab restart keeps each node's disk and power;
// a node that was on boots its disk and reports again.
func TestStateSurvivesRestart(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	boot := newTestBootServer(t, site)
	dir := t.TempDir()
	cfg := Config{Site: site, Resolve: resolver(), BootURL: boot.URL, StateDir: dir, AgentInterval: 50 * time.Millisecond}
	f1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f1.Serve(ctx) }()
	pxeCycle(t, f1, "e1n02")
	s1 := waitNode(t, f1.Node("e1n02"), "installed", func(s NodeStatus) bool { return s.Phase == PhaseRunning })
	facts1, _ := f1.Node("e1n02").Facts()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, _, _, reps := boot.snapshot("e1n02")
	n := len(reps)

	f2 := startFleet(t, cfg)
	nd := f2.Node("e1n02")
	s2 := waitNode(t, nd, "running again", func(s NodeStatus) bool { return s.Phase == PhaseRunning })
	if s2.BuildID != s1.BuildID || s2.Installs != 1 || s2.Boots != s1.Boots+1 {
		t.Fatalf("after restart: %+v, before %+v", s2, s1)
	}
	boot.waitFor(t, "a report after the restart", func() bool {
		_, _, _, reps := boot.snapshot("e1n02")
		return len(reps) > n
	})
	_, _, cbs, reps := boot.snapshot("e1n02")
	if len(cbs) != 1 || mustJSON(t, reps[len(reps)-1].Facts) != mustJSON(t, facts1) {
		t.Fatalf("after restart: %d callbacks, last report %+v", len(cbs), reps[len(reps)-1])
	}
	if s := f2.Node("e1n01").Status(); s.Power != node.PowerOff || s.BuildID != "" {
		t.Fatalf("an untouched node after restart: %+v", s)
	}
}
