package api

import (
	"net/http"
	"strings"
	"testing"
)

// TestForbiddenWithoutToken: a daemon without --token refuses its
// mutating routes saying they are disabled; one with a token asks for it.
func TestForbiddenWithoutToken(t *testing.T) {
	tests := []struct {
		name, serveToken, bearer, path, want string
	}{
		{"no serve token: suspend", "", "anything", "/api/v1/suspend", "mutating endpoints are disabled: this serve was started without --token"},
		{"no serve token: reconcile", "", "", "/api/v1/reconcile", "mutating endpoints are disabled"},
		{"no serve token: enroll", "", "anything", "/api/v1/nodes/w1n01/enroll", "mutating endpoints are disabled"},
		{"a wrong token", "s3cret", "wrong", "/api/v1/suspend", "a valid bearer token is required (serve --token)"},
		{"a wrong token: enroll", "s3cret", "wrong", "/api/v1/nodes/w1n01/enroll", "a valid bearer token is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := New(Config{Reconciler: &fakeReconciler{}, Token: tc.serveToken})
			w := do(t, h, http.MethodPost, tc.path, tc.bearer, nil)
			if w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), tc.want) {
				t.Fatalf("%d %s, want 403 with %q", w.Code, w.Body, tc.want)
			}
			if tc.serveToken != "" && strings.Contains(w.Body.String(), tc.serveToken) {
				t.Fatalf("the answer holds the token: %s", w.Body)
			}
		})
	}
}
