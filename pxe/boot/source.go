package boot

import (
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/anneal-dev/anneal/schema"
)

// SourceBinding says to which client addresses the netboot server answers
// a node's script, install files, install callback and agent reports.
//
// A node's requests come from its provisioning address: the address of
// its DHCP reservation (LeasesFromSite) while it netboots and installs,
// the same address configured statically on the installed system. A node
// behind a DHCP relay keeps it (the relay's giaddr only routes the DHCP
// exchange). So anyone else who can reach the netboot port (another node,
// a machine on the provisioning network, anything routed to it) is
// refused even with a stolen token.
type SourceBinding string

const (
	// BindNode, the default: a node is answered only from one of its
	// provisioning addresses in the site (IPv4 and IPv6). A node with no
	// address on a provisioning network is not bound (anneal does not know
	// where it comes from); its tokens, the once-only install files and
	// the agent's confirmation still hold.
	BindNode SourceBinding = "node"
	// BindLab is BindNode, except that a loopback client stands for any
	// node: `anneal lab` runs every virtual node on this machine. serve
	// --lab turns it on.
	BindLab SourceBinding = "lab"
	// BindOff answers a node from any address: for nodes behind NAT that
	// no trusted proxy identifies. Weaker: anyone who reaches the port and
	// learns a node's MAC gets its install script while it is armed.
	BindOff SourceBinding = "off"
)

// ParseSourceBinding reads a SourceBinding ("" is BindNode).
func ParseSourceBinding(s string) (SourceBinding, error) {
	switch b := SourceBinding(s); b {
	case "":
		return BindNode, nil
	case BindNode, BindLab, BindOff:
		return b, nil
	}
	return "", fmt.Errorf("source binding %q: want %s, %s or %s", s, BindNode, BindLab, BindOff)
}

// ParseTrustedProxies reads comma-separated addresses or prefixes
// (10.10.1.5, 10.10.1.0/28, fd00::1) of proxies whose X-Forwarded-For the
// netboot server believes.
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range list {
		for _, s := range strings.Split(item, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			if p, err := netip.ParsePrefix(s); err == nil {
				out = append(out, p.Masked())
				continue
			}
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("trusted proxy %q: not an address or prefix", s)
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out, nil
}

// clientAddr is the address a request comes from: its peer's, or, when
// the peer is a trusted proxy, the rightmost X-Forwarded-For address that
// is not itself a trusted proxy (the leftmost entries are whatever the
// client wrote). ok is false when no address can be read.
func (s *Server) clientAddr(r *http.Request) (netip.Addr, bool) {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	addr := peer.Addr().Unmap()
	if !s.trusted(addr) {
		return addr, true
	}
	var hops []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(h, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return netip.Addr{}, false
		}
		if a = a.Unmap(); !s.trusted(a) {
			return a, true
		}
	}
	return addr, true // only proxies: the request is the proxy's own
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// nodeSources are the node's addresses on the site's provisioning
// networks.
func nodeSources(site *schema.Site, node *schema.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range node.Addresses {
		if nw := site.Network(a.Network); nw == nil || !nw.Provisioning {
			continue
		}
		for _, ip := range []netip.Addr{a.IPv4, a.IPv6} {
			if ip.IsValid() {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// checkSource refuses (403) a request for node that does not come from
// one of the node's provisioning addresses. The caller logs the refusal,
// which names the client: a refused request is a possible hijack.
func (s *Server) checkSource(r *http.Request, site *schema.Site, node *schema.Node) error {
	if s.Binding == BindOff {
		return nil
	}
	want := nodeSources(site, node)
	if len(want) == 0 {
		return nil
	}
	got, ok := s.clientAddr(r)
	switch {
	case !ok:
		return refuse(http.StatusForbidden, "request is not from the node's provisioning address",
			fmt.Errorf("possible netboot hijack: client address unreadable (peer %s)", r.RemoteAddr))
	case slices.Contains(want, got):
		return nil
	case s.Binding == BindLab && got.IsLoopback():
		return nil
	}
	return refuse(http.StatusForbidden, "request is not from the node's provisioning address",
		fmt.Errorf("possible netboot hijack: client %s, %s is at %v", got, node.Name, want))
}
