package stack

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/netlimit"
	"github.com/anneal-dev/anneal/pxe/boot"
	"github.com/anneal-dev/anneal/pxe/dhcp"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
	"github.com/pin/tftp/v3"
)

const exampleSite = "../../examples/site-repo"

// memNodes is an in-memory node.Store.
type memNodes struct {
	mu   sync.Mutex
	recs map[string]*node.Record
}

func (m *memNodes) NodeRecords(context.Context) (map[string]*node.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]*node.Record{}
	for k, v := range m.recs {
		c := *v
		out[k] = &c
	}
	return out, nil
}

func (m *memNodes) NodeRecord(_ context.Context, name string) (*node.Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r := m.recs[name]; r != nil {
		c := *r
		return &c, nil
	}
	return nil, nil
}

func (m *memNodes) UpdateNode(_ context.Context, name string, fn func(*node.Record) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := &node.Record{Name: name}
	if old := m.recs[name]; old != nil {
		c := *old
		r = &c
	}
	if err := fn(r); err != nil {
		return err
	}
	if m.recs == nil {
		m.recs = map[string]*node.Record{}
	}
	m.recs[name] = r
	return nil
}

func loadExample(t *testing.T) *schema.Site {
	t.Helper()
	s, diags, err := schema.LoadDir(context.Background(), exampleSite, schema.LoadOptions{})
	if err != nil || s == nil {
		t.Fatalf("load %s: %v %v", exampleSite, err, diags)
	}
	return s
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func baseConfig() Config {
	return Config{Listen: "127.0.0.1:0", Key: bytes.Repeat([]byte("k"), 32), Nodes: &memNodes{}, Binding: boot.BindLab, Log: quiet()}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestStartPublishStop: the boot server answers nodes only once a site is
// published, the DHCP lookup follows the published site, and Stop closes
// the server.
func TestStartPublishStop(t *testing.T) {
	ctx := context.Background()
	s, err := Start(ctx, baseConfig())
	if err != nil {
		t.Fatal(err)
	}
	if want := "http://" + s.Addr().String(); s.URL != want || s.Boot.BaseURL != want {
		t.Fatalf("URL %q, boot server's %q, want %q", s.URL, s.Boot.BaseURL, want)
	}
	site := loadExample(t)
	leases := dhcp.LeasesFromSite(site)
	var mac string
	for m := range leases {
		mac = m
		break
	}
	if mac == "" {
		t.Fatal("the example site has no reservations")
	}
	hw, _ := net.ParseMAC(mac)
	if _, ok := s.Lookup(hw); ok {
		t.Fatal("a lease before any site was published")
	}
	if code, _ := get(t, s.URL+"/ipxe/"+mac); code != http.StatusServiceUnavailable {
		t.Fatalf("iPXE script before a site: %d, want 503", code)
	}
	if err := s.Publish(ctx, site); err != nil {
		t.Fatal(err)
	}
	if l, ok := s.Lookup(hw); !ok || !l.IP.Equal(leases[mac].IP) {
		t.Fatalf("lease of %s: %+v %v, want %s", mac, l, ok, leases[mac].IP)
	}
	code, body := get(t, s.URL+"/ipxe/"+mac)
	if code != http.StatusOK || !strings.HasPrefix(body, "#!ipxe") {
		t.Fatalf("iPXE script: %d %q", code, body)
	}
	s.Stop(ctx)
	if _, err := http.Get(s.URL + "/ipxe/" + mac); err == nil {
		t.Fatal("the netboot server still answers after Stop")
	}
}

// TestConfig: the URL given is the one scripts and DHCP use; the limits
// given are the server's.
func TestConfig(t *testing.T) {
	cfg := baseConfig()
	cfg.URL = "http://boot.example:8080"
	limits := netlimit.Limits{MaxBodyBytes: 10, MaxConns: 1}
	cfg.Limits = &limits
	s, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	if s.URL != cfg.URL || s.Boot.BaseURL != cfg.URL {
		t.Fatalf("URL %q / %q, want %q", s.URL, s.Boot.BaseURL, cfg.URL)
	}
	// A report body over the limit given is refused before pxe/boot reads it.
	resp, err := http.Post("http://"+s.Addr().String()+"/api/v1/nodes/e1n01/facts", "application/json", strings.NewReader(strings.Repeat("x", 100)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("body over the limit: %d, want 413", resp.StatusCode)
	}
}

// TestStartFails: a configuration the servers refuse fails Start with the
// server named, and leaves nothing listening.
func TestStartFails(t *testing.T) {
	ctx := context.Background()
	free := func(t *testing.T) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"short key", func(c *Config) { c.Key = []byte("short") }, "netboot: boot: Server.Key"},
		{"no nodes", func(c *Config) { c.Nodes = nil }, "netboot: boot: Server.Nodes is nil"},
		{"dhcp without a server address", func(c *Config) {
			c.DHCP = &DHCPConfig{Addr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}}
		}, "dhcp: dhcp: Config.ServerIP"},
		{"tftp root missing", func(c *Config) {
			c.TFTP = &TFTPConfig{Listen: "127.0.0.1:0", Root: filepath.Join(t.TempDir(), "none")}
		}, "tftp: tftp: open root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.Listen = free(t)
			tc.edit(&cfg)
			s, err := Start(ctx, cfg)
			if err == nil {
				s.Stop(ctx)
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				t.Fatalf("%s still taken after a failed Start: %v", cfg.Listen, err)
			}
			ln.Close()
		})
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := baseConfig()
	cfg.Listen = busy.Addr().String()
	if _, err := Start(ctx, cfg); err == nil || !strings.HasPrefix(err.Error(), "netboot listen: ") {
		t.Fatalf("address in use: %v", err)
	}
}

// TestTFTP: the TFTP server serves the iPXE binaries and nothing else of
// its root, until Stop.
func TestTFTP(t *testing.T) {
	root := t.TempDir()
	ipxe := []byte("iPXE binary")
	if err := os.WriteFile(filepath.Join(root, dhcp.DefaultBIOSBootFile), ipxe, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "secret.txt"), []byte("no"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig()
	cfg.TFTP = &TFTPConfig{Listen: "127.0.0.1:0", Root: root}
	s, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tftp.NewClient(s.TFTPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(time.Second)
	c.SetRetries(1)
	read := func(name string) ([]byte, error) {
		wt, err := c.Receive(name, "octet")
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		_, err = wt.WriteTo(&buf)
		return buf.Bytes(), err
	}
	if got, err := read(dhcp.DefaultBIOSBootFile); err != nil || !bytes.Equal(got, ipxe) {
		t.Fatalf("%s: %q %v", dhcp.DefaultBIOSBootFile, got, err)
	}
	if _, err := read("secret.txt"); err == nil {
		t.Fatal("a file not allow-listed was served")
	}
	s.Stop(context.Background())
	if _, err := read(dhcp.DefaultBIOSBootFile); err == nil {
		t.Fatal("TFTP still served after Stop")
	}
	if (&Stack{}).TFTPAddr() != nil {
		t.Fatal("TFTPAddr without TFTP")
	}
}

// TestDHCP: the DHCP server holds its address while the stack runs and
// lets it go at Stop.
func TestDHCP(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().(*net.UDPAddr)
	pc.Close()
	cfg := baseConfig()
	cfg.DHCP = &DHCPConfig{Mode: dhcp.ModeFull, Addr: addr, ServerIP: net.IPv4(10, 0, 0, 1)}
	s, err := Start(context.Background(), cfg)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			t.Skipf("NOT RUN: no permission for a DHCP socket: %v", err)
		}
		t.Fatal(err)
	}
	if pc, err := net.ListenPacket("udp4", addr.String()); err == nil {
		pc.Close()
		t.Fatalf("%s is free while the DHCP server runs", addr)
	}
	s.Stop(context.Background())
	// Stop closes the DHCP socket before it returns.
	pc, err = net.ListenPacket("udp4", addr.String())
	if err != nil {
		t.Fatalf("%s still taken after Stop: %v", addr, err)
	}
	pc.Close()
}

// TestKeyFile: a key is drawn once and kept (mode 0600); a short one is
// replaced.
func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db.netboot-key")
	k1, err := KeyFile(path)
	if err != nil || len(k1) != 32 {
		t.Fatalf("%d bytes, %v", len(k1), err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	k2, err := KeyFile(path)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatal("the key was not kept")
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if k3, err := KeyFile(path); err != nil || len(k3) != 32 || bytes.Equal(k3, k1) {
		t.Fatalf("short key not replaced: %d %v", len(k3), err)
	}
	if _, err := KeyFile(filepath.Join(t.TempDir(), "no", "dir", "key")); err == nil || !strings.HasPrefix(err.Error(), "netboot key: ") {
		t.Fatalf("unwritable: %v", err)
	}
}
