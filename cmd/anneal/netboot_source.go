package main

import (
	"fmt"
	"net/netip"

	"github.com/anneal-dev/anneal/pxe/boot"
	"github.com/spf13/cobra"
)

// netbootSourceFlags say to which client addresses the netboot server
// answers a node (pxe/boot SourceBinding; docs/security.md, Netboot).
type netbootSourceFlags struct {
	binding string
	proxies []string
}

func addNetbootSourceFlags(c *cobra.Command) *netbootSourceFlags {
	f := &netbootSourceFlags{}
	c.Flags().StringVar(&f.binding, "netboot-source-binding", string(boot.BindNode),
		"node: a node's iPXE script, install files, install callback and agent reports are answered only from its provisioning address in the site (its DHCP reservation); off: from any address (nodes behind NAT that no --netboot-trusted-proxy identifies; weaker); with --lab, loopback also stands for any node")
	c.Flags().StringSliceVar(&f.proxies, "netboot-trusted-proxy", nil,
		"an address or prefix (repeatable, or comma-separated) of a proxy in front of the netboot server whose X-Forwarded-For names the node; nobody else's header is believed")
	return f
}

// parse returns the binding and the trusted proxies; serve --lab (the
// lab's virtual nodes all come from loopback) turns node into lab.
func (f *netbootSourceFlags) parse(lab bool) (boot.SourceBinding, []netip.Prefix, error) {
	if f == nil {
		f = &netbootSourceFlags{}
	}
	b, err := boot.ParseSourceBinding(f.binding)
	if err != nil || b == boot.BindLab {
		return "", nil, fmt.Errorf("--netboot-source-binding %q: want %s or %s", f.binding, boot.BindNode, boot.BindOff)
	}
	if lab && b == boot.BindNode {
		b = boot.BindLab
	}
	proxies, err := boot.ParseTrustedProxies(f.proxies)
	if err != nil {
		return "", nil, fmt.Errorf("--netboot-trusted-proxy: %w", err)
	}
	return b, proxies, nil
}
