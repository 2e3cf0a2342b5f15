package test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/anneal-dev/anneal/providers/notify"
	"github.com/anneal-dev/anneal/reconcile/events"
)

// TestServeNotifies: a real serve on real BIND and PowerDNS sends its
// events to the operator's webhook, signed with the operator's key, in
// order: the revision applied, then an invalid edit refused (once); the
// deliveries are the events the API lists.
func TestServeNotifies(t *testing.T) {
	t.Parallel()
	const key = "notify-test-key-5c1d"
	var mu sync.Mutex
	var got []events.Event
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" ||
			!notify.Verify([]byte(key), body, r.Header.Get("X-Anneal-Signature-256")) {
			t.Errorf("a delivery that is not a signed JSON POST: %s %q %q", r.Method, r.Header.Get("Content-Type"), r.Header.Get("X-Anneal-Signature-256"))
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		var e events.Event
		if err := json.Unmarshal(body, &e); err != nil || string(e.Kind) != r.Header.Get("X-Anneal-Event") {
			t.Errorf("delivery %s: %v (X-Anneal-Event %q)", body, err, r.Header.Get("X-Anneal-Event"))
		}
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hook.Close)
	file := filepath.Join(t.TempDir(), "notify.yaml")
	conf := "site: lab1\nwebhooks:\n  - name: ops\n    url: " + hook.URL + "/hook\n    secret: {env: NOTIFY_KEY}\n"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	l := newDNSLab(t)
	api, logs, _ := startServeLogged(t, append([]string{"NOTIFY_KEY=" + key}, l.env...),
		"--site", l.site, "--state", l.state, "--interval", "1h", "--notify", file)
	kinds := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var ks []string
		for _, e := range got {
			ks = append(ks, string(e.Kind))
		}
		return ks
	}
	waitKind := func(kind string) {
		t.Helper()
		waitFor(t, "a "+kind+" delivery", func() bool { return strings.Contains(strings.Join(kinds(), " "), kind) })
	}
	waitKind("revision.applied")
	edit(t, l.site, "site.yaml", func(s string) string { return strings.Replace(s, "canaries: 1", "canaries: many", 1) })
	waitKind("revision.refused")

	// In Seq order, each once, and each one the API lists.
	mu.Lock()
	delivered := append([]events.Event(nil), got...)
	mu.Unlock()
	var listed []events.Event
	getJSON(t, api+"/api/v1/events?limit=1000", &listed)
	bySeq := map[uint64]events.Event{}
	for _, e := range listed {
		bySeq[e.Seq] = e
	}
	refused := 0
	for i, e := range delivered {
		if i > 0 && e.Seq <= delivered[i-1].Seq {
			t.Errorf("delivery %d (seq %d) after seq %d", i, e.Seq, delivered[i-1].Seq)
		}
		if l, ok := bySeq[e.Seq]; !ok || l.Kind != e.Kind || l.Revision != e.Revision {
			t.Errorf("delivered %+v; the API lists %+v", e, l)
		}
		if e.Kind == events.RevisionRefused {
			refused++
		}
		if e.Kind == events.NodeStep || e.Kind == events.DNSWritten {
			t.Errorf("a kind the default webhook does not send: %+v", e)
		}
	}
	if refused != 1 {
		t.Errorf("%d revision.refused deliveries, want 1: %v", refused, kinds())
	}
	if strings.Contains(logs.String(), key) {
		t.Error("the notify key is in serve's log")
	}
}
