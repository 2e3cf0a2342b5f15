package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/anneal-dev/anneal/pxe/boot"
	"github.com/anneal-dev/anneal/pxe/dhcp"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// machine is one simulated node: its PXE MAC, the address its reservation
// holds, the loopback address its HTTP connections come from, and the
// relay (its rack's switch) that forwards its DHCP.
type machine struct {
	node  string
	rack  string
	mac   net.HardwareAddr
	want  net.IP // the reservation
	src   net.IP // source of its TCP connections
	relay *relay
	facts node.Facts
}

// machinesOf returns one machine per node that exists, with the first of
// its MACs the DHCP server holds a reservation for, in site order.
func machinesOf(site *schema.Site) ([]*machine, error) {
	leases := dhcp.LeasesFromSite(site)
	var out []*machine
	for _, n := range site.Nodes {
		if !n.Exists() {
			continue
		}
		var m *machine
		for _, i := range n.Interfaces {
			hw, err := net.ParseMAC(i.MAC)
			if err != nil {
				continue
			}
			if l, ok := leases[hw.String()]; ok {
				m = &machine{node: n.Name, rack: n.Region + "/" + n.Rack, mac: hw, want: l.IP.To4()}
				break
			}
		}
		if m == nil {
			return nil, fmt.Errorf("node %s has no MAC with a DHCP reservation", n.Name)
		}
		i := len(out)
		m.src = net.IPv4(127, byte(10+i/62500), byte(1+(i/250)%250), byte(1+i%250)).To4()
		m.facts = node.FactsOfBuild(node.BuildSpecOf(site, n))
		out = append(out, m)
	}
	return out, nil
}

// relay is a rack's DHCP relay agent: it forwards its machines' requests
// to the server with giaddr set to its own address, receives the server's
// replies on port 67 (RFC 2131 4.1: a relayed request is answered to
// giaddr:67) and hands each to the machine waiting on its xid.
type relay struct {
	conn   *net.UDPConn
	ip     net.IP
	server *net.UDPAddr

	mu      sync.Mutex
	waiting map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
}

func newRelay(ip net.IP, server *net.UDPAddr) (*relay, error) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: 67})
	if err != nil {
		return nil, fmt.Errorf("relay on %s:67: %w", ip, err)
	}
	r := &relay{conn: conn, ip: ip, server: server, waiting: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}}
	go r.loop()
	return r, nil
}

func (r *relay) loop() {
	buf := make([]byte, 1500)
	for {
		n, _, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		m, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
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

func (r *relay) register(xid dhcpv4.TransactionID) chan *dhcpv4.DHCPv4 {
	ch := make(chan *dhcpv4.DHCPv4, 8)
	r.mu.Lock()
	r.waiting[xid] = ch
	r.mu.Unlock()
	return ch
}

func (r *relay) unregister(xid dhcpv4.TransactionID) {
	r.mu.Lock()
	delete(r.waiting, xid)
	r.mu.Unlock()
}

func (r *relay) close() { _ = r.conn.Close() }

// retransmit is when a machine sends its DHCP message again without an
// answer: iPXE's backoff from 1 s, giving up past 10 s.
var retransmit = []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}

// exchange sends msg through the relay and waits for a reply of a wanted
// type with the same xid, retransmitting as iPXE does. It returns the
// reply and how many retransmissions it took.
func (r *relay) exchange(msg *dhcpv4.DHCPv4, want ...dhcpv4.MessageType) (*dhcpv4.DHCPv4, int, error) {
	ch := r.register(msg.TransactionID)
	defer r.unregister(msg.TransactionID)
	pkt := msg.ToBytes()
	for try, wait := range retransmit {
		if _, err := r.conn.WriteToUDP(pkt, r.server); err != nil {
			return nil, try, fmt.Errorf("send %s: %w", msg.MessageType(), err)
		}
		timeout := time.NewTimer(wait)
	recv:
		for {
			select {
			case resp := <-ch:
				for _, w := range want {
					if resp.MessageType() == w {
						timeout.Stop()
						return resp, try, nil
					}
				}
			case <-timeout.C:
				break recv
			}
		}
	}
	return nil, len(retransmit) - 1, fmt.Errorf("no answer to %s", msg.MessageType())
}

// timing is one machine's boot: what each phase took.
type timing struct {
	discover, request, dhcp time.Duration
	script                  time.Duration
	files                   []time.Duration
	callback                time.Duration
	total                   time.Duration
	retransmits             int
	err                     error
	phase                   string // where err happened
}

// ipxeOptions are what iPXE (undionly.kpxe) puts in its DHCP requests:
// user class "iPXE" (option 77), the PXE vendor class (60) and client
// architecture x86 BIOS (93); giaddr is the relay's.
func ipxeOptions(giaddr net.IP) []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE"))),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
		dhcpv4.WithRelay(giaddr), // giaddr, hops 1: as the rack's relay forwards it
	}
}

// boot does what an iPXE machine and its installer do: DHCP DISCOVER and
// REQUEST (as iPXE, relayed), GET the iPXE script the ACK names, GET the
// installer's files with the token the script carries, POST the install
// callback with facts.
func (m *machine) boot(ctx context.Context, base string) (t timing) {
	start := time.Now()
	defer func() { t.total = time.Since(start) }()
	fail := func(phase string, err error) timing {
		t.phase, t.err = phase, err
		return t
	}

	disc, err := dhcpv4.NewDiscovery(m.mac, ipxeOptions(m.relay.ip)...)
	if err != nil {
		return fail("dhcp", err)
	}
	offer, n, err := m.relay.exchange(disc, dhcpv4.MessageTypeOffer)
	t.retransmits += n
	t.discover = time.Since(start)
	if err != nil {
		return fail("dhcp", err)
	}
	if !offer.YourIPAddr.Equal(m.want) {
		return fail("dhcp", fmt.Errorf("offer of %s, want %s", offer.YourIPAddr, m.want))
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, ipxeOptions(m.relay.ip)...)
	if err != nil {
		return fail("dhcp", err)
	}
	t1 := time.Now()
	ack, n, err := m.relay.exchange(req, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)
	t.retransmits += n
	t.request = time.Since(t1)
	t.dhcp = time.Since(start)
	if err != nil {
		return fail("dhcp", err)
	}
	if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(m.want) {
		return fail("dhcp", fmt.Errorf("%s for %s, want an ACK for %s", ack.MessageType(), ack.YourIPAddr, m.want))
	}
	scriptURL := ack.BootFileName
	if want := base + "/ipxe/" + m.mac.String(); scriptURL != want {
		return fail("dhcp", fmt.Errorf("boot file %q, want %q", scriptURL, want))
	}

	hc := &http.Client{
		Timeout: time.Minute,
		Transport: &http.Transport{
			DialContext:       (&net.Dialer{LocalAddr: &net.TCPAddr{IP: m.src}}).DialContext,
			DisableKeepAlives: true, // iPXE, the installer and curl are separate clients
		},
	}
	t2 := time.Now()
	script, err := get(ctx, hc, scriptURL)
	t.script = time.Since(t2)
	if err != nil {
		return fail("script", err)
	}
	token, build, file := scriptArgs(script)
	if token == "" || build == "" || file == "" {
		return fail("script", fmt.Errorf("not an install script: %q", firstLines(script, 3)))
	}
	cfg := base + "/install/" + m.node + "/" + token + "/"
	for _, f := range []string{boot.FileNetworkConfig, file, boot.FileAgent} {
		t3 := time.Now()
		body, err := get(ctx, hc, cfg+f)
		t.files = append(t.files, time.Since(t3))
		if err != nil {
			return fail("files", err)
		}
		if len(body) == 0 {
			return fail("files", fmt.Errorf("%s is empty", f))
		}
	}

	body, err := json.Marshal(map[string]any{"token": token, "buildId": build, "facts": m.facts})
	if err != nil {
		return fail("callback", err)
	}
	t4 := time.Now()
	err = post(ctx, hc, base+"/api/v1/nodes/"+m.node+"/installed", body)
	t.callback = time.Since(t4)
	if err != nil {
		return fail("callback", err)
	}
	return t
}

// scriptArgs reads an install script's kernel line: the install token, the
// build id, and the installer's own file (user-data, ks.cfg or
// preseed.cfg), from ds=nocloud-net;s=URL, inst.ks=URL or url=URL.
func scriptArgs(script string) (token, build, file string) {
	for _, f := range strings.Fields(script) {
		switch {
		case strings.HasPrefix(f, "anneal.token="):
			token = strings.TrimPrefix(f, "anneal.token=")
		case strings.HasPrefix(f, "anneal.build="):
			build = strings.TrimPrefix(f, "anneal.build=")
		case strings.HasPrefix(f, "ds=nocloud-net;s="):
			file = boot.FileUserData
		case strings.HasPrefix(f, "inst.ks="):
			file = boot.FileKickstart
		case strings.HasPrefix(f, "url=") && strings.HasSuffix(f, "/"+boot.FilePreseed):
			file = boot.FilePreseed
		}
	}
	return token, build, file
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " | ")
}

func get(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", redact(url), resp.Status, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}

func post(ctx context.Context, hc *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// redact drops the token segment of an install URL from error messages.
func redact(url string) string {
	if i := strings.Index(url, "/install/"); i >= 0 {
		parts := strings.Split(url[i:], "/")
		if len(parts) > 3 {
			parts[3] = "TOKEN"
		}
		return url[:i] + strings.Join(parts, "/")
	}
	return url
}
