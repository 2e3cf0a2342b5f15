package dhcp

import (
	"fmt"
	"net"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// pxeClientClass is the option 60 (vendor class identifier) prefix PXE
// firmware sends ("PXEClient:Arch:00007:UNDI:003016"), and the class a
// ProxyDHCP reply carries so the client takes it for one (PXE
// specification 2.1).
const pxeClientClass = "PXEClient"

// PXE vendor options, carried in option 43 of a ProxyDHCP reply (PXE
// specification 2.1).
const (
	// pxeDiscoveryControl (PXE_DISCOVERY_CONTROL, sub-option 6) is a
	// one-byte bit field.
	pxeDiscoveryControl = 6
	// pxeBootFileDirect (bit 3) tells the client to download the boot file
	// named in the offer at once: no boot server discovery, no menu.
	pxeBootFileDirect = 1 << 3
	pxeEnd            = 255
)

// pxeVendorOptions is the option 43 payload of every ProxyDHCP reply.
func pxeVendorOptions() []byte {
	return []byte{pxeDiscoveryControl, 1, pxeBootFileDirect, pxeEnd}
}

// isPXEClient reports whether the client is PXE firmware (option 60
// starting "PXEClient") or iPXE (option 77): the only clients ModeProxy
// answers.
func isPXEClient(req *dhcpv4.DHCPv4) bool {
	return strings.HasPrefix(req.ClassIdentifier(), pxeClientClass) || isIPXE(req)
}

// respondProxy is the ModeProxy answer to a request on port 67: an OFFER
// without an address to the DISCOVER of a known PXE client, nil for
// anything else. The client takes its address from the other DHCP server's
// offer and its boot file from this one.
func (s *Server) respondProxy(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil
	}
	mac := req.ClientHWAddr
	mt := req.MessageType()
	if mt != dhcpv4.MessageTypeDiscover {
		// A PXE client never asks a proxy for an address on port 67; a
		// client that does took the proxy offer for an address offer.
		if sid := req.ServerIdentifier(); mt == dhcpv4.MessageTypeRequest && sid != nil && sid.Equal(s.cfg.ServerIP) {
			s.log.Debug("dhcp: proxy: ignoring request for an address", "mac", mac.String(), "requested", fmt.Sprint(req.RequestedIPAddress()))
		}
		return nil
	}
	return s.proxyReply(req, dhcpv4.MessageTypeOffer)
}

// handlePXE is the port 4011 server4 handler (ModeProxy): PXE boot server
// discovery. A known PXE client that already has its address (ciaddr)
// sends a REQUEST and gets an ACK carrying its boot file and, again, no
// address. iPXE does this after it has seen a proxy offer.
func (s *Server) handlePXE(conn net.PacketConn, peer net.Addr, req *dhcpv4.DHCPv4) {
	if req.OpCode != dhcpv4.OpcodeBootRequest || req.MessageType() != dhcpv4.MessageTypeRequest {
		return
	}
	if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(s.cfg.ServerIP) {
		s.log.Debug("dhcp: proxy: port 4011 request for another server", "mac", req.ClientHWAddr.String(), "server_id", sid.String())
		return
	}
	resp := s.proxyReply(req, dhcpv4.MessageTypeAck)
	if resp == nil {
		return
	}
	s.send(conn, req, resp, pxeReplyAddr(req, peer))
}

// pxeReplyAddr is where a port 4011 reply goes: back to the address and
// port the request came from (the client unicasts it from its own
// address), else as replyAddr would send it.
func pxeReplyAddr(req *dhcpv4.DHCPv4, peer net.Addr) net.Addr {
	if u, ok := peer.(*net.UDPAddr); ok && u.Port != 0 {
		if ip := u.IP.To4(); ip != nil && !ip.IsUnspecified() && !ip.Equal(net.IPv4bcast) {
			return &net.UDPAddr{IP: ip, Port: u.Port}
		}
	}
	if gi := req.GatewayIPAddr.To4(); gi != nil && !gi.IsUnspecified() {
		return &net.UDPAddr{IP: gi, Port: serverPort}
	}
	if ci := req.ClientIPAddr.To4(); ci != nil && !ci.IsUnspecified() {
		return &net.UDPAddr{IP: ci, Port: clientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: clientPort}
}

// proxyReply builds a ProxyDHCP OFFER or ACK for a known PXE client, or nil
// (other clients, unknown MACs, architectures without a boot file). The
// reply has yiaddr 0.0.0.0 and no lease options: option 53, 54 (server
// identifier), 60 ("PXEClient"), 43 (PXE vendor options), 97 (client
// machine identifier, echoed when the client sent one), siaddr and the
// boot file (file, options 66 and 67).
func (s *Server) proxyReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	mac := req.ClientHWAddr
	if !isPXEClient(req) {
		return nil
	}
	if _, ok := s.cfg.Lookup(mac); !ok {
		s.logUnknown(mac, req.MessageType())
		return nil
	}
	log := s.log.With("mac", mac.String(), "type", req.MessageType().String(), "mode", string(ModeProxy))
	boot := s.bootOptions(req, log)
	if boot == nil {
		return nil // a proxy reply without a boot file says nothing
	}
	pxeOpts := dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, pxeVendorOptions())
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(mt),                                         // option 53
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP)),      // option 54
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(pxeClientClass)),       // option 60
		dhcpv4.WithOption(pxeOpts),                                         // option 43
		dhcpv4.WithOptionCopied(req, dhcpv4.OptionClientMachineIdentifier), // option 97
		dhcpv4.WithClientIP(req.ClientIPAddr),                              // ciaddr, as sent
	}
	mods = append(mods, boot...)
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		log.Warn("dhcp: build proxy reply", "err", err)
		return nil
	}
	return resp
}
