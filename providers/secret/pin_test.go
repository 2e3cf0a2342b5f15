package secret

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// TestPin: a pinned client reaches its granted address only, whatever URL
// it is asked for.
func TestPin(t *testing.T) {
	var hits [2]atomic.Int64
	var srv [2]*httptest.Server
	for i := range srv {
		srv[i] = httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits[i].Add(1) }))
		defer srv[i].Close()
	}
	granted, _ := url.Parse(srv[0].URL)
	dial := http.DefaultTransport.(*http.Transport).Clone()
	PinDial(dial, granted.Host)
	for name, c := range map[string]*http.Client{
		"PinURL":  {Transport: PinURL(http.DefaultTransport, granted)},
		"PinDial": {Transport: dial},
	} {
		resp, err := c.Get(srv[0].URL + "/ok")
		if err != nil {
			t.Fatalf("%s: the granted address: %v", name, err)
		}
		resp.Body.Close()
		for _, to := range []string{srv[1].URL + "/x", "http://" + granted.Host + "@" + strings.TrimPrefix(srv[1].URL, "http://") + "/x"} {
			if _, err := c.Get(to); err == nil || !strings.Contains(err.Error(), "refused") {
				t.Errorf("%s: %s: %v", name, to, err)
			}
		}
	}
	if hits[0].Load() != 2 || hits[1].Load() != 0 {
		t.Fatalf("granted server %d requests (want 2), other %d (want 0)", hits[0].Load(), hits[1].Load())
	}
}
