package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/anneal-dev/anneal/reconcile"
)

// Enroller enrolls a machine anneal did not install;
// *reconcile.Reconciler implements it.
type Enroller interface {
	Enroll(ctx context.Context, node string) (*reconcile.Enrollment, error)
}

// newEnroll answers POST /api/v1/nodes/{node}/enroll (bearer token): the
// daemon issues the node a new agent token (an earlier enrollment's is
// revoked) and answers with the files its machine needs (agent.json with
// the token, build-id, anneal-agent.service) and where to fetch the
// binary. A node anneal built, is building or failed to build, one in the
// running rollout and one not in the site are refused (409, with why).
// The answer holds a credential: it is sent with no-store and never
// logged.
func newEnroll(cfg Config) http.Handler {
	enroller, _ := cfg.Reconciler.(Enroller)
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !bearerOK(req, cfg.Token) {
			writeJSON(w, http.StatusForbidden, forbidden(cfg.Token))
			return
		}
		if enroller == nil {
			writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "this server cannot enroll nodes"})
			return
		}
		name := req.PathValue("node")
		e, err := enroller.Enroll(req.Context(), name)
		switch {
		case errors.Is(err, reconcile.ErrEnrollRefused):
			writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
			return
		case err != nil:
			if cfg.Log != nil {
				cfg.Log.Error("enroll", "node", name, "err", err)
			}
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		// The reconciler's node.enrolled event states it (once).
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, e)
	})
}
