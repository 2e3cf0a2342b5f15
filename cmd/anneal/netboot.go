package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/anneal-dev/anneal/providers/bmc"
	"github.com/anneal-dev/anneal/providers/lab"
	"github.com/anneal-dev/anneal/providers/secret"
	"github.com/anneal-dev/anneal/pxe/boot"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/schema"
	"github.com/spf13/cobra"
)

// netbootFlags turn on the node layer of serve: the netboot HTTP server
// and rebuilds through the BMCs.
type netbootFlags struct {
	listen, url, keyRef, lab string
	installTimeout          time.Duration
}

func addNetbootFlags(c *cobra.Command) *netbootFlags {
	f := &netbootFlags{}
	c.Flags().StringVar(&f.listen, "netboot-listen", "", "serve netboot (iPXE scripts, install configs, install callbacks, agent reports) on this address and rebuild nodes through their BMCs; without it anneal manages DNS only")
	c.Flags().StringVar(&f.url, "netboot-url", "", "the netboot server's URL as nodes reach it (default http://NETBOOT-LISTEN)")
	c.Flags().StringVar(&f.keyRef, "netboot-key", "", "secret reference of the HMAC key for install and agent tokens (default: a random key kept beside the state file)")
	c.Flags().DurationVar(&f.installTimeout, "install-timeout", reconcile.DefaultInstallTimeout, "a rebuild fails when its install callback has not come this long after the power cycle")
	c.Flags().StringVar(&f.lab, "lab", "", "a running `anneal lab` directory: reach the site's BMCs through the lab (the site is unchanged)")
	return f
}

// labEndpoints is DIR/lab.json, written by `anneal lab` for serve --lab.
type labEndpoints struct {
	// Redfish is the loopback address of the lab's virtual BMCs; every
	// BMC address of the site is reached through it.
	Redfish string `json:"redfish"`
	// Control is the lab's control API (faults, virtual node states).
	Control string `json:"control"`
	PID     int    `json:"pid"`
}

func readLabEndpoints(dir string) (*labEndpoints, error) {
	data, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if err != nil {
		return nil, fmt.Errorf("lab: %w (is `anneal lab --dir %s` running?)", err, dir)
	}
	var e labEndpoints
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("lab %s: %w", dir, err)
	}
	return &e, nil
}

// start wires the netboot server and the rebuild layer into r. It returns
// a stop function, or nil when netboot is not enabled.
func (f *netbootFlags) start(ctx context.Context, r *reconcile.Reconciler, nodes reconcile.NodeStore, statePath string, log *slog.Logger) (func(context.Context), error) {
	if f.listen == "" {
		if f.lab != "" {
			return nil, errors.New("--lab needs --netboot-listen: the lab's nodes netboot from anneal")
		}
		return nil, nil
	}
	key, err := f.key(statePath)
	if err != nil {
		return nil, err
	}
	var httpClient *http.Client
	if f.lab != "" {
		e, err := readLabEndpoints(f.lab)
		if err != nil {
			return nil, err
		}
		httpClient = lab.RedirectClient(e.Redfish)
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return nil, fmt.Errorf("netboot listen: %w", err)
	}
	base := f.url
	if base == "" {
		base = "http://" + ln.Addr().String()
	}
	var current atomic.Pointer[schema.Site]
	wake := &reconcile.Waker{}
	exe, _ := os.Executable()
	srv := &boot.Server{Site: current.Load, Nodes: nodes, Key: key, BaseURL: base, Log: log.With("component", "netboot"),
		AgentBinary: exe, OnReport: func(rep reconcile.Report) { r.Report(context.WithoutCancel(ctx), rep) }}
	if err := srv.Check(); err != nil {
		ln.Close()
		return nil, fmt.Errorf("netboot: %w", err)
	}
	resolve := secret.Resolver{}.Resolve
	r.Rebuild = &reconcile.RebuildConfig{
		Nodes: nodes, Wake: wake, InstallTimeout: f.installTimeout,
		Publish: func(_ context.Context, s *schema.Site) error { current.Store(s); return nil },
		BMC: func(s *schema.Site, n *schema.Node) (reconcile.BMC, error) {
			b, err := bmc.FromNode(s, n, resolve)
			if err != nil || httpClient == nil {
				return b, err
			}
			cfg := b.Config()
			cfg.HTTPClient = httpClient
			return bmc.New(cfg)
		},
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("netboot server", "err", err)
		}
	}()
	log.Info("netboot", "listen", ln.Addr().String(), "url", base, "lab", f.lab)
	return func(ctx context.Context) { _ = hs.Shutdown(ctx) }, nil
}

// key resolves the token key, or keeps a random one beside the state.
func (f *netbootFlags) key(statePath string) ([]byte, error) {
	if f.keyRef != "" {
		k, err := secret.Resolver{}.Resolve(schema.SecretRef(f.keyRef))
		if err != nil {
			return nil, fmt.Errorf("--netboot-key: %w", err)
		}
		return []byte(k), nil
	}
	path := statePath + ".netboot-key"
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
