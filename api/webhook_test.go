package api

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile"
)

func sign(token string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// TestWebhook: the HMAC covers the whole body, a body over the limit is
// refused before it could trigger, and a delivery is accepted once.
func TestWebhook(t *testing.T) {
	const token = "t0ken"
	srv := httptest.NewServer(New(Config{Reconciler: &reconcile.Reconciler{}, Token: token}))
	defer srv.Close()
	push := []byte(`{"ref":"refs/heads/main","after":"1111"}`)
	next := []byte(`{"ref":"refs/heads/main","after":"2222"}`)
	huge := bytes.Repeat([]byte(" "), maxWebhookBody+1)
	copy(huge, push)
	tests := []struct {
		name    string
		body    []byte
		headers map[string]string
		want    int
	}{
		{"over the limit, signed over its first 1 MiB", huge, map[string]string{"X-Hub-Signature-256": sign(token, huge[:1<<20])}, http.StatusRequestEntityTooLarge},
		{"over the limit, signed whole", huge, map[string]string{"X-Hub-Signature-256": sign(token, huge)}, http.StatusRequestEntityTooLarge},
		{"bad signature", push, map[string]string{"X-Hub-Signature-256": sign("other", push), "X-GitHub-Delivery": "d-0"}, http.StatusForbidden},
		{"not hex", push, map[string]string{"X-Hub-Signature-256": "sha256=zz"}, http.StatusForbidden},
		{"no auth", push, nil, http.StatusForbidden},
		{"fresh GitHub delivery", push, map[string]string{"X-Hub-Signature-256": sign(token, push), "X-GitHub-Delivery": "d-1"}, http.StatusAccepted},
		{"the same delivery again", push, map[string]string{"X-Hub-Signature-256": sign(token, push), "X-GitHub-Delivery": "d-1"}, http.StatusConflict},
		{"the same body under a fresh id", push, map[string]string{"X-Hub-Signature-256": sign(token, push), "X-GitHub-Delivery": "d-forged"}, http.StatusConflict},
		{"the same body without an id", push, map[string]string{"X-Hub-Signature-256": sign(token, push)}, http.StatusConflict},
		{"a new push reusing a seen id", next, map[string]string{"X-Hub-Signature-256": sign(token, next), "X-GitHub-Delivery": "d-1"}, http.StatusConflict},
		{"fresh Gitea delivery", next, map[string]string{"X-Hub-Signature-256": sign(token, next), "X-Gitea-Delivery": "g-1", "X-Gogs-Delivery": "g-1", "X-GitHub-Delivery": "g-1"}, http.StatusAccepted},
		{"Gogs replay of it", []byte(`{}`), map[string]string{"Authorization": "Bearer " + token, "X-Gogs-Delivery": "g-1"}, http.StatusConflict},
		{"bearer token", []byte(`{}`), map[string]string{"Authorization": "Bearer " + token}, http.StatusAccepted},
		{"bearer token again (no id: a bearer holder is the operator)", []byte(`{}`), map[string]string{"Authorization": "Bearer " + token}, http.StatusAccepted},
		{"wrong bearer token", []byte(`{}`), map[string]string{"Authorization": "Bearer nope"}, http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/webhook", bytes.NewReader(tc.body))
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

// TestReplaySet: a key is remembered for the window and the set never
// holds more than its bound, the oldest forgotten first.
func TestReplaySet(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		at   time.Duration
		keys []string
		want bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"repeat within the window", []step{{0, []string{"a"}, true}, {time.Hour, []string{"a"}, false}}},
		{"repeat after the window", []step{{0, []string{"a"}, true}, {24 * time.Hour, []string{"a"}, true}}},
		{"one key of two seen", []step{{0, []string{"a"}, true}, {1, []string{"b", "a"}, false}, {2, []string{"b"}, true}}},
		{"refused adds nothing", []step{{0, []string{"a"}, true}, {1, []string{"a", "c"}, false}, {2, []string{"c"}, true}}},
		{"oldest forgotten past the bound", []step{{0, []string{"a"}, true}, {1, []string{"b"}, true}, {2, []string{"c"}, true}, {3, []string{"d"}, true}, {4, []string{"a"}, true}, {5, []string{"d"}, false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newReplaySet(24*time.Hour, 3)
			for i, st := range tc.steps {
				if got := s.add(t0.Add(st.at), st.keys...); got != st.want {
					t.Fatalf("step %d: add(%v) = %v, want %v", i, st.keys, got, st.want)
				}
				if len(s.order) > 3 || len(s.seen) > 3 {
					t.Fatalf("step %d: %d keys held, bound 3", i, len(s.order))
				}
			}
		})
	}
}
