package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// post is one request the fake server received.
type post struct {
	path, auth string
	body       map[string]any
}

// server is a fake anneal netboot server: it records the posts and
// answers each with the next code of codes (200 when none is left).
type server struct {
	*httptest.Server
	mu    sync.Mutex
	posts []post
	codes []int
	// got is signalled once per post received.
	got chan struct{}
}

func newServer(t *testing.T, codes ...int) *server {
	s := &server{codes: codes, got: make(chan struct{}, 1024)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body map[string]any
		data, _ := io.ReadAll(req.Body)
		if err := json.Unmarshal(data, &body); err != nil || req.Header.Get("Content-Type") != "application/json" {
			t.Errorf("post %s: not JSON: %v %q", req.URL.Path, err, data)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.posts = append(s.posts, post{path: req.URL.Path, auth: req.Header.Get("Authorization"), body: body})
		code := http.StatusOK
		if len(s.codes) > 0 {
			code, s.codes = s.codes[0], s.codes[1:]
		}
		if code != http.StatusOK {
			http.Error(w, "refused: "+http.StatusText(code), code)
		}
		select {
		case s.got <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) received() []post {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]post(nil), s.posts...)
}

func writeFile(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
}

func writeConfig(t *testing.T, path string, cfg Config) {
	t.Helper()
	data, _ := json.Marshal(cfg)
	writeFile(t, path, string(data), 0o600)
}

func collect(_ context.Context, root string) (node.Facts, error) {
	return node.Facts{Hostname: "e1n01", Kernel: "6.8.0", OSRelease: map[string]string{"ROOT": root}}, nil
}

// fixture is an agent's files and a server.
func fixture(t *testing.T, codes ...int) (*server, Options) {
	t.Helper()
	dir := t.TempDir()
	srv := newServer(t, codes...)
	opts := Options{ConfigPath: filepath.Join(dir, "agent.json"), BuildIDFile: filepath.Join(dir, "build-id"), Root: "/fake",
		Interval: time.Hour, Collect: collect}
	writeConfig(t, opts.ConfigPath, Config{URL: srv.URL, Node: "e1n01", Token: "agent-1"})
	writeFile(t, opts.BuildIDFile, "b-123\n", 0o644)
	return srv, opts
}

func TestReadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, data, err string
	}{
		{"valid", `{"url":"http://a","node":"n","token":"t"}`, ""},
		{"no token is valid", `{"url":"http://a","node":"n"}`, ""},
		{"no node", `{"url":"http://a"}`, "url and node are required"},
		{"not json", `{`, "agent config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			writeFile(t, p, tc.data, 0o600)
			_, err := ReadConfig(p)
			if (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v, want %q", err, tc.err)
			}
		})
	}
	if _, err := ReadConfig(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing config read")
	}
	if _, err := New(Options{ConfigPath: filepath.Join(dir, "missing")}); err == nil {
		t.Fatal("New without a config")
	}
}

// TestReadInstallToken: trimmed; an empty file is an error; a file others
// can read is warned of; the token is never in an error or the log.
func TestReadInstallToken(t *testing.T) {
	dir := t.TempDir()
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	p := filepath.Join(dir, "install-token")
	writeFile(t, p, "  tok-SECRET\n", 0o600)
	if tok, err := ReadInstallToken(p, log); err != nil || tok != "tok-SECRET" || logged.Len() != 0 {
		t.Fatalf("%q %v, log %q", tok, err, logged.String())
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadInstallToken(p, log); err != nil || !strings.Contains(logged.String(), "readable by others") || strings.Contains(logged.String(), "SECRET") {
		t.Fatalf("%v, log %q", err, logged.String())
	}
	writeFile(t, p, " \n", 0o600)
	if _, err := ReadInstallToken(p, log); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("empty: %v", err)
	}
	if _, err := ReadInstallToken(filepath.Join(dir, "none"), log); err == nil {
		t.Fatal("missing token file read")
	}
}

// TestReport: a report carries the build id and the facts with the agent
// token, and agent.json is read again for each (a rotated token is used;
// a broken file keeps the last good one).
func TestReport(t *testing.T) {
	srv, opts := fixture(t)
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := a.Report(ctx); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, opts.ConfigPath, Config{URL: srv.URL, Node: "e1n01", Token: "agent-2"})
	if err := a.Report(ctx); err != nil {
		t.Fatal(err)
	}
	writeFile(t, opts.ConfigPath, "{", 0o600)
	if err := a.Report(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(opts.BuildIDFile); err != nil {
		t.Fatal(err)
	}
	if err := a.Report(ctx); err != nil {
		t.Fatal(err)
	}
	got := srv.received()
	if len(got) != 4 {
		t.Fatalf("%d posts, want 4", len(got))
	}
	for i, want := range []string{"agent-1", "agent-2", "agent-2", "agent-2"} {
		p := got[i]
		if p.path != "/api/v1/nodes/e1n01/facts" || p.auth != "Bearer "+want || p.body["token"] != nil {
			t.Errorf("post %d: %s %q %v", i, p.path, p.auth, p.body)
		}
		facts, _ := p.body["facts"].(map[string]any)
		if facts["hostname"] != "e1n01" || facts["osRelease"].(map[string]any)["ROOT"] != "/fake" {
			t.Errorf("post %d: facts %v", i, facts)
		}
	}
	if got[0].body["buildId"] != "b-123" || got[3].body["buildId"] != "" {
		t.Errorf("build ids %v, %v", got[0].body["buildId"], got[3].body["buildId"])
	}
}

// TestInstalled: the callback carries the install token in its body, no
// bearer; the server's refusals are StatusErrors, permanent but for
// timeouts, throttling and server errors.
func TestInstalled(t *testing.T) {
	codes := []int{http.StatusOK, http.StatusConflict, http.StatusForbidden, http.StatusTooManyRequests, http.StatusRequestTimeout, http.StatusBadGateway}
	srv, opts := fixture(t, codes...)
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range codes {
		err := a.Installed(context.Background(), "install-tok")
		var se *StatusError
		switch {
		case code == http.StatusOK:
			if err != nil {
				t.Fatalf("200: %v", err)
			}
			continue
		case !errors.As(err, &se):
			t.Fatalf("%d: %v, want a StatusError", code, err)
		}
		wantPermanent := code == http.StatusConflict || code == http.StatusForbidden
		if se.Code != code || se.Permanent() != wantPermanent || !strings.Contains(se.Error(), "refused: ") ||
			!strings.Contains(se.Error(), "/api/v1/nodes/e1n01/installed") {
			t.Errorf("%d: %+v permanent=%v", code, se, se.Permanent())
		}
	}
	for _, p := range srv.received() {
		if p.path != "/api/v1/nodes/e1n01/installed" || p.auth != "" || p.body["token"] != "install-tok" || p.body["buildId"] != "b-123" {
			t.Errorf("callback %s %q %v", p.path, p.auth, p.body)
		}
	}
}

// TestRun reports at once and at every tick until ctx ends, carrying on
// after a refused report, which it says was refused.
func TestRun(t *testing.T) {
	srv, opts := fixture(t, http.StatusForbidden)
	opts.Interval = 10 * time.Millisecond
	var mu sync.Mutex
	var logged bytes.Buffer
	opts.Log = slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &logged}, nil))
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx) }()
	timeout := time.After(10 * time.Second)
wait:
	for range 3 {
		select {
		case <-srv.got:
		case <-timeout:
			break wait // the count below fails the test
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(srv.received()); n < 3 {
		t.Fatalf("%d reports", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logged.String(), "report refused: this agent's token was revoked") {
		t.Errorf("the refusal is not logged:\n%s", logged.String())
	}
	if err := (&Agent{opts: Options{}}).Run(context.Background()); err == nil {
		t.Error("Run with no interval")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
