package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/schema"
	"github.com/anneal-dev/anneal/test/servers"
)

// TestKillDuringApply kills anneal with SIGKILL in the middle of a large
// first apply, then shows that the next run reports the interrupted apply,
// completes it, and does not rewrite the zones that were already done.
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
	desired, err := reconcile.CompileDNS(site)
	if err != nil {
		t.Fatal(err)
	}
	zones := desired.Targets[0].Zones
	b := servers.StartBIND(t, servers.BINDOptions{Zones: zones})
	edit(t, dir, "dns.yaml", func(s string) string { return strings.Replace(s, "127.0.0.1:5301", b.Addr, 1) })
	grants := filepath.Join(t.TempDir(), "secrets.yaml")
	if err := os.WriteFile(grants, []byte(gen.Grants), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"ANNEAL_TSIG_SECRET=" + b.Secret, "ANNEAL_SECRETS=" + grants}
	state := filepath.Join(t.TempDir(), "state.db")

	serials := func() map[string]uint32 {
		out := map[string]uint32{}
		for _, z := range zones {
			out[z] = soaSerial(b.AXFR(t, z)[:1])
		}
		return out
	}
	start := serials()

	// Start the apply and kill it once some zones have been written to.
	cmd := exec.Command(annealBin, "apply", "--site", dir, "--state", state)
	cmd.Env = append(baseEnv(t.TempDir()), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		moved := 0
		for z, s := range serials() {
			if s != start[z] {
				moved++
			}
		}
		if moved >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	// Which zones were complete at the kill, and which were not.
	done := map[string]uint32{}
	incomplete := 0
	for _, z := range zones {
		rrs := b.AXFR(t, z)
		if slices.Equal(zoneLines(z, reconcile.RRsetsFromRRs(rrs)), zoneLines(z, desired.Zone(z).RRsets)) {
			done[z] = soaSerial(rrs)
		} else {
			incomplete++
		}
	}
	t.Logf("killed with %d of %d zones complete", len(done), len(zones))
	if incomplete == 0 {
		t.Skip("the apply finished before the kill; nothing to resume (machine too fast for this size)")
	}

	r := anneal(t, env, "plan", "--site", dir, "--state", state)
	mustExit(t, r, 2, "did not finish")
	mustExit(t, anneal(t, env, "apply", "--site", dir, "--state", state), 0, "0 zones failed")
	for _, z := range zones {
		rrs := b.AXFR(t, z)
		if got, want := zoneLines(z, reconcile.RRsetsFromRRs(rrs)), zoneLines(z, desired.Zone(z).RRsets); !slices.Equal(got, want) {
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
