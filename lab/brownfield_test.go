package lab

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/pxe/boot"
	"github.com/anneal-dev/anneal/reconcile/node"
)

// TestBrownfield: a brownfield node starts on, running the system it was
// given (facts derived from its network configuration as an install's
// would be), and reports nothing until it is given an agent
// configuration; then its agent reports with that token and build id. It
// was booted once (by the lab's start) and installed nothing.
func TestBrownfield(t *testing.T) {
	site := exampleSite(t)
	sn := site.Node("w1n01")
	rd, err := boot.Render(site, sn, "http://127.0.0.1:1", "t")
	if err != nil {
		t.Fatal(err)
	}
	spec := node.BuildSpecOf(site, sn)

	var mu sync.Mutex
	var reports []string // bearer + build
	var facts node.Facts
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			BuildID string     `json:"buildId"`
			Facts   node.Facts `json:"facts"`
		}
		if r.URL.Path != "/api/v1/nodes/w1n01/facts" || json.NewDecoder(r.Body).Decode(&body) != nil {
			http.Error(w, "unexpected", http.StatusBadRequest)
			return
		}
		mu.Lock()
		reports = append(reports, r.Header.Get("Authorization")+" "+body.BuildID)
		facts = body.Facts
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)

	f := startFleet(t, Config{Site: site, AgentInterval: time.Hour,
		Brownfield: map[string]Brownfield{"w1n01": {BuildID: "old-build", Network: []byte(rd.Network)}}})
	n := f.Node("w1n01")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.WaitFor(ctx, func(s NodeStatus) bool { return s.Phase == PhaseRunning }); err != nil {
		t.Fatal(err)
	}
	got, ok := n.Facts()
	if !ok || len(node.VerifyFacts(spec, got)) != 0 {
		t.Fatalf("brownfield facts %+v differ from the build: %v", got, node.VerifyFacts(spec, got))
	}
	if err := n.SetAgent(AgentConfig{URL: srv.URL, Node: "w1n01"}, ""); err == nil {
		t.Error("an agent.json without a token was taken")
	}
	if err := f.Node("w1n02").SetAgent(AgentConfig{URL: srv.URL, Node: "w1n02", Token: "x"}, ""); err == nil {
		t.Error("a node with nothing installed took an agent configuration")
	}
	if err := n.SetAgent(AgentConfig{URL: srv.URL, Node: "w1n01", Token: "tok-1"}, spec.ID()); err != nil {
		t.Fatal(err)
	}
	st, err := n.WaitFor(ctx, func(s NodeStatus) bool { return s.AgentReports >= 1 })
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reports) != 1 || reports[0] != "Bearer tok-1 "+spec.ID() || facts.Hostname != got.Hostname {
		t.Errorf("reports %q (hostname %q), want one with the given token and build", reports, facts.Hostname)
	}
	if st.Boots != 1 || st.Installs != 0 || st.BuildID != spec.ID() || st.Power != node.PowerOn {
		t.Errorf("status %+v: want booted once by the lab's start, nothing installed, the given build", st)
	}
	if other := f.Node("w1n02").Status(); other.Power != node.PowerOff || other.Boots != 0 {
		t.Errorf("a node not named brownfield: %+v", other)
	}
}

// TestBrownfieldConfig: a brownfield node must exist and have a build id.
func TestBrownfieldConfig(t *testing.T) {
	site := exampleSite(t)
	for _, tc := range []struct {
		name string
		b    map[string]Brownfield
		want string
	}{
		{"unknown node", map[string]Brownfield{"ghost": {BuildID: "b"}}, "no such node"},
		{"no build", map[string]Brownfield{"w1n01": {}}, "no build id"},
		{"bad network", map[string]Brownfield{"w1n01": {BuildID: "b", Network: []byte("{")}}, "w1n01"},
	} {
		_, err := New(Config{Site: site, Resolve: resolver(), BootURL: "http://127.0.0.1:1", Brownfield: tc.b})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
}
