package dhcp

// End-to-end tests with a real DHCP client: busybox udhcpc runs in a network
// namespace the test creates, joined to the server by a veth pair. Nothing
// leaves the pair: the server binds to its end of it.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/test/servers"
)

// requireNetns skips (or, under CI, fails) when the test cannot make
// network namespaces or has no udhcpc.
func requireNetns(t *testing.T) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		servers.Unavailable(t, fmt.Sprintf("DHCP client test: "+format, args...))
	}
	if os.Geteuid() != 0 {
		fail("needs root for network namespaces and veth pairs")
		return
	}
	if _, err := exec.LookPath("ip"); err != nil {
		fail("no ip (install iproute2): %v", err)
		return
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		fail("ip netns unavailable: %v\n%s", err, out)
		return
	}
	if out, err := exec.Command("busybox", "udhcpc", "--help").CombinedOutput(); err != nil && !strings.Contains(string(out), "Usage: udhcpc") {
		fail("no busybox udhcpc (install busybox udhcpc): %v\n%s", err, out)
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// testNet is a namespace with the client end of a veth pair; the server
// end stays in the test's namespace with ServerIP on it.
type testNet struct {
	ns      string // namespace name
	server  string // server-side link, in our namespace
	client  string // client-side link, in ns
	dir     string
	srvLogs *syncBuffer
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	requireNetns(t)
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(b[:])
	n := &testNet{
		ns:     "anneal-dhcp-" + id,
		server: "adhS" + id, // link names are at most 15 bytes
		client: "adhC" + id,
		dir:    t.TempDir(),
	}
	run(t, "ip", "netns", "add", n.ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.ns).CombinedOutput(); err != nil {
			t.Errorf("cleanup: ip netns del %s: %v\n%s", n.ns, err, out)
		}
	})
	run(t, "ip", "link", "add", n.server, "type", "veth", "peer", "name", n.client)
	t.Cleanup(func() {
		// Deleting one end deletes the pair; it is gone already if the
		// namespace went first with the client end, so only report
		// a link that is still there.
		if out, err := exec.Command("ip", "link", "del", n.server).CombinedOutput(); err != nil {
			if _, lerr := net.InterfaceByName(n.server); lerr == nil {
				t.Errorf("cleanup: ip link del %s: %v\n%s", n.server, err, out)
			}
		}
	})
	run(t, "ip", "link", "set", n.client, "netns", n.ns)
	run(t, "ip", "addr", "add", serverIP.String()+"/24", "dev", n.server)
	run(t, "ip", "link", "set", n.server, "up")
	run(t, "ip", "-n", n.ns, "link", "set", "lo", "up")
	return n
}

// serve starts the server on the server end of the pair until the test
// ends, with testConfig changed by mods.
func (n *testNet) serve(t *testing.T, mods ...func(*Config)) {
	t.Helper()
	cfg, logs := testConfig(t)
	cfg.Interface = n.server
	for _, m := range mods {
		m(&cfg)
	}
	n.srvLogs = logs
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	servers.ServeUntilCleanup(t, s.Serve, 10*time.Second)
}

// udhcpc runs busybox udhcpc in the namespace with the client link set to
// mac, and returns the environment its script saw on "bound" (nil if the
// client got no lease) and the client's exit error.
func (n *testNet) udhcpc(t *testing.T, mac net.HardwareAddr, extra ...string) (map[string]string, error) {
	t.Helper()
	run(t, "ip", "-n", n.ns, "link", "set", n.client, "down")
	run(t, "ip", "-n", n.ns, "link", "set", n.client, "address", mac.String())
	run(t, "ip", "-n", n.ns, "link", "set", n.client, "up")

	out := filepath.Join(n.dir, "lease-"+strings.ReplaceAll(mac.String(), ":", ""))
	_ = os.Remove(out)
	script := filepath.Join(n.dir, "script.sh")
	// The script only records what the client got; it configures nothing.
	body := fmt.Sprintf("#!/bin/sh\ncase \"$1\" in bound|renew) env > %q.tmp && mv %q.tmp %q ;; esac\nexit 0\n", out, out, out)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"netns", "exec", n.ns, "busybox", "udhcpc",
		"-i", n.client, "-n", "-q", "-f", "-s", script, "-t", "3", "-T", "1", "-A", "1"}, extra...)
	cmd := exec.CommandContext(ctx, "ip", args...)
	cout, err := cmd.CombinedOutput()
	t.Logf("udhcpc %s:\n%s", strings.Join(extra, " "), cout)
	f, ferr := os.Open(out)
	if errors.Is(ferr, os.ErrNotExist) {
		return nil, err
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env, err
}

func checkLease(t *testing.T, env map[string]string, err error, wantFile string) {
	t.Helper()
	if env == nil {
		t.Fatalf("udhcpc got no lease (exit: %v)", err)
	}
	if err != nil {
		t.Errorf("udhcpc exit: %v", err)
	}
	want := map[string]string{
		"ip":       "10.10.1.11",
		"subnet":   "255.255.255.0",
		"router":   "10.10.1.1",
		"hostname": "e1n01",
		"domain":   "east.example.net",
		// The site's resolvers (option 6), MTU (26) and search list (119):
		// what d-i and the installers' DHCP clients configure from.
		"dns":       "10.10.2.2",
		"mtu":       "1500",
		"search":    "example.net",
		"serverid":  serverIP.String(),
		"siaddr":    serverIP.String(),
		"boot_file": wantFile,
		"lease":     "1800",
	}
	for k, v := range want {
		if got := strings.TrimSpace(env[k]); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func TestUdhcpcBIOS(t *testing.T) {
	n := newTestNet(t)
	n.serve(t)
	env, err := n.udhcpc(t, knownMAC)
	checkLease(t, env, err, "undionly.kpxe")
}

func TestUdhcpcUEFI(t *testing.T) {
	n := newTestNet(t)
	n.serve(t)
	// Option 93 (0x5d), client system architecture 7: x86-64 UEFI.
	env, err := n.udhcpc(t, knownMAC, "-x", "0x5d:0007")
	checkLease(t, env, err, "ipxe.efi")
}

func TestUdhcpcIPXE(t *testing.T) {
	n := newTestNet(t)
	n.serve(t)
	// Option 77 (0x4d), user class "iPXE" as iPXE sends it.
	env, err := n.udhcpc(t, knownMAC, "-x", "0x5d:0007", "-x", "0x4d:"+hex.EncodeToString([]byte("iPXE")))
	checkLease(t, env, err, scriptURL(knownMAC))
}

func TestUdhcpcUnknownMAC(t *testing.T) {
	n := newTestNet(t)
	n.serve(t)
	start := time.Now()
	env, err := n.udhcpc(t, unknownMAC)
	if env != nil {
		t.Fatalf("unknown MAC got a lease: %v", env)
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("udhcpc -n for an unknown MAC: exit %v, want non-zero", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("udhcpc took %v to give up", d)
	}
	if c := strings.Count(n.srvLogs.String(), "not in site"); c != 1 {
		t.Errorf("server logged %q %d times for 3 discovers, want once:\n%s", "not in site", c, n.srvLogs)
	}
}
