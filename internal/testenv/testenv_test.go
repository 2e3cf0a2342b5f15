package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// helperEnv makes the test binary run TestHelper's body: a test that needs
// a tool no machine has.
const helperEnv = "ANNEAL_TESTENV_HELPER"

func TestHelper(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		t.Skip("run by TestUnavailable")
	}
	LookPath(t, "anneal-no-such-tool", "anneal-no-such-package")
	t.Log("REACHED")
}

// TestUnavailable runs a test whose tool is missing, with and without CI:
// it fails under CI, is skipped elsewhere, and never goes on.
func TestUnavailable(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ci       string
		wantFail bool
		want     string
	}{
		{"", false, "--- SKIP: TestHelper"},
		{"1", true, "--- FAIL: TestHelper"},
		{"true", true, "--- FAIL: TestHelper"},
	} {
		cmd := exec.CommandContext(t.Context(), exe, "-test.run=^TestHelper$", "-test.v")
		var env []string
		for _, e := range os.Environ() {
			if !strings.HasPrefix(e, "CI=") {
				env = append(env, e)
			}
		}
		env = append(env, helperEnv+"=1")
		if tc.ci != "" {
			env = append(env, "CI="+tc.ci)
		}
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != tc.wantFail {
			t.Errorf("CI=%q: exit error %v, want failure %v\n%s", tc.ci, err, tc.wantFail, out)
		}
		if !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "anneal-no-such-package") || strings.Contains(string(out), "REACHED") {
			t.Errorf("CI=%q: want %q naming the package and stopping the test, got:\n%s", tc.ci, tc.want, out)
		}
	}
}
