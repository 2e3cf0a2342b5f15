// Package testenv is the project's policy for tests that need something
// from the machine (a tool, a server, a privilege): under CI, where .ci/run
// has installed every package the tests use, a test that cannot run fails;
// elsewhere it is skipped, loudly. It imports only the standard library, so
// any package's tests may use it.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// CI reports whether the tests run under CI: the CI environment variable
// is set (to anything).
func CI() bool { return os.Getenv("CI") != "" }

// Unavailable stops a test that needs something this machine lacks: it
// fails under CI (where .ci/run must have installed everything) and is
// skipped, loudly, elsewhere. why says what is missing and how to get it.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if CI() {
		t.Fatal("CANNOT RUN under CI: " + why)
	}
	t.Skip("NOT RUN (set CI to make this fail): " + why)
}

// LookPath returns the path of the executable tool, or stops the test with
// Unavailable, naming pkg, the Debian package that provides it (which must
// be in .ci/run's PACKAGES).
func LookPath(t testing.TB, tool, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		Unavailable(t, fmt.Sprintf("%s is not installed (apt package %s, in .ci/run's PACKAGES): %v", tool, pkg, err))
	}
	return p
}
