// Package stack assembles anneal's netboot stack from a Config: the
// pxe/boot HTTP server (iPXE scripts, install files, install callbacks,
// agent reports, verified artifact copies) behind netlimit's bounds, and,
// when configured, the provisioning network's DHCP server (pxe/dhcp),
// whose iPXE clients are sent to the boot server's per-MAC scripts, and
// the TFTP server of the iPXE binaries (pxe/tftp). Publish hands all of
// them the site to serve: it is the rebuild layer's netboot profile step
// (reconcile.RebuildConfig.Publish). cmd/anneal fills the Config from its
// flags and wires the rest of the rebuild layer (BMCs, the reconciler).
package stack

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/anneal-dev/anneal/netlimit"
	"github.com/anneal-dev/anneal/pxe/boot"
	"github.com/anneal-dev/anneal/pxe/dhcp"
	"github.com/anneal-dev/anneal/pxe/tftp"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// MaxBody bounds the netboot server's request bodies (install callbacks
// and agent reports, which pxe/boot bounds at 1 MiB itself).
const MaxBody = 2 << 20

// ShutdownTimeout bounds how long Stop waits for the netboot server's
// requests in flight before closing it.
const ShutdownTimeout = 10 * time.Second

// ArtifactPruneEvery is how often artifact copies no longer served are
// looked for.
const ArtifactPruneEvery = time.Hour

// TFTPFiles are the only files the TFTP server serves: the iPXE binaries
// (Debian's ipxe.efi, a symlink to /boot, included).
var TFTPFiles = []string{dhcp.DefaultBIOSBootFile, dhcp.DefaultUEFIBootFile, "snponly.efi"}

// Config is what Start builds.
type Config struct {
	// Listen is the netboot HTTP server's TCP address (required).
	Listen string
	// URL is the server's URL as nodes reach it; default http:// and the
	// address listened on.
	URL string
	// Key signs install and agent tokens (at least boot.MinKeyLen bytes).
	Key []byte
	// Nodes are the node records the server reads and updates.
	Nodes node.Store
	// OnReport is told of every agent report stored (the reconciler's
	// Report).
	OnReport func(node.Report)
	// AgentBinary is the anneal binary served to installers ("": none).
	AgentBinary string
	// ArtifactDir keeps the verified copies of kernels and initrds (""
	// off: scripts fetch the images' URLs); a copy not served for
	// ArtifactKeep is pruned (checked every ArtifactPruneEvery).
	ArtifactDir      string
	ArtifactKeep     time.Duration
	ArtifactMaxSize  int64
	ArtifactCacheMax int64
	// Binding and TrustedProxies say which client addresses act for a
	// node (boot.Server).
	Binding        boot.SourceBinding
	TrustedProxies []netip.Prefix
	// Limits bound the HTTP server's clients; nil: netlimit's defaults
	// with bodies bounded by MaxBody.
	Limits *netlimit.Limits
	// DHCP, when set, serves DHCP on the provisioning network.
	DHCP *DHCPConfig
	// TFTP, when set, serves TFTPFiles.
	TFTP *TFTPConfig
	// Log gets the servers' logs (default slog.Default()).
	Log *slog.Logger
}

// DHCPConfig is the DHCP server's part of Config.
type DHCPConfig struct {
	Mode      dhcp.Mode
	Interface string
	Addr      *net.UDPAddr
	// ServerIP is this server's IPv4 address on the provisioning network.
	ServerIP net.IP
}

// TFTPConfig is the TFTP server's part of Config.
type TFTPConfig struct {
	Listen string
	Root   string
}

// Stack is a running netboot stack.
type Stack struct {
	// Boot is the netboot HTTP handler.
	Boot *boot.Server
	// URL is the netboot server's URL as nodes reach it.
	URL string

	addr    net.Addr
	ln      net.Listener
	http    *http.Server
	current atomic.Pointer[schema.Site]
	leases  atomic.Pointer[map[string]dhcp.Lease]
	tftp    *tftp.Server
	stops   []func()
}

// Start listens and serves: the netboot HTTP server, then DHCP and TFTP
// when configured, and the artifact pruning. Nothing is served to a node
// before the first Publish. ctx bounds the DHCP and TFTP servers and the
// pruning; Stop stops everything.
func Start(ctx context.Context, cfg Config) (*Stack, error) {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("netboot listen: %w", err)
	}
	s := &Stack{URL: cfg.URL, addr: ln.Addr()}
	if s.URL == "" {
		s.URL = "http://" + ln.Addr().String()
	}
	s.Boot = &boot.Server{Site: s.current.Load, Nodes: cfg.Nodes, Key: cfg.Key, BaseURL: s.URL, Log: log.With("component", "netboot"),
		AgentBinary: cfg.AgentBinary, ArtifactDir: cfg.ArtifactDir, ArtifactMaxSize: cfg.ArtifactMaxSize, ArtifactCacheMax: cfg.ArtifactCacheMax,
		OnReport: cfg.OnReport, Binding: cfg.Binding, TrustedProxies: cfg.TrustedProxies}
	if err := s.Boot.Check(); err != nil {
		ln.Close()
		return nil, fmt.Errorf("netboot: %w", err)
	}
	limits := netlimit.Limits{MaxBodyBytes: MaxBody}
	if cfg.Limits != nil {
		limits = *cfg.Limits
	}
	// A progress deadline, not a fixed one: kernels, initrds and disk
	// images are long downloads; a reader that stalls is cut.
	s.http = netlimit.NewServer(s.Boot, limits)
	s.ln = netlimit.NewListener(ln, limits, log.With("server", "netboot"))
	go func() {
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("netboot server", "err", err)
		}
	}()
	if d := cfg.DHCP; d != nil {
		srv, err := dhcp.New(dhcp.Config{Mode: d.Mode, Interface: d.Interface, Addr: d.Addr, ServerIP: d.ServerIP, Lookup: s.Lookup,
			IPXEScriptURL: func(mac net.HardwareAddr) string { return s.URL + "/ipxe/" + mac.String() },
			Log:           log.With("component", "dhcp")})
		if err != nil {
			s.Stop(ctx)
			return nil, fmt.Errorf("dhcp: %w", err)
		}
		go func() {
			if err := srv.Serve(ctx); err != nil && ctx.Err() == nil {
				log.Error("dhcp server", "err", err)
			}
		}()
		s.stops = append(s.stops, func() { _ = srv.Close() })
	}
	if s.Boot.ArtifactDir != "" {
		pctx, cancel := context.WithCancel(ctx)
		s.stops = append(s.stops, cancel)
		go func() {
			tick := time.NewTicker(ArtifactPruneEvery)
			defer tick.Stop()
			for {
				select {
				case <-pctx.Done():
					return
				case <-tick.C:
				}
				if _, err := s.Boot.PruneArtifacts(cfg.ArtifactKeep); err != nil {
					log.Warn("artifact copies: prune", "err", err)
				}
			}
		}()
	}
	if t := cfg.TFTP; t != nil {
		srv, err := tftp.New(tftp.Config{Listen: t.Listen, Root: t.Root, Log: log.With("component", "tftp"), Files: TFTPFiles})
		if err != nil {
			s.Stop(ctx)
			return nil, fmt.Errorf("tftp: %w", err)
		}
		s.tftp = srv
		go func() {
			if err := srv.Serve(ctx); err != nil && ctx.Err() == nil {
				log.Error("tftp server", "err", err)
			}
		}()
		s.stops = append(s.stops, func() { _ = srv.Close() })
	}
	return s, nil
}

// Addr is the netboot HTTP server's address.
func (s *Stack) Addr() net.Addr { return s.addr }

// TFTPAddr is the TFTP server's address, or nil without one.
func (s *Stack) TFTPAddr() net.Addr {
	if s.tftp == nil {
		return nil
	}
	return s.tftp.Addr()
}

// Publish hands the servers the site to serve: the boot server's scripts
// and installs, the DHCP reservations (reconcile.RebuildConfig.Publish).
func (s *Stack) Publish(_ context.Context, site *schema.Site) error {
	l := dhcp.LeasesFromSite(site)
	s.leases.Store(&l)
	s.current.Store(site)
	return nil
}

// Lookup is the DHCP reservation of mac in the site last published.
func (s *Stack) Lookup(mac net.HardwareAddr) (dhcp.Lease, bool) {
	l := s.leases.Load()
	if l == nil {
		return dhcp.Lease{}, false // nothing published yet
	}
	return dhcp.LookupFrom(*l)(mac)
}

// Stop stops the servers: boot and install downloads in flight get
// ShutdownTimeout to finish, then they are cut.
func (s *Stack) Stop(ctx context.Context) {
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	if err := s.http.Shutdown(shutdown); err != nil {
		_ = s.http.Close()
	}
	// Serve closes it too, but may not have started yet: the address is
	// free once Stop returns.
	_ = s.ln.Close()
	for _, stop := range s.stops {
		stop()
	}
}

// KeyFile returns the token key kept in path, drawing a random 32-byte
// one and writing it there (mode 0600) when path holds none (or a key
// shorter than 32 bytes).
func KeyFile(path string) ([]byte, error) {
	if k, err := os.ReadFile(path); err == nil && len(k) >= 32 {
		return k, nil
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, k, 0o600); err != nil {
		return nil, fmt.Errorf("netboot key: %w", err)
	}
	return k, nil
}
