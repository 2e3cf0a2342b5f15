package dhcp

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// What PXE firmware and iPXE send in option 60 and option 97.
const (
	pxeBIOSClass = "PXEClient:Arch:00000:UNDI:002001"
	pxeUEFIClass = "PXEClient:Arch:00007:UNDI:003016"
)

var clientUUID = append([]byte{0}, bytes.Repeat([]byte{0x5a}, 16)...) // option 97: type 0, GUID

func withClass(c string) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptClassIdentifier(c)) // option 60
}

func withArch(a iana.Arch) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptClientArch(a)) // option 93
}

func withUUID() dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, clientUUID)) // option 97
}

func proxyConfig(t *testing.T) (Config, *syncBuffer) {
	cfg, buf := testConfig(t)
	cfg.Mode = ModeProxy
	return cfg, buf
}

// TestProxyHandler drives the ModeProxy handlers (port 67 and port 4011)
// with packets as PXE firmware, iPXE and other clients send them.
func TestProxyHandler(t *testing.T) {
	relay := net.IPv4(10, 20, 0, 1).To4()
	clientIP := net.IPv4(10, 10, 1, 11).To4() // from the other DHCP server
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 68}
	tests := []struct {
		name     string
		port     int // 67 or 4011
		req      func(t *testing.T) *dhcpv4.DHCPv4
		peer     net.Addr
		wantType dhcpv4.MessageType // 0: no answer
		wantFile string
		wantTo   string
		wantUUID bool
	}{
		{
			name: "PXE BIOS client",
			port: 67,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, withClass(pxeBIOSClass), withArch(iana.INTEL_X86PC), withUUID())
			},
			peer:     bcast,
			wantType: dhcpv4.MessageTypeOffer, wantFile: "undionly.kpxe", wantTo: "255.255.255.255:68", wantUUID: true,
		},
		{
			name: "PXE BIOS client without option 93",
			port: 67,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, withClass(pxeBIOSClass))
			},
			peer:     bcast,
			wantType: dhcpv4.MessageTypeOffer, wantFile: "undionly.kpxe", wantTo: "255.255.255.255:68",
		},
		{
			name: "UEFI x86-64 client (arch 7)",
			port: 67,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, withClass(pxeUEFIClass), withArch(iana.EFI_X86_64), withUUID())
			},
			peer:     bcast,
			wantType: dhcpv4.MessageTypeOffer, wantFile: "ipxe.efi", wantTo: "255.255.255.255:68", wantUUID: true,
		},
		{
			name: "iPXE client gets its script URL",
			port: 67,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, withClass(pxeUEFIClass), withArch(iana.EFI_X86_64), dhcpv4.WithUserClass("iPXE", false))
			},
			peer:     bcast,
			wantType: dhcpv4.MessageTypeOffer, wantFile: scriptURL(knownMAC), wantTo: "255.255.255.255:68",
		},
		{
			name: "iPXE user class alone is a PXE client",
			port: 67,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, dhcpv4.WithUserClass("iPXE", true))
			},
			peer:     bcast,
			wantType: dhcpv4.MessageTypeOffer, wantFile: scriptURL(knownMAC), wantTo: "255.255.255.255:68",
		},
		{
			name:     "non-PXE client is ignored",
			port:     67,
			req:      func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, knownMAC, withClass("udhcp 1.35.0")) },
			peer:     bcast,
			wantType: 0,
		},
		{
			name:     "client without option 60 is ignored",
			port:     67,
			req:      func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, knownMAC, withArch(iana.EFI_X86_64)) },
			peer:     bcast,
			wantType: 0,
		},
		{
			name:     "unknown MAC is ignored",
			port:     67,
			req:      func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, unknownMAC, withClass(pxeUEFIClass)) },
			peer:     bcast,
			wantType: 0,
		},
		{
			name: "architecture without a boot file is ignored",
			port: 67,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, withClass("PXEClient:Arch:00011:UNDI:003016"), withArch(iana.EFI_ARM64))
			},
			peer:     bcast,
			wantType: 0,
		},
		{
			name: "relayed discover goes to the relay",
			port: 67,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, dhcpv4.WithGatewayIP(relay), withClass(pxeUEFIClass), withArch(iana.EFI_X86_64))
			},
			peer:     &net.UDPAddr{IP: relay, Port: 67},
			wantType: dhcpv4.MessageTypeOffer, wantFile: "ipxe.efi", wantTo: "10.20.0.1:67",
		},
		{
			name: "request for an address on port 67 is never answered",
			port: 67,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return request(t, knownMAC, clientIP, withClass(pxeBIOSClass))
			},
			peer:     bcast,
			wantType: 0,
		},
		{
			name: "request to the other server is ignored",
			port: 67,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return request(t, knownMAC, clientIP, withClass(pxeBIOSClass), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 10, 1, 3))))
			},
			peer:     bcast,
			wantType: 0,
		},
		{
			name: "port 4011 request gets an ACK unicast back",
			port: 4011,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				m := request(t, knownMAC, nil, dhcpv4.WithClientIP(clientIP), withClass(pxeUEFIClass), withArch(iana.EFI_X86_64), withUUID())
				m.Options.Del(dhcpv4.OptionRequestedIPAddress)
				return m
			},
			peer:     &net.UDPAddr{IP: clientIP, Port: 68},
			wantType: dhcpv4.MessageTypeAck, wantFile: "ipxe.efi", wantTo: "10.10.1.11:68", wantUUID: true,
		},
		{
			name: "port 4011 request from iPXE gets its script URL",
			port: 4011,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				m := request(t, knownMAC, nil, dhcpv4.WithClientIP(clientIP), withClass(pxeBIOSClass), dhcpv4.WithUserClass("iPXE", false))
				m.Options.Del(dhcpv4.OptionRequestedIPAddress)
				m.Options.Del(dhcpv4.OptionServerIdentifier)
				return m
			},
			peer:     &net.UDPAddr{IP: clientIP, Port: 68},
			wantType: dhcpv4.MessageTypeAck, wantFile: scriptURL(knownMAC), wantTo: "10.10.1.11:68",
		},
		{
			name: "port 4011 request from an unknown MAC",
			port: 4011,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return request(t, unknownMAC, nil, dhcpv4.WithClientIP(clientIP), withClass(pxeBIOSClass))
			},
			peer:     &net.UDPAddr{IP: clientIP, Port: 68},
			wantType: 0,
		},
		{
			name: "port 4011 request from a non-PXE client",
			port: 4011,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return request(t, knownMAC, nil, dhcpv4.WithClientIP(clientIP))
			},
			peer:     &net.UDPAddr{IP: clientIP, Port: 68},
			wantType: 0,
		},
		{
			name: "port 4011 request for another server",
			port: 4011,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return request(t, knownMAC, nil, dhcpv4.WithClientIP(clientIP), withClass(pxeBIOSClass), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 10, 1, 3))))
			},
			peer:     &net.UDPAddr{IP: clientIP, Port: 68},
			wantType: 0,
		},
		{
			name: "port 4011 discover is not answered",
			port: 4011,
			req: func(t *testing.T) *dhcpv4.DHCPv4 {
				return discover(t, knownMAC, withClass(pxeBIOSClass))
			},
			peer:     &net.UDPAddr{IP: clientIP, Port: 68},
			wantType: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := proxyConfig(t)
			s, err := newServer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			req, err := dhcpv4.FromBytes(tc.req(t).ToBytes()) // as server4 hands it over
			if err != nil {
				t.Fatal(err)
			}
			conn := &recordConn{}
			switch tc.port {
			case 67:
				s.handle(conn, tc.peer, req)
			case 4011:
				s.handlePXE(conn, tc.peer, req)
			default:
				t.Fatalf("port %d", tc.port)
			}
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
			checkProxyReply(t, req, resp, tc.wantType, tc.wantFile)
			if got := resp.Options.Get(dhcpv4.OptionClientMachineIdentifier); tc.wantUUID != (got != nil) || (got != nil && !bytes.Equal(got, clientUUID)) {
				t.Errorf("option 97 = %x, want it echoed (%v) from %x", got, tc.wantUUID, clientUUID)
			}
		})
	}
}

// checkProxyReply checks what every ProxyDHCP reply must and must not carry.
func checkProxyReply(t *testing.T, req, resp *dhcpv4.DHCPv4, wantType dhcpv4.MessageType, wantFile string) {
	t.Helper()
	if resp.OpCode != dhcpv4.OpcodeBootReply || resp.MessageType() != wantType {
		t.Fatalf("reply %s %s, want BootReply %s", resp.OpCode, resp.MessageType(), wantType)
	}
	if resp.TransactionID != req.TransactionID || resp.ClientHWAddr.String() != req.ClientHWAddr.String() {
		t.Errorf("reply xid/chaddr %s/%s, want %s/%s", resp.TransactionID, resp.ClientHWAddr, req.TransactionID, req.ClientHWAddr)
	}
	if !resp.YourIPAddr.Equal(net.IPv4zero) {
		t.Errorf("yiaddr %v, want 0.0.0.0: a proxy never gives an address", resp.YourIPAddr)
	}
	if !resp.GatewayIPAddr.Equal(req.GatewayIPAddr) {
		t.Errorf("giaddr %v, want the request's %v", resp.GatewayIPAddr, req.GatewayIPAddr)
	}
	if !resp.ServerIdentifier().Equal(serverIP) {
		t.Errorf("option 54 = %v, want %v", resp.ServerIdentifier(), serverIP)
	}
	if got := resp.ClassIdentifier(); got != "PXEClient" {
		t.Errorf("option 60 = %q, want PXEClient", got)
	}
	// Option 43: PXE_DISCOVERY_CONTROL (6), length 1, bit 3 (boot the
	// offered file directly), end.
	if got := resp.Options.Get(dhcpv4.OptionVendorSpecificInformation); !bytes.Equal(got, []byte{6, 1, 8, 255}) {
		t.Errorf("option 43 = %x, want 060108ff", got)
	}
	if resp.BootFileName != wantFile || resp.BootFileNameOption() != wantFile {
		t.Errorf("file %q / option 67 %q, want %q", resp.BootFileName, resp.BootFileNameOption(), wantFile)
	}
	if !resp.ServerIPAddr.Equal(serverIP) || resp.TFTPServerName() != serverIP.String() {
		t.Errorf("siaddr %v / option 66 %q, want %v", resp.ServerIPAddr, resp.TFTPServerName(), serverIP)
	}
	for _, o := range []dhcpv4.OptionCode{
		dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter,
		dhcpv4.OptionDomainNameServer, dhcpv4.OptionHostName, dhcpv4.OptionDomainName,
		dhcpv4.OptionInterfaceMTU, dhcpv4.OptionDNSDomainSearchList,
	} {
		if resp.Options.Has(o) {
			t.Errorf("proxy reply carries %s: %s", o, resp.Summary())
		}
	}
}

func TestProxyUnknownLoggedOnce(t *testing.T) {
	cfg, buf := proxyConfig(t)
	s, err := newServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn := &recordConn{}
	for range 3 {
		s.handle(conn, &net.UDPAddr{IP: net.IPv4bcast, Port: 68}, discover(t, unknownMAC, withClass(pxeBIOSClass)))
	}
	// Non-PXE clients are the other server's business: not logged at all.
	s.handle(conn, &net.UDPAddr{IP: net.IPv4bcast, Port: 68}, discover(t, mustMAC("02:00:00:00:be:f0")))
	if len(conn.out) != 0 {
		t.Fatalf("answered %d packets, want none", len(conn.out))
	}
	if n := strings.Count(buf.String(), "not in site"); n != 1 {
		t.Errorf("logged %q %d times, want once:\n%s", "not in site", n, buf)
	}
}

func TestNewChecksMode(t *testing.T) {
	lookup := func(net.HardwareAddr) (Lease, bool) { return Lease{}, false }
	if _, err := newServer(Config{Lookup: lookup, ServerIP: serverIP, Mode: "relay"}); err == nil {
		t.Error("unknown mode: no error")
	}
	s, err := newServer(Config{Lookup: lookup, ServerIP: serverIP})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Mode != ModeFull || s.cfg.PXEAddr != nil {
		t.Errorf("default mode %q, PXE address %v; want full and none", s.cfg.Mode, s.cfg.PXEAddr)
	}
	s, err = newServer(Config{Lookup: lookup, ServerIP: serverIP, Mode: ModeProxy})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.Addr.String() != "0.0.0.0:67" || s.cfg.PXEAddr.String() != "0.0.0.0:4011" {
		t.Errorf("proxy addresses %v and %v, want 0.0.0.0:67 and 0.0.0.0:4011", s.cfg.Addr, s.cfg.PXEAddr)
	}
}
