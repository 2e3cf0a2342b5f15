package secret

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestSameHostRedirects: a client carrying a secret follows a redirect on
// its host but never to another one, where Go would replay a 307's body
// and keep a custom header such as X-API-Key.
func TestSameHostRedirects(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
	}))
	defer other.Close()
	granted := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, other.URL+"/steal", http.StatusTemporaryRedirect)
		case "/here":
			http.Redirect(w, r, "/ok", http.StatusTemporaryRedirect)
		case "/ok":
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer granted.Close()
	c := &http.Client{CheckRedirect: SameHostRedirects}
	post := func(path string) (*http.Response, error) {
		req, _ := http.NewRequest(http.MethodPost, granted.URL+path, strings.NewReader(`{"Password": "bmc-secret"}`))
		req.Header.Set("X-API-Key", "pdns-secret")
		return c.Do(req)
	}
	if _, err := post("/away"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("redirect to another host: %v", err)
	}
	if n := elsewhere.Load(); n != 0 {
		t.Fatalf("the other host got %d requests", n)
	}
	resp, err := post("/here")
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("redirect on the same host: %v %v", resp, err)
	}
	resp.Body.Close()
}
