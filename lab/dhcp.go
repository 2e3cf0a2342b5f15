package lab

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/pin/tftp/v3"
)

// DHCPConfig makes virtual nodes netboot as real ones do, through anneal's
// DHCP server (pxe/dhcp, `anneal serve --dhcp-listen`) instead of fetching
// their iPXE script straight from Config.BootURL: DHCP relayed by their
// rack's switch, TFTP of the first-stage boot file, the script the DHCP ACK
// names, then the kernel and initrds the script names.
type DHCPConfig struct {
	// Server is the DHCP server's UDP address (127.0.0.1:6767).
	Server string
	// TFTP is the TFTP server's UDP address; "" is the ACK's next server
	// (siaddr) on port 69.
	TFTP string
	// Firmware is what the NICs boot: FirmwarePXE (the default: a PXE ROM
	// that fetches iPXE by TFTP, then iPXE asks DHCP again) or FirmwareIPXE
	// (iPXE in ROM: one DHCP exchange, no TFTP).
	Firmware string
}

// DHCPConfig.Firmware values.
const (
	FirmwarePXE  = "pxe"
	FirmwareIPXE = "ipxe"
)

// dhcpServerPort is where a server answers a relay (RFC 2131 4.1): the
// relay's address, port 67.
const dhcpServerPort = 67

// dhcpRetransmit is iPXE's DHCP backoff: it sends again after 1, 2, 4, 8 s
// without an answer, then gives up ("No configuration methods succeeded").
var dhcpRetransmit = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}

// maxArtifact bounds what a node downloads of one kernel or initrd.
const maxArtifact = 4 << 30

// relay is a rack's switch relaying DHCP (RFC 1542): it forwards its nodes'
// broadcasts to the server as unicast with giaddr its own loopback address,
// receives the answers on its port 67, and hands each to the node waiting
// on its transaction id.
type relay struct {
	ip     net.IP
	conn   *net.UDPConn
	server *net.UDPAddr

	mu      sync.Mutex
	waiting map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
}

// startRelays binds one relay per rack on 127.B.x.y:67, B drawn at random
// (two labs on one machine, the netboot bench), tried again on a clash.
func startRelays(racks []string, server *net.UDPAddr) (map[string]*relay, error) {
	var last error
	for range 8 {
		b, err := rand.Int(rand.Reader, big.NewInt(150))
		if err != nil {
			return nil, err
		}
		base := byte(100 + b.Int64())
		relays := map[string]*relay{}
		for i, rack := range racks {
			ip := net.IPv4(127, base, byte(i/250), byte(1+i%250)).To4()
			conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: dhcpServerPort})
			if err != nil {
				last = fmt.Errorf("relay of rack %s on %s:%d: %w", rack, ip, dhcpServerPort, err)
				break
			}
			r := &relay{ip: ip, conn: conn, server: server, waiting: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}}
			relays[rack] = r
			go r.loop()
		}
		if len(relays) == len(racks) {
			return relays, nil
		}
		for _, r := range relays {
			r.close()
		}
	}
	return nil, last
}

func (r *relay) loop() {
	buf := make([]byte, 1500)
	for {
		n, _, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		r.mu.Lock()
		ch := r.waiting[m.TransactionID]
		r.mu.Unlock()
		if ch != nil {
			select {
			case ch <- m:
			default:
			}
		}
	}
}

func (r *relay) close() { _ = r.conn.Close() }

// exchange relays msg to the server and waits for an answer of a wanted
// type to its transaction, retransmitting as iPXE does.
func (r *relay) exchange(ctx context.Context, msg *dhcpv4.DHCPv4, want ...dhcpv4.MessageType) (*dhcpv4.DHCPv4, error) {
	ch := make(chan *dhcpv4.DHCPv4, 8)
	r.mu.Lock()
	r.waiting[msg.TransactionID] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiting, msg.TransactionID)
		r.mu.Unlock()
	}()
	pkt := msg.ToBytes()
	for _, wait := range dhcpRetransmit {
		if _, err := r.conn.WriteToUDP(pkt, r.server); err != nil {
			return nil, fmt.Errorf("DHCP %s to %s: %w", msg.MessageType(), r.server, err)
		}
		t := time.NewTimer(wait)
	recv:
		for {
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case resp := <-ch:
				for _, w := range want {
					if resp.MessageType() == w {
						t.Stop()
						return resp, nil
					}
				}
			case <-t.C:
				break recv
			}
		}
	}
	return nil, fmt.Errorf("DHCP %s: no answer from %s", msg.MessageType(), r.server)
}

// dhcpBoot is what a node's firmware and iPXE do before the script: DHCP
// (and, from a PXE ROM, TFTP of iPXE and DHCP again as iPXE). It returns
// the script URL the last ACK names.
func (n *Node) dhcpBoot(ctx context.Context) (string, error) {
	cfg := n.f.cfg.DHCP
	r := n.f.relays[n.rack]
	if r == nil {
		return "", fmt.Errorf("no DHCP relay for rack %s", n.rack)
	}
	if cfg.Firmware != FirmwareIPXE {
		ack, err := n.dora(ctx, r, false)
		if err != nil {
			return "", fmt.Errorf("PXE firmware: %w", err)
		}
		file := bootFile(ack)
		if isURL(file) {
			return "", fmt.Errorf("PXE firmware: boot file %q is a URL: a PXE ROM fetches by TFTP only", file)
		}
		if err := n.tftpFetch(ack, file); err != nil {
			return "", fmt.Errorf("PXE firmware: %w", err)
		}
	}
	ack, err := n.dora(ctx, r, true)
	if err != nil {
		return "", fmt.Errorf("iPXE: %w", err)
	}
	file := bootFile(ack)
	if !isURL(file) {
		return "", fmt.Errorf("iPXE: boot file %q is not an http(s) URL (is the DHCP server's IPXEScriptURL set?)", file)
	}
	return file, nil
}

// dora is one DISCOVER, OFFER, REQUEST, ACK through the rack's relay, as a
// PXE ROM (option 60 PXEClient, option 93 x86 BIOS) or as iPXE (option 77
// "iPXE" too). The ACK must give the node its site address.
func (n *Node) dora(ctx context.Context, r *relay, ipxe bool) (*dhcpv4.DHCPv4, error) {
	hw, err := net.ParseMAC(n.mac)
	if err != nil {
		return nil, fmt.Errorf("MAC %q: %w", n.mac, err)
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
		dhcpv4.WithRelay(r.ip), // giaddr, hops 1: the rack's switch relays
	}
	if ipxe {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE"))))
	}
	disc, err := dhcpv4.NewDiscovery(hw, mods...)
	if err != nil {
		return nil, err
	}
	offer, err := r.exchange(ctx, disc, dhcpv4.MessageTypeOffer)
	if err != nil {
		return nil, err
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, mods...)
	if err != nil {
		return nil, err
	}
	ack, err := r.exchange(ctx, req, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)
	if err != nil {
		return nil, err
	}
	if ack.MessageType() != dhcpv4.MessageTypeAck {
		return nil, fmt.Errorf("DHCP NAK for %s", offer.YourIPAddr)
	}
	got, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || !slices.Contains(n.provAddrs, got) {
		return nil, fmt.Errorf("DHCP ACK gives %s, not the node's provisioning address (%s)", ack.YourIPAddr, n.provList())
	}
	n.f.log.Debug("lab: DHCP ACK", "node", n.name, "ipxe", ipxe, "yiaddr", got, "file", bootFile(ack))
	return ack, nil
}

func (n *Node) provList() string {
	var s []string
	for _, a := range n.provAddrs {
		s = append(s, a.String())
	}
	if len(s) == 0 {
		return "it has none"
	}
	return strings.Join(s, ", ")
}

// bootFile is the ACK's file field, else its option 67.
func bootFile(ack *dhcpv4.DHCPv4) string {
	if ack.BootFileName != "" {
		return ack.BootFileName
	}
	return ack.BootFileNameOption()
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

// tftpFetch downloads the first-stage boot file from the TFTP server
// (DHCPConfig.TFTP, else the ACK's next server on port 69); it must not
// be empty.
func (n *Node) tftpFetch(ack *dhcpv4.DHCPv4, file string) error {
	if file == "" {
		return errors.New("the DHCP ACK names no boot file")
	}
	addr := n.f.cfg.DHCP.TFTP
	if addr == "" {
		next := ack.ServerIPAddr
		if next == nil || next.IsUnspecified() {
			return fmt.Errorf("TFTP %s: the DHCP ACK names no next server", file)
		}
		addr = net.JoinHostPort(next.String(), strconv.Itoa(69))
	}
	c, err := tftp.NewClient(addr)
	if err != nil {
		return fmt.Errorf("TFTP %s from %s: %w", file, addr, err)
	}
	c.SetTimeout(time.Second)
	c.SetRetries(3)
	wt, err := c.Receive(file, "octet")
	if err != nil {
		return fmt.Errorf("TFTP %s from %s: %w", file, addr, err)
	}
	size, err := wt.WriteTo(io.Discard)
	if err != nil {
		return fmt.Errorf("TFTP %s from %s: %w", file, addr, err)
	}
	if size == 0 {
		return fmt.Errorf("TFTP %s from %s: empty file", file, addr)
	}
	n.f.log.Debug("lab: TFTP", "node", n.name, "file", file, "bytes", size)
	return nil
}

// artifactPath is the netboot server's verified copy of an image's
// artifact: /artifacts/{sha256}/{name} (pxe/boot.ArtifactPath).
var artifactPath = regexp.MustCompile(`^/artifacts/([0-9a-f]{64})/[^/]+$`)

// fetchImages downloads what the script's kernel and initrd commands name,
// as iPXE does before boot, each once: any failure fails the netboot. A
// copy the netboot server (the script's host) serves under /artifacts/ is
// hashed as it streams and must have the SHA-256 in its path, which the
// node's image must declare; anything else (the deploy initramfs, an
// image's own URL) must only be there and not empty.
func (n *Node) fetchImages(ctx context.Context, s ipxeScript) error {
	base, err := url.Parse(s.url)
	if err != nil {
		return fmt.Errorf("script URL %q: %w", s.url, err)
	}
	verified := 0
	images := append([]string{s.kernel}, s.initrds...)
	for i, raw := range images {
		what := "initrd"
		if i == 0 {
			what = "kernel"
		}
		expanded, err := n.expand(raw)
		if err != nil {
			return fmt.Errorf("%s %s: %w", what, raw, err)
		}
		ref, err := url.Parse(expanded)
		if err != nil {
			return fmt.Errorf("%s %q: %w", what, raw, err)
		}
		u := base.ResolveReference(ref)
		if u.Scheme != "http" && u.Scheme != "https" {
			return fmt.Errorf("%s %s: not an http(s) URL", what, u.Redacted())
		}
		want := ""
		if m := artifactPath.FindStringSubmatch(u.Path); m != nil && u.Host == base.Host {
			want = m[1]
			if !n.imageSums[want] {
				return fmt.Errorf("%s %s: the node's image declares no artifact with this SHA-256", what, u.Redacted())
			}
		}
		if err := n.fetchImage(ctx, u.String(), want); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if want != "" {
			verified++
		}
	}
	n.f.log.Info("lab: netboot images fetched", "node", n.name, "images", len(images), "verified", verified)
	return nil
}

// fetchImage GETs u into a SHA-256, and checks it against want unless "".
func (n *Node) fetchImage(ctx context.Context, u, want string) error {
	shown := redactURL(u)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", shown, err)
	}
	req.Header.Set("User-Agent", "anneal-lab-node/"+n.name)
	resp, err := n.f.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", shown, scrub(err, u, shown))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", shown, resp.Status)
	}
	h := sha256.New()
	size, err := io.Copy(h, io.LimitReader(resp.Body, maxArtifact+1))
	switch {
	case err != nil:
		return fmt.Errorf("GET %s: %w", shown, scrub(err, u, shown))
	case size == 0:
		return fmt.Errorf("GET %s: empty", shown)
	case size > maxArtifact:
		return fmt.Errorf("GET %s: over %d bytes", shown, int64(maxArtifact))
	}
	got := hex.EncodeToString(h.Sum(nil))
	if want != "" && got != want {
		return fmt.Errorf("GET %s: SHA-256 %s, not the declared %s", shown, got, want)
	}
	n.f.log.Debug("lab: image fetched", "node", n.name, "url", shown, "bytes", size, "verified", want != "")
	return nil
}

// redactURL drops a URL's query and user info from what is logged: an
// image's own URL may carry credentials.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	p.User, p.RawQuery, p.Fragment = nil, "", ""
	return p.String()
}
