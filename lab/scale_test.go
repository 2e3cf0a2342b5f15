package lab

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/providers/bmc"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/schema"
)

// TestThousandNodes power-cycles 1,000 virtual nodes with a one-time PXE
// boot, all at once, through providers/bmc (bmclib's Redfish path, a TLS
// connection per request) against one listener, and waits until every
// node has netbooted, installed and called back to the test boot server.
// Under the race detector it runs 300 nodes.
func TestThousandNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 nodes: not with -short")
	}
	nodes := 1000
	if raceEnabled {
		nodes = 300
	}
	dir := filepath.Join(t.TempDir(), "site")
	if _, err := gen.Generate(dir, gen.Options{Nodes: nodes, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	site, _, err := schema.LoadDir(t.Context(), dir, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	boot := newTestBootServer(t, site)
	f := startFleet(t, Config{Site: site, BootURL: boot.URL, StateDir: t.TempDir()})
	if len(f.Nodes()) != nodes {
		t.Fatalf("%d virtual nodes, want %d", len(f.Nodes()), nodes)
	}
	client := RedirectClient(f.Addr()) // one client: its TLS sessions are resumed
	bmcs := make([]*bmc.BMC, 0, nodes)
	for _, n := range site.Nodes {
		b, err := bmc.New(bmc.Config{Name: n.Name, Host: n.BMC.Address, Port: n.BMC.Port, Username: n.BMC.Username,
			Password: labPassword, Kind: schema.BMCRedfish, Timeout: time.Minute, HTTPClient: client})
		if err != nil {
			t.Fatal(err)
		}
		bmcs = append(bmcs, b)
	}

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, nodes)
	// As anneal's rollouts do, BMC calls are bounded: 300 TLS handshakes
	// at once under -race on a loaded 2-core machine outlast the
	// client's handshake timeout.
	sem := make(chan struct{}, 32)
	for _, b := range bmcs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := b.BootOnce(t.Context(), node.BootPXE); err != nil {
				errs <- err
				return
			}
			if err := b.SetPower(t.Context(), node.ActionCycle); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	bmcDone := time.Since(start)

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	for _, n := range f.Nodes() {
		if _, err := n.WaitFor(ctx, func(s NodeStatus) bool { return s.Phase == PhaseRunning }); err != nil {
			t.Fatal(err)
		}
	}
	installed := time.Since(start)
	callbacks := 0
	for _, n := range site.Nodes {
		_, _, cbs, _ := boot.snapshot(n.Name)
		callbacks += len(cbs)
	}
	if callbacks != nodes {
		t.Fatalf("%d install callbacks, want %d", callbacks, nodes)
	}
	t.Logf("%d nodes: BootOnce(pxe) + SetPower(cycle) through bmclib for all in %s; all netbooted, installed and called back in %s",
		nodes, bmcDone.Round(time.Millisecond), installed.Round(time.Millisecond))
}
