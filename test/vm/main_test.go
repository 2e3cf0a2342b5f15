// Package vm holds the end-to-end tests that run QEMU virtual machines
// (TCG) through anneal serve: a machine's whole life with the image
// installer (TestLife), and the Debian installer as far as offline allows
// (TestDebianInstaller). They are a package of their own so that `go test
// ./...` runs them beside the other end-to-end tests (package test)
// rather than after them: each takes minutes of one core.
package vm

import (
	"fmt"
	"os"
	"testing"
)

// binDir holds the binaries the tests build, for the run.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "anneal-vm-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
