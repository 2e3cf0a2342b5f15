package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/internal/testenv"
	"github.com/anneal-dev/anneal/pxe/dhcp"
	"github.com/anneal-dev/anneal/pxe/tftp"
	"github.com/anneal-dev/anneal/schema"
)

// netbootServers are anneal's DHCP (pxe/dhcp, full mode, the site's
// reservations) and TFTP (pxe/tftp, an undionly.kpxe) servers on loopback
// until the test ends; iPXE clients get scriptBase/ipxe/{mac} (scriptBase
// "": the firmware's boot file, as a server without a netboot URL).
type netbootServers struct {
	dhcpAddr, tftpAddr string
	dhcpLog, tftpLog   *logBuffer
}

func startNetbootServers(t *testing.T, site *schema.Site, scriptBase string, mods ...func(*dhcp.Config)) *netbootServers {
	t.Helper()
	if os.Geteuid() != 0 {
		// The racks' relays get the server's answers on port 67 (RFC 2131 4.1).
		testenv.Unavailable(t, "the lab's DHCP relays bind port 67 on loopback: run as root")
	}
	s := &netbootServers{dhcpLog: &logBuffer{}, tftpLog: &logBuffer{}}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().(*net.UDPAddr)
	pc.Close()
	s.dhcpAddr = addr.String()
	cfg := dhcp.Config{Addr: addr, ServerIP: net.IPv4(127, 0, 0, 1),
		Lookup: dhcp.LookupFrom(dhcp.LeasesFromSite(site)),
		Log:    slog.New(slog.NewTextHandler(s.dhcpLog, nil))}
	if scriptBase != "" {
		cfg.IPXEScriptURL = func(mac net.HardwareAddr) string { return scriptBase + "/ipxe/" + mac.String() }
	}
	for _, m := range mods {
		m(&cfg)
	}
	srv, err := dhcp.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, dhcp.DefaultBIOSBootFile), []byte("undionly.kpxe, as it were"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts, err := tftp.New(tftp.Config{Listen: "127.0.0.1:0", Root: root, Files: []string{dhcp.DefaultBIOSBootFile},
		Log: slog.New(slog.NewTextHandler(s.tftpLog, nil))})
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	s.tftpAddr = ts.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = srv.Serve(ctx); done <- struct{}{} }()
	go func() { _ = ts.Serve(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return s
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestNetbootThroughDHCP: with a DHCP server configured, a node's PXE ROM
// gets its address and undionly.kpxe through its rack's relay, fetches it
// by TFTP, asks DHCP again as iPXE, fetches the script the ACK names (the
// fleet's BootURL leads nowhere), then its kernel and initrd (each checked
// against the SHA-256 its image declares) and installs. An initrd served
// with other content than the site declares fails the next node's boot:
// nothing installed, no callback.
func TestNetbootThroughDHCP(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	kernel, initrd := []byte("a kernel for the lab"), []byte("an initrd for the lab")
	img := site.Image(site.Node("e1n01").Image)
	img.Kernel.SHA256, img.Initrd.SHA256 = sum(kernel), sum(initrd)
	boot := newTestBootServer(t, site)
	boot.setArtifact(sum(kernel), kernel)
	boot.setArtifact(sum(initrd), initrd)
	ns := startNetbootServers(t, site, boot.URL+"/dhcp")
	f := startFleet(t, Config{Site: site, BootURL: "http://127.0.0.1:1", DHCP: &DHCPConfig{Server: ns.dhcpAddr, TFTP: ns.tftpAddr}})

	pxeCycle(t, f, "e1n01")
	boot.waitFor(t, "the install callback", func() bool { _, _, cbs, _ := boot.snapshot("e1n01"); return len(cbs) > 0 })
	scripts, files, cbs, _ := boot.snapshot("e1n01")
	if scripts != 1 || len(files) != 3 || len(cbs) != 1 {
		t.Fatalf("boot server saw %d scripts, files %v, %d callbacks", scripts, files, len(cbs))
	}
	want := []string{"/artifacts/" + sum(kernel) + "/vmlinuz", "/artifacts/" + sum(initrd) + "/initrd"}
	if got := boot.artifactsFetched(); !slices.Equal(got, want) {
		t.Errorf("artifacts fetched %v, want %v", got, want)
	}
	if acks := strings.Count(ns.dhcpLog.String(), "type=ACK"); acks != 2 {
		t.Errorf("%d DHCP ACKs, want 2 (PXE ROM, then iPXE):\n%s", acks, ns.dhcpLog)
	}
	if !strings.Contains(ns.dhcpLog.String(), "yiaddr=10.10.1.11") {
		t.Errorf("no ACK of e1n01's provisioning address:\n%s", ns.dhcpLog)
	}
	if l := ns.tftpLog.String(); strings.Count(l, `msg="tftp: read"`) != 1 || !strings.Contains(l, "file="+dhcp.DefaultBIOSBootFile) {
		t.Errorf("no TFTP transfer of %s:\n%s", dhcp.DefaultBIOSBootFile, ns.tftpLog)
	}
	if st := f.Node("e1n01").Status(); st.Installs != 1 || st.LastError != "" {
		t.Errorf("e1n01: %d installs, last error %q", st.Installs, st.LastError)
	}

	// The netboot server's copy of the initrd is not what the site declares.
	boot.setArtifact(sum(initrd), []byte("a corrupted initrd"))
	pxeCycle(t, f, "e1n02")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := f.Node("e1n02").WaitFor(ctx, func(s NodeStatus) bool { return s.LastError != "" })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.LastError, "SHA-256") || !strings.Contains(st.LastError, sum(initrd)) {
		t.Errorf("e1n02's error %q does not name the initrd's SHA-256 mismatch", st.LastError)
	}
	st, err = f.Node("e1n02").WaitFor(ctx, func(s NodeStatus) bool { return s.Phase == PhaseNoOS })
	if err != nil {
		t.Fatal(err)
	}
	if scripts, files, cbs, _ := boot.snapshot("e1n02"); scripts != 1 || len(files) != 0 || len(cbs) != 0 || st.Installs != 0 {
		t.Errorf("e1n02 after a bad initrd: %d scripts, files %v, %d callbacks, %d installs", scripts, files, len(cbs), st.Installs)
	}
}

// TestNetbootThroughDHCPiPXEFirmware: a NIC with iPXE in ROM asks DHCP once,
// as iPXE, and fetches nothing by TFTP. A DHCP server that gives iPXE a
// TFTP file instead of a script URL fails the boot.
func TestNetbootThroughDHCPiPXEFirmware(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	kernel, initrd := []byte("an iPXE ROM's kernel"), []byte("an iPXE ROM's initrd")
	img := site.Image(site.Node("e1n01").Image)
	img.Kernel.SHA256, img.Initrd.SHA256 = sum(kernel), sum(initrd)
	boot := newTestBootServer(t, site)
	boot.setArtifact(sum(kernel), kernel)
	boot.setArtifact(sum(initrd), initrd)
	ns := startNetbootServers(t, site, boot.URL+"/dhcp")
	f := startFleet(t, Config{Site: site, BootURL: "http://127.0.0.1:1", DHCP: &DHCPConfig{Server: ns.dhcpAddr, TFTP: ns.tftpAddr, Firmware: FirmwareIPXE}})
	pxeCycle(t, f, "e1n01")
	boot.waitFor(t, "the install callback", func() bool { _, _, cbs, _ := boot.snapshot("e1n01"); return len(cbs) > 0 })
	if acks := strings.Count(ns.dhcpLog.String(), "type=ACK"); acks != 1 {
		t.Errorf("%d DHCP ACKs, want 1:\n%s", acks, ns.dhcpLog)
	}
	if strings.Contains(ns.tftpLog.String(), `msg="tftp: read"`) {
		t.Errorf("an iPXE ROM used TFTP:\n%s", ns.tftpLog)
	}

	// The server knows no script URL: iPXE gets undionly.kpxe again.
	bare := startNetbootServers(t, site, "")
	g := startFleet(t, Config{Site: site, BootURL: boot.URL, DHCP: &DHCPConfig{Server: bare.dhcpAddr, Firmware: FirmwareIPXE}})
	pxeCycle(t, g, "e1n02")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := g.Node("e1n02").WaitFor(ctx, func(s NodeStatus) bool { return s.LastError != "" && s.Phase == PhaseNoOS })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.LastError, `boot file "undionly.kpxe" is not an http(s) URL`) {
		t.Errorf("e1n02's error: %q", st.LastError)
	}
	if scripts, _, _, _ := boot.snapshot("e1n02"); scripts != 0 {
		t.Errorf("e1n02 fetched %d scripts without a script URL from DHCP", scripts)
	}
}

// TestNetbootThroughDHCPWrongAddress: a DHCP server that gives a node
// another address than the site's fails its netboot at the first ACK:
// no TFTP, no script.
func TestNetbootThroughDHCPWrongAddress(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	boot := newTestBootServer(t, site)
	leases := dhcp.LeasesFromSite(site)
	ns := startNetbootServers(t, site, boot.URL, func(c *dhcp.Config) {
		c.Lookup = func(mac net.HardwareAddr) (dhcp.Lease, bool) {
			l, ok := leases[mac.String()]
			l.IP = net.IPv4(10, 99, 0, 1)
			return l, ok
		}
	})
	f := startFleet(t, Config{Site: site, BootURL: boot.URL, DHCP: &DHCPConfig{Server: ns.dhcpAddr, TFTP: ns.tftpAddr}})
	pxeCycle(t, f, "e1n01")
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := f.Node("e1n01").WaitFor(ctx, func(s NodeStatus) bool { return s.LastError != "" && s.Phase == PhaseNoOS })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.LastError, "DHCP ACK gives 10.99.0.1, not the node's provisioning address (10.10.1.11)") {
		t.Errorf("e1n01's error: %q", st.LastError)
	}
	if strings.Contains(ns.tftpLog.String(), `msg="tftp: read"`) {
		t.Errorf("TFTP after a wrong ACK:\n%s", ns.tftpLog)
	}
	if scripts, _, _, _ := boot.snapshot("e1n01"); scripts != 0 {
		t.Errorf("%d scripts fetched after a wrong ACK", scripts)
	}
}
