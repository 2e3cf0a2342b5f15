package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/internal/testenv"
)

const serviceUnit = "../../examples/deploy/anneal.service"

// TestDeployUnitFlags: every flag the example systemd unit gives anneal
// serve is one serve has, so the example does not go stale.
func TestDeployUnitFlags(t *testing.T) {
	data, err := os.ReadFile(serviceUnit)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	m := regexp.MustCompile(`(?m)^ExecStart=(\S+) serve (.*)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("no ExecStart=... serve in the unit")
	}
	flags := regexp.MustCompile(`--([a-z0-9-]+)`).FindAllStringSubmatch(m[2], -1)
	if len(flags) < 10 {
		t.Fatalf("only %d flags found in %q", len(flags), m[2])
	}
	serve := newServeCmd()
	for _, f := range flags {
		if serve.Flags().Lookup(f[1]) == nil {
			t.Errorf("the unit passes --%s, which anneal serve does not have", f[1])
		}
	}
}

// TestDeployUnitVerifies runs systemd-analyze verify on the example unit
// (its ExecStart pointed at an executable that exists here).
func TestDeployUnitVerifies(t *testing.T) {
	analyze := testenv.LookPath(t, "systemd-analyze", "systemd")
	data, err := os.ReadFile(serviceUnit)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "anneal")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, "anneal.service")
	if err := os.WriteFile(unit, []byte(strings.ReplaceAll(string(data), "/usr/local/bin/anneal", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), analyze, "verify", unit).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
