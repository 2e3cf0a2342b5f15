package dhcp

// End-to-end tests of ModeProxy over the veth pair of dhcp_test.go.
//
// busybox udhcpc is a real client that can send a PXE-like DISCOVER
// (option 60 "PXEClient...", option 93), but it is not a PXE client: it
// cannot merge a proxy offer with another server's address offer, and its
// script sees only ACKs and NAKs, never an offer. So the test checks the
// offer in two ways: a helper (this test binary, re-executed inside the
// namespace) listens on port 68 on the client's link and records the first
// reply that reaches it, and the server sees udhcpc's next packet, a
// REQUEST that selects the proxy's server identifier with the offered
// address 0.0.0.0, which it must leave unanswered. udhcpc must end
// without a lease.

import (
	"context"
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

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// The helper's environment: what to do, on which link, where to write.
const (
	helperEnv      = "ANNEAL_DHCP_TEST_HELPER" // "capture" or "pxe-request"
	helperIfaceEnv = "ANNEAL_DHCP_TEST_IFACE"
	helperOutEnv   = "ANNEAL_DHCP_TEST_OUT"
	helperReadyEnv = "ANNEAL_DHCP_TEST_READY"
)

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		if err := runHelper(h); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runHelper runs inside the test's network namespace.
//   - capture: listen on port 68 of the link, write the first DHCP reply
//     received there (hex) to the out file and exit.
//   - pxe-request: from the link's address, port 68, send a PXE REQUEST to
//     the server's port 4011 and write the reply (hex) to the out file.
func runHelper(what string) error {
	iface, out := os.Getenv(helperIfaceEnv), os.Getenv(helperOutEnv)
	switch what {
	case "capture":
		conn, err := server4.NewIPv4UDPConn(iface, &net.UDPAddr{Port: clientPort})
		if err != nil {
			return fmt.Errorf("listen on %s port 68: %w", iface, err)
		}
		defer conn.Close()
		if err := os.WriteFile(os.Getenv(helperReadyEnv), nil, 0o644); err != nil {
			return err
		}
		return readReply(conn, out, 30*time.Second)
	case "pxe-request":
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		addrs, err := ifi.Addrs()
		if err != nil || len(addrs) == 0 {
			return fmt.Errorf("%s has no address (%v)", iface, err)
		}
		ip := addrs[0].(*net.IPNet).IP.To4()
		conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: clientPort})
		if err != nil {
			return err
		}
		defer conn.Close()
		req, err := dhcpv4.New(
			dhcpv4.WithHwAddr(ifi.HardwareAddr),
			dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithClientIP(ip),
			withClass(pxeUEFIClass), withArch(7), withUUID(),
		)
		if err != nil {
			return err
		}
		if _, err := conn.WriteTo(req.ToBytes(), &net.UDPAddr{IP: serverIP, Port: pxePort}); err != nil {
			return fmt.Errorf("send to port 4011: %w", err)
		}
		return readReply(conn, out, 10*time.Second)
	}
	return fmt.Errorf("unknown helper %q", what)
}

// readReply writes the first DHCP reply read from conn to out, in hex.
func readReply(conn net.PacketConn, out string, wait time.Duration) error {
	if err := conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("no reply: %w", err)
		}
		if m, err := dhcpv4.FromBytes(buf[:n]); err == nil && m.OpCode == dhcpv4.OpcodeBootReply {
			return os.WriteFile(out, []byte(hex.EncodeToString(buf[:n])), 0o644)
		}
	}
}

// helper starts the test binary as helper inside the namespace.
func (n *testNet) helper(ctx context.Context, t *testing.T, what, out string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ready := out + ".ready"
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.ns, exe)
	cmd.Env = append(os.Environ(), helperEnv+"="+what, helperIfaceEnv+"="+n.client, helperOutEnv+"="+out, helperReadyEnv+"="+ready)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if what == "capture" {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(ready); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("capture helper not listening after 10s")
			}
		}
	}
	return cmd
}

func readHexPacket(t *testing.T, path string) *dhcpv4.DHCPv4 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("nothing received: %v", err)
	}
	raw, err := hex.DecodeString(string(b))
	if err != nil {
		t.Fatal(err)
	}
	m, err := dhcpv4.FromBytes(raw)
	if err != nil {
		t.Fatalf("received packet does not parse: %v", err)
	}
	return m
}

func setClientMAC(t *testing.T, n *testNet, mac net.HardwareAddr) {
	t.Helper()
	run(t, "ip", "-n", n.ns, "link", "set", n.client, "down")
	run(t, "ip", "-n", n.ns, "link", "set", n.client, "address", mac.String())
	run(t, "ip", "-n", n.ns, "link", "set", n.client, "up")
}

func proxyMode(c *Config) { c.Mode = ModeProxy }

// TestProxyUdhcpcUEFI: udhcpc sends a UEFI PXE DISCOVER; the proxy's offer
// reaches the client's link with the UEFI boot file and no address, udhcpc
// takes it ("select for 0.0.0.0, server 10.10.1.2") and gets nothing more.
func TestProxyUdhcpcUEFI(t *testing.T) {
	n := newTestNet(t)
	n.serve(t, proxyMode)
	setClientMAC(t, n, knownMAC)

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	captured := filepath.Join(n.dir, "offer")
	capture := n.helper(ctx, t, "capture", captured)

	events := filepath.Join(n.dir, "events")
	script := filepath.Join(n.dir, "script.sh")
	body := fmt.Sprintf("#!/bin/sh\necho \"$1 ip=$ip boot_file=$boot_file\" >> %q\nexit 0\n", events)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	// Option 60 as UEFI firmware sends it, option 93 (0x5d) arch 7.
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", n.ns, "busybox", "udhcpc",
		"-i", n.client, "-n", "-q", "-f", "-s", script, "-t", "2", "-T", "1", "-A", "1",
		"-V", pxeUEFIClass, "-x", "0x5d:0007").CombinedOutput()
	t.Logf("udhcpc:\n%s", out)
	if err := capture.Wait(); err != nil {
		t.Fatalf("capture helper: %v", err)
	}

	// The client got no address: the proxy never gives one.
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Errorf("udhcpc exit %v, want non-zero (no lease)", err)
	}
	if ev, _ := os.ReadFile(events); strings.Contains(string(ev), "bound") {
		t.Errorf("udhcpc bound a lease:\n%s", ev)
	}

	// What reached the client's link is the proxy offer.
	offer := readHexPacket(t, captured)
	if offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("first reply on the client link is %s, want OFFER: %s", offer.MessageType(), offer.Summary())
	}
	if !strings.EqualFold(offer.ClientHWAddr.String(), knownMAC.String()) {
		t.Errorf("offer for %s, want %s", offer.ClientHWAddr, knownMAC)
	}
	if !offer.YourIPAddr.Equal(net.IPv4zero) || !offer.ServerIPAddr.Equal(serverIP) || offer.BootFileName != "ipxe.efi" ||
		offer.ClassIdentifier() != "PXEClient" || !offer.ServerIdentifier().Equal(serverIP) {
		t.Errorf("offer yiaddr %v siaddr %v file %q option 60 %q option 54 %v; want 0.0.0.0 %v ipxe.efi PXEClient %v",
			offer.YourIPAddr, offer.ServerIPAddr, offer.BootFileName, offer.ClassIdentifier(), offer.ServerIdentifier(), serverIP, serverIP)
	}

	// udhcpc took the offer: it says so, and asked the proxy (option 54)
	// for the offered 0.0.0.0.
	if want := "select for 0.0.0.0, server " + serverIP.String(); !strings.Contains(string(out), want) {
		t.Errorf("udhcpc output lacks %q", want)
	}
	logs := n.srvLogs.String()
	if !strings.Contains(logs, "proxy: ignoring request for an address") || !strings.Contains(logs, "requested=0.0.0.0") {
		t.Errorf("server never saw udhcpc select its offer:\n%s", logs)
	}
	if strings.Contains(logs, "type=ACK") {
		t.Errorf("server sent an ACK:\n%s", logs)
	}
}

// TestProxyPort4011 sends, from the client's namespace, the port 4011
// REQUEST a PXE client with an address from the other server sends, and
// checks the ACK comes back to it over the veth pair. The client is this
// test binary, not a real PXE client.
func TestProxyPort4011(t *testing.T) {
	n := newTestNet(t)
	n.serve(t, proxyMode)
	setClientMAC(t, n, knownMAC)
	run(t, "ip", "-n", n.ns, "addr", "add", "10.10.1.11/24", "dev", n.client)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out := filepath.Join(n.dir, "ack")
	if err := n.helper(ctx, t, "pxe-request", out).Wait(); err != nil {
		t.Fatalf("pxe-request helper: %v\nserver log:\n%s", err, n.srvLogs)
	}
	ack := readHexPacket(t, out)
	if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(net.IPv4zero) ||
		ack.BootFileName != "ipxe.efi" || !ack.ServerIPAddr.Equal(serverIP) || ack.ClassIdentifier() != "PXEClient" {
		t.Errorf("port 4011 reply: %s", ack.Summary())
	}
}
