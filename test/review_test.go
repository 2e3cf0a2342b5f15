package test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// git runs the git CLI in dir.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=anneal-test", "-c", "user.email=test@example.net", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestReviewPullRequest is the pull-request flow: a site repo, a change on
// top, and `anneal plan --base` showing what it rebuilds and why, with no
// credentials in the environment and no server to talk to.
func TestReviewPullRequest(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		missingTool(t, "git")
	}
	repo := copySite(t, "../examples/site-repo", nil)
	git(t, repo, "init", "-q", "-b", "main")
	git(t, repo, "add", ".")
	git(t, repo, "commit", "-q", "-m", "site")
	base := git(t, repo, "rev-parse", "HEAD")

	// The pull request: a patch set bump for e1n03, and VLAN 150 on w1n01's bond.
	edit(t, repo, "nodes/east-e1.yaml", func(s string) string {
		return strings.Replace(s, `patchSet: "2026-10"`, `patchSet: "2026-11"`, 1)
	})
	edit(t, repo, "nodes/west-w1.yaml", func(s string) string {
		return strings.Replace(s, "  - {name: bond0.140, link: bond0, id: 140}\n", "  - {name: bond0.140, link: bond0, id: 140}\n  - {name: bond0.150, link: bond0, id: 150}\n", 1)
	})

	// Working tree against the base commit.
	r := anneal(t, nil, "plan", "--site", repo, "--base", base)
	mustExit(t, r, 2, "e1n03", "REBUILD (patch-set-changed)", "patchSet.kernel: 5.15.0-124-generic → 5.15.0-126-generic",
		"w1n01", "network.vlans[bond0.150]: added VLAN 150 on bond0", "2 rebuilds")

	// Two commits, as CI sees them, in markdown for the PR comment.
	git(t, repo, "commit", "-q", "-am", "bump e1n03, VLAN 150 on w1n01")
	head := git(t, repo, "rev-parse", "HEAD")
	r = anneal(t, nil, "plan", "--repo", repo, "--base", base, "--head", head, "-o", "markdown")
	mustExit(t, r, 2, "### anneal review of `lab1`: 2 rebuilds", "| e1n03 | east/e1 | **rebuild** |", "Rollout:")

	// A revert reviews back to no change against the base.
	git(t, repo, "revert", "--no-edit", "HEAD")
	r = anneal(t, nil, "plan", "--repo", repo, "--base", base, "--head", "HEAD")
	mustExit(t, r, 0, "No changes to the desired state.")

	// A broken head is reported with its file and line, exit 1.
	edit(t, repo, "nodes/west-w1.yaml", func(s string) string { return strings.Replace(s, "hostIndex: 21", "hostIndex: 22", 1) })
	r = anneal(t, nil, "plan", "--site", repo, "--base", base)
	mustExit(t, r, 1, "duplicate-address")
	if os.Getenv("ANNEAL_TSIG_SECRET") != "" {
		t.Fatal("the test environment must not carry secrets")
	}
}
