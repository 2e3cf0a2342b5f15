package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/node"
)

// enrollingReconciler is a fakeReconciler that enrolls.
type enrollingReconciler struct {
	fakeReconciler
	enrolled []string
}

const enrollSecret = "agent-token-0123456789abcdef"

func (f *enrollingReconciler) Enroll(_ context.Context, name string) (*reconcile.Enrollment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enrolled = append(f.enrolled, name)
	switch name {
	case "w1n01":
		return &reconcile.Enrollment{Node: name, BuildID: "b1", AgentSetup: node.AgentSetup{
			Files: []node.AgentFile{{Name: "agent.json", Path: "/etc/anneal/agent.json", Mode: "0600", Content: `{"token":"` + enrollSecret + `"}`}}}}, nil
	case "e1n01":
		return nil, fmt.Errorf("%w: node e1n01 is verified", reconcile.ErrEnrollRefused)
	}
	return nil, errors.New("record its agent token: disk full")
}

// TestEnrollRoute: the route needs the bearer token (403, and nothing is
// enrolled without it), answers the enrollment with no-store, maps a
// refusal to 409 with its reason and a failure to 500, and never logs the
// answer.
func TestEnrollRoute(t *testing.T) {
	tests := []struct {
		name, node, token string
		status            int
		want              string
	}{
		{"no token", "w1n01", "", http.StatusForbidden, "bearer token"},
		{"wrong token", "w1n01", "nope", http.StatusForbidden, "bearer token"},
		{"enrolled", "w1n01", "s3cret", http.StatusOK, enrollSecret},
		{"refused", "e1n01", "s3cret", http.StatusConflict, "is verified"},
		{"failed", "w1n02", "s3cret", http.StatusInternalServerError, "disk full"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &enrollingReconciler{}
			logs := &bytes.Buffer{}
			h := New(Config{Reconciler: r, Token: "s3cret", Log: slog.New(slog.NewTextHandler(logs, nil))})
			w := do(t, h, http.MethodPost, "/api/v1/nodes/"+tc.node+"/enroll", tc.token, nil)
			if w.Code != tc.status || !strings.Contains(w.Body.String(), tc.want) {
				t.Fatalf("%d %s, want %d with %q", w.Code, w.Body, tc.status, tc.want)
			}
			if tc.status == http.StatusForbidden && len(r.enrolled) != 0 {
				t.Errorf("enrolled %v without the token", r.enrolled)
			}
			if tc.status == http.StatusOK {
				var e reconcile.Enrollment
				if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Node != "w1n01" || len(e.Files) != 1 {
					t.Errorf("answer %s (%v)", w.Body, err)
				}
				if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
					t.Errorf("Cache-Control %q, want no-store", cc)
				}
			}
			if strings.Contains(logs.String(), enrollSecret) || strings.Contains(logs.String(), "s3cret") {
				t.Errorf("a secret was logged:\n%s", logs)
			}
		})
	}
	// A Reconciler that cannot enroll answers 501 (after the token).
	h := New(Config{Reconciler: &fakeReconciler{}, Token: "s3cret"})
	if w := do(t, h, http.MethodPost, "/api/v1/nodes/w1n01/enroll", "s3cret", nil); w.Code != http.StatusNotImplemented {
		t.Errorf("no enroller: %d, want 501", w.Code)
	}
	if w := do(t, h, http.MethodPost, "/api/v1/nodes/w1n01/enroll", "", nil); w.Code != http.StatusForbidden {
		t.Errorf("no enroller, no token: %d, want 403", w.Code)
	}
}

// *reconcile.Reconciler is what serve wires: it must enroll.
var _ Enroller = (*reconcile.Reconciler)(nil)
