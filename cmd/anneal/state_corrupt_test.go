package main

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/reconcile/dns"
)

// corruptState writes a real state file with an ownership inventory and
// then corrupts it as a failing disk would: every leaf page's type.
func corruptState(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := bolt.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	owned := []dns.RRsetKey{{Name: "e1n01.example.net", Type: dns.TypeA}}
	if err := s.RecordOwned(context.Background(), "bind", "example.net", owned, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ps := int(binary.LittleEndian.Uint32(data[24:])) // the meta's page size
	n := 0
	for id := 2; (id+1)*ps <= len(data); id++ {
		if p := data[id*ps:]; binary.LittleEndian.Uint16(p[8:]) == 0x02 { // a leaf
			binary.LittleEndian.PutUint16(p[8:], 0x20)
			n++
		}
	}
	if n == 0 {
		t.Fatal("no leaf page to corrupt")
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCorruptStateExits: serve and plan on a corrupt --state exit 1 with
// the message that names the file and how to restore it, and never panic
// (they did: bbolt's cursor panicked on the page, on every start).
func TestCorruptStateExits(t *testing.T) {
	for _, name := range []string{"ANNEAL_TSIG_SECRET", "ANNEAL_PDNS_API_KEY", "ANNEAL_BMC_PASSWORD"} {
		t.Setenv(name, "c2VjcmV0LWZvci10ZXN0cw==")
	}
	secrets := "../../examples/lab-secrets.yaml"
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"serve", []string{"serve", "--site", example, "--secrets", secrets, "--listen", "127.0.0.1:0"}},
		{"plan", []string{"plan", "--site", example, "--secrets", secrets}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := corruptState(t)
			code, out, errs := runCLI(t, append(tc.args, "--state", path)...)
			if code != exitError {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, exitError, out, errs)
			}
			for _, want := range []string{"state file " + path + " is corrupt (page ", "`anneal backup`", "docs/operations.md", "move it aside"} {
				if !strings.Contains(errs, want) {
					t.Errorf("stderr lacks %q:\n%s", want, errs)
				}
			}
			if strings.Contains(out+errs, "panic") {
				t.Errorf("a panic:\n%s%s", out, errs)
			}
		})
	}
}
