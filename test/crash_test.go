package test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/schema"
	"github.com/anneal-dev/anneal/test/servers"
)

// TestKillDuringApply kills anneal with SIGKILL in the middle of a large
// first apply, then shows that the next run reports the interrupted apply,
// completes it, and does not rewrite the zones that were already done.
//
// anneal talks to BIND through a proxy of the test's (holdProxy) that stops
// relaying, both ways, when anneal starts reading back the second zone it
// wrote: two zones are then complete, and the apply cannot finish, however
// fast the machine. The largest forward zone is left partly written (the
// proxy relays only its first UPDATE), and the reverse zones, which come
// after every forward zone, are not written at all. The kill follows the
// proxy's holding; the runs after it talk to BIND directly.
func TestKillDuringApply(t *testing.T) {
	if testing.Short() {
		t.Skip("a large apply")
	}
	dir := t.TempDir()
	if _, err := gen.Generate(dir, gen.Options{Nodes: 3000}); err != nil {
		t.Fatal(err)
	}
	// One target: the BIND this test starts.
	edit(t, dir, "dns.yaml", func(s string) string {
		if i := strings.Index(s, "  - name: pdns\n"); i > 0 {
			s = s[:i]
		}
		return s
	})
	site, _, err := schema.LoadDir(context.Background(), dir, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	desired, err := dns.Compile(site)
	if err != nil {
		t.Fatal(err)
	}
	zones := desired.Targets[0].Zones
	partial, size := "", 0 // the largest forward zone
	for _, z := range zones {
		if dz := desired.Zone(z); !dz.Reverse && len(dz.RRsets) > size {
			partial, size = z, len(dz.RRsets)
		}
	}
	b := servers.StartBIND(t, servers.BINDOptions{Zones: zones})
	proxy := startHoldProxy(t, b.Addr, zones, 2, partial)
	edit(t, dir, "dns.yaml", func(s string) string { return strings.Replace(s, "127.0.0.1:5301", proxy.Addr, 1) })
	grants := filepath.Join(t.TempDir(), "secrets.yaml")
	if err := os.WriteFile(grants, []byte(gen.Grants), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"ANNEAL_TSIG_SECRET=" + b.Secret, "ANNEAL_SECRETS=" + grants}
	state := filepath.Join(t.TempDir(), "state.db")

	// Start the apply and kill it once the proxy holds.
	cmd := exec.Command(annealBin, "apply", "--site", dir, "--state", state)
	cmd.Env = append(baseEnv(t.TempDir()), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-proxy.Held():
	case err := <-exited:
		t.Fatalf("anneal apply ended (%v) before it read back two zones it wrote:\n%s", err, out.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err = <-exited
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		// The proxy answers nothing once it holds: anneal can only have
		// ended on its own by giving up on it.
		t.Fatalf("anneal apply was not killed, it ended on its own (%v) while the proxy held:\n%s", err, out.String())
	}
	// Every UPDATE BIND was given is answered (applied or refused): the
	// zones are as the kill left them.
	proxy.Settle()
	proxy.Close()

	// Which zones were complete at the kill, and which were not.
	done := map[string]uint32{}
	incomplete := 0
	for _, z := range zones {
		rrs := b.AXFR(t, z)
		if slices.Equal(zoneLines(z, dns.RRsetsFromRRs(rrs)), zoneLines(z, desired.Zone(z).RRsets)) {
			done[z] = soaSerial(rrs)
		} else {
			incomplete++
		}
	}
	t.Logf("killed with %d of %d zones complete; anneal had read back %v", len(done), len(zones), proxy.ReadBack())
	for _, z := range proxy.ReadBack() {
		if _, ok := done[z]; !ok {
			t.Errorf("anneal was reading back zone %s at the kill, but BIND does not hold all of it", z)
		}
	}
	if incomplete == 0 {
		t.Fatal("every zone was complete at the kill: the proxy held too late to interrupt the apply")
	}
	// The stalled zone holds its first UPDATE's records and no more.
	n := len(dns.RRsetsFromRRs(b.AXFR(t, partial)))
	if n <= 2 || n >= size {
		t.Fatalf("zone %s holds %d RRsets at the kill, want some but not all of its %d (the proxy relayed one UPDATE)", partial, n, size)
	}
	t.Logf("zone %s partly written: %d of %d RRsets", partial, n, size)

	// From here on, anneal talks to BIND directly.
	edit(t, dir, "dns.yaml", func(s string) string { return strings.Replace(s, proxy.Addr, b.Addr, 1) })
	r := anneal(t, env, "plan", "--site", dir, "--state", state)
	mustExit(t, r, 2, "did not finish")
	mustExit(t, anneal(t, env, "apply", "--site", dir, "--state", state), 0, "0 zones failed")
	for _, z := range zones {
		rrs := b.AXFR(t, z)
		if got, want := zoneLines(z, dns.RRsetsFromRRs(rrs)), zoneLines(z, desired.Zone(z).RRsets); !slices.Equal(got, want) {
			t.Errorf("zone %s not converged after the restart:\n%s", z, lineDiff(want, got))
		}
		if s, ok := done[z]; ok && soaSerial(rrs) != s {
			t.Errorf("zone %s was complete before the kill but was written again (serial %d → %d)", z, s, soaSerial(rrs))
		}
	}
	r = anneal(t, env, "plan", "--site", dir, "--state", state)
	mustExit(t, r, 0, "No changes")
	if strings.Contains(r.stdout, "did not finish") {
		t.Fatalf("the journal still reports the interrupted apply:\n%s", r)
	}
}
