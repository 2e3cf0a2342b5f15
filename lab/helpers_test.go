package lab

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/providers/bmc"
	"github.com/anneal-dev/anneal/providers/secret"
	"github.com/anneal-dev/anneal/schema"
)

// Distinctive, so that a leak in a log or an error is found.
const (
	labPassword   = "lab-Pa55w0rd-4e8a"
	wrongPassword = "wrong-Pa55w0rd-77c1"
)

// resolver is the operator's grant of the example site's BMC password.
func resolver() func(schema.SecretRef, schema.SecretDest) (string, error) {
	g, err := secret.ParseGrants("grants.yaml", []byte("secrets:\n  bmc-password:\n    from: env:ANNEAL_BMC_PASSWORD\n    bmc: [10.0.0.0/8, \"fd00::/8\"]\n"))
	if err != nil {
		panic(err)
	}
	g.Env = func(name string) (string, bool) { return labPassword, name == "ANNEAL_BMC_PASSWORD" }
	return g.Resolve
}

func exampleSite(t testing.TB) *schema.Site {
	t.Helper()
	site, _, err := schema.LoadDir(context.Background(), "../examples/site-repo", schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return site
}

// logBuffer is a slog handler's output, safe for the fleet's goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.buf)
}

func (l *logBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = nil
}

func debugLogger(w *logBuffer) *slog.Logger {
	if os.Getenv("LAB_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startFleet builds and serves a fleet until the test ends.
func startFleet(t testing.TB, cfg Config) *Fleet {
	t.Helper()
	if cfg.Resolve == nil {
		cfg.Resolve = resolver()
	}
	if cfg.BootURL == "" {
		cfg.BootURL = "http://127.0.0.1:1" // nothing: PXE boots fail
	}
	if cfg.RetryFor == 0 {
		cfg.RetryFor = 100 * time.Millisecond
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

// labBMC is providers/bmc's BMC for a site node, over Redfish, through the
// lab's redirecting client.
func labBMC(t testing.TB, f *Fleet, site *schema.Site, name, password string, timeout time.Duration) *bmc.BMC {
	t.Helper()
	n := site.Node(name)
	if n == nil {
		t.Fatalf("no node %s in the site", name)
	}
	b, err := bmc.New(bmc.Config{Name: n.Name, Host: n.BMC.Address, Port: n.BMC.Port, Username: n.BMC.Username,
		Password: password, Kind: schema.BMCRedfish, Timeout: timeout, HTTPClient: RedirectClient(f.Addr())})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
