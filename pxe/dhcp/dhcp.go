// Package dhcp is anneal's DHCPv4 server for the provisioning network. It
// runs in one of two modes:
//
//   - ModeFull (the default) hands every known node its reserved address and
//     the network boot file for its firmware (BIOS, x86-64 UEFI, or an iPXE
//     script URL once iPXE runs).
//   - ModeProxy is ProxyDHCP (PXE specification 2.1, as dnsmasq's
//     "dhcp-range=...,proxy"): another DHCP server on the network hands out
//     the addresses, and anneal answers only the PXE clients among the known
//     nodes, with an offer that carries no address (yiaddr 0.0.0.0), only the
//     boot file, on port 67, and with an ACK carrying the same to a request
//     on port 4011 (PXE boot server discovery, which iPXE uses after a proxy
//     offer).
//
// Neither mode allocates: the server answers only MACs the site knows (see
// LeasesFromSite) and stays silent for everyone else. Packets are parsed and
// built with github.com/insomniacslk/dhcp (dhcpv4 and server4).
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/insomniacslk/dhcp/rfc1035label"
)

// DHCP UDP ports (RFC 2131 section 4.1) and the PXE boot server discovery
// port (PXE specification 2.1).
const (
	serverPort = 67
	clientPort = 68
	pxePort    = 4011
)

// Mode is what the server answers: addresses and boot files, or boot files
// only (ProxyDHCP).
type Mode string

// Modes.
const (
	// ModeFull answers DISCOVER, REQUEST and INFORM with the reservation
	// and the boot file. It is the zero value's mode.
	ModeFull Mode = "full"
	// ModeProxy answers only PXE clients (option 60 "PXEClient...", or
	// option 77 "iPXE"), with the boot file and no address, next to
	// another DHCP server that hands out the addresses.
	ModeProxy Mode = "proxy"
)

// Defaults for Config.
const (
	DefaultBIOSBootFile = "undionly.kpxe"
	DefaultUEFIBootFile = "ipxe.efi"
	DefaultLeaseTime    = time.Hour
)

// ipxeUserClass is the user class (option 77) iPXE sends about itself.
const ipxeUserClass = "iPXE"

// maxUnknownLogged bounds the set of unknown MACs already logged; past it
// the set starts over, so a flood of made-up MACs cannot grow it forever.
const maxUnknownLogged = 4096

// Lease is one static reservation: what a node gets on the provisioning
// network. ModeFull sends every field that is set, and only those.
type Lease struct {
	IP       net.IP     // yiaddr
	Mask     net.IPMask // option 1
	Router   net.IP     // option 3
	DNS      []net.IP   // option 6, IPv4 resolvers
	Hostname string     // option 12
	Domain   string     // option 15
	MTU      int        // option 26 when 68..65535
	Search   []string   // option 119, domain search list
}

// BootFiles names the first-stage boot files, fetched by TFTP from the server.
type BootFiles struct {
	// BIOS is for legacy PXE (client architecture 0); default undionly.kpxe.
	BIOS string
	// UEFI is for x86-64 UEFI (client architecture 7 or 9); default ipxe.efi.
	UEFI string
}

// Config configures a Server.
type Config struct {
	// Mode is ModeFull ("" too) or ModeProxy.
	Mode Mode
	// Interface is the network interface the server binds to (SO_BINDTODEVICE);
	// "" listens on every interface.
	Interface string
	// Addr is the listening address; default 0.0.0.0:67.
	Addr *net.UDPAddr
	// PXEAddr is the PXE boot server discovery address ModeProxy also
	// listens on; default 0.0.0.0:4011. ModeFull does not use it.
	PXEAddr *net.UDPAddr
	// ServerIP is the server's own IPv4 address on the provisioning network:
	// the server identifier (option 54), siaddr and the TFTP server (option 66).
	ServerIP net.IP
	// Lookup returns the reservation of a MAC. It is called for every packet
	// and must be cheap and safe for concurrent use (a snapshot of the site).
	// ModeProxy only asks whether the MAC is known: the address comes from
	// the other DHCP server.
	Lookup func(mac net.HardwareAddr) (Lease, bool)
	// BootFiles are the TFTP boot files by firmware.
	BootFiles BootFiles
	// IPXEScriptURL returns the HTTP URL of the iPXE script for a MAC; it is
	// the boot file of clients that are already iPXE. Nil or "" leaves iPXE
	// clients with the firmware's boot file.
	IPXEScriptURL func(mac net.HardwareAddr) string
	// LeaseTime is the lease duration (option 51) of ModeFull; default one
	// hour.
	LeaseTime time.Duration
	// Log receives the server's logs; default slog.Default().
	Log *slog.Logger
}

// Server is a DHCPv4 server answering the site's reservations.
type Server struct {
	cfg Config
	log *slog.Logger
	srv *server4.Server // port 67
	pxe *server4.Server // port 4011, ModeProxy only

	mu      sync.Mutex
	unknown map[string]struct{} // unknown MACs already logged
	served  bool
}

// New checks cfg, fills in defaults and binds the server's sockets (so the
// server receives packets as soon as New returns; Serve answers them):
// port 67, and port 4011 too in ModeProxy.
func New(cfg Config) (*Server, error) {
	s, err := newServer(cfg)
	if err != nil {
		return nil, err
	}
	s.srv, err = listen(s.cfg.Interface, s.cfg.Addr, s.handle)
	if err != nil {
		return nil, err
	}
	if s.cfg.Mode == ModeProxy {
		s.pxe, err = listen(s.cfg.Interface, s.cfg.PXEAddr, s.handlePXE)
		if err != nil {
			_ = s.srv.Close()
			return nil, err
		}
	}
	return s, nil
}

// receiveBuffer is the sockets' receive buffer. The kernel's default
// (about 208 KiB) holds some 170 DHCP packets: a rack powering on at once
// overflows it and the dropped DISCOVERs are retried seconds later
// (bench/netboot: 1,000 machines in 3-7 s with the default, 1.4-1.7 s
// with 4 MiB). The kernel caps it at net.core.rmem_max.
const receiveBuffer = 4 << 20

// listen binds a DHCP socket with a large receive buffer.
func listen(iface string, addr *net.UDPAddr, h server4.Handler) (*server4.Server, error) {
	conn, err := server4.NewIPv4UDPConn(iface, addr)
	if err != nil {
		return nil, fmt.Errorf("dhcp: listen on %s (interface %q): %w", addr, iface, err)
	}
	if err := conn.SetReadBuffer(receiveBuffer); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("dhcp: receive buffer on %s: %w", addr, err)
	}
	srv, err := server4.NewServer(iface, addr, h, server4.WithConn(conn))
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("dhcp: listen on %s (interface %q): %w", addr, iface, err)
	}
	return srv, nil
}

// newServer is New without the socket.
func newServer(cfg Config) (*Server, error) {
	if cfg.Lookup == nil {
		return nil, errors.New("dhcp: Config.Lookup is required")
	}
	ip4 := cfg.ServerIP.To4()
	if ip4 == nil || ip4.IsUnspecified() {
		return nil, fmt.Errorf("dhcp: Config.ServerIP %q is not an IPv4 address", cfg.ServerIP)
	}
	cfg.ServerIP = ip4
	switch cfg.Mode {
	case "":
		cfg.Mode = ModeFull
	case ModeFull, ModeProxy:
	default:
		return nil, fmt.Errorf("dhcp: Config.Mode %q is neither %q nor %q", cfg.Mode, ModeFull, ModeProxy)
	}
	if cfg.Addr == nil {
		cfg.Addr = &net.UDPAddr{IP: net.IPv4zero, Port: serverPort}
	}
	if cfg.PXEAddr == nil && cfg.Mode == ModeProxy {
		cfg.PXEAddr = &net.UDPAddr{IP: net.IPv4zero, Port: pxePort}
	}
	if cfg.BootFiles.BIOS == "" {
		cfg.BootFiles.BIOS = DefaultBIOSBootFile
	}
	if cfg.BootFiles.UEFI == "" {
		cfg.BootFiles.UEFI = DefaultUEFIBootFile
	}
	if cfg.LeaseTime <= 0 {
		cfg.LeaseTime = DefaultLeaseTime
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Server{cfg: cfg, log: cfg.Log, unknown: map[string]struct{}{}}, nil
}

// Serve answers DHCP requests until ctx ends, then closes the sockets and
// returns nil. A Server serves once.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	if s.served {
		s.mu.Unlock()
		return errors.New("dhcp: Serve called twice")
	}
	s.served = true
	s.mu.Unlock()

	log := s.log.With("mode", string(s.cfg.Mode), "interface", s.cfg.Interface, "addr", s.cfg.Addr.String(), "server_ip", s.cfg.ServerIP.String())
	if s.pxe != nil {
		log = log.With("pxe_addr", s.cfg.PXEAddr.String())
	}
	log.Info("dhcp: serving")
	srvs := s.servers()
	done := make(chan error, len(srvs))
	for _, srv := range srvs {
		go func() { done <- srv.Serve() }()
	}
	var err error
	running := len(srvs)
	select {
	case <-ctx.Done():
	case err = <-done:
		running--
	}
	_ = s.Close()
	for ; running > 0; running-- {
		<-done
	}
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("dhcp: serve: %w", err)
}

// Close releases the sockets of a server that is not serving.
func (s *Server) Close() error {
	var errs []error
	for _, srv := range s.servers() {
		errs = append(errs, srv.Close())
	}
	return errors.Join(errs...)
}

// servers are the server's listeners: port 67, and 4011 in ModeProxy.
func (s *Server) servers() []*server4.Server {
	if s.pxe == nil {
		return []*server4.Server{s.srv}
	}
	return []*server4.Server{s.srv, s.pxe}
}

// handle is the port 67 server4 handler: it answers one request on the
// server's own connection.
func (s *Server) handle(conn net.PacketConn, peer net.Addr, req *dhcpv4.DHCPv4) {
	var resp *dhcpv4.DHCPv4
	if s.cfg.Mode == ModeProxy {
		resp = s.respondProxy(req)
	} else {
		resp = s.respond(req)
	}
	if resp == nil {
		return
	}
	s.send(conn, req, resp, replyAddr(req, resp, peer))
}

// send writes resp to to and logs it.
func (s *Server) send(conn net.PacketConn, req, resp *dhcpv4.DHCPv4, to net.Addr) {
	if _, err := conn.WriteTo(resp.ToBytes(), to); err != nil {
		s.log.Warn("dhcp: send reply", "mac", req.ClientHWAddr.String(), "type", resp.MessageType().String(), "to", to.String(), "err", err)
		return
	}
	level := slog.LevelDebug
	if resp.MessageType() == dhcpv4.MessageTypeAck {
		level = slog.LevelInfo // a node got its address: one line per boot
	}
	s.log.Log(context.Background(), level, "dhcp: reply", "mac", req.ClientHWAddr.String(), "type", resp.MessageType().String(), "yiaddr", resp.YourIPAddr.String(), "to", to.String())
}

// replyAddr is where a reply goes (RFC 2131 section 4.1): to the relay
// (giaddr, server port 67) when the request was relayed; otherwise a NAK is
// broadcast, a client that already has an address (ciaddr) gets unicast, and
// a client without one gets a broadcast on the bound interface.
func replyAddr(req, resp *dhcpv4.DHCPv4, peer net.Addr) net.Addr {
	if gi := req.GatewayIPAddr.To4(); gi != nil && !gi.IsUnspecified() {
		return &net.UDPAddr{IP: gi, Port: serverPort}
	}
	if resp.MessageType() == dhcpv4.MessageTypeNak {
		return &net.UDPAddr{IP: net.IPv4bcast, Port: clientPort}
	}
	if ci := req.ClientIPAddr.To4(); ci != nil && !ci.IsUnspecified() {
		return &net.UDPAddr{IP: ci, Port: clientPort}
	}
	if u, ok := peer.(*net.UDPAddr); ok && u.IP.To4() != nil && !u.IP.IsUnspecified() && !u.IP.Equal(net.IPv4bcast) {
		return &net.UDPAddr{IP: u.IP, Port: clientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: clientPort}
}

// respond builds the ModeFull answer to one request, or nil for no answer.
func (s *Server) respond(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil
	}
	mac := req.ClientHWAddr
	mt := req.MessageType()
	lease, ok := s.cfg.Lookup(mac)
	if !ok || lease.IP.To4() == nil {
		s.logUnknown(mac, mt)
		return nil
	}
	log := s.log.With("mac", mac.String(), "type", mt.String())
	switch mt {
	case dhcpv4.MessageTypeDiscover:
		return s.lease(req, lease, dhcpv4.MessageTypeOffer, log)
	case dhcpv4.MessageTypeRequest:
		// Option 54: a client that chose another server's offer is not ours.
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(s.cfg.ServerIP) {
			log.Debug("dhcp: request for another server", "server_id", sid.String())
			return nil
		}
		// Option 50 (requested address) in SELECTING and INIT-REBOOT,
		// ciaddr in RENEWING and REBINDING.
		want := req.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = req.ClientIPAddr
		}
		if !want.Equal(lease.IP) {
			log.Info("dhcp: NAK: requested address is not the reservation", "requested", fmt.Sprint(want), "reserved", lease.IP.String())
			return s.nak(req, log)
		}
		return s.lease(req, lease, dhcpv4.MessageTypeAck, log)
	case dhcpv4.MessageTypeInform:
		return s.inform(req, lease, log)
	case dhcpv4.MessageTypeDecline:
		log.Warn("dhcp: client declined its reservation (address in use?)", "ip", lease.IP.String())
		return nil
	case dhcpv4.MessageTypeRelease:
		log.Debug("dhcp: release")
		return nil
	default:
		return nil
	}
}

// logUnknown logs a MAC that is not in the site, once per MAC.
func (s *Server) logUnknown(mac net.HardwareAddr, mt dhcpv4.MessageType) {
	key := mac.String()
	s.mu.Lock()
	_, seen := s.unknown[key]
	if !seen {
		if len(s.unknown) >= maxUnknownLogged {
			clear(s.unknown)
		}
		s.unknown[key] = struct{}{}
	}
	s.mu.Unlock()
	if !seen {
		s.log.Info("dhcp: ignoring client: not in site", "mac", key, "type", mt.String())
	}
}

// lease builds an OFFER or ACK carrying the reservation and boot options.
func (s *Server) lease(req *dhcpv4.DHCPv4, l Lease, mt dhcpv4.MessageType, log *slog.Logger) *dhcpv4.DHCPv4 {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(mt), // option 53
		dhcpv4.WithYourIP(l.IP.To4()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP)),    // option 54
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(s.cfg.LeaseTime)), // option 51
	}
	mods = append(mods, s.configOptions(l)...)
	mods = append(mods, s.bootOptions(req, log)...)
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		log.Warn("dhcp: build reply", "err", err)
		return nil
	}
	return resp
}

// inform answers DHCPINFORM (RFC 2131 section 3.4): configuration without
// an address or a lease time.
func (s *Server) inform(req *dhcpv4.DHCPv4, l Lease, log *slog.Logger) *dhcpv4.DHCPv4 {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),                 // option 53
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP)), // option 54
	}
	mods = append(mods, s.configOptions(l)...)
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		log.Warn("dhcp: build reply", "err", err)
		return nil
	}
	return resp
}

// configOptions are the host's network configuration from its lease.
func (s *Server) configOptions(l Lease) []dhcpv4.Modifier {
	var mods []dhcpv4.Modifier
	if len(l.Mask) == net.IPv4len {
		mods = append(mods, dhcpv4.WithNetmask(l.Mask)) // option 1
	}
	if r := l.Router.To4(); r != nil && !r.IsUnspecified() {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(r))) // option 3
	}
	var dns []net.IP
	for _, d := range l.DNS {
		if d4 := d.To4(); d4 != nil {
			dns = append(dns, d4)
		}
	}
	if len(dns) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(dns...))) // option 6
	}
	if l.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(l.Hostname))) // option 12
	}
	if l.Domain != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(l.Domain))) // option 15
	}
	if l.MTU >= minMTU && l.MTU <= maxMTU {
		mtu := []byte{byte(l.MTU >> 8), byte(l.MTU)}
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, mtu))) // option 26
	}
	var search []string
	for _, d := range l.Search {
		if n, ok := dnsName(d); ok {
			search = append(search, n)
		}
	}
	if len(search) > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: search}))) // option 119
	}
	return mods
}

// bootOptions point the client at its boot file: siaddr and option 66 (TFTP
// server name) are the server; the file field and option 67 (boot file
// name) carry the file, chosen by bootFile.
func (s *Server) bootOptions(req *dhcpv4.DHCPv4, log *slog.Logger) []dhcpv4.Modifier {
	file := s.bootFile(req)
	if file == "" {
		log.Info("dhcp: no boot file for client architecture", "arch", fmt.Sprint(req.ClientArch()))
		return nil
	}
	return []dhcpv4.Modifier{
		dhcpv4.WithServerIP(s.cfg.ServerIP), // siaddr: next server (TFTP)
		func(d *dhcpv4.DHCPv4) { d.BootFileName = file },
		dhcpv4.WithOption(dhcpv4.OptTFTPServerName(s.cfg.ServerIP.String())), // option 66
		dhcpv4.WithOption(dhcpv4.OptBootFileName(file)),                      // option 67
	}
}

// bootFile picks the boot file: the iPXE script URL when the client is iPXE
// (option 77, user class "iPXE"), else by client system architecture
// (option 93, RFC 4578): 0 (x86 BIOS) gets the BIOS file, 7 and 9 (x86-64
// UEFI) the UEFI file, and a client without option 93 is treated as BIOS.
// Other architectures get no boot file.
func (s *Server) bootFile(req *dhcpv4.DHCPv4) string {
	if s.cfg.IPXEScriptURL != nil && isIPXE(req) {
		if u := s.cfg.IPXEScriptURL(req.ClientHWAddr); u != "" {
			return u
		}
	}
	archs := req.ClientArch()
	if len(archs) == 0 {
		return s.cfg.BootFiles.BIOS
	}
	switch archs[0] {
	case iana.INTEL_X86PC: // 0
		return s.cfg.BootFiles.BIOS
	case iana.EFI_X86_64, iana.EFI_BC: // 7, 9
		return s.cfg.BootFiles.UEFI
	}
	return ""
}

// isIPXE reports whether the client says it is iPXE in option 77. iPXE
// sends the bare string "iPXE"; RFC 3004 encoded classes are accepted too.
func isIPXE(req *dhcpv4.DHCPv4) bool {
	if string(req.Options.Get(dhcpv4.OptionUserClassInformation)) == ipxeUserClass {
		return true
	}
	for _, c := range req.UserClass() {
		if c == ipxeUserClass {
			return true
		}
	}
	return false
}

// nak builds a DHCPNAK: message type and server identifier only.
func (s *Server) nak(req *dhcpv4.DHCPv4, log *slog.Logger) *dhcpv4.DHCPv4 {
	resp, err := dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),                 // option 53
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.cfg.ServerIP)), // option 54
	)
	if err != nil {
		log.Warn("dhcp: build NAK", "err", err)
		return nil
	}
	return resp
}
