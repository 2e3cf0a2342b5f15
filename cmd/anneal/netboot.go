package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/lab"
	"github.com/anneal-dev/anneal/providers/bmc"
	"github.com/anneal-dev/anneal/providers/secret"
	"github.com/anneal-dev/anneal/pxe/boot"
	"github.com/anneal-dev/anneal/pxe/dhcp"
	"github.com/anneal-dev/anneal/pxe/stack"
	"github.com/anneal-dev/anneal/pxe/tftp"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/rollout"
	"github.com/anneal-dev/anneal/schema"
	"github.com/spf13/cobra"
)

// netbootFlags turn on the node layer of serve: the netboot HTTP server
// and rebuilds through the BMCs.
type netbootFlags struct {
	listen, url, keyRef, lab       string
	keyOnce                        *keyRead
	artifacts                      string
	artifactKeep                   time.Duration
	artifactMaxSize                int64
	artifactCacheMax               int64
	installTimeout, netbootTimeout time.Duration
	// DHCP and TFTP on the provisioning network (off unless listened on).
	dhcpListen, dhcpIface, dhcpMode, dhcpServerIP string
	tftpListen, tftpRoot                          string
	// source binds nodes' netboot requests to their addresses.
	source *netbootSourceFlags
	// http bounds the netboot HTTP server's clients (nil: the defaults).
	http *httpLimitFlags
}

func addNetbootFlags(c *cobra.Command) *netbootFlags {
	f := &netbootFlags{}
	c.Flags().StringVar(&f.listen, "netboot-listen", "", "serve netboot (iPXE scripts, install configs, install callbacks, agent reports) on this address and rebuild nodes through their BMCs; without it anneal manages DNS only")
	c.Flags().StringVar(&f.url, "netboot-url", "", "the netboot server's URL as nodes reach it (default http://NETBOOT-LISTEN)")
	c.Flags().StringVar(&f.keyRef, "netboot-key", "", "secret reference of the HMAC key for install and agent tokens (default: a random key kept beside the state file)")
	c.Flags().DurationVar(&f.installTimeout, "install-timeout", rollout.DefaultInstallTimeout, "a rebuild fails when its install callback has not come this long after the power cycle")
	c.Flags().DurationVar(&f.netbootTimeout, "netboot-timeout", rollout.DefaultNetbootTimeout, "a node that has not fetched its iPXE script this long after a power cycle is cycled again (at most 3 cycles)")
	c.Flags().StringVar(&f.artifacts, "artifact-cache", "", "where the netboot server keeps its verified copies of the images' kernels and initrds, which scripts fetch (default: beside the state file, STATE-artifacts); \"none\": scripts fetch the images' URLs directly, unverified")
	c.Flags().DurationVar(&f.artifactKeep, "artifact-keep", 7*24*time.Hour, "an artifact copy the site no longer declares is removed once it has not been served this long (checked hourly)")
	c.Flags().Int64Var(&f.artifactMaxSize, "artifact-max-size", boot.DefaultArtifactMaxSize, "the most bytes one artifact download may bring; an image's declared size, when it gives one, is the bound (and may not be over this): a longer download is cut off and nothing is kept")
	c.Flags().Int64Var(&f.artifactCacheMax, "artifact-cache-max", boot.DefaultArtifactCacheMax, "the most bytes the artifact cache may hold: a download that could take it over (its declared size, else --artifact-max-size) is not started")
	c.Flags().StringVar(&f.lab, "lab", "", "the directory of a running anneal lab (its --dir): reach the site's BMCs through the lab (the site is unchanged)")
	c.Flags().StringVar(&f.dhcpListen, "dhcp-listen", "", "serve DHCPv4 for the provisioning network on this address (0.0.0.0:67): the site's reservations and the boot file for each firmware")
	c.Flags().StringVar(&f.dhcpIface, "dhcp-interface", "", "bind the DHCP server to this interface")
	c.Flags().StringVar(&f.dhcpMode, "dhcp-mode", string(dhcp.ModeFull), "full (addresses and boot options) or proxy (boot options only, beside another DHCP server)")
	c.Flags().StringVar(&f.dhcpServerIP, "dhcp-server-ip", "", "this server's IPv4 address on the provisioning network (server identifier, next-server, TFTP server)")
	c.Flags().StringVar(&f.tftpListen, "tftp-listen", "", "serve the iPXE binaries by TFTP on this address (:69)")
	c.Flags().StringVar(&f.tftpRoot, "tftp-root", tftp.DefaultRoot, "the directory of the iPXE binaries (undionly.kpxe, ipxe.efi)")
	f.source = addNetbootSourceFlags(c)
	return f
}

// start wires the netboot stack (pxe/stack) and the rebuild layer into r.
// It returns a stop function, or nil when netboot is not enabled.
// resolve sends BMC passwords: the operator's grants.
func (f *netbootFlags) start(ctx context.Context, r *reconcile.Reconciler, nodes node.Store, statePath string, resolve func(schema.SecretRef, schema.SecretDest) (string, error), log *slog.Logger) (func(context.Context), error) {
	if f.listen == "" {
		if f.lab != "" || f.dhcpListen != "" || f.tftpListen != "" {
			return nil, errors.New("--lab, --dhcp-listen and --tftp-listen need --netboot-listen: nodes netboot from anneal's HTTP server")
		}
		return nil, nil
	}
	key, keyKept, err := f.key(statePath)
	if err != nil {
		return nil, err
	}
	var httpClient *http.Client
	if f.lab != "" {
		e, err := lab.ReadEndpoints(f.lab)
		if err != nil {
			return nil, err
		}
		httpClient = lab.RedirectClient(e.Redfish)
	}
	exe, _ := os.Executable()
	if err := boot.CheckDeployBinary(exe, ""); err != nil {
		log.Warn("installer image cannot netboot from this daemon: its binary is the deploy environment's /init", "err", err)
	}
	artifacts := f.artifacts
	switch artifacts {
	case "none":
		artifacts = ""
	case "":
		// Per state file: two daemons (two sites) never prune each other's.
		artifacts = strings.TrimSuffix(statePath, filepath.Ext(statePath)) + "-artifacts"
	}
	cfg := stack.Config{Listen: f.listen, URL: f.url, Key: key, Nodes: nodes, Log: log,
		OnReport:    func(rep node.Report) { r.Report(context.WithoutCancel(ctx), rep) },
		AgentBinary: exe, ArtifactDir: artifacts, ArtifactKeep: f.artifactKeep, ArtifactMaxSize: f.artifactMaxSize, ArtifactCacheMax: f.artifactCacheMax}
	if cfg.Binding, cfg.TrustedProxies, err = f.source.parse(f.lab != ""); err != nil {
		return nil, err
	}
	if f.http != nil {
		limits := f.http.netbootLimits(f.lab != "")
		cfg.Limits = &limits
	}
	if f.dhcpListen != "" {
		if cfg.DHCP, err = f.dhcpConfig(); err != nil {
			return nil, err
		}
	}
	if f.tftpListen != "" {
		// Only the boot files: allow-listed, Debian's ipxe.efi symlink to
		// /boot is served too.
		cfg.TFTP = &stack.TFTPConfig{Listen: f.tftpListen, Root: f.tftpRoot}
	}
	st, err := stack.Start(ctx, cfg)
	if err != nil {
		return nil, err
	}
	r.Rebuild = &reconcile.RebuildConfig{
		Nodes: nodes, Wake: &rollout.Waker{}, InstallTimeout: f.installTimeout, NetbootTimeout: f.netbootTimeout, KeyKept: keyKept,
		Publish: st.Publish, AgentSetup: st.Boot.AgentSetup,
		BMC: func(a node.BMCAccess) (node.BMC, error) {
			b, err := bmc.FromAccess(a, resolve)
			if err != nil || httpClient == nil {
				return b, err
			}
			cfg := b.Config()
			cfg.HTTPClient = httpClient
			return bmc.New(cfg)
		},
	}
	log.Info("netboot", "listen", st.Addr().String(), "url", st.URL, "lab", f.lab)
	return st.Stop, nil
}

// dhcpConfig is the provisioning network's DHCP server: iPXE clients get
// their per-MAC script URL on the netboot server.
func (f *netbootFlags) dhcpConfig() (*stack.DHCPConfig, error) {
	addr, err := net.ResolveUDPAddr("udp4", f.dhcpListen)
	if err != nil {
		return nil, fmt.Errorf("--dhcp-listen: %w", err)
	}
	ip := net.ParseIP(f.dhcpServerIP).To4()
	if ip == nil {
		return nil, fmt.Errorf("--dhcp-listen needs --dhcp-server-ip, this server's IPv4 address on the provisioning network (got %q)", f.dhcpServerIP)
	}
	return &stack.DHCPConfig{Mode: dhcp.Mode(f.dhcpMode), Interface: f.dhcpIface, Addr: addr, ServerIP: ip}, nil
}

// keyRead is the key as first read, and whether it predated the read.
type keyRead struct {
	key  []byte
	kept bool
}

// key resolves the token key, or keeps a random one beside the state;
// kept says it predates this process (the operator's, or a file that
// existed).
func (f *netbootFlags) key(statePath string) (key []byte, kept bool, err error) {
	if f.keyOnce != nil { // serve reads it before the stack starts
		return f.keyOnce.key, f.keyOnce.kept, nil
	}
	defer func() {
		if err == nil {
			f.keyOnce = &keyRead{key: key, kept: kept}
		}
	}()
	if f.keyRef != "" {
		k, err := secret.Resolver{}.Resolve(f.keyRef)
		if err != nil {
			return nil, false, fmt.Errorf("--netboot-key: %w", err)
		}
		return []byte(k), true, nil
	}
	path := statePath + ".netboot-key"
	before, readErr := os.ReadFile(path)
	key, err = stack.KeyFile(path)
	if err != nil {
		return nil, false, err
	}
	return key, readErr == nil && bytes.Equal(before, key), nil
}
