package boot

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// TestAgentSetup: the files an enrolled machine gets name this server, the
// node and a token of the record's generation, which the facts route
// accepts exactly as an installed node's; a newer generation (a
// re-enroll) makes it refused. Bad inputs are errors, not files.
func TestAgentSetup(t *testing.T) {
	f := newFixture(t)
	build := f.buildID("e1n01")
	setup, err := f.srv.AgentSetup("e1n01", "g-enroll-1", build)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]node.AgentFile{}
	for _, file := range setup.Files {
		files[file.Name] = file
	}
	var cfg agentFile
	if err := json.Unmarshal([]byte(files["agent.json"].Content), &cfg); err != nil {
		t.Fatalf("agent.json: %v", err)
	}
	f.secret(cfg.Token)
	if cfg.URL != f.srv.BaseURL || cfg.Node != "e1n01" || cfg.Token != AgentToken(testKey, "e1n01", "g-enroll-1") {
		t.Errorf("agent.json %+v: want this server's URL, the node and the generation's token", cfg)
	}
	if a := files["agent.json"]; a.Path != agentConfigPath || a.Mode != "0600" {
		t.Errorf("agent.json goes to %s mode %s, want %s 0600", a.Path, a.Mode, agentConfigPath)
	}
	if b := files["build-id"]; b.Path != buildIDPath || strings.TrimSpace(b.Content) != build {
		t.Errorf("build-id %+v, want %s at %s", b, build, buildIDPath)
	}
	if u := files[agentUnit]; u.Content != agentUnitText || setup.Unit != agentUnit {
		t.Errorf("unit %q (%q), want anneal-agent.service as installs write it", u.Name, setup.Unit)
	}
	if setup.BinaryURL != f.srv.BaseURL+"/agent/anneal" || setup.BinaryPath != binPath {
		t.Errorf("binary %s -> %s", setup.BinaryURL, setup.BinaryPath)
	}

	report := func() int {
		status, _ := f.post("/api/v1/nodes/e1n01/facts", factsRequest{BuildID: build, Facts: sampleFacts("e1n01")}, cfg.Token)
		return status
	}
	f.update("e1n01", func(r *node.Record) { r.AgentGen = "g-enroll-1" })
	if got := report(); got != http.StatusNoContent {
		t.Errorf("report with the enrolled token: %d, want 204", got)
	}
	f.update("e1n01", func(r *node.Record) { r.AgentGen = "g-enroll-2" }) // enrolled again
	if got := report(); got != http.StatusForbidden {
		t.Errorf("report with the previous enrollment's token: %d, want 403", got)
	}

	for _, tc := range []struct{ name, gen, build string }{
		{"no generation", "", build},
		{"no build", "g", ""},
		{"build not an id", "g", "x y"},
	} {
		if _, err := f.srv.AgentSetup("e1n01", tc.gen, tc.build); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	noKey := &Server{BaseURL: "http://x"}
	if _, err := noKey.AgentSetup("e1n01", "g", build); err == nil {
		t.Error("no key: no error")
	}
}
