package source

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/schema"
)

// gitc runs the git CLI in dir, isolated from the user's and system's
// configuration, and returns its trimmed output.
func gitc(tb testing.TB, dir string, args ...string) string {
	tb.Helper()
	full := append([]string{"-c", "user.name=t", "-c", "user.email=t@example.net", "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", "-c", "init.defaultBranch=main", "-c", "protocol.file.allow=always"}, args...)
	cmd := exec.Command("git", full...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func writeFile(tb testing.TB, dir, name, content string) {
	tb.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// newWorkRepo makes a work tree on branch main with one commit per entry of
// commits (each a set of files to write) and returns its path.
func newWorkRepo(tb testing.TB, commits ...map[string]string) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "work")
	if err := os.Mkdir(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	gitc(tb, dir, "init", "-q", "-b", "main")
	for i, files := range commits {
		for name, content := range files {
			writeFile(tb, dir, name, content)
		}
		gitc(tb, dir, "add", "-A")
		gitc(tb, dir, "commit", "-q", "--allow-empty", "-m", "commit "+string(rune('A'+i))+"\n\nbody of the message")
	}
	return dir
}

// newRemote makes a bare repository cloned from work, sets it as work's
// origin, and returns its file:// URL and path.
func newRemote(tb testing.TB, work string) (string, string) {
	tb.Helper()
	bare := filepath.Join(tb.TempDir(), "origin.git")
	gitc(tb, work, "clone", "-q", "--bare", work, bare)
	gitc(tb, work, "remote", "add", "origin", bare)
	return "file://" + filepath.ToSlash(bare), bare
}

func open(tb testing.TB, opts Options) *Repo {
	tb.Helper()
	r, err := Open(context.Background(), opts)
	if err != nil {
		tb.Fatalf("Open(%s): %v", opts.URL, err)
	}
	tb.Cleanup(func() { _ = r.Close() })
	return r
}

func mustResolve(tb testing.TB, r *Repo, rev string) plumbing.Hash {
	tb.Helper()
	h, err := r.Resolve(rev)
	if err != nil {
		tb.Fatalf("Resolve(%q): %v", rev, err)
	}
	return h
}

var threeCommits = []map[string]string{
	{"site.yaml": "one\n", "nodes/a.yaml": "a\n"},
	{"site.yaml": "two\n", "nodes/b.yaml": "b\n"},
	{"site.yaml": "three\n"},
}

// TestOpen opens the same history as a work tree, a bare repository (both
// in place) and a file:// URL (cloned into the cache), and checks each
// reads the branch tip.
func TestOpen(t *testing.T) {
	work := newWorkRepo(t, threeCommits...)
	url, bare := newRemote(t, work)
	tip := gitc(t, work, "rev-parse", "main")
	cache := t.TempDir()
	tests := []struct {
		name      string
		url       string
		wantLocal bool
	}{
		{"work tree path", work, true},
		{"relative work tree path", mustRel(t, work), true},
		{"bare repo path", bare, true},
		{"file URL", url, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := open(t, Options{URL: tt.url, CacheDir: cache})
			if r.Local() != tt.wantLocal {
				t.Errorf("Local() = %v, want %v", r.Local(), tt.wantLocal)
			}
			if r.Branch() != "main" {
				t.Errorf("Branch() = %q, want main", r.Branch())
			}
			if err := r.Fetch(context.Background()); err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if got := mustResolve(t, r, ""); got.String() != tip {
				t.Errorf("Resolve(\"\") = %s, want %s", got, tip)
			}
			if !tt.wantLocal && !strings.HasPrefix(r.Dir(), cache) {
				t.Errorf("clone at %s, want it under the cache %s", r.Dir(), cache)
			}
		})
	}
}

func mustRel(t *testing.T, p string) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, p)
	if err != nil {
		t.Fatal(err)
	}
	return rel
}

// TestResolve resolves every accepted revision form in a local and in a
// cloned repository and compares with git rev-parse.
func TestResolve(t *testing.T) {
	work := newWorkRepo(t, threeCommits...)
	gitc(t, work, "tag", "v1", "main~2")
	gitc(t, work, "tag", "-a", "-m", "annotated", "v2", "main~1")
	gitc(t, work, "branch", "other", "main~1")
	url, _ := newRemote(t, work)
	revParse := func(rev string) string { return gitc(t, work, "rev-parse", rev+"^{commit}") }
	tip, first := revParse("main"), revParse("main~2")

	local := open(t, Options{URL: work})
	remote := open(t, Options{URL: url, CacheDir: t.TempDir()})
	if err := remote.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		rev, want string
		localOnly bool // the clone fetches only the followed branch
	}{
		{rev: "", want: tip},
		{rev: "main", want: tip},
		{rev: "HEAD", want: tip},
		{rev: "HEAD~1", want: revParse("main~1")},
		{rev: "HEAD^", want: revParse("main~1")},
		{rev: "main~2", want: first},
		{rev: "HEAD~1^", want: first},
		{rev: "v1", want: first},
		{rev: "v2", want: revParse("v2")},
		{rev: "v2~1", want: first},
		{rev: "refs/tags/v2", want: revParse("v2")},
		{rev: tip, want: tip},
		{rev: tip[:7], want: tip},
		{rev: tip[:7] + "~2", want: first},
		{rev: strings.ToUpper(tip[:9]), want: tip},
		{rev: "other", want: revParse("other"), localOnly: true},
	}
	for _, r := range []*Repo{local, remote} {
		for _, tt := range tests {
			if tt.localOnly && !r.Local() {
				continue
			}
			name := "local/" + tt.rev
			if !r.Local() {
				name = "clone/" + tt.rev
			}
			t.Run(name, func(t *testing.T) {
				if got := mustResolve(t, r, tt.rev); got.String() != tt.want {
					t.Errorf("Resolve(%q) = %s, want %s", tt.rev, got, tt.want)
				}
			})
		}
	}
	if _, err := remote.Resolve("origin/main"); err != nil {
		t.Errorf("clone: Resolve(origin/main): %v", err)
	}
}

// TestResolveErrors checks a revision that does not resolve gives an error
// naming it.
func TestResolveErrors(t *testing.T) {
	work := newWorkRepo(t, threeCommits...)
	r := open(t, Options{URL: work})
	for _, rev := range []string{"nope", "HEAD~3", "main^2", "v9~1", "0000000", "fff", "../../config", "main..other", "-x"} {
		t.Run(rev, func(t *testing.T) {
			h, err := r.Resolve(rev)
			if err == nil {
				t.Fatalf("Resolve(%q) = %s, want an error", rev, h)
			}
			if !strings.Contains(err.Error(), rev) {
				t.Errorf("error %q does not name the revision %q", err, rev)
			}
		})
	}
	if _, err := r.Resolve("nope"); !errors.Is(err, plumbing.ErrReferenceNotFound) {
		t.Errorf("Resolve(nope): %v, want it to wrap plumbing.ErrReferenceNotFound", err)
	}
	// A branch that does not exist.
	other := open(t, Options{URL: work, Branch: "release"})
	if _, err := other.Resolve(""); err == nil || !strings.Contains(err.Error(), `"release"`) {
		t.Errorf("Resolve on a missing branch: %v, want an error naming it", err)
	}
	if _, err := r.FS(plumbing.NewHash(strings.Repeat("ab", 20)), ""); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("FS of a missing commit: %v", err)
	}
}

// TestOpenErrors checks the errors of bad options.
func TestOpenErrors(t *testing.T) {
	work := newWorkRepo(t, threeCommits...)
	url, _ := newRemote(t, work)
	plain := t.TempDir()
	file := filepath.Join(plain, "f")
	writeFile(t, plain, "f", "x")
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no URL", Options{}, "no URL"},
		{"remote without cache", Options{URL: url}, "cache directory"},
		{"not a repository", Options{URL: plain}, "not a git work tree"},
		{"a file", Options{URL: file}, "is a file"},
		{"missing path", Options{URL: filepath.Join(plain, "nope")}, "no such directory"},
		{"unknown scheme", Options{URL: "ftp://example.net/x"}, "unsupported URL scheme"},
		{"branch not on remote", Options{URL: url, CacheDir: t.TempDir(), Branch: "release"}, `branch "release" not found`},
		{"bad branch name", Options{URL: work, Branch: "a..b"}, "not a valid branch name"},
		{"full ref as branch", Options{URL: work, Branch: "refs/heads/main"}, "short name"},
		{"secret redacted", Options{URL: "https://user:s3cret@127.0.0.1:1/x.git"}, "xxxxx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Open(context.Background(), tt.opts)
			if err == nil {
				_ = r.Close()
				t.Fatalf("Open succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
	// A failed clone leaves nothing in the cache.
	cache := t.TempDir()
	if _, err := Open(context.Background(), Options{URL: url, CacheDir: cache, Branch: "release"}); err == nil {
		t.Fatal("clone of a missing branch succeeded")
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 0 {
		t.Errorf("failed clone left %v in the cache", entries)
	}
}

// TestIsRemote classifies URLs and paths.
func TestIsRemote(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		url    string
		remote bool
	}{
		{"file:///srv/site.git", true},
		{"ssh://git@example.net/site.git", true},
		{"https://example.net/site.git", true},
		{"git@example.net:ops/site.git", true},
		{"example.net:ops/site.git", true},
		{dir, false},
	} {
		got, err := isRemote(tt.url)
		if err != nil || got != tt.remote {
			t.Errorf("isRemote(%q) = %v, %v; want %v", tt.url, got, err, tt.remote)
		}
	}
}

// treeFiles is a tree with nested folders, an empty file, an executable and
// names that sort differently in git (folders as if ending in "/").
var treeFiles = map[string]string{
	"site.yaml":              "apiVersion: x\n",
	"a.b":                    "dot\n",
	"a/b.yaml":               "b\n",
	"a/c/d.yaml":             "d\n",
	"a/c/e/f.txt":            strings.Repeat("long line\n", 1000),
	"a-z/x.yaml":             "x\n",
	"empty":                  "",
	"sites/lab1/site.yaml":   "lab1\n",
	"sites/lab1/nodes/n.yml": "n\n",
}

func treeRepo(t *testing.T) (*Repo, plumbing.Hash, string) {
	t.Helper()
	work := newWorkRepo(t, treeFiles)
	writeFile(t, work, "bin/tool.sh", "#!/bin/sh\n")
	if err := os.Chmod(filepath.Join(work, "bin/tool.sh"), 0o755); err != nil {
		t.Fatal(err)
	}
	gitc(t, work, "add", "-A")
	gitc(t, work, "commit", "-q", "-m", "tool")
	r := open(t, Options{URL: work})
	return r, mustResolve(t, r, ""), work
}

// TestFS runs testing/fstest over a commit's tree, whole and in a folder.
func TestFS(t *testing.T) {
	r, h, _ := treeRepo(t)
	tests := []struct {
		subdir string
		want   []string
	}{
		{"", []string{"site.yaml", "a.b", "a/b.yaml", "a/c/d.yaml", "a/c/e/f.txt", "a-z/x.yaml", "empty", "bin/tool.sh", "sites/lab1/nodes/n.yml"}},
		{".", []string{"site.yaml", "a/c/e/f.txt"}},
		{"a", []string{"b.yaml", "c/d.yaml", "c/e/f.txt"}},
		{"sites/lab1", []string{"site.yaml", "nodes/n.yml"}},
		{"sites/lab1/", []string{"site.yaml", "nodes/n.yml"}},
	}
	for _, tt := range tests {
		t.Run("subdir="+tt.subdir, func(t *testing.T) {
			fsys, err := r.FS(h, tt.subdir)
			if err != nil {
				t.Fatal(err)
			}
			if err := fstest.TestFS(fsys, tt.want...); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFSInfo checks names, sizes, modes, times, and the errors for invalid
// and missing paths.
func TestFSInfo(t *testing.T) {
	r, h, _ := treeRepo(t)
	fsys, err := r.FS(h, "")
	if err != nil {
		t.Fatal(err)
	}
	info, err := r.Commit(h)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		base  string
		size  int64
		mode  fs.FileMode
		isDir bool
	}{
		{".", ".", 0, fs.ModeDir | 0o555, true},
		{"a", "a", 0, fs.ModeDir | 0o555, true},
		{"a/c/e", "e", 0, fs.ModeDir | 0o555, true},
		{"site.yaml", "site.yaml", 14, 0o444, false},
		{"a/c/e/f.txt", "f.txt", 10000, 0o444, false},
		{"empty", "empty", 0, 0o444, false},
		{"bin/tool.sh", "tool.sh", 10, 0o555, false},
	} {
		st, err := fs.Stat(fsys, tt.name)
		if err != nil {
			t.Errorf("Stat(%s): %v", tt.name, err)
			continue
		}
		if st.Name() != tt.base || st.Size() != tt.size || st.Mode() != tt.mode || st.IsDir() != tt.isDir || !st.ModTime().Equal(info.Committer.When) {
			t.Errorf("Stat(%s) = %s %d %v dir=%v %v; want %s %d %v dir=%v %v", tt.name, st.Name(), st.Size(), st.Mode(), st.IsDir(), st.ModTime(), tt.base, tt.size, tt.mode, tt.isDir, info.Committer.When)
		}
	}
	data, err := fs.ReadFile(fsys, "a/c/e/f.txt")
	if err != nil || string(data) != treeFiles["a/c/e/f.txt"] {
		t.Errorf("ReadFile(a/c/e/f.txt) = %d bytes, %v", len(data), err)
	}
	for _, name := range []string{"/site.yaml", "a/../site.yaml", "./site.yaml", "a/", "", "a//b.yaml"} {
		for op, fn := range fsOps(fsys) {
			if err := fn(name); !errors.Is(err, fs.ErrInvalid) {
				t.Errorf("%s(%q): %v, want fs.ErrInvalid", op, name, err)
			}
		}
	}
	for _, name := range []string{"nope", "a/nope", "site.yaml/x", "a/c/e/f.txt/y", "nope/deeper"} {
		for op, fn := range fsOps(fsys) {
			if err := fn(name); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s(%q): %v, want fs.ErrNotExist", op, name, err)
			}
		}
	}
	if _, err := fs.ReadFile(fsys, "a"); err == nil {
		t.Error("ReadFile of a folder succeeded")
	}
	if _, err := fs.ReadDir(fsys, "site.yaml"); err == nil {
		t.Error("ReadDir of a file succeeded")
	}
}

func fsOps(fsys fs.FS) map[string]func(string) error {
	return map[string]func(string) error{
		"Open":     func(n string) error { f, err := fsys.Open(n); closeIf(f); return err },
		"Stat":     func(n string) error { _, err := fs.Stat(fsys, n); return err },
		"ReadFile": func(n string) error { _, err := fs.ReadFile(fsys, n); return err },
		"ReadDir":  func(n string) error { _, err := fs.ReadDir(fsys, n); return err },
	}
}

func closeIf(f fs.File) {
	if f != nil {
		_ = f.Close()
	}
}

// TestFSLinksAndSubmodules checks symbolic links and submodules are listed
// but not followed.
func TestFSLinksAndSubmodules(t *testing.T) {
	work := newWorkRepo(t, map[string]string{"site.yaml": "s\n", "real/n.yaml": "n\n"})
	if err := os.Symlink("site.yaml", filepath.Join(work, "link.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(work, "linkdir")); err != nil {
		t.Fatal(err)
	}
	gitc(t, work, "add", "-A")
	head := gitc(t, work, "rev-parse", "HEAD")
	gitc(t, work, "update-index", "--add", "--cacheinfo", "160000,"+head+",vendor/sub")
	gitc(t, work, "commit", "-q", "-m", "links")
	r := open(t, Options{URL: work})
	fsys, err := r.FS(mustResolve(t, r, ""), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		want error
	}{
		{"link.yaml", ErrSymlink},
		{"linkdir", ErrSymlink},
		{"linkdir/n.yaml", ErrSymlink},
		{"vendor/sub", ErrSubmodule},
		{"vendor/sub/x", ErrSubmodule},
	} {
		for op, fn := range fsOps(fsys) {
			if err := fn(tt.name); !errors.Is(err, tt.want) {
				t.Errorf("%s(%s): %v, want %v", op, tt.name, err, tt.want)
			}
		}
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]fs.FileMode{}
	for _, e := range entries {
		types[e.Name()] = e.Type()
	}
	if types["link.yaml"] != fs.ModeSymlink || types["linkdir"] != fs.ModeSymlink || types["real"] != fs.ModeDir {
		t.Errorf("ReadDir types: %v", types)
	}
	// A site walk stops at the submodule with an error naming it.
	_, _, err = schema.Load(context.Background(), fsys, schema.LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), "vendor/sub") || !errors.Is(err, ErrSubmodule) {
		t.Errorf("Load over a tree with a submodule: %v", err)
	}
	if _, err := r.FS(mustResolve(t, r, ""), "linkdir"); err == nil {
		t.Error("FS with a symlink as the site folder succeeded")
	}
}

// copyDir copies a folder of files.
func copyDir(tb testing.TB, src, dst string) {
	tb.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// TestLoadFromCommit checks the example site read from a commit, at the top
// of the repository or in a folder, is the site read from the directory.
func TestLoadFromCommit(t *testing.T) {
	ctx := context.Background()
	example := filepath.Join("..", "..", "examples", "site-repo")
	want, _, err := schema.LoadDir(ctx, example, schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantJSON, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	for _, subdir := range []string{"", "sites/lab1"} {
		t.Run("subdir="+subdir, func(t *testing.T) {
			work := newWorkRepo(t)
			copyDir(t, example, filepath.Join(work, filepath.FromSlash(subdir)))
			writeFile(t, work, "README.md", "not part of the site\n")
			gitc(t, work, "add", "-A")
			gitc(t, work, "commit", "-q", "-m", "site")
			// The work tree changes after the commit: the commit is what is read.
			writeFile(t, work, filepath.Join(subdir, "nodes", "zz-uncommitted.yaml"), "not: [valid\n")

			url, _ := newRemote(t, work)
			for _, r := range []*Repo{open(t, Options{URL: work}), open(t, Options{URL: url, CacheDir: t.TempDir()})} {
				fsys, err := r.FS(mustResolve(t, r, ""), subdir)
				if err != nil {
					t.Fatal(err)
				}
				got, diags, err := schema.Load(ctx, fsys, schema.LoadOptions{})
				if err != nil {
					t.Fatalf("Load from commit (local=%v): %v\n%v", r.Local(), err, diags)
				}
				if len(got.Nodes) != len(want.Nodes) || len(got.Nodes) == 0 {
					t.Errorf("nodes: %d from the commit, %d from the directory", len(got.Nodes), len(want.Nodes))
				}
				gotJSON, err := json.Marshal(got)
				if err != nil {
					t.Fatal(err)
				}
				if string(gotJSON) != string(wantJSON) {
					t.Errorf("site from the commit differs from the directory's:\n%s\n%s", gotJSON, wantJSON)
				}
				for i, n := range got.Nodes {
					if n.Source != want.Nodes[i].Source {
						t.Errorf("node %s at %v, want %v", n.Name, n.Source, want.Nodes[i].Source)
					}
				}
			}
		})
	}
}

// TestFetch checks a clone picks up a pushed commit, that fetching again is
// not an error, and that the clone is reused by the next Open without the
// network.
func TestFetch(t *testing.T) {
	ctx := context.Background()
	work := newWorkRepo(t, threeCommits...)
	url, bare := newRemote(t, work)
	cache := t.TempDir()
	r := open(t, Options{URL: url, CacheDir: cache})
	old := mustResolve(t, r, "")

	writeFile(t, work, "nodes/c.yaml", "c\n")
	gitc(t, work, "add", "-A")
	gitc(t, work, "commit", "-q", "-m", "add c")
	gitc(t, work, "tag", "v-new")
	gitc(t, work, "push", "-q", "origin", "main", "v-new")
	pushed := gitc(t, work, "rev-parse", "HEAD")

	if got := mustResolve(t, r, ""); got != old {
		t.Fatalf("tip moved before Fetch: %s", got)
	}
	for range 2 { // the second fetch is already up to date
		if err := r.Fetch(ctx); err != nil {
			t.Fatalf("Fetch: %v", err)
		}
	}
	if got := mustResolve(t, r, ""); got.String() != pushed {
		t.Fatalf("tip after Fetch = %s, want %s", got, pushed)
	}
	if got := mustResolve(t, r, "v-new"); got.String() != pushed {
		t.Errorf("tag fetched with the branch = %s, want %s", got, pushed)
	}
	if ok, err := r.IsAncestor(old, mustResolve(t, r, "")); !ok || err != nil {
		t.Errorf("IsAncestor(old, new) = %v, %v; want true", ok, err)
	}
	fsys, err := r.FS(mustResolve(t, r, ""), "nodes")
	if err != nil {
		t.Fatal(err)
	}
	if data, err := fs.ReadFile(fsys, "c.yaml"); err != nil || string(data) != "c\n" {
		t.Errorf("ReadFile(c.yaml) = %q, %v", data, err)
	}
	dir := r.Dir()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	// The remote disappears: the clone still opens and reads, Fetch fails.
	if err := os.Rename(bare, bare+".gone"); err != nil {
		t.Fatal(err)
	}
	again := open(t, Options{URL: url, CacheDir: cache})
	if again.Dir() != dir {
		t.Errorf("second Open uses %s, want the cached clone %s", again.Dir(), dir)
	}
	if got := mustResolve(t, again, ""); got.String() != pushed {
		t.Errorf("tip from the cached clone = %s, want %s", got, pushed)
	}
	if err := again.Fetch(ctx); err == nil {
		t.Error("Fetch from a removed remote succeeded")
	}
	if entries, _ := os.ReadDir(cache); len(entries) != 1 {
		t.Errorf("cache holds %v, want one clone", entries)
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := again.Fetch(canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("Fetch with a canceled context: %v", err)
	}
}

// TestForcePush checks a rewritten branch is fetched and detected.
func TestForcePush(t *testing.T) {
	ctx := context.Background()
	work := newWorkRepo(t, threeCommits...)
	url, _ := newRemote(t, work)
	r := open(t, Options{URL: url, CacheDir: t.TempDir()})
	old := mustResolve(t, r, "")
	parent := mustResolve(t, r, "HEAD~1")

	gitc(t, work, "commit", "-q", "--amend", "-m", "rewritten")
	gitc(t, work, "push", "-q", "--force", "origin", "main")
	rewritten := gitc(t, work, "rev-parse", "HEAD")

	if err := r.Fetch(ctx); err != nil {
		t.Fatalf("Fetch after a force-push: %v", err)
	}
	now := mustResolve(t, r, "")
	if now.String() != rewritten {
		t.Fatalf("tip = %s, want the rewritten %s", now, rewritten)
	}
	for _, tt := range []struct {
		name string
		a, b plumbing.Hash
		want bool
	}{
		{"old tip in rewritten history", old, now, false},
		{"rewritten tip in old history", now, old, false},
		{"shared parent", parent, now, true},
		{"same commit", now, now, true},
		{"descendant is no ancestor", now, parent, false},
	} {
		got, err := r.IsAncestor(tt.a, tt.b)
		if err != nil || got != tt.want {
			t.Errorf("%s: IsAncestor = %v, %v; want %v", tt.name, got, err, tt.want)
		}
	}
	// The old commit is still readable (the clone is never pruned).
	if _, err := r.FS(old, ""); err != nil {
		t.Errorf("FS of the replaced commit: %v", err)
	}
	if _, err := r.IsAncestor(plumbing.NewHash(strings.Repeat("12", 20)), now); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("IsAncestor of an unknown commit: %v", err)
	}
}

// TestDefaultBranch checks an empty Branch follows the remote's default
// branch, also when the clone is reopened, and a local repository's HEAD.
func TestDefaultBranch(t *testing.T) {
	work := newWorkRepo(t, threeCommits...)
	gitc(t, work, "branch", "-m", "main", "trunk")
	url, _ := newRemote(t, work)
	cache := t.TempDir()
	for range 2 {
		r := open(t, Options{URL: url, CacheDir: cache})
		if r.Branch() != "trunk" {
			t.Errorf("Branch() = %q, want trunk", r.Branch())
		}
		if _, err := r.Resolve(""); err != nil {
			t.Error(err)
		}
		_ = r.Close()
	}
	if r := open(t, Options{URL: work}); r.Branch() != "trunk" {
		t.Errorf("local Branch() = %q, want trunk", r.Branch())
	}
	if r := open(t, Options{URL: url, CacheDir: cache, Branch: "trunk"}); r.Branch() != "trunk" {
		t.Errorf("Branch() = %q, want trunk", r.Branch())
	}
}

// TestMissingSubdir checks the error for a folder the commit lacks.
func TestMissingSubdir(t *testing.T) {
	r, h, _ := treeRepo(t)
	for _, tt := range []struct{ subdir, want string }{
		{"sites/lab2", "site folder sites/lab2 does not exist in commit " + h.String()},
		{"site.yaml", "is not a folder"},
		{"../x", "not a valid"},
		{"/abs", "not a valid"},
	} {
		if _, err := r.FS(h, tt.subdir); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("FS(%q): %v, want an error containing %q", tt.subdir, err, tt.want)
		}
	}
}

// TestLocalSeesNewCommits checks a local repository is read as it is: new
// commits, also ones git packed, are seen after Fetch.
func TestLocalSeesNewCommits(t *testing.T) {
	work := newWorkRepo(t, threeCommits...)
	r := open(t, Options{URL: work})
	old := mustResolve(t, r, "")
	if _, err := r.FS(old, ""); err != nil {
		t.Fatal(err)
	}
	writeFile(t, work, "new.yaml", "new\n")
	gitc(t, work, "add", "-A")
	gitc(t, work, "commit", "-q", "-m", "new")
	gitc(t, work, "gc", "-q", "--prune=now")
	if err := r.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	tip := mustResolve(t, r, "")
	if tip.String() != gitc(t, work, "rev-parse", "HEAD") {
		t.Fatalf("tip %s is not the new commit", tip)
	}
	fsys, err := r.FS(tip, "")
	if err != nil {
		t.Fatal(err)
	}
	if data, err := fs.ReadFile(fsys, "new.yaml"); err != nil || string(data) != "new\n" {
		t.Errorf("ReadFile(new.yaml) after gc = %q, %v", data, err)
	}
}

// TestCommit checks the commit description, unsigned and signed.
func TestCommit(t *testing.T) {
	work := newWorkRepo(t, threeCommits...)
	r := open(t, Options{URL: work})
	h := mustResolve(t, r, "")
	info, err := r.Commit(h)
	if err != nil {
		t.Fatal(err)
	}
	if info.Hash != h || info.Subject != "commit C" || info.Author.Name != "t" || info.Author.Email != "t@example.net" || info.Signed || info.SignatureFormat != "" {
		t.Errorf("Commit = %+v", info)
	}
	if len(info.Parents) != 1 || info.Parents[0] != mustResolve(t, r, "HEAD~1") {
		t.Errorf("Parents = %v", info.Parents)
	}
	if d := time.Since(info.Committer.When); d < 0 || d > time.Hour {
		t.Errorf("committer time %v", info.Committer.When)
	}

	needTool(t, "ssh-keygen")
	key := filepath.Join(t.TempDir(), "key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	gitc(t, work, "-c", "gpg.format=ssh", "-c", "user.signingkey="+key, "commit", "-q", "-S", "--allow-empty", "-m", "signed")
	info, err = r.Commit(mustResolve(t, r, ""))
	if err != nil {
		t.Fatal(err)
	}
	if !info.Signed || info.SignatureFormat != "ssh" || info.Subject != "signed" {
		t.Errorf("signed commit: Signed=%v format=%q subject=%q", info.Signed, info.SignatureFormat, info.Subject)
	}
}

// TestConcurrentUse loads from several goroutines while fetching, for the
// race detector.
func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	work := newWorkRepo(t, treeFiles)
	url, _ := newRemote(t, work)
	r := open(t, Options{URL: url, CacheDir: t.TempDir()})
	h := mustResolve(t, r, "")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if i == 0 {
				if err := r.Fetch(ctx); err != nil {
					t.Error(err)
				}
				return
			}
			fsys, err := r.FS(h, "")
			if err != nil {
				t.Error(err)
				return
			}
			if err := fstest.TestFS(fsys, "a/c/e/f.txt"); err != nil {
				t.Error(err)
			}
			if _, err := r.Commit(h); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// BenchmarkLoadFromCommit loads a generated 1,000-node site from its folder
// and from a commit of it (load/...), and, to show the file system's own
// cost, only walks and reads its files (read/...).
func BenchmarkLoadFromCommit(b *testing.B) {
	ctx := context.Background()
	site := filepath.Join(b.TempDir(), "site")
	if _, err := gen.Generate(site, gen.Options{Nodes: 1000}); err != nil {
		b.Fatal(err)
	}
	gitc(b, site, "init", "-q", "-b", "main")
	gitc(b, site, "add", "-A")
	gitc(b, site, "commit", "-q", "-m", "site")
	// The work tree holds the commit's objects loose; the clone has them in
	// a pack file.
	local, err := Open(ctx, Options{URL: site})
	if err != nil {
		b.Fatal(err)
	}
	defer local.Close()
	clone, err := Open(ctx, Options{URL: "file://" + filepath.ToSlash(site), CacheDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer clone.Close()
	h, err := local.Resolve("")
	if err != nil {
		b.Fatal(err)
	}
	check := func(s *schema.Site) {
		if len(s.Nodes) != 1000 {
			b.Fatalf("%d nodes", len(s.Nodes))
		}
	}
	b.Run("load/dir", func(b *testing.B) {
		for b.Loop() {
			s, _, err := schema.LoadDir(ctx, site, schema.LoadOptions{})
			if err != nil {
				b.Fatal(err)
			}
			check(s)
		}
	})
	for _, r := range []*Repo{local, clone} {
		b.Run("load/commit-"+repoKind(r), func(b *testing.B) {
			for b.Loop() {
				fsys, err := r.FS(h, "")
				if err != nil {
					b.Fatal(err)
				}
				s, _, err := schema.Load(ctx, fsys, schema.LoadOptions{})
				if err != nil {
					b.Fatal(err)
				}
				check(s)
			}
		})
	}
	b.Run("read/dir", func(b *testing.B) {
		for b.Loop() {
			readAll(b, os.DirFS(site))
		}
	})
	for _, r := range []*Repo{local, clone} {
		b.Run("read/commit-"+repoKind(r), func(b *testing.B) {
			for b.Loop() {
				fsys, err := r.FS(h, "")
				if err != nil {
					b.Fatal(err)
				}
				readAll(b, fsys)
			}
		})
	}
}

func repoKind(r *Repo) string {
	if r.Local() {
		return "worktree"
	}
	return "clone"
}

// readAll walks and reads every file, as the loader does, without parsing.
func readAll(b *testing.B, fsys fs.FS) {
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" {
				return fs.SkipDir
			}
			return nil
		}
		_, err = fs.ReadFile(fsys, p)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
}
