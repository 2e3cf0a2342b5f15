// Package source reads a site repo from git: it opens a local repository in
// place or keeps a bare clone of a remote one in a cache folder, fetches the
// configured branch, resolves revisions, and serves any commit's tree as a
// read-only fs.FS for schema.Load, without a checkout.
//
// go-git's on-disk storage is not safe for concurrent use, so a Repo
// serialises every access to it; the fs.FS values it returns may be used from
// many goroutines (schema.Load reads files in parallel).
package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// DefaultBranch is the branch followed when Options.Branch is empty and the
// repository does not name a default branch.
const DefaultBranch = "main"

// remoteName is the name of the remote in a cached clone.
const remoteName = "origin"

// maxOpenPacks bounds the pack files a cached clone keeps open between reads.
const maxOpenPacks = 16

// Options say which repository to read and how.
type Options struct {
	// URL is a remote URL (file://, ssh://, https://, http://, git:// or
	// scp-like user@host:path), or the path of a local directory holding a
	// git work tree or a bare repository. A local directory is read in place
	// (its commits, not its uncommitted files); a remote is cloned into
	// CacheDir.
	URL string
	// Branch is the branch to follow. Empty means the remote's default branch
	// (a local repository's HEAD branch), else DefaultBranch.
	Branch string
	// CacheDir holds the bare clones of remote repositories, one folder per
	// URL named by a hash of the URL. Required for a remote URL; one process
	// at a time should use a given clone.
	CacheDir string
	// Auth authenticates to a remote (optional).
	Auth transport.AuthMethod
}

// Repo is an opened site repository. Its methods are safe for concurrent use.
type Repo struct {
	url    string // redacted, for messages
	dir    string // the work tree, bare repository or cached clone
	local  bool
	branch string
	auth   transport.AuthMethod

	// mu serialises every use of repo and store: go-git's filesystem storage
	// keeps unsynchronised pack indexes and file handles.
	mu    sync.Mutex
	repo  *git.Repository
	store *filesystem.Storage // nil when go-git did not give us one
}

// Open opens the repository named by opts.URL. A remote is cloned (bare) into
// opts.CacheDir on first use and the clone is reused afterwards; Open does not
// fetch an existing clone: call Fetch.
func Open(ctx context.Context, opts Options) (*Repo, error) {
	raw := strings.TrimSpace(opts.URL)
	if raw == "" {
		return nil, errors.New("open site repo: no URL or path given")
	}
	if opts.Branch != "" {
		if err := validBranch(opts.Branch); err != nil {
			return nil, fmt.Errorf("open site repo: branch %q: %w", opts.Branch, err)
		}
	}
	remote, err := isRemote(raw)
	if err != nil {
		return nil, fmt.Errorf("open site repo %s: %w", redact(raw), err)
	}
	if !remote {
		return openLocal(raw, opts)
	}
	return openRemote(ctx, raw, opts)
}

var schemeURL = regexp.MustCompile(`^([a-zA-Z][a-zA-Z0-9+.-]*)://`)

// isRemote tells a remote URL from a local directory.
func isRemote(raw string) (bool, error) {
	if m := schemeURL.FindStringSubmatch(raw); m != nil {
		switch strings.ToLower(m[1]) {
		case "file", "ssh", "https", "http", "git":
			return true, nil
		}
		return false, fmt.Errorf("unsupported URL scheme %q (want file, ssh, https, http or git)", m[1])
	}
	st, err := os.Stat(raw)
	if err == nil {
		if !st.IsDir() {
			return false, errors.New("is a file, not a git repository directory")
		}
		return false, nil
	}
	if ep, eperr := transport.NewEndpoint(raw); eperr == nil && ep.Protocol == "ssh" {
		return true, nil // scp-like: [user@]host:path
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, errors.New("no such directory, and not a URL")
	}
	return false, err
}

func openLocal(dir string, opts Options) (*Repo, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open site repo %s: %w", dir, err)
	}
	g, err := git.PlainOpenWithOptions(abs, &git.PlainOpenOptions{EnableDotGitCommonDir: true})
	if err != nil {
		if errors.Is(err, git.ErrRepositoryNotExists) {
			return nil, fmt.Errorf("open site repo %s: not a git work tree or bare repository: %w", abs, err)
		}
		return nil, fmt.Errorf("open site repo %s: %w", abs, err)
	}
	r := &Repo{url: abs, dir: abs, local: true, branch: opts.Branch, repo: g}
	r.store, _ = g.Storer.(*filesystem.Storage)
	if r.branch == "" {
		r.branch = DefaultBranch
		if head, err := g.Storer.Reference(plumbing.HEAD); err == nil && head.Type() == plumbing.SymbolicReference && head.Target().IsBranch() {
			r.branch = head.Target().Short()
		}
	}
	return r, nil
}

// cacheName is the folder of a remote's clone under the cache dir.
func cacheName(rawURL string) string {
	sum := sha256.Sum256([]byte(rawURL))
	return hex.EncodeToString(sum[:16]) + ".git"
}

func openStorage(dir string) *filesystem.Storage {
	return filesystem.NewStorageWithOptions(osfs.New(dir), cache.NewObjectLRUDefault(), filesystem.Options{MaxOpenDescriptors: maxOpenPacks})
}

func openRemote(ctx context.Context, raw string, opts Options) (*Repo, error) {
	shown := redact(raw)
	if opts.CacheDir == "" {
		return nil, fmt.Errorf("open site repo %s: a remote URL needs a cache directory", shown)
	}
	if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("open site repo %s: cache directory: %w", shown, err)
	}
	dir := filepath.Join(opts.CacheDir, cacheName(raw))
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := clone(ctx, raw, dir, opts); err != nil {
			return nil, fmt.Errorf("clone site repo %s: %w", shown, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("open site repo %s: cache: %w", shown, err)
	}
	store := openStorage(dir)
	g, err := git.Open(store, nil)
	if err != nil {
		_ = store.Close()
		return nil, fmt.Errorf("open site repo %s: cached clone %s: %w", shown, dir, err)
	}
	rem, err := g.Remote(remoteName)
	if err != nil || len(rem.Config().URLs) == 0 || rem.Config().URLs[0] != raw {
		_ = store.Close()
		return nil, fmt.Errorf("open site repo %s: cached clone %s does not belong to this URL: remove it", shown, dir)
	}
	r := &Repo{url: shown, dir: dir, branch: opts.Branch, auth: opts.Auth, repo: g, store: store}
	if r.branch == "" {
		r.branch = DefaultBranch
		if head, err := store.Reference(remoteHEAD()); err == nil && head.Type() == plumbing.SymbolicReference {
			if b, ok := strings.CutPrefix(head.Target().String(), remotePrefix()); ok && b != "" {
				r.branch = b
			}
		}
	}
	return r, nil
}

func remotePrefix() string               { return "refs/remotes/" + remoteName + "/" }
func remoteHEAD() plumbing.ReferenceName { return plumbing.ReferenceName(remotePrefix() + "HEAD") }
func trackingRef(branch string) plumbing.ReferenceName {
	return plumbing.NewRemoteReferenceName(remoteName, branch)
}

// clone makes a bare clone of raw at dir: it is built in a temporary folder
// beside dir and renamed into place, so an interrupted clone leaves no
// half-made cache behind.
func clone(ctx context.Context, raw, dir string, opts Options) (err error) {
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(tmp)
		}
	}()
	store := openStorage(tmp)
	defer store.Close() // closed again before the rename; a second Close is harmless
	g, err := git.Init(store, nil)
	if err != nil {
		return err
	}
	rem, err := g.CreateRemote(&config.RemoteConfig{
		Name:  remoteName,
		URLs:  []string{raw},
		Fetch: []config.RefSpec{config.RefSpec("+refs/heads/*:" + remotePrefix() + "*")},
	})
	if err != nil {
		return err
	}
	branch := opts.Branch
	if branch == "" {
		refs, err := rem.ListContext(ctx, &git.ListOptions{Auth: opts.Auth})
		if err != nil {
			if errors.Is(err, transport.ErrEmptyRemoteRepository) {
				return errors.New("the remote repository is empty")
			}
			return fmt.Errorf("list remote branches: %w", err)
		}
		branch = defaultBranch(refs)
		target := plumbing.NewSymbolicReference(remoteHEAD(), trackingRef(branch))
		if err := store.SetReference(target); err != nil {
			return err
		}
	}
	if err := fetch(ctx, g, branch, opts.Auth); err != nil {
		return err
	}
	if err := store.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(dir); serr == nil {
			_ = os.RemoveAll(tmp) // another Open cloned it meanwhile
			return nil
		}
		return err
	}
	return nil
}

// defaultBranch is the branch the remote's HEAD points at, else DefaultBranch.
func defaultBranch(refs []*plumbing.Reference) string {
	var head *plumbing.Reference
	for _, ref := range refs {
		if ref.Name() == plumbing.HEAD {
			head = ref
		}
	}
	if head == nil {
		return DefaultBranch
	}
	if head.Type() == plumbing.SymbolicReference {
		if head.Target().IsBranch() {
			return head.Target().Short()
		}
		return DefaultBranch
	}
	var match []string
	for _, ref := range refs {
		if ref.Name().IsBranch() && ref.Type() == plumbing.HashReference && ref.Hash() == head.Hash() {
			match = append(match, ref.Name().Short())
		}
	}
	if len(match) == 1 {
		return match[0]
	}
	return DefaultBranch
}

func fetch(ctx context.Context, g *git.Repository, branch string, auth transport.AuthMethod) error {
	spec := config.RefSpec("+" + plumbing.NewBranchReferenceName(branch).String() + ":" + trackingRef(branch).String())
	err := g.FetchContext(ctx, &git.FetchOptions{
		RemoteName: remoteName,
		RefSpecs:   []config.RefSpec{spec},
		Auth:       auth,
		Tags:       git.AllTags, // so tags resolve; they may point anywhere, and moved tags are taken
		Force:      true,
	})
	var noMatch git.NoMatchingRefSpecError
	switch {
	case err == nil, errors.Is(err, git.NoErrAlreadyUpToDate):
		return nil
	case errors.As(err, &noMatch):
		return fmt.Errorf("branch %q not found on the remote: %w", branch, err)
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		return fmt.Errorf("branch %q: the remote repository is empty: %w", branch, err)
	}
	return fmt.Errorf("fetch branch %q: %w", branch, err)
}

// Branch is the branch the Repo follows.
func (r *Repo) Branch() string { return r.branch }

// Dir is the repository's folder: the local path, or the cached clone.
func (r *Repo) Dir() string { return r.dir }

// Local reports whether the Repo reads a local directory in place.
func (r *Repo) Local() bool { return r.local }

// Close releases the pack files the Repo keeps open. The Repo and the
// fs.FS values it returned must not be used afterwards.
func (r *Repo) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.store != nil {
		return r.store.Close()
	}
	return nil
}

// Fetch brings the branch up to date from the remote, accepting rewritten
// history (the caller decides whether to apply it: see IsAncestor), and
// fetches the remote's tags (moved tags are taken too). Being already up to
// date is not an error. For a local directory Fetch fetches
// nothing: it only rereads the pack index, so commits that git wrote into
// new pack files since are seen.
func (r *Repo) Fetch(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fetch %s: %w", r.url, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.local {
		if r.store != nil {
			r.store.Reindex()
		}
		return nil
	}
	if err := fetch(ctx, r.repo, r.branch, r.auth); err != nil {
		return fmt.Errorf("fetch %s: %w", r.url, err)
	}
	return nil
}

// branchRef is the reference holding the tip of the followed branch.
func (r *Repo) branchRef() plumbing.ReferenceName {
	if r.local {
		return plumbing.NewBranchReferenceName(r.branch)
	}
	return trackingRef(r.branch)
}

// Resolve turns a revision into a commit hash. "" is the tip of the followed
// branch (for a remote, as of the last Fetch). Branch names (for a remote,
// its branches as last fetched), tags, full and abbreviated (at least 4 hex
// digits, unambiguous) hashes, HEAD (for a remote, the followed branch), and
// the suffixes ~N, ^ and ^N are accepted.
func (r *Repo) Resolve(rev string) (plumbing.Hash, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rev == "" {
		ref, err := r.repo.Storer.Reference(r.branchRef())
		if err != nil {
			if errors.Is(err, plumbing.ErrReferenceNotFound) {
				if r.local {
					return plumbing.ZeroHash, fmt.Errorf("resolve branch %q in %s: no such branch: %w", r.branch, r.url, err)
				}
				return plumbing.ZeroHash, fmt.Errorf("resolve branch %q of %s: not fetched (call Fetch): %w", r.branch, r.url, err)
			}
			return plumbing.ZeroHash, fmt.Errorf("resolve branch %q of %s: %w", r.branch, r.url, err)
		}
		h, err := r.peel(ref.Hash())
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("resolve branch %q of %s: %w", r.branch, r.url, err)
		}
		return h, nil
	}
	base, suffix := rev, ""
	if i := strings.IndexAny(rev, "~^"); i >= 0 {
		base, suffix = rev[:i], rev[i:]
	}
	if base != "HEAD" && plumbing.ReferenceName("refs/x/"+base).Validate() != nil {
		return plumbing.ZeroHash, fmt.Errorf("resolve revision %q: not a valid revision", rev)
	}
	h, err := r.resolveBase(base)
	if err != nil {
		return plumbing.ZeroHash, fmt.Errorf("revision %q does not resolve to a commit in %s: %w", rev, r.url, err)
	}
	if suffix == "" {
		return h, nil
	}
	p, err := r.repo.ResolveRevision(plumbing.Revision(h.String() + suffix))
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, plumbing.ErrObjectNotFound) {
			err = fmt.Errorf("%s (%s) has no such ancestor: %w", base, h.String()[:12], plumbing.ErrReferenceNotFound)
		}
		return plumbing.ZeroHash, fmt.Errorf("revision %q does not resolve to a commit in %s: %w", rev, r.url, err)
	}
	return *p, nil
}

// resolveBase resolves a revision without suffixes, the way git rev-parse
// does: a full hash, then references, then an abbreviated hash.
func (r *Repo) resolveBase(base string) (plumbing.Hash, error) {
	if base == "HEAD" && !r.local {
		ref, err := r.repo.Storer.Reference(r.branchRef())
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("HEAD is branch %q, not fetched: %w", r.branch, err)
		}
		return r.peel(ref.Hash())
	}
	if len(base) == 2*len(plumbing.ZeroHash) && isHex(base) {
		return r.peel(plumbing.NewHash(base))
	}
	names := make([]string, 0, len(plumbing.RefRevParseRules)+1)
	for _, rule := range plumbing.RefRevParseRules {
		names = append(names, fmt.Sprintf(rule, base))
	}
	if !r.local {
		names = append(names, remotePrefix()+base)
	}
	for _, name := range names {
		ref, err := storer.ResolveReference(r.repo.Storer, plumbing.ReferenceName(name))
		if err == nil {
			return r.peel(ref.Hash())
		}
	}
	if len(base) >= 4 && isHex(base) {
		return r.resolvePrefix(base)
	}
	return plumbing.ZeroHash, plumbing.ErrReferenceNotFound
}

func (r *Repo) resolvePrefix(prefix string) (plumbing.Hash, error) {
	lister, ok := r.repo.Storer.(interface {
		HashesWithPrefix([]byte) ([]plumbing.Hash, error)
	})
	if !ok {
		return plumbing.ZeroHash, plumbing.ErrReferenceNotFound
	}
	prefix = strings.ToLower(prefix)
	b, err := hex.DecodeString(prefix[:len(prefix)&^1])
	if err != nil {
		return plumbing.ZeroHash, plumbing.ErrReferenceNotFound
	}
	hashes, err := lister.HashesWithPrefix(b)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	found := map[plumbing.Hash]bool{}
	for _, h := range hashes {
		if !strings.HasPrefix(h.String(), prefix) {
			continue
		}
		if c, err := r.peel(h); err == nil {
			found[c] = true
		}
	}
	switch len(found) {
	case 0:
		return plumbing.ZeroHash, plumbing.ErrReferenceNotFound
	case 1:
		for h := range found {
			return h, nil
		}
	}
	return plumbing.ZeroHash, fmt.Errorf("abbreviated hash %s is ambiguous (%d commits): give more digits", prefix, len(found))
}

// peel follows annotated tags down to a commit.
func (r *Repo) peel(h plumbing.Hash) (plumbing.Hash, error) {
	for range 16 {
		obj, err := r.repo.Storer.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("object %s: %w", h, err)
		}
		switch obj.Type() {
		case plumbing.CommitObject:
			return h, nil
		case plumbing.TagObject:
			tag, err := object.DecodeTag(r.repo.Storer, obj)
			if err != nil {
				return plumbing.ZeroHash, fmt.Errorf("tag %s: %w", h, err)
			}
			h = tag.Target
		default:
			return plumbing.ZeroHash, fmt.Errorf("object %s is a %s, not a commit", h, obj.Type())
		}
	}
	return plumbing.ZeroHash, fmt.Errorf("object %s: tags nested too deep", h)
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return s != ""
}

// validBranch rejects branch names git would refuse.
func validBranch(name string) error {
	if strings.HasPrefix(name, "refs/") {
		return errors.New("give the branch's short name, without refs/heads/")
	}
	if name == "HEAD" || plumbing.NewBranchReferenceName(name).Validate() != nil {
		return errors.New("not a valid branch name")
	}
	return nil
}

// commit reads a commit object; the caller holds r.mu.
func (r *Repo) commit(h plumbing.Hash) (*object.Commit, error) {
	c, err := r.repo.CommitObject(h)
	if err != nil {
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			return nil, fmt.Errorf("commit %s not found in %s: %w", h, r.url, err)
		}
		return nil, fmt.Errorf("commit %s in %s: %w", h, r.url, err)
	}
	return c, nil
}

// IsAncestor reports whether a is an ancestor of b or equal to it, as
// `git merge-base --is-ancestor a b` does. The reconciler refuses a new tip
// whose history does not contain the last applied commit.
func (r *Repo) IsAncestor(a, b plumbing.Hash) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cb, err := r.commit(b)
	if err != nil {
		return false, fmt.Errorf("is-ancestor: %w", err)
	}
	if a == b {
		return true, nil
	}
	ca, err := r.commit(a)
	if err != nil {
		return false, fmt.Errorf("is-ancestor: %w", err)
	}
	ok, err := ca.IsAncestor(cb)
	if err != nil {
		return false, fmt.Errorf("is-ancestor %s %s: walk history: %w", a, b, err)
	}
	return ok, nil
}

// Person is an author or committer of a commit.
type Person struct {
	Name  string
	Email string
	When  time.Time
}

// CommitInfo describes a commit.
type CommitInfo struct {
	Hash      plumbing.Hash
	Parents   []plumbing.Hash
	Author    Person
	Committer Person // Committer.When is the commit time
	Subject   string // the first line of the message
	Message   string
	// Signed is true when the commit carries a signature block; whether it
	// verifies is not checked here. SignatureFormat is "openpgp", "ssh",
	// "x509" or "unknown" (empty when unsigned), and Signature the block.
	Signed          bool
	SignatureFormat string
	Signature       string
}

// Commit describes the commit h.
func (r *Repo) Commit(h plumbing.Hash) (CommitInfo, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.commit(h)
	if err != nil {
		return CommitInfo{}, err
	}
	subject, _, _ := strings.Cut(strings.TrimLeft(c.Message, "\n"), "\n")
	info := CommitInfo{
		Hash:      c.Hash,
		Parents:   append([]plumbing.Hash(nil), c.ParentHashes...),
		Author:    Person{Name: c.Author.Name, Email: c.Author.Email, When: c.Author.When},
		Committer: Person{Name: c.Committer.Name, Email: c.Committer.Email, When: c.Committer.When},
		Subject:   strings.TrimSpace(subject),
		Message:   c.Message,
		Signed:    strings.TrimSpace(c.PGPSignature) != "",
		Signature: c.PGPSignature,
	}
	if info.Signed {
		info.SignatureFormat = signatureFormat(c.PGPSignature)
	}
	return info, nil
}

func signatureFormat(sig string) string {
	sig = strings.TrimSpace(sig)
	switch {
	case strings.HasPrefix(sig, "-----BEGIN PGP SIGNATURE-----"):
		return "openpgp"
	case strings.HasPrefix(sig, "-----BEGIN SSH SIGNATURE-----"):
		return "ssh"
	case strings.HasPrefix(sig, "-----BEGIN SIGNED MESSAGE-----"):
		return "x509"
	}
	return "unknown"
}

// redact hides a password or token in a URL's user info.
func redact(raw string) string {
	if !schemeURL.MatchString(raw) {
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Redacted()
}

// History lists up to n commits before h on its first-parent line, newest
// first (h itself excluded).
func (r *Repo) History(h plumbing.Hash, n int) ([]plumbing.Hash, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []plumbing.Hash
	c, err := r.commit(h)
	if err != nil {
		return nil, fmt.Errorf("history: %w", err)
	}
	for len(out) < n && c.NumParents() > 0 {
		parent := c.ParentHashes[0]
		if c, err = r.commit(parent); err != nil {
			return nil, fmt.Errorf("history of %s: %w", h, err)
		}
		out = append(out, parent)
	}
	return out, nil
}
