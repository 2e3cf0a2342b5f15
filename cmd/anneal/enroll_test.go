package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/node"
)

// TestWriteEnrollment: the files go to DIR/NODE/ with mode 0600 (an
// existing file's looser mode too), the output names where they go and
// never holds their content; --out - prints them; a daemon's answer
// that would write outside DIR/NODE is refused.
func TestWriteEnrollment(t *testing.T) {
	const secret = "agent-token-0123456789abcdef"
	good := func() *reconcile.Enrollment {
		return &reconcile.Enrollment{Node: "w1n01", BuildID: "b1", AgentSetup: node.AgentSetup{
			Files: []node.AgentFile{
				{Name: "agent.json", Path: "/etc/anneal/agent.json", Mode: "0600", Content: `{"token":"` + secret + `"}`},
				{Name: "build-id", Path: "/etc/anneal/build-id", Mode: "0644", Content: "b1\n"},
			},
			BinaryURL: "http://boot/agent/anneal", BinaryPath: "/usr/local/bin/anneal", Unit: "anneal-agent.service"}}
	}
	tests := []struct {
		name  string
		edit  func(e *reconcile.Enrollment)
		stdio bool
		err   string
	}{
		{name: "files"},
		{name: "stdout", stdio: true},
		{name: "file name with a slash", edit: func(e *reconcile.Enrollment) { e.Files[0].Name = "../agent.json" }, err: "answered a file"},
		{name: "relative path", edit: func(e *reconcile.Enrollment) { e.Files[0].Path = "etc/x" }, err: "answered a file"},
		{name: "node name with a slash", edit: func(e *reconcile.Enrollment) { e.Node = "../x" }, err: "answered node"},
		{name: "no files", edit: func(e *reconcile.Enrollment) { e.Files = nil }, err: "no files"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// A file left by an earlier enroll, readable by all.
			if err := os.MkdirAll(filepath.Join(dir, "w1n01"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "w1n01", "agent.json"), []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			e := good()
			if tc.edit != nil {
				tc.edit(e)
			}
			out := dir
			if tc.stdio {
				out = "-"
			}
			var w bytes.Buffer
			err := writeEnrollment(&w, out, e)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				if data, _ := os.ReadFile(filepath.Join(dir, "w1n01", "agent.json")); string(data) != "old" {
					t.Error("a refused answer overwrote a file")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.stdio {
				if !strings.Contains(w.String(), secret) || !strings.Contains(w.String(), "# /etc/anneal/agent.json (mode 0600)") {
					t.Errorf("--out - printed:\n%s", w.String())
				}
				return
			}
			if strings.Contains(w.String(), secret) {
				t.Errorf("the token was printed:\n%s", w.String())
			}
			for _, want := range []string{"install -m 0600 agent.json /etc/anneal/agent.json", "systemctl enable --now anneal-agent.service", "curl -fsS -o /usr/local/bin/anneal http://boot/agent/anneal"} {
				if !strings.Contains(w.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, w.String())
				}
			}
			for _, f := range e.Files {
				path := filepath.Join(dir, "w1n01", f.Name)
				st, err := os.Stat(path)
				data, _ := os.ReadFile(path)
				if err != nil || st.Mode().Perm() != 0o600 || string(data) != f.Content {
					t.Errorf("%s: %v, mode %v, content %q", f.Name, err, st.Mode().Perm(), data)
				}
			}
		})
	}
}
