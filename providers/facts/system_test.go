package facts

// Tests against the real machine: the test's own root, and network
// namespaces the tests make, where this test binary, re-executed with
// `ip netns exec`, collects the facts (ip netns exec mounts the
// namespace's own /sys).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/internal/testenv"
	"github.com/anneal-dev/anneal/reconcile/node"
)

// helperEnv makes the test binary print Collect(ctx, "/") as JSON and exit.
const helperEnv = "ANNEAL_FACTS_TEST_COLLECT"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		f, err := Collect(context.Background(), "/")
		if err == nil {
			err = json.NewEncoder(os.Stdout).Encode(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "collect:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestCollectRunningSystem(t *testing.T) {
	physical := 0
	ents, err := os.ReadDir("/sys/class/net")
	if err != nil {
		testenv.Unavailable(t, fmt.Sprintf("no /sys/class/net: %v", err))
		return
	}
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join("/sys/class/net", e.Name(), "device")); err == nil {
			physical++
		}
	}
	if physical == 0 {
		testenv.Unavailable(t, "no network device with a device link in /sys/class/net (a container with only veths?)")
		return
	}

	f, err := Collect(context.Background(), "/")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("facts: %s", js(t, f))
	if want := uname(t, "-n"); f.Hostname != want {
		t.Errorf("hostname %q, uname -n says %q", f.Hostname, want)
	}
	if want := uname(t, "-r"); f.Kernel != want {
		t.Errorf("kernel %q, uname -r says %q", f.Kernel, want)
	}
	withMAC := 0
	for _, fi := range f.Interfaces {
		ifi, err := net.InterfaceByName(fi.Name)
		if err != nil {
			t.Errorf("reported %s, which the kernel does not know: %v", fi.Name, err)
			continue
		}
		if fi.MAC != "" {
			withMAC++
		}
		// Bond members report their permanent address instead.
		if fi.Master == "" && fi.MAC != ifi.HardwareAddr.String() {
			t.Errorf("%s: MAC %q, the kernel says %q", fi.Name, fi.MAC, ifi.HardwareAddr)
		}
		if fi.MTU != ifi.MTU {
			t.Errorf("%s: MTU %d, the kernel says %d", fi.Name, fi.MTU, ifi.MTU)
		}
	}
	if withMAC == 0 {
		t.Errorf("no interface with a MAC among %d physical devices", physical)
	}
	if !slices.IsSortedFunc(f.Interfaces, func(a, b node.FactInterface) int { return strings.Compare(a.Name, b.Name) }) {
		t.Errorf("interfaces not sorted by name")
	}
}

func uname(t *testing.T, flag string) string {
	t.Helper()
	out, err := exec.Command("uname", flag).Output()
	if err != nil {
		t.Fatalf("uname %s: %v", flag, err)
	}
	return strings.TrimSpace(string(out))
}

// netns is a network namespace made for one test.
type netns struct{ name string }

func newNetns(t *testing.T) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "facts namespace test: needs root for network namespaces")
		return nil
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		testenv.Unavailable(t, fmt.Sprintf("facts namespace test: ip netns unavailable (install iproute2): %v\n%s", err, out))
		return nil
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	n := &netns{name: "anneal-facts-" + hex.EncodeToString(b[:])}
	n.ip(t, "netns", "add", n.name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Errorf("cleanup: ip netns del %s: %v\n%s", n.name, err, out)
		}
	})
	return n
}

func (n *netns) ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// in runs ip inside the namespace.
func (n *netns) in(t *testing.T, args ...string) {
	t.Helper()
	n.ip(t, append([]string{"-n", n.name}, args...)...)
}

// tryLink adds a link whose type the kernel may lack (bonding and 8021q
// are modules); it reports false when the kernel does not know the type.
func (n *netns) tryLink(t *testing.T, args ...string) bool {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", n.name, "link", "add"}, args...)...).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "Unknown device type") || strings.Contains(string(out), "not supported") {
			return false
		}
		t.Fatalf("ip link add %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return true
}

// noDriver stops a test whose link type the kernel does not know (ip link
// add type kind: Unknown device type). The kernel loads a driver built as a
// module on demand, through modprobe: if the running kernel has the module,
// the machine is missing something .ci/run installs (kmod), and the test
// fails under CI. If the kernel has the driver neither built in nor as a
// module, no package can give it one: that is the kernel the machine boots,
// so the test skips, saying so, even under CI (the fake sysfs trees cover
// the same facts).
func noDriver(t *testing.T, kind, module, what string) {
	t.Helper()
	release := uname(t, "-r")
	dir := filepath.Join("/lib/modules", release)
	if path, ok := kernelModule(dir, module); ok {
		testenv.Unavailable(t, fmt.Sprintf("ip link add type %s: unknown device type, but kernel %s has the %s module (%s): it could not be loaded (is modprobe there? apt package kmod; are we root in the initial namespace?)",
			kind, release, module, path))
	}
	t.Skipf("SKIPPED, also under CI (a property of the booted kernel, not of the installed packages): kernel %s has no %s driver, neither built in nor as a module in %s (ip link add type %s: unknown device type); %s are covered by the fake-tree tests",
		release, module, dir, kind, what)
}

// kernelModule finds module in the kernel's module lists (loadable, or
// built in, which a failed ip link add rules out).
func kernelModule(dir, module string) (string, bool) {
	for _, list := range []string{"modules.dep", "modules.builtin"} {
		data, err := os.ReadFile(filepath.Join(dir, list))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			path, _, _ := strings.Cut(line, ":")
			if base := filepath.Base(path); base == module+".ko" || strings.HasPrefix(base, module+".ko.") {
				return filepath.Join(dir, path), true
			}
		}
	}
	return "", false
}

// collect runs Collect(ctx, "/") inside the namespace.
func (n *netns) collect(t *testing.T) node.Facts {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", n.name, exe)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("collect in %s: %v\n%s", n.name, err, stderr.String())
	}
	var f node.Facts
	if err := json.Unmarshal(out, &f); err != nil {
		t.Fatalf("collect in %s: %v\n%s", n.name, err, out)
	}
	t.Logf("facts in %s: %s", n.name, js(t, f))
	return f
}

func iface(t *testing.T, f node.Facts, name string) node.FactInterface {
	t.Helper()
	for _, fi := range f.Interfaces {
		if fi.Name == name {
			return fi
		}
	}
	t.Fatalf("no interface %s in %s", name, js(t, f))
	return node.FactInterface{}
}

// TestCollectNetnsBridge: a bridge over one end of a veth pair, with IPv4
// and IPv6 addresses and default routes; veths (virtual, no device link)
// are left out.
func TestCollectNetnsBridge(t *testing.T) {
	n := newNetns(t)
	n.in(t, "link", "add", "vA", "type", "veth", "peer", "name", "vB")
	n.in(t, "link", "add", "br0", "address", "02:00:00:a1:00:01", "mtu", "1400", "type", "bridge")
	n.in(t, "link", "set", "vA", "mtu", "1400")
	n.in(t, "link", "set", "vA", "master", "br0")
	for _, l := range []string{"lo", "vA", "vB", "br0"} {
		n.in(t, "link", "set", l, "up")
	}
	n.in(t, "addr", "add", "10.99.0.5/24", "dev", "br0")
	n.in(t, "addr", "add", "fd00:99::5/64", "dev", "br0", "nodad")
	n.in(t, "route", "add", "default", "via", "10.99.0.1", "dev", "br0")
	n.in(t, "-6", "route", "add", "default", "via", "fd00:99::1", "dev", "br0")

	f := n.collect(t)
	want := []node.FactInterface{{
		Name: "br0", Kind: "bridge", MAC: "02:00:00:a1:00:01", MTU: 1400,
		Addresses: []string{"10.99.0.5/24", "fd00:99::5/64"},
	}}
	if !slices.EqualFunc(f.Interfaces, want, func(a, b node.FactInterface) bool { return js(t, a) == js(t, b) }) {
		t.Errorf("interfaces %s, want %s", js(t, f.Interfaces), js(t, want))
	}
	wantRoutes := []node.FactRoute{{Gateway: "10.99.0.1", Device: "br0"}, {Gateway: "fd00:99::1", Device: "br0"}}
	if !slices.Equal(f.Routes, wantRoutes) {
		t.Errorf("routes %v, want %v", f.Routes, wantRoutes)
	}
	if f.Hostname == "" || f.Kernel == "" {
		t.Errorf("hostname %q, kernel %q", f.Hostname, f.Kernel)
	}
}

// TestCollectNetnsBondVLAN: an active-backup bond over a veth, VLAN 100 on
// the bond with an address. Needs a kernel with bonding and 8021q.
func TestCollectNetnsBondVLAN(t *testing.T) {
	n := newNetns(t)
	if !n.tryLink(t, "bond0", "address", "02:00:00:b0:00:01", "type", "bond", "mode", "active-backup") {
		noDriver(t, "bond", "bonding", "bonds")
	}
	n.in(t, "link", "add", "vC", "type", "veth", "peer", "name", "vD")
	n.in(t, "link", "set", "vC", "master", "bond0")
	if !n.tryLink(t, "link", "bond0", "name", "bond0.100", "type", "vlan", "id", "100") {
		noDriver(t, "vlan", "8021q", "VLANs")
	}
	for _, l := range []string{"lo", "vC", "vD", "bond0", "bond0.100"} {
		n.in(t, "link", "set", l, "up")
	}
	n.in(t, "addr", "add", "10.98.0.5/24", "dev", "bond0.100")

	f := n.collect(t)
	bond := iface(t, f, "bond0")
	if bond.Kind != "bond" || bond.BondMode != "active-backup" || bond.MAC != "02:00:00:b0:00:01" {
		t.Errorf("bond0 = %s, want kind bond, mode active-backup, MAC 02:00:00:b0:00:01", js(t, bond))
	}
	vlan := iface(t, f, "bond0.100")
	if vlan.Kind != "vlan" || vlan.VLANID != 100 || vlan.Link != "bond0" || !slices.Equal(vlan.Addresses, []string{"10.98.0.5/24"}) {
		t.Errorf("bond0.100 = %s, want kind vlan, id 100 on bond0 with 10.98.0.5/24", js(t, vlan))
	}
	for _, fi := range f.Interfaces {
		if strings.HasPrefix(fi.Name, "v") {
			t.Errorf("veth %s reported", fi.Name)
		}
	}
}
