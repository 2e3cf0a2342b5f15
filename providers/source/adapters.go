package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/go-git/go-git/v5/plumbing"
)

// Branch follows one branch of a repository and reads the site from the
// commit's tree at Path: the reconciler's source for a git site repo.
type Branch struct {
	Repo *Repo
	Path string
	// Trust, when set, is the keys whose commits may be applied: Latest
	// still returns the tip, and Verify checks its signature.
	Trust *Trust
}

var _ reconcile.Source = (*Branch)(nil)

// Latest fetches and returns the branch tip.
func (b *Branch) Latest(ctx context.Context) (reconcile.Revision, error) {
	if err := b.Repo.Fetch(ctx); err != nil {
		return reconcile.Revision{}, err
	}
	h, err := b.Repo.Resolve("")
	if err != nil {
		return reconcile.Revision{}, err
	}
	info, err := b.Repo.Commit(h)
	if err != nil {
		return reconcile.Revision{}, err
	}
	return reconcile.Revision{ID: h.String(), Summary: info.Subject}, nil
}

// FS returns the site's tree at a commit.
func (b *Branch) FS(_ context.Context, rev string) (fs.FS, error) {
	return b.Repo.FS(plumbing.NewHash(rev), b.Path)
}

// Descends reports whether prev is in next's history.
func (b *Branch) Descends(prev, next string) (bool, error) {
	return b.Repo.IsAncestor(plumbing.NewHash(prev), plumbing.NewHash(next))
}

// Verify checks that the commit rev (a hash Latest returned) is signed by a
// key in b.Trust, returning an *UnsignedError or *UntrustedError when it is
// not. With no Trust every commit is accepted.
func (b *Branch) Verify(ctx context.Context, rev string) error {
	if b.Trust == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if rev == "" {
		return errors.New("verify commit signature: no revision given")
	}
	h, err := b.Repo.Resolve(rev)
	if err != nil {
		return fmt.Errorf("verify commit signature: %w", err)
	}
	_, err = b.Trust.Verify(b.Repo, h)
	return err
}

// Dir reads the site from a directory as it is; its revision is the digest
// of its YAML files. It has no history: every revision descends.
type Dir struct {
	Path string
}

var _ reconcile.Source = Dir{}

// Latest returns the digest of the directory's site files.
func (d Dir) Latest(ctx context.Context) (reconcile.Revision, error) {
	h := sha256.New()
	fsys := os.DirFS(d.Path)
	err := fs.WalkDir(fsys, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			if p != "." && strings.HasPrefix(e.Name(), ".") {
				return fs.SkipDir
			}
			return nil
		}
		if ext := path.Ext(p); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		f, err := fsys.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(h, "%s\x00", p)
		_, err = io.Copy(h, f)
		return err
	})
	if err != nil {
		return reconcile.Revision{}, fmt.Errorf("read site directory %s: %w", d.Path, err)
	}
	return reconcile.Revision{ID: "dir:" + hex.EncodeToString(h.Sum(nil))[:16], Summary: d.Path}, ctx.Err()
}

// FS returns the directory (only its current content exists).
func (d Dir) FS(context.Context, string) (fs.FS, error) { return os.DirFS(d.Path), nil }

// Descends is always true: a directory has no history to rewrite.
func (Dir) Descends(string, string) (bool, error) { return true, nil }

// History lists up to n revisions before rev, newest first.
func (b *Branch) History(_ context.Context, rev string, n int) ([]string, error) {
	hs, err := b.Repo.History(plumbing.NewHash(rev), n)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out, nil
}

var _ reconcile.Resolver = (*Branch)(nil)

// Resolve fetches, then resolves rev as git does (an abbreviated or full
// commit id, a branch or tag, HEAD, with ~N and ^N): the full commit id.
// A revision the repository does not have is reconcile.ErrUnknownRevision.
func (b *Branch) Resolve(ctx context.Context, rev string) (string, error) {
	if err := b.Repo.Fetch(ctx); err != nil {
		return "", err
	}
	h, err := b.Repo.Resolve(rev)
	if err != nil {
		return "", fmt.Errorf("%w: %w", reconcile.ErrUnknownRevision, err)
	}
	return h.String(), nil
}

var _ reconcile.Resolver = Dir{}

// Resolve answers the directory's own revision (its full id, or a prefix
// of its digest of at least 8 characters): a directory has no other.
func (d Dir) Resolve(ctx context.Context, rev string) (string, error) {
	latest, err := d.Latest(ctx)
	if err != nil {
		return "", err
	}
	digest := strings.TrimPrefix(latest.ID, "dir:")
	given := strings.TrimPrefix(rev, "dir:")
	if rev == latest.ID || (len(given) >= 8 && strings.HasPrefix(digest, given)) {
		return latest.ID, nil
	}
	return "", fmt.Errorf("revision %q: %w: the directory %s is at %s and has no history", rev, reconcile.ErrUnknownRevision, d.Path, latest.ID)
}
