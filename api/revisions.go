package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/anneal-dev/anneal/reconcile"
)

// RevisionResolver resolves a revision name to the full id the status
// reports; *reconcile.Reconciler implements it.
type RevisionResolver interface {
	ResolveRevision(ctx context.Context, rev string) (string, error)
	// SupersededBy is the applied revision when it is newer than rev and
	// has rev in its history, else "".
	SupersededBy(ctx context.Context, rev string) (string, error)
}

// maxRevisionName bounds GET /api/v1/revisions/{rev}'s name.
const maxRevisionName = 256

// handleRevision is GET /api/v1/revisions/{rev...}: {"revision": FULL-ID}
// for anything git accepts (a short id, a branch, a tag), 404 for a
// revision the source does not have. "supersededBy" names the applied
// revision when it is newer and has this one in its history.
func handleRevision(r Reconciler) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		res, ok := r.(RevisionResolver)
		if !ok {
			writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "this server does not resolve revisions"})
			return
		}
		rev := req.PathValue("rev")
		if rev == "" || len(rev) > maxRevisionName {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "a revision of 1 to 256 characters is required"})
			return
		}
		full, err := res.ResolveRevision(req.Context(), rev)
		switch {
		case errors.Is(err, reconcile.ErrUnknownRevision):
			writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
		case err != nil:
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		default:
			out := map[string]string{"revision": full}
			by, err := res.SupersededBy(req.Context(), full)
			if err != nil {
				writeJSON(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
				return
			}
			if by != "" {
				out["supersededBy"] = by
			}
			writeJSON(w, http.StatusOK, out)
		}
	}
}
