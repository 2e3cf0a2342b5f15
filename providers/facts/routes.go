package facts

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// Route flags of /proc/net/route and /proc/net/ipv6_route (linux/route.h).
const (
	rtfUp     = 0x0001
	rtfReject = 0x0200
)

// resolvers are the nameserver lines of /etc/resolv.conf, in file order;
// none when the file does not exist.
func resolvers(root string) ([]string, error) {
	f, err := os.Open(filepath.Join(root, "etc/resolv.conf"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("facts: resolvers: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if _, err := netip.ParseAddr(fields[1]); err == nil {
				out = append(out, fields[1])
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("facts: /etc/resolv.conf: %w", err)
	}
	return out, nil
}

// defaultRoutes are the default routes of the main routing table: IPv4
// from /proc/net/route, then IPv6 from /proc/net/ipv6_route, each sorted by
// device and gateway. A default route without a gateway (a point-to-point
// device) has Gateway "". A missing table (no IPv6) gives no routes.
func defaultRoutes(root string) ([]node.FactRoute, error) {
	v4, err := readRoutes(root, "proc/net/route", parseRoute4)
	if err != nil {
		return nil, err
	}
	v6, err := readRoutes(root, "proc/net/ipv6_route", parseRoute6)
	if err != nil {
		return nil, err
	}
	return append(v4, v6...), nil
}

// readRoutes applies parse to every line of a route table and keeps the
// default routes it returns, sorted.
func readRoutes(root, rel string, parse func(fields []string) (node.FactRoute, bool, error)) ([]node.FactRoute, error) {
	f, err := os.Open(filepath.Join(root, rel))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("facts: routes: %w", err)
	}
	defer f.Close()
	var out []node.FactRoute
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		r, ok, err := parse(strings.Fields(sc.Text()))
		if err != nil {
			return nil, fmt.Errorf("facts: /%s line %d: %w", rel, n, err)
		}
		if ok {
			out = append(out, r)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("facts: /%s: %w", rel, err)
	}
	slices.SortFunc(out, func(a, b node.FactRoute) int {
		return cmp.Or(cmp.Compare(a.Device, b.Device), cmp.Compare(a.Gateway, b.Gateway))
	})
	return slices.Compact(out), nil
}

// parseRoute4 reads one line of /proc/net/route: "Iface Destination
// Gateway Flags RefCnt Use Metric Mask MTU Window IRTT", addresses as the
// kernel's 32-bit value in hex, in the host's byte order (little-endian on
// x86 and arm64). A default route has destination and mask 0.
func parseRoute4(f []string) (node.FactRoute, bool, error) {
	if len(f) < 8 || f[0] == "Iface" {
		return node.FactRoute{}, false, nil
	}
	flags, err := strconv.ParseUint(f[3], 16, 32)
	if err != nil {
		return node.FactRoute{}, false, fmt.Errorf("flags %q: %w", f[3], err)
	}
	if f[1] != "00000000" || f[7] != "00000000" || flags&rtfUp == 0 || flags&rtfReject != 0 {
		return node.FactRoute{}, false, nil
	}
	gw, err := strconv.ParseUint(f[2], 16, 32)
	if err != nil {
		return node.FactRoute{}, false, fmt.Errorf("gateway %q: %w", f[2], err)
	}
	r := node.FactRoute{Device: f[0]}
	if gw != 0 {
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], uint32(gw))
		r.Gateway = netip.AddrFrom4(b).String()
	}
	return r, true, nil
}

// parseRoute6 reads one line of /proc/net/ipv6_route: "destination
// dest_prefix_len source src_prefix_len next_hop metric refcnt use flags
// device", addresses as 32 hex digits in network order. A default route
// has destination ::/0; the kernel's unreachable ::/0 on lo is a reject
// route.
func parseRoute6(f []string) (node.FactRoute, bool, error) {
	if len(f) < 10 {
		return node.FactRoute{}, false, nil
	}
	flags, err := strconv.ParseUint(f[8], 16, 32)
	if err != nil {
		return node.FactRoute{}, false, fmt.Errorf("flags %q: %w", f[8], err)
	}
	if f[0] != strings.Repeat("0", 32) || f[1] != "00" || flags&rtfUp == 0 || flags&rtfReject != 0 {
		return node.FactRoute{}, false, nil
	}
	raw, err := hex.DecodeString(f[4])
	if err != nil || len(raw) != 16 {
		return node.FactRoute{}, false, fmt.Errorf("next hop %q is not an IPv6 address", f[4])
	}
	r := node.FactRoute{Device: f[9]}
	if gw := netip.AddrFrom16([16]byte(raw)); !gw.IsUnspecified() {
		r.Gateway = gw.String()
	}
	return r, true, nil
}
