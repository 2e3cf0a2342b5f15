package source

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/reconcile"
)

// TestBranchResolve: what git accepts resolves to the full commit id,
// after a fetch (a commit pushed since resolves); what the repository
// does not have is reconcile.ErrUnknownRevision.
func TestBranchResolve(t *testing.T) {
	ctx := context.Background()
	work := newWorkRepo(t, threeCommits...)
	url, _ := newRemote(t, work)
	b := &Branch{Repo: open(t, Options{URL: url, CacheDir: t.TempDir()})}
	tip := gitc(t, work, "rev-parse", "main")
	first := gitc(t, work, "rev-parse", "main~2")
	gitc(t, work, "tag", "v1", first)
	gitc(t, work, "push", "-q", "origin", "v1")

	writeFile(t, work, "nodes/c.yaml", "c\n")
	gitc(t, work, "add", "-A")
	gitc(t, work, "commit", "-q", "-m", "pushed after the clone")
	gitc(t, work, "push", "-q", "origin", "main")
	pushed := gitc(t, work, "rev-parse", "HEAD")

	tests := []struct {
		rev, want string
	}{
		{pushed[:7], pushed}, // pushed after the clone: the fetch finds it
		{pushed, pushed},
		{"main", pushed},
		{"HEAD~1", tip},
		{"v1", first},
		{tip[:10], tip},
	}
	for _, tc := range tests {
		got, err := b.Resolve(ctx, tc.rev)
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tc.rev, got, err, tc.want)
		}
	}
	for _, rev := range []string{"deadbeef", "no-such-branch", "main~99"} {
		if got, err := b.Resolve(ctx, rev); !errors.Is(err, reconcile.ErrUnknownRevision) {
			t.Errorf("Resolve(%q) = %q, %v; want ErrUnknownRevision", rev, got, err)
		}
	}
}

func TestDirResolve(t *testing.T) {
	ctx := context.Background()
	d := Dir{Path: newWorkRepo(t, threeCommits...)}
	latest, err := d.Latest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	digest := strings.TrimPrefix(latest.ID, "dir:")
	for _, rev := range []string{latest.ID, digest, digest[:8], "dir:" + digest[:8]} {
		if got, err := d.Resolve(ctx, rev); err != nil || got != latest.ID {
			t.Errorf("Resolve(%q) = %q, %v", rev, got, err)
		}
	}
	for _, rev := range []string{digest[:7], "main", "0000000000000000"} {
		if _, err := d.Resolve(ctx, rev); !errors.Is(err, reconcile.ErrUnknownRevision) {
			t.Errorf("Resolve(%q): %v; want ErrUnknownRevision", rev, err)
		}
	}
}
