package dhcp

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/anneal-dev/anneal/schema"
)

const exampleSite = "../../examples/site-repo"

// The reservation of e1n01's eno1 in the example site.
var (
	knownMAC   = mustMAC("b0:7b:25:0b:01:01")
	unknownMAC = mustMAC("02:00:00:00:be:ef")
	serverIP   = net.IPv4(10, 10, 1, 2).To4()
)

func mustMAC(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

// syncBuffer is a log sink safe for the server's handler goroutines, which
// may outlive a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(t *testing.T) (*slog.Logger, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", buf)
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func loadExample(t *testing.T, dir string) *schema.Site {
	t.Helper()
	site, diags, err := schema.LoadDir(context.Background(), dir, schema.LoadOptions{})
	if err != nil {
		t.Fatalf("load %s: %v\n%v", dir, err, diags)
	}
	if site == nil {
		t.Fatalf("load %s: no site\n%v", dir, diags)
	}
	return site
}

func scriptURL(mac net.HardwareAddr) string {
	return "http://10.10.1.2:8080/ipxe/" + mac.String() + ".ipxe"
}

func testConfig(t *testing.T) (Config, *syncBuffer) {
	log, buf := testLogger(t)
	return Config{
		ServerIP:      serverIP,
		Lookup:        LookupFrom(LeasesFromSite(loadExample(t, exampleSite))),
		IPXEScriptURL: scriptURL,
		LeaseTime:     30 * time.Minute,
		Log:           log,
	}, buf
}

// sent is one datagram written by the handler.
type sent struct {
	b  []byte
	to net.Addr
}

// recordConn is a net.PacketConn that records what is written to it.
type recordConn struct {
	net.PacketConn
	out []sent
}

func (c *recordConn) WriteTo(b []byte, to net.Addr) (int, error) {
	c.out = append(c.out, sent{append([]byte(nil), b...), to})
	return len(b), nil
}

func TestLeasesFromSite(t *testing.T) {
	leases := LeasesFromSite(loadExample(t, exampleSite))
	l, ok := leases[knownMAC.String()]
	if !ok {
		t.Fatalf("no lease for e1n01 eno1 %s; have %d leases", knownMAC, len(leases))
	}
	if !l.IP.Equal(net.IPv4(10, 10, 1, 11)) || l.Mask.String() != "ffffff00" || !l.Router.Equal(net.IPv4(10, 10, 1, 1)) {
		t.Errorf("lease = %+v, want 10.10.1.11/24 via 10.10.1.1", l)
	}
	if l.Hostname != "e1n01" || l.Domain != "east.example.net" {
		t.Errorf("hostname %q domain %q, want e1n01 east.example.net", l.Hostname, l.Domain)
	}
	// The bond members of e1n01 carry no provisioning network.
	if _, ok := leases["b0:7b:25:0b:02:01"]; ok {
		t.Errorf("bond member without the provisioning network has a lease")
	}
	if _, ok := leases["3c:ec:ef:15:01:01"]; !ok {
		t.Errorf("w1n01 eno1 has no lease")
	}
}

// TestLeasesFromSiteBondAndDecommissioned adds, to a copy of the example
// site, a node provisioned over a bond and a decommissioned node.
func TestLeasesFromSiteBondAndDecommissioned(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(exampleSite)); err != nil {
		t.Fatal(err)
	}
	extra := `apiVersion: anneal.dev/v1alpha1
kind: Node
name: e1n90
region: east
rack: e1
hardwareProfile: dell-r650
hostIndex: 90
bmc:
  mac: b0:7b:25:90:00:01
  username: anneal
  password: secret:bmc-password
interfaces:
  - {nic: eno1, mac: "b0:7b:25:90:01:01"}
  - {nic: ens1f0, mac: "b0:7b:25:90:02:01"}
  - {nic: ens1f1, mac: "b0:7b:25:90:03:01"}
bonds:
  - name: bond0
    mode: active-backup
    members: [ens1f0, ens1f1]
networks:
  - {network: provisioning, interface: bond0}
  - {network: internal, interface: eno1}
roles: [compute]
---
apiVersion: anneal.dev/v1alpha1
kind: Node
name: e1n91
region: east
rack: e1
hardwareProfile: dell-r650
hostIndex: 91
state: decommissioned
bmc:
  mac: b0:7b:25:91:00:01
  username: anneal
  password: secret:bmc-password
interfaces:
  - {nic: eno1, mac: "b0:7b:25:91:01:01"}
  - {nic: ens1f0, mac: "b0:7b:25:91:02:01"}
networks:
  - {network: provisioning, interface: eno1}
  - {network: internal, interface: ens1f0}
roles: [compute]
`
	if err := os.WriteFile(filepath.Join(dir, "nodes", "extra.yaml"), []byte(extra), 0o644); err != nil {
		t.Fatal(err)
	}
	leases := LeasesFromSite(loadExample(t, dir))
	for _, mac := range []string{"b0:7b:25:90:02:01", "b0:7b:25:90:03:01"} {
		l, ok := leases[mac]
		if !ok {
			t.Errorf("bond member %s has no lease", mac)
			continue
		}
		if !l.IP.Equal(net.IPv4(10, 10, 1, 90)) || l.Hostname != "e1n90" {
			t.Errorf("bond member %s: lease %+v, want 10.10.1.90 e1n90", mac, l)
		}
	}
	if _, ok := leases["b0:7b:25:90:01:01"]; ok {
		t.Errorf("eno1 of a node provisioned over its bond has a lease")
	}
	if _, ok := leases["b0:7b:25:91:01:01"]; ok {
		t.Errorf("decommissioned node has a lease")
	}
}

func discover(t *testing.T, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func request(t *testing.T, mac net.HardwareAddr, want net.IP, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP)),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestHandler(t *testing.T) {
	reserved := net.IPv4(10, 10, 1, 11).To4()
	relay := net.IPv4(10, 20, 0, 1).To4()
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 68}
	tests := []struct {
		name     string
		req      func(t *testing.T) *dhcpv4.DHCPv4
		peer     net.Addr
		wantType dhcpv4.MessageType // 0: no answer
		wantFile string
		wantTo   string
	}{
		{
			name:     "discover known BIOS without option 93",
			req:      func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, knownMAC) },
			peer:     bcast,
			wantType: dhcpv4.MessageTypeOffer, wantFile: "undionly.kpxe", wantTo: "255.255.255.255:68",
		},
		{
			name: "discover known arch 0",
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
			},
			peer:     bcast,
			wantType: dhcpv4.MessageTypeOffer, wantFile: "undionly.kpxe", wantTo: "255.255.255.255:68",
		},
		{
			name: "discover known arch 7 UEFI",
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)))
			},
			peer:     bcast,
			wantType: dhcpv4.MessageTypeOffer, wantFile: "ipxe.efi", wantTo: "255.255.255.255:68",
		},
		{
			name: "discover known arch 9 UEFI",
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_BC)))
			},
			peer:     bcast,
			wantType: dhcpv4.MessageTypeOffer, wantFile: "ipxe.efi", wantTo: "255.255.255.255:68",
		},
		{
			name: "discover known arch ARM64 gets a lease without boot file",
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_ARM64)))
			},
			peer:     bcast,
			wantType: dhcpv4.MessageTypeOffer, wantFile: "", wantTo: "255.255.255.255:68",
		},
		{
			name: "discover iPXE (bare user class)",
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)), dhcpv4.WithUserClass("iPXE", false))
			},
			peer:     bcast,
			wantType: dhcpv4.MessageTypeOffer, wantFile: scriptURL(knownMAC), wantTo: "255.255.255.255:68",
		},
		{
			name: "discover iPXE (RFC 3004 user class)",
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, dhcpv4.WithUserClass("iPXE", true))
			},
			peer:     bcast,
			wantType: dhcpv4.MessageTypeOffer, wantFile: scriptURL(knownMAC), wantTo: "255.255.255.255:68",
		},
		{
			name:     "discover unknown MAC",
			req:      func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, unknownMAC) },
			peer:     bcast,
			wantType: 0,
		},
		{
			name:     "request reserved address",
			req:      func(t *testing.T) *dhcpv4.DHCPv4 { return request(t, knownMAC, reserved) },
			peer:     bcast,
			wantType: dhcpv4.MessageTypeAck, wantFile: "undionly.kpxe", wantTo: "255.255.255.255:68",
		},
		{
			name:     "request another address is NAKed",
			req:      func(t *testing.T) *dhcpv4.DHCPv4 { return request(t, knownMAC, net.IPv4(10, 10, 1, 99)) },
			peer:     bcast,
			wantType: dhcpv4.MessageTypeNak, wantTo: "255.255.255.255:68",
		},
		{
			name: "request for another server is ignored",
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return request(t, knownMAC, net.IPv4(10, 10, 1, 99), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 10, 1, 3))))
			},
			peer:     bcast,
			wantType: 0,
		},
		{
			name:     "request from unknown MAC",
			req:      func(t *testing.T) *dhcpv4.DHCPv4 { return request(t, unknownMAC, reserved) },
			peer:     bcast,
			wantType: 0,
		},
		{
			name: "renew by ciaddr is unicast",
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				m := request(t, knownMAC, nil, dhcpv4.WithClientIP(reserved))
				m.Options.Del(dhcpv4.OptionRequestedIPAddress)
				m.Options.Del(dhcpv4.OptionServerIdentifier)
				return m
			},
			peer:     &net.UDPAddr{IP: reserved, Port: 68},
			wantType: dhcpv4.MessageTypeAck, wantFile: "undionly.kpxe", wantTo: "10.10.1.11:68",
		},
		{
			name: "relayed discover goes to the relay",
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, dhcpv4.WithGatewayIP(relay), dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)))
			},
			peer:     &net.UDPAddr{IP: relay, Port: 67},
			wantType: dhcpv4.MessageTypeOffer, wantFile: "ipxe.efi", wantTo: "10.20.0.1:67",
		},
		{
			name: "relayed NAK goes to the relay",
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return request(t, knownMAC, net.IPv4(10, 10, 1, 99), dhcpv4.WithGatewayIP(relay))
			},
			peer:     &net.UDPAddr{IP: relay, Port: 67},
			wantType: dhcpv4.MessageTypeNak, wantTo: "10.20.0.1:67",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := testConfig(t)
			s, err := newServer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			req := tc.req(t)
			// Through the wire format, as server4 would hand it over.
			req, err = dhcpv4.FromBytes(req.ToBytes())
			if err != nil {
				t.Fatal(err)
			}
			conn := &recordConn{}
			s.handle(conn, tc.peer, req)
			if tc.wantType == 0 {
				if len(conn.out) != 0 {
					t.Fatalf("answered %d packets, want none", len(conn.out))
				}
				return
			}
			if len(conn.out) != 1 {
				t.Fatalf("answered %d packets, want 1", len(conn.out))
			}
			if got := conn.out[0].to.String(); got != tc.wantTo {
				t.Errorf("reply sent to %s, want %s", got, tc.wantTo)
			}
			resp, err := dhcpv4.FromBytes(conn.out[0].b)
			if err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			if resp.MessageType() != tc.wantType {
				t.Fatalf("reply type %s, want %s", resp.MessageType(), tc.wantType)
			}
			if resp.TransactionID != req.TransactionID || resp.ClientHWAddr.String() != req.ClientHWAddr.String() {
				t.Errorf("reply xid/chaddr %s/%s, want %s/%s", resp.TransactionID, resp.ClientHWAddr, req.TransactionID, req.ClientHWAddr)
			}
			if !resp.ServerIdentifier().Equal(serverIP) {
				t.Errorf("option 54 = %v, want %v", resp.ServerIdentifier(), serverIP)
			}
			if !resp.GatewayIPAddr.Equal(req.GatewayIPAddr) {
				t.Errorf("giaddr %v, want the request's %v", resp.GatewayIPAddr, req.GatewayIPAddr)
			}
			if tc.wantType == dhcpv4.MessageTypeNak {
				if !resp.YourIPAddr.IsUnspecified() || resp.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
					t.Errorf("NAK carries a lease: %s", resp.Summary())
				}
				return
			}
			if !resp.YourIPAddr.Equal(reserved) {
				t.Errorf("yiaddr %v, want %v", resp.YourIPAddr, reserved)
			}
			if got := resp.SubnetMask().String(); got != "ffffff00" {
				t.Errorf("option 1 = %s, want ffffff00", got)
			}
			if r := resp.Router(); len(r) != 1 || !r[0].Equal(net.IPv4(10, 10, 1, 1)) {
				t.Errorf("option 3 = %v, want [10.10.1.1]", r)
			}
			if resp.HostName() != "e1n01" || resp.DomainName() != "east.example.net" {
				t.Errorf("options 12/15 = %q %q", resp.HostName(), resp.DomainName())
			}
			checkSiteOptions(t, resp, wantSiteOptions{
				dns: []string{"10.10.2.2"}, domain: "east.example.net", mtu: 1500, search: []string{"example.net"},
			})
			if got := resp.IPAddressLeaseTime(0); got != 30*time.Minute {
				t.Errorf("option 51 = %v, want 30m", got)
			}
			if resp.BootFileName != tc.wantFile || resp.BootFileNameOption() != tc.wantFile {
				t.Errorf("file %q / option 67 %q, want %q", resp.BootFileName, resp.BootFileNameOption(), tc.wantFile)
			}
			if tc.wantFile != "" {
				if !resp.ServerIPAddr.Equal(serverIP) || resp.TFTPServerName() != serverIP.String() {
					t.Errorf("siaddr %v / option 66 %q, want %v", resp.ServerIPAddr, resp.TFTPServerName(), serverIP)
				}
			}
		})
	}
}

func TestUnknownLoggedOnce(t *testing.T) {
	cfg, buf := testConfig(t)
	s, err := newServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn := &recordConn{}
	for range 3 {
		s.handle(conn, &net.UDPAddr{IP: net.IPv4bcast, Port: 68}, discover(t, unknownMAC))
	}
	if len(conn.out) != 0 {
		t.Fatalf("answered an unknown MAC")
	}
	if n := strings.Count(buf.String(), "not in site"); n != 1 {
		t.Errorf("logged %q %d times, want once:\n%s", "not in site", n, buf)
	}
}

func TestNewChecksConfig(t *testing.T) {
	lookup := func(net.HardwareAddr) (Lease, bool) { return Lease{}, false }
	if _, err := newServer(Config{ServerIP: serverIP}); err == nil {
		t.Error("no Lookup: no error")
	}
	if _, err := newServer(Config{Lookup: lookup}); err == nil {
		t.Error("no ServerIP: no error")
	}
	if _, err := newServer(Config{Lookup: lookup, ServerIP: net.ParseIP("fd00::1")}); err == nil {
		t.Error("IPv6 ServerIP: no error")
	}
	s, err := newServer(Config{Lookup: lookup, ServerIP: serverIP})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Addr.String() != "0.0.0.0:67" || s.cfg.BootFiles.BIOS != "undionly.kpxe" || s.cfg.BootFiles.UEFI != "ipxe.efi" || s.cfg.LeaseTime != time.Hour {
		t.Errorf("defaults: %+v", s.cfg)
	}
}
