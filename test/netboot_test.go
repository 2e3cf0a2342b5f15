//go:build linux

package test

// TestNetboot: a real iPXE, the one in QEMU's NIC option ROM, netboots a
// node of the example site from anneal's own servers: the DHCP server
// (pxe/dhcp, full mode, the site's reservations), the TFTP server
// (pxe/tftp, undionly.kpxe) and the netboot HTTP server (pxe/boot, the
// per-MAC iPXE script).
//
// Everything runs in a network namespace the test makes, around a tap
// device QEMU is attached to, so no packet leaves the namespace: the
// servers in this test binary re-executed under `ip netns exec` (whole
// process in the namespace: pin/tftp opens a socket per transfer, from any
// goroutine, so a single thread in the namespace would not do), QEMU under
// `ip netns exec` too. The helper process writes its servers' logs to
// files the test reads once it has stopped it. It also sends IPv6 router
// advertisements (no prefix, not a router), without which iPXE waits some
// 14 s for IPv6 autoconfiguration before it fetches its boot file.
//
// The node is armed for its build, so the script is the install script. In
// the iPXE case its image's kernel is on a mirror in the namespace, and the
// script fetches it through the netboot server, which downloads it once
// and serves it only because its SHA-256 is the one the site declares. The
// "kernel" is not one, so iPXE stops there, prints the script's failure
// line and the test ends: it never reaches Linux. In the BIOS chain case
// the image's URLs are the example site's own (boot.example.net, which
// does not resolve) and the test stops at the script's first line.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/pxe/boot"
	"github.com/anneal-dev/anneal/pxe/dhcp"
	"github.com/anneal-dev/anneal/pxe/tftp"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
	"github.com/anneal-dev/anneal/test/servers"
)

// The provisioning network of the example site is 10.10.1.0/24; the
// servers take .2 (no node has host index 2) and nodes get base + host index.
const (
	netbootNode       = "e1n01"
	netbootServerIP   = "10.10.1.2"
	netbootPrefix     = "/24"
	netbootHTTPPort   = "8080"
	netbootMirrorPort = "8081" // the image mirror, in the namespace too
	netbootTap        = "tap0"
	netbootLinkLocal  = "fe80::2" // the servers' IPv6 link-local address
	// netbootBootLimit bounds one QEMU boot; under TCG iPXE reaches the
	// script in 5–8 s, or about 15 s through undionly.kpxe.
	netbootBootLimit = 60 * time.Second
	// netbootHelperEnv holds the helper's configuration (JSON) when the
	// test binary runs as the servers' process.
	netbootHelperEnv = "ANNEAL_NETBOOT_HELPER"
)

// Files in the lab directory: the helper's configuration is in the
// environment; it writes one log per server, the test's own events, its
// stdout and stderr, and "ready" once every socket is bound.
const (
	netbootDHCPLog   = "dhcp.log"
	netbootTFTPLog   = "tftp.log"
	netbootBootLog   = "boot.log"
	netbootEventLog  = "events.log"
	netbootHelperOut = "helper.out"
	netbootReady     = "ready"
	netbootTFTPRoot  = "tftp"
	netbootMirror    = "mirror"    // the mirror's files
	netbootArtifacts = "artifacts" // the netboot server's verified copies
)

// netbootKernel is the "kernel" on the mirror: iPXE downloads it, then
// cannot run it.
var netbootKernel = []byte(strings.Repeat("not a kernel, but its SHA-256 is the declared one\n", 4096))

// netbootHelperConfig is what the helper process needs.
type netbootHelperConfig struct {
	Dir        string    // the lab directory: logs, TFTP root
	Site       string    // the site directory
	Node       string    // the node to arm
	Nonce      string    // its install nonce
	Expires    time.Time // when its arming expires
	BaseURL    string    // the netboot server's base URL
	GateOnTFTP bool      // withhold the script URL until undionly.kpxe was sent
	Mirror     bool      // serve the mirror and keep verified artifacts
}

// init runs the test binary as the servers' helper process when the test
// starts it so, before TestMain builds anything.
func init() {
	if cfg := os.Getenv(netbootHelperEnv); cfg != "" {
		if err := netbootHelper(cfg); err != nil {
			fmt.Fprintln(os.Stderr, "netboot helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

// netbootHelper runs the DHCP, TFTP and netboot HTTP servers and the
// router advertisements in the current network namespace until its stdin
// closes.
func netbootHelper(raw string) error {
	var cfg netbootHelperConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return err
	}
	logger := func(name string) (*slog.Logger, error) {
		f, err := os.OpenFile(filepath.Join(cfg.Dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})), nil
	}
	dhcpLog, err := logger(netbootDHCPLog)
	if err != nil {
		return err
	}
	tftpLog, err := logger(netbootTFTPLog)
	if err != nil {
		return err
	}
	bootLog, err := logger(netbootBootLog)
	if err != nil {
		return err
	}
	events, err := logger(netbootEventLog)
	if err != nil {
		return err
	}

	site, _, err := schema.LoadDir(context.Background(), cfg.Site, schema.LoadOptions{})
	if err != nil {
		return fmt.Errorf("load the site: %w", err)
	}
	nd := site.Node(cfg.Node)
	if nd == nil {
		return fmt.Errorf("no node %s in the site", cfg.Node)
	}
	store := &netbootStore{recs: map[string]node.Record{}}
	err = store.UpdateNode(context.Background(), nd.Name, func(r *node.Record) error {
		r.State, r.Since = node.Provisioning, time.Now()
		r.Target, r.Nonce, r.TokenExpires = node.BuildSpecOf(site, nd).ID(), cfg.Nonce, cfg.Expires
		return nil
	})
	if err != nil {
		return err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	bootSrv := &boot.Server{
		Site:    func() *schema.Site { return site },
		Nodes:   store,
		Key:     key,
		BaseURL: cfg.BaseURL,
		Log:     bootLog,
		// The default, spelled out: the script is answered only to the
		// node's reservation, which iPXE's requests come from.
		Binding: boot.BindNode,
	}
	if cfg.Mirror {
		bootSrv.ArtifactDir = filepath.Join(cfg.Dir, netbootArtifacts)
	}
	if err := bootSrv.Check(); err != nil {
		return err
	}
	httpSrv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			events.Info("http request", "request", r.Method+" "+r.URL.Path+" from "+host)
			bootSrv.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}

	tftpRoot := filepath.Join(cfg.Dir, netbootTFTPRoot)
	tftpSent := func() bool {
		b, _ := os.ReadFile(filepath.Join(cfg.Dir, netbootTFTPLog))
		return len(netbootLines(string(b), `msg="tftp: read"`, "file="+dhcp.DefaultBIOSBootFile)) > 0
	}
	dhcpSrv, err := dhcp.New(dhcp.Config{
		Mode:      dhcp.ModeFull,
		Interface: netbootTap,
		ServerIP:  net.ParseIP(netbootServerIP),
		Lookup:    dhcp.LookupFrom(dhcp.LeasesFromSite(site)),
		BootFiles: dhcp.BootFiles{BIOS: dhcp.DefaultBIOSBootFile},
		IPXEScriptURL: func(mac net.HardwareAddr) string {
			if cfg.GateOnTFTP && !tftpSent() {
				return ""
			}
			u := cfg.BaseURL + "/ipxe/" + mac.String()
			events.Info("script url", "mac", mac.String(), "url", u)
			return u
		},
		Log: dhcpLog,
	})
	if err != nil {
		return err
	}
	tftpSrv, err := tftp.New(tftp.Config{
		Listen: netbootServerIP + ":69",
		Root:   tftpRoot,
		Files:  []string{dhcp.DefaultBIOSBootFile},
		Log:    tftpLog,
	})
	if err != nil {
		return errors.Join(err, dhcpSrv.Close())
	}
	httpLn, err := net.Listen("tcp", netbootServerIP+":"+netbootHTTPPort)
	if err != nil {
		return errors.Join(err, dhcpSrv.Close(), tftpSrv.Close())
	}
	ra, err := netbootRouterAdvertiser()
	if err != nil {
		return errors.Join(err, dhcpSrv.Close(), tftpSrv.Close(), httpLn.Close())
	}
	var mirror func(context.Context) error
	if cfg.Mirror {
		ln, err := net.Listen("tcp", netbootServerIP+":"+netbootMirrorPort)
		if err != nil {
			return errors.Join(err, dhcpSrv.Close(), tftpSrv.Close(), httpLn.Close())
		}
		files := http.FileServer(http.Dir(filepath.Join(cfg.Dir, netbootMirror)))
		srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			events.Info("mirror request", "request", r.Method+" "+r.URL.Path+" from "+host)
			files.ServeHTTP(w, r)
		})}
		mirror = func(ctx context.Context) error {
			go func() { <-ctx.Done(); srv.Close() }()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 5)
	serve := func(i int, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f()
			cancel() // one ends: all end
		}()
	}
	serve(0, func() error { return dhcpSrv.Serve(ctx) })
	serve(1, func() error { return tftpSrv.Serve(ctx) })
	serve(2, func() error {
		done := make(chan error, 1)
		go func() { done <- httpSrv.Serve(httpLn) }()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
		}
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		err := httpSrv.Shutdown(sctx)
		if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return err
	})
	serve(3, func() error { return ra(ctx) })
	if mirror != nil {
		serve(4, func() error { return mirror(ctx) })
	}
	if err := os.WriteFile(filepath.Join(cfg.Dir, netbootReady), nil, 0o644); err != nil {
		cancel()
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	wg.Wait()
	return errors.Join(errs...)
}

// netbootRouterAdvertiser opens a raw ICMPv6 socket on the tap device and
// returns a loop sending an IPv6 router advertisement to all nodes every
// 250 ms until its context ends. iPXE configures IPv6 beside DHCP and, with
// no router on the link, waits some 14 s for one before it fetches its boot
// file. The advertisement has no prefix, no flags and a router lifetime of
// 0 (not a default router): it only ends iPXE's router solicitation.
func netbootRouterAdvertiser() (func(context.Context) error, error) {
	conn, err := net.ListenPacket("ip6:ipv6-icmp", netbootLinkLocal+"%"+netbootTap)
	if err != nil {
		return nil, fmt.Errorf("router advertisements: %w", err)
	}
	raw, err := conn.(*net.IPConn).SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		// RFC 4861 section 4.2: hop limit 255. Not looped back to the
		// namespace's own stack.
		serr = errors.Join(
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_MULTICAST_HOPS, 255),
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_MULTICAST_LOOP, 0))
	})
	if err = errors.Join(err, serr); err != nil {
		conn.Close()
		return nil, fmt.Errorf("router advertisements: %w", err)
	}
	// ICMPv6 type 134 (router advertisement), code 0, checksum (the kernel
	// fills it in), current hop limit 64, flags 0, router lifetime 0,
	// reachable time 0, retransmission timer 0.
	msg := []byte{134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	to := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: netbootTap}
	return func(ctx context.Context) error {
		defer conn.Close()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			// Sending fails while no QEMU holds the tap (no carrier);
			// iPXE only needs the advertisements sent while it runs.
			_, _ = conn.WriteTo(msg, to)
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
	}, nil
}

// netbootStore is an in-memory node.Store.
type netbootStore struct {
	mu   sync.Mutex
	recs map[string]node.Record
}

func (s *netbootStore) NodeRecords(ctx context.Context) (map[string]*node.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*node.Record, len(s.recs))
	for name, r := range s.recs {
		out[name] = &r
	}
	return out, ctx.Err()
}

func (s *netbootStore) NodeRecord(ctx context.Context, name string) (*node.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[name]
	if !ok {
		return nil, ctx.Err()
	}
	return &r, ctx.Err()
}

func (s *netbootStore) UpdateNode(ctx context.Context, name string, fn func(*node.Record) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[name]
	if !ok {
		r = node.Record{Name: name}
	}
	if err := fn(&r); err != nil {
		return err
	}
	r.Name = name
	s.recs[name] = r
	return nil
}

// netbootLines returns the lines of text holding every one of parts.
func netbootLines(text string, parts ...string) []string {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// netbootTools are the programs and files the test needs.
type netbootTools struct {
	qemu     string // qemu-system-x86_64
	rom      string // QEMU's virtio-net iPXE ROM
	undionly string // iPXE for BIOS PXE firmware, served by TFTP
}

// requireNetbootTools finds the tools or reports them unavailable (a
// failure under CI).
func requireNetbootTools(t *testing.T) netbootTools {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		servers.Unavailable(t, "netboot test: "+fmt.Sprintf(format, args...))
	}
	if os.Geteuid() != 0 {
		unavailable("needs root for a network namespace and a tap device")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		unavailable("no ip (install iproute2): %v", err)
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		unavailable("ip netns unavailable: %v\n%s", err, out)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		unavailable("no /dev/net/tun for a tap device: %v", err)
	}
	var tools netbootTools
	var err error
	if tools.qemu, err = exec.LookPath("qemu-system-x86_64"); err != nil {
		unavailable("no qemu-system-x86_64 (install qemu-system-x86): %v", err)
	}
	// virtio-net-pci loads efi-virtio.rom from QEMU's firmware path
	// (Debian: /usr/share/qemu, then /usr/lib/ipxe/qemu, from ipxe-qemu).
	// Naming it with romfile= makes SeaBIOS skip it, so the test only
	// checks that it is there.
	for _, p := range []string{"/usr/share/qemu/efi-virtio.rom", "/usr/lib/ipxe/qemu/efi-virtio.rom"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			tools.rom = p
			break
		}
	}
	if tools.rom == "" {
		unavailable("no iPXE ROM for QEMU's virtio-net (efi-virtio.rom in /usr/share/qemu or /usr/lib/ipxe/qemu; install ipxe-qemu)")
	}
	tools.undionly = "/usr/lib/ipxe/" + dhcp.DefaultBIOSBootFile
	if _, err := os.Stat(tools.undionly); err != nil {
		unavailable("no %s (install ipxe): %v", tools.undionly, err)
	}
	return tools
}

// netbootLab is the namespace with its tap device, the site, and the
// helper process running anneal's servers in the namespace.
type netbootLab struct {
	ns      string // namespace name
	dir     string // the helper's directory
	siteDir string
	node    *schema.Node
	mac     net.HardwareAddr // the node's provisioning MAC, QEMU's NIC's
	lease   dhcp.Lease
	build   string // the build the node is armed for
	base    string // the netboot server's base URL
	mirror  bool   // the image's kernel is on the namespace's mirror

	stop func() // stops the helper; safe to call twice
}

// netbootRun runs a command and fails the test if it fails.
func netbootRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetbootLab makes the namespace and the tap device, loads a copy of the
// example site and finds the node's MAC, reservation and build. With
// mirror, the copy's Ubuntu kernel is netbootKernel on the namespace's
// mirror, declared with its SHA-256.
func newNetbootLab(t *testing.T, mirror bool) *netbootLab {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	l := &netbootLab{ns: "anneal-netboot-" + hex.EncodeToString(b[:]), dir: t.TempDir(), base: "http://" + netbootServerIP + ":" + netbootHTTPPort}

	netbootRun(t, "ip", "netns", "add", l.ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", l.ns).CombinedOutput(); err != nil {
			t.Errorf("cleanup: ip netns del %s: %v\n%s", l.ns, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", l.ns, "tuntap", "add", "dev", netbootTap, "mode", "tap").CombinedOutput(); err != nil {
		servers.Unavailable(t, fmt.Sprintf("netboot test: cannot make a tap device: %v\n%s", err, out))
	}
	netbootRun(t, "ip", "-n", l.ns, "addr", "add", netbootServerIP+netbootPrefix, "dev", netbootTap)
	// A link-local address usable at once (no duplicate address
	// detection): the router advertisements' source.
	netbootRun(t, "ip", "-n", l.ns, "addr", "add", netbootLinkLocal+"/64", "dev", netbootTap, "nodad")
	netbootRun(t, "ip", "-n", l.ns, "link", "set", netbootTap, "up")
	netbootRun(t, "ip", "-n", l.ns, "link", "set", "lo", "up")

	var replace map[string]string
	if mirror {
		l.mirror = true
		sum := sha256.Sum256(netbootKernel)
		replace = map[string]string{
			"http://boot.example.net/images/ubuntu-22.04.4/vmlinuz":            "http://" + netbootServerIP + ":" + netbootMirrorPort + "/vmlinuz",
			"3b4c0a1e6d1f2c5e8a9b7d6c4e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f": hex.EncodeToString(sum[:]),
		}
		if err := os.MkdirAll(filepath.Join(l.dir, netbootMirror), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(l.dir, netbootMirror, "vmlinuz"), netbootKernel, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l.siteDir = copySite(t, "../examples/site-repo", replace)
	site, _, err := schema.LoadDir(context.Background(), l.siteDir, schema.LoadOptions{})
	if err != nil {
		t.Fatalf("load the example site: %v", err)
	}
	l.node = site.Node(netbootNode)
	if l.node == nil {
		t.Fatalf("the example site has no node %s", netbootNode)
	}
	for _, a := range l.node.Addresses {
		if nw := site.Network(a.Network); nw == nil || !nw.Provisioning {
			continue
		}
		for _, i := range l.node.Interfaces {
			if i.NIC != a.Interface {
				continue
			}
			if l.mac, err = net.ParseMAC(i.MAC); err != nil {
				t.Fatalf("%s %s: %v", netbootNode, i.NIC, err)
			}
		}
	}
	if l.mac == nil {
		t.Fatalf("%s has no interface on a provisioning network", netbootNode)
	}
	var ok bool
	if l.lease, ok = dhcp.LeasesFromSite(site)[l.mac.String()]; !ok {
		t.Fatalf("dhcp.LeasesFromSite has no reservation for %s (%s)", netbootNode, l.mac)
	}
	if _, nw, _ := net.ParseCIDR(netbootServerIP + netbootPrefix); !nw.Contains(l.lease.IP) {
		t.Fatalf("%s's reservation %s is not on %s%s", netbootNode, l.lease.IP, netbootServerIP, netbootPrefix)
	}
	l.build = node.BuildSpecOf(site, l.node).ID()
	return l
}

// serve starts the helper process in the namespace and waits until its
// servers listen. It runs until l.stop or the end of the test.
func (l *netbootLab) serve(t *testing.T, tools netbootTools, gateOnTFTP bool) {
	t.Helper()
	// A copy: Debian's iPXE files may be symlinks out of the root, which
	// the TFTP server refuses.
	undionly, err := os.ReadFile(tools.undionly)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(l.dir, netbootTFTPRoot), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.dir, netbootTFTPRoot, dhcp.DefaultBIOSBootFile), undionly, 0o644); err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		t.Fatal(err)
	}
	cfg, err := json.Marshal(netbootHelperConfig{
		Dir: l.dir, Site: l.siteDir, Node: netbootNode,
		Nonce: hex.EncodeToString(nonce), Expires: time.Now().Add(30 * time.Minute),
		BaseURL: l.base, GateOnTFTP: gateOnTFTP, Mirror: l.mirror,
	})
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(l.dir, netbootHelperOut))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("ip", "netns", "exec", l.ns, exe)
	cmd.Env = append(os.Environ(), netbootHelperEnv+"="+string(cfg))
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the servers' helper: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var once sync.Once
	l.stop = func() {
		once.Do(func() {
			// Closing stdin stops the helper; `ip netns exec` execs it,
			// so the PID is the helper's if it must be killed.
			stdin.Close()
			select {
			case err := <-exited:
				if err != nil {
					t.Errorf("the servers' helper: %v\n%s", err, l.read(netbootHelperOut))
				}
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
				t.Errorf("the servers' helper did not stop within 10s of its stdin closing; killed\n%s", l.read(netbootHelperOut))
			}
		})
	}
	t.Cleanup(func() {
		l.stop()
		if t.Failed() {
			for _, f := range []string{netbootDHCPLog, netbootTFTPLog, netbootBootLog, netbootEventLog, netbootHelperOut} {
				t.Logf("%s:\n%s", f, l.read(f))
			}
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(l.dir, netbootReady)); err == nil {
			return
		}
		select {
		case err := <-exited:
			exited <- err // for l.stop
			t.Fatalf("the servers' helper ended before it was ready: %v\n%s", err, l.read(netbootHelperOut))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the servers' helper was not ready within 20s\n%s", l.read(netbootHelperOut))
		}
	}
}

// read returns a file of the lab directory.
func (l *netbootLab) read(name string) string {
	b, err := os.ReadFile(filepath.Join(l.dir, name))
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}

// ansiEscape matches the terminal control sequences SeaBIOS's serial
// console and iPXE write: CSI sequences, charset selections and lone ESCs.
var ansiEscape = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[@-_]?)`)

// serialText is the serial output as text: escapes, \r and NULs removed.
func serialText(raw string) string {
	s := ansiEscape.ReplaceAllString(raw, "")
	return strings.NewReplacer("\r", "", "\x00", "").Replace(s)
}

// serialHas reports whether the serial text holds want, also when the
// 80-column console wrapped it over lines.
func serialHas(text, want string) bool {
	return strings.Contains(text, want) || strings.Contains(strings.ReplaceAll(text, "\n", ""), want)
}

// lockedText collects QEMU's output, written from exec's copying goroutine.
type lockedText struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *lockedText) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedText) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// boot runs QEMU with the node's MAC on the tap device until the serial
// console shows every one of want, or netbootBootLimit. It returns the
// serial text and how long the boot took.
func (l *netbootLab) boot(t *testing.T, tools netbootTools, want ...string) (string, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), netbootBootLimit)
	defer cancel()
	serial := &lockedText{}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.ns, tools.qemu,
		"-accel", "tcg", "-nographic", "-monitor", "none", "-serial", "stdio",
		"-m", "256", "-boot", "n", "-no-reboot",
		"-netdev", "tap,id=n0,ifname="+netbootTap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac="+l.mac.String())
	cmd.Stdout, cmd.Stderr = serial, serial
	// `ip netns exec` execs QEMU: the PID is QEMU's.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start QEMU: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			t.Fatalf("QEMU ended after %s before the serial console showed %q (%v); serial:\n%s",
				time.Since(start).Round(time.Millisecond), want, err, serialText(serial.String()))
		case <-tick.C:
		}
		text := serialText(serial.String())
		seen := true
		for _, w := range want {
			seen = seen && serialHas(text, w)
		}
		if seen {
			took := time.Since(start)
			cancel()
			<-exited
			return text, took
		}
	}
}

// check stops the helper and asserts what its servers saw of the boot: an
// OFFER and an ACK of the reservation to the node's MAC, the script URL
// handed out, the script served to the node from its reserved address
// (source binding on: none of its requests refused).
func (l *netbootLab) check(t *testing.T) {
	t.Helper()
	l.stop()
	mac, ip := l.mac.String(), l.lease.IP.String()
	dhcpLog, bootLog, events := l.read(netbootDHCPLog), l.read(netbootBootLog), l.read(netbootEventLog)
	for _, typ := range []string{"OFFER", "ACK"} {
		if len(netbootLines(dhcpLog, `msg="dhcp: reply"`, "mac="+mac, "type="+typ, "yiaddr="+ip)) == 0 {
			t.Errorf("the DHCP server sent no %s of %s to %s", typ, ip, mac)
		}
	}
	if url := l.base + "/ipxe/" + mac; len(netbootLines(events, `msg="script url"`, "mac="+mac, "url="+url)) == 0 {
		t.Errorf("the DHCP server never handed %s the script URL %s", mac, url)
	}
	if req := "GET /ipxe/" + mac + " from " + ip; len(netbootLines(events, `msg="http request"`, fmt.Sprintf("request=%q", req))) == 0 {
		t.Errorf("the netboot server did not answer %q", req)
	}
	if len(netbootLines(bootLog, `msg="boot: serving install script"`, "node="+netbootNode, "mac="+mac, "build="+l.build, "remote="+ip)) == 0 {
		t.Errorf("the netboot server did not log serving %s's install script (build %s) to %s", netbootNode, l.build, ip)
	}
	if refused := netbootLines(bootLog, "possible netboot hijack"); len(refused) > 0 {
		t.Errorf("the netboot server refused the node's own requests as from another address: %q", refused)
	}
}

func TestNetboot(t *testing.T) {
	tools := requireNetbootTools(t)

	// QEMU's ROM is iPXE: DHCP answers it with the script URL (user class
	// "iPXE") and iPXE chains straight into the script.
	t.Run("iPXE", func(t *testing.T) {
		l := newNetbootLab(t, true)
		l.serve(t, tools, false)
		echo := "anneal: installing " + netbootNode + " build " + l.build
		// iPXE fetched the kernel through the server, found it is no
		// kernel, and ran the script's failure branch.
		failed := "anneal: netboot of " + netbootNode + " failed"
		text, took := l.boot(t, tools, echo, failed)
		t.Logf("%s netbooted from anneal's DHCP and netboot servers in %s (QEMU's ROM %s)", netbootNode, took.Round(time.Millisecond), tools.rom)
		l.check(t)
		if want := "Filename: " + l.base + "/ipxe/" + l.mac.String(); !serialHas(text, want) {
			t.Errorf("the serial console does not show iPXE's DHCP boot file %q", want)
		}
		if got := netbootLines(l.read(netbootTFTPLog), `msg="tftp: read`); len(got) != 0 {
			t.Errorf("an iPXE client fetched a file by TFTP: %q", got)
		}
		// The kernel: from the netboot server's verified copy, which it
		// downloaded from the mirror once.
		sum := sha256.Sum256(netbootKernel)
		events := l.read(netbootEventLog)
		art := "GET /artifacts/" + hex.EncodeToString(sum[:]) + "/vmlinuz from " + l.lease.IP.String()
		if len(netbootLines(events, `msg="http request"`, fmt.Sprintf("request=%q", art))) == 0 {
			t.Errorf("iPXE did not fetch the kernel through the netboot server (%q)", art)
		}
		if got := netbootLines(events, `msg="mirror request"`, `request="GET /vmlinuz from `+netbootServerIP+`"`); len(got) != 1 {
			t.Errorf("the netboot server fetched the kernel from the mirror %d times, want once", len(got))
		}
		copied, err := os.ReadFile(filepath.Join(l.dir, netbootArtifacts, hex.EncodeToString(sum[:])))
		if err != nil || string(copied) != string(netbootKernel) {
			t.Errorf("the verified copy: %d bytes, %v", len(copied), err)
		}
		if t.Failed() {
			t.Logf("serial:\n%s", text)
		}
	})

	// BIOS PXE firmware that is not iPXE: DHCP names undionly.kpxe, the
	// firmware fetches it from anneal's TFTP server and runs it, and that
	// iPXE asks DHCP again, as iPXE, and chains into the script. QEMU's ROM
	// stands in for such firmware: DHCP withholds the script URL from it
	// until the TFTP server has sent undionly.kpxe, as if it did not say
	// it was iPXE.
	t.Run("BIOSChain", func(t *testing.T) {
		l := newNetbootLab(t, false)
		l.serve(t, tools, true)
		echo := "anneal: installing " + netbootNode + " build " + l.build
		text, took := l.boot(t, tools, echo)
		t.Logf("%s netbooted through undionly.kpxe from anneal's DHCP, TFTP and netboot servers in %s", netbootNode, took.Round(time.Millisecond))
		l.check(t)
		ip := l.lease.IP.String()
		size := fmt.Sprintf("bytes=%d", len(l.read(filepath.Join(netbootTFTPRoot, dhcp.DefaultBIOSBootFile))))
		if len(netbootLines(l.read(netbootTFTPLog), `msg="tftp: read"`, "client="+ip+":", "file="+dhcp.DefaultBIOSBootFile, size)) == 0 {
			t.Errorf("the TFTP server did not send all of %s to %s", dhcp.DefaultBIOSBootFile, ip)
		}
		// The firmware got undionly.kpxe from DHCP, then undionly.kpxe got
		// the script URL.
		flat := strings.ReplaceAll(text, "\n", "")
		first := strings.Index(flat, "Filename: "+dhcp.DefaultBIOSBootFile)
		second := strings.Index(flat, "Filename: "+l.base+"/ipxe/"+l.mac.String())
		if first < 0 || second < first {
			t.Errorf("the serial console does not show DHCP's boot file %s, then the script URL", dhcp.DefaultBIOSBootFile)
		}
		if t.Failed() {
			t.Logf("serial:\n%s", text)
		}
	})
}
