package reconcile

import (
	"context"
	"errors"
	"fmt"
)

// Resolver is implemented by sources that name revisions: it turns what
// git accepts (an abbreviated commit id, a branch or tag, HEAD~1) into the
// full id the reconciler reports, after a fetch so that a commit just
// pushed resolves.
type Resolver interface {
	Resolve(ctx context.Context, rev string) (string, error)
}

// ErrUnknownRevision is a revision the source does not have.
var ErrUnknownRevision = errors.New("unknown revision")

// ResolveRevision resolves rev through the source (see Resolver). A
// source without names answers the full ids it reports only.
func (r *Reconciler) ResolveRevision(ctx context.Context, rev string) (string, error) {
	if rev == "" {
		return "", fmt.Errorf("resolve revision: %w: empty", ErrUnknownRevision)
	}
	if res, ok := r.Source.(Resolver); ok {
		return res.Resolve(ctx, rev)
	}
	latest, err := r.Source.Latest(ctx)
	if err != nil {
		return "", fmt.Errorf("resolve revision %q: %w", rev, err)
	}
	if latest.ID == rev {
		return rev, nil
	}
	return "", fmt.Errorf("revision %q: %w (the source's revision is %s)", rev, ErrUnknownRevision, latest.ID)
}

// SupersededBy returns the applied revision when it is newer than rev and
// has rev in its history (rev's change went in with it, or was reverted
// after it), else "". Only sources with history answer: a directory has
// none.
func (r *Reconciler) SupersededBy(ctx context.Context, rev string) (string, error) {
	if _, ok := r.Source.(Historian); !ok {
		return "", nil
	}
	applied := r.Status().AppliedRevision
	if applied == "" || applied == rev {
		return "", nil
	}
	ok, err := r.Source.Descends(rev, applied)
	if err != nil {
		return "", fmt.Errorf("is %s in the history of the applied %s: %w", rev, applied, err)
	}
	if !ok {
		return "", nil
	}
	return applied, nil
}
