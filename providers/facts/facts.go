// Package facts collects what `anneal agent` reports about the Linux machine
// it runs on (node.Facts): hostname, os-release, kernel release,
// network interfaces (kind, MAC, MTU, bond, VLAN, bridge membership and
// global addresses), DNS resolvers and default routes.
//
// Everything is read from files under a root directory, "/" on a node: the
// kernel's view in /proc and /sys, and /etc. Only the addresses come from
// elsewhere (an AddrSource: the kernel through package net on the running
// system), because no file lists them. No netlink library is used.
//
// The root is trusted: symbolic links under it are followed as the system
// follows them.
package facts

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// AddrSource gives the addresses of a network interface.
type AddrSource interface {
	// Addrs returns every address of the named interface with its prefix
	// length. Collect keeps the global ones.
	Addrs(ctx context.Context, iface string) ([]netip.Prefix, error)
}

// SystemAddrs is the AddrSource of the running system (package net, in the
// caller's network namespace).
type SystemAddrs struct{}

// Addrs implements AddrSource.
func (SystemAddrs) Addrs(_ context.Context, iface string) ([]netip.Prefix, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", iface, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", iface, err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ones, _ := ipn.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return out, nil
}

// Collector reads the facts of the machine whose file system is at Root.
type Collector struct {
	// Root is where the machine's /proc, /sys and /etc are: "/" on a node,
	// a fake tree in tests.
	Root string
	// Addrs gives each interface's addresses. Nil means SystemAddrs when
	// Root is "/" and no addresses otherwise.
	Addrs AddrSource
}

// Collect reads the facts of the machine whose file system is at root
// ("/" for the machine it runs on), with the system's addresses when root
// is "/" and none otherwise.
func Collect(ctx context.Context, root string) (node.Facts, error) {
	return Collector{Root: root}.Collect(ctx)
}

// Collect reads the facts. Hostname, kernel release and /sys/class/net are
// required; a missing os-release, resolv.conf or route table leaves its
// part empty. Interfaces are sorted by name.
func (c Collector) Collect(ctx context.Context) (node.Facts, error) {
	root := c.Root
	if root == "" {
		return node.Facts{}, errors.New("facts: no root directory")
	}
	live := filepath.Clean(root) == "/"
	addrs := c.Addrs
	if addrs == nil && live {
		addrs = SystemAddrs{}
	}
	var f node.Facts
	var err error
	if f.Hostname, err = hostname(root, live); err != nil {
		return node.Facts{}, err
	}
	if f.Kernel, err = readTrimmed(root, "proc/sys/kernel/osrelease"); err != nil {
		return node.Facts{}, fmt.Errorf("facts: kernel release: %w", err)
	}
	if f.OSRelease, err = osRelease(root); err != nil {
		return node.Facts{}, err
	}
	if err := ctx.Err(); err != nil {
		return node.Facts{}, err
	}
	if f.Interfaces, err = interfaces(ctx, root, addrs); err != nil {
		return node.Facts{}, err
	}
	if f.Resolvers, err = resolvers(root); err != nil {
		return node.Facts{}, err
	}
	if f.Routes, err = defaultRoutes(root); err != nil {
		return node.Facts{}, err
	}
	return f, nil
}

// hostname is the kernel's host name: os.Hostname on the running system,
// /proc/sys/kernel/hostname under another root.
func hostname(root string, live bool) (string, error) {
	if live {
		h, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("facts: hostname: %w", err)
		}
		return h, nil
	}
	h, err := readTrimmed(root, "proc/sys/kernel/hostname")
	if err != nil {
		return "", fmt.Errorf("facts: hostname: %w", err)
	}
	return h, nil
}

// readTrimmed reads root/rel without surrounding white space.
func readTrimmed(root, rel string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// readOptional is readTrimmed with a missing file read as "".
func readOptional(root, rel string) (string, error) {
	s, err := readTrimmed(root, rel)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return s, err
}

// globalAddrs keeps the addresses of global scope (not loopback,
// link-local, multicast or unspecified), IPv4 first, in CIDR notation.
func globalAddrs(ps []netip.Prefix) []string {
	ps = slices.DeleteFunc(slices.Clone(ps), func(p netip.Prefix) bool {
		return !p.IsValid() || !p.Addr().IsGlobalUnicast()
	})
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	ps = slices.Compact(ps)
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}
