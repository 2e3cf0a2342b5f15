package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/anneal-dev/anneal/providers/secret"
	"github.com/anneal-dev/anneal/reconcile/events"
)

// Secret values of the tests: none may appear in a log.
const (
	hookKey     = "hmac-key-5b2d1f"
	forgeToken  = "ghp_token_0c9e77"
	urlSecret   = "T000/B000/url-secret-a41f"
	waitTimeout = 20 * time.Second
)

const sha1 = "0123456789abcdef0123456789abcdef01234567"

// hit is one request a test server received.
type hit struct {
	method, uri string
	header      http.Header
	body        []byte
	at          time.Time
}

// server is a test HTTP server on 127.0.0.1 that records requests and
// answers each with the next of its replies (the last one repeated).
type server struct {
	*httptest.Server
	hits chan hit

	mu      sync.Mutex
	replies []func(http.ResponseWriter)
}

func newServer(t *testing.T, replies ...func(http.ResponseWriter)) *server {
	t.Helper()
	s := &server{hits: make(chan hit, 100), replies: replies}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			t.Errorf("read body: %v", err)
		}
		// The reply is chosen before the test hears of the request: a
		// test that changes the replies once it sees a request changes
		// those of the next ones, never this one's.
		s.mu.Lock()
		reply := status(http.StatusNoContent)
		if len(s.replies) > 0 {
			reply = s.replies[0]
			if len(s.replies) > 1 {
				s.replies = s.replies[1:]
			}
		}
		s.mu.Unlock()
		s.hits <- hit{method: r.Method, uri: r.RequestURI, header: r.Header.Clone(), body: body, at: time.Now()}
		reply(w)
	}))
	t.Cleanup(s.Close)
	return s
}

func status(code int) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) { w.WriteHeader(code) }
}

// next waits for the server's next request.
func (s *server) next(t *testing.T) hit {
	t.Helper()
	select {
	case h := <-s.hits:
		return h
	case <-time.After(waitTimeout):
		t.Fatal("no request")
		return hit{}
	}
}

// syncBuffer is a log's output, written by several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is the environment the tests' secrets are read from.
func env(vars map[string]string) secret.Resolver {
	return secret.Resolver{Env: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }}
}

var testEnv = env(map[string]string{"HOOK_KEY": hookKey, "FORGE_TOKEN": forgeToken})

// fastRetry keeps the tests' backoff short (Retry-After is honored still).
var fastRetry = retryPolicy{attempts: 4, base: time.Millisecond, max: 4 * time.Millisecond, total: time.Minute, retryAfter: 5 * time.Second}

// start builds a notifier from a notify file, subscribes it to a fresh
// recorder and runs it until the test ends. The log is captured at debug
// level.
func start(t *testing.T, file string, r secret.Resolver, tweak func(*Notifier)) (*events.Recorder, *syncBuffer) {
	t.Helper()
	c, err := Parse("notify.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	n, err := New(c, Options{Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Site: "east", Resolver: r})
	if err != nil {
		t.Fatal(err)
	}
	n.retry = fastRetry
	if tweak != nil {
		tweak(n)
	}
	rec := events.NewRecorder(&events.Memory{}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	if err := n.Start(ctx, rec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		n.Wait() // Run returns once every goroutine stopped
		if strings.Contains(logs.String(), hookKey) || strings.Contains(logs.String(), forgeToken) || strings.Contains(logs.String(), urlSecret) {
			t.Errorf("a secret is in the log:\n%s", logs)
		}
	})
	return rec, logs
}

func hookFile(url string, extra string) string {
	return fmt.Sprintf("webhooks:\n  - name: ops\n    url: %s\n    secret: {env: HOOK_KEY}\n%s", url, extra)
}

// verify checks a webhook request's documented form: POST, JSON, the
// event and delivery headers and a signature that verifies with the key.
func verify(t *testing.T, h hit, kind events.Kind) {
	t.Helper()
	if h.method != http.MethodPost || h.uri != "/hook?a=1" {
		t.Errorf("%s %s", h.method, h.uri)
	}
	if ct := h.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if k := h.header.Get("X-Anneal-Event"); k != string(kind) {
		t.Errorf("X-Anneal-Event %q, want %s", k, kind)
	}
	m := hmac.New(sha256.New, []byte(hookKey))
	m.Write(h.body)
	if sig := h.header.Get("X-Anneal-Signature-256"); sig != "sha256="+hex.EncodeToString(m.Sum(nil)) {
		t.Errorf("X-Anneal-Signature-256 %q does not verify", sig)
	}
	if !Verify([]byte(hookKey), h.body, h.header.Get(HeaderSignature)) || Verify([]byte("other"), h.body, h.header.Get(HeaderSignature)) {
		t.Error("Verify disagrees")
	}
}

// payload decodes a json webhook's body strictly.
func payload(t *testing.T, h hit) Payload {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(h.body))
	dec.DisallowUnknownFields()
	var p Payload
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("body %s: %v", h.body, err)
	}
	if d := h.header.Get("X-Anneal-Delivery"); d != strconv.FormatUint(p.Seq, 10) || p.Seq == 0 {
		t.Errorf("X-Anneal-Delivery %q, seq %d", d, p.Seq)
	}
	return p
}

func TestWebhookFromRecorder(t *testing.T) {
	srv := newServer(t)
	rec, _ := start(t, hookFile(srv.URL+"/hook?a=1", ""), testEnv, nil)
	// The default kinds: outcomes and failed node steps, not every step.
	rec.Emit(t.Context(),
		events.Event{Kind: events.RevisionSeen, Revision: sha1, Message: "fetched"},
		events.Event{Kind: events.ApprovalPending, Revision: sha1, Message: "3 rebuilds exceed maxRebuildPercent"},
		events.Event{Kind: events.NodeStep, Node: "e1n01", Step: "power-on", Message: "powered on"},
		events.Event{Kind: events.NodeStep, Node: "e1n02", Step: "install", Message: "install failed", Error: "timeout"},
		events.Event{Kind: events.Approved, Revision: sha1, Actor: "api", Message: "approved"},
		events.Event{Kind: events.Applied, Revision: sha1, Message: "applied", Counts: map[string]int{"dns": 3}},
	)
	want := []events.Kind{events.ApprovalPending, events.NodeStep, events.Approved, events.Applied}
	var last uint64
	for i, k := range want {
		h := srv.next(t)
		verify(t, h, k)
		p := payload(t, h)
		if p.Kind != k || p.Site != "east" || p.Seq <= last || p.Time.IsZero() {
			t.Errorf("delivery %d: %+v", i, p)
		}
		last = p.Seq
		switch k {
		case events.NodeStep:
			if p.Node != "e1n02" || p.Error != "timeout" {
				t.Errorf("node step %+v", p)
			}
		case events.Applied:
			if p.Revision != sha1 || p.Counts["dns"] != 3 {
				t.Errorf("applied %+v", p)
			}
		}
	}
	// Nothing else: the next delivery is the next event (its long error
	// cut to 8 KiB).
	rec.Emit(t.Context(), events.Event{Kind: events.ApplyFailed, Revision: sha1, Message: "failed", Error: strings.Repeat("e", 100_000)})
	if p := payload(t, srv.next(t)); p.Kind != events.ApplyFailed || utf8.RuneCountInString(p.Error) != 8<<10 || !strings.HasSuffix(p.Error, "…") {
		t.Errorf("got %s (error of %d bytes) after the last, want apply.failed, its error cut", p.Kind, len(p.Error))
	}
}

func TestWebhookKindsAndOrder(t *testing.T) {
	srv := newServer(t)
	rec, _ := start(t, hookFile(srv.URL+"/hook?a=1", "    kinds: [node.step]\n"), testEnv, nil)
	const n = 200
	for i := range n {
		rec.Emit(t.Context(), events.Event{Kind: events.NodeStep, Node: fmt.Sprintf("n%03d", i), Step: "boot", Message: "booted"},
			events.Event{Kind: events.Applied, Revision: sha1, Message: "not wanted"})
	}
	for i := range n {
		p := payload(t, srv.next(t))
		if p.Kind != events.NodeStep || p.Node != fmt.Sprintf("n%03d", i) {
			t.Fatalf("delivery %d: %s %s", i, p.Kind, p.Node)
		}
	}
}

func TestSlack(t *testing.T) {
	srv := newServer(t)
	rec, _ := start(t, hookFile(srv.URL+"/hook?a=1", "    format: slack\n    kinds: [apply.failed]\n"), testEnv, nil)
	rec.Emit(t.Context(), events.Event{Kind: events.ApplyFailed, Revision: sha1, Message: "apply failed\nat <https://evil.example|here> & <!channel>",
		Error: strings.Repeat("x", 2000)})
	h := srv.next(t)
	verify(t, h, events.ApplyFailed)
	dec := json.NewDecoder(bytes.NewReader(h.body))
	dec.DisallowUnknownFields()
	var body struct {
		Text string `json:"text"`
	}
	if err := dec.Decode(&body); err != nil {
		t.Fatal(err)
	}
	want := "anneal east: apply.failed 0123456789ab: apply failed at &lt;https://evil.example|here&gt; &amp; &lt;!channel&gt; — error: xxx"
	if !strings.HasPrefix(body.Text, want) {
		t.Errorf("text %q, want %q…", body.Text, want)
	}
	if n := utf8.RuneCountInString(body.Text); n != maxSlackText || !strings.HasSuffix(body.Text, "…") || strings.ContainsAny(body.Text, "\n<>") {
		t.Errorf("text of %d characters: %q", n, body.Text)
	}
}

func TestRetries(t *testing.T) {
	retryAfter := func(w http.ResponseWriter) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	}
	for _, tc := range []struct {
		name     string
		replies  []func(http.ResponseWriter)
		attempts int
		failed   string // in the log, if the delivery fails
		minWait  time.Duration
	}{
		{"503 twice then 201", []func(http.ResponseWriter){status(503), status(503), status(201)}, 3, "", 0},
		{"429 with Retry-After", []func(http.ResponseWriter){retryAfter, status(200)}, 2, "", time.Second},
		{"500 always: bounded", []func(http.ResponseWriter){status(500)}, fastRetry.attempts, "gave up after 4 attempts: status 500", 0},
		{"400: not retried", []func(http.ResponseWriter){status(400)}, 1, "attempts=1 err=\"status 400 Bad Request\"", 0},
		{"404: not retried", []func(http.ResponseWriter){status(404)}, 1, "status 404 Not Found", 0},
		{"Retry-After too long", []func(http.ResponseWriter){func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusServiceUnavailable)
		}}, 1, "the server asks to wait 1h0m0s", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, tc.replies...)
			rec, logs := start(t, hookFile(srv.URL+"/hook?a=1", "    kinds: [revision.applied, apply.failed]\n"), testEnv, nil)
			rec.Emit(t.Context(), events.Event{Kind: events.Applied, Revision: sha1, Message: "applied"})
			var first hit
			for i := range tc.attempts {
				h := srv.next(t)
				verify(t, h, events.Applied)
				if i == 0 {
					first = h
				} else if !bytes.Equal(h.body, first.body) || h.header.Get(HeaderDelivery) != first.header.Get(HeaderDelivery) {
					t.Errorf("attempt %d differs from the first", i+1)
				}
				if i == 1 && h.at.Sub(first.at) < tc.minWait {
					t.Errorf("second attempt %s after the first, want at least %s (Retry-After)", h.at.Sub(first.at), tc.minWait)
				}
			}
			// The next event's delivery comes after the first's last
			// attempt: no more attempts were made.
			srv.mu.Lock()
			srv.replies = []func(http.ResponseWriter){status(200)}
			srv.mu.Unlock()
			rec.Emit(t.Context(), events.Event{Kind: events.ApplyFailed, Revision: sha1, Message: "next"})
			if h := srv.next(t); h.header.Get("X-Anneal-Event") != string(events.ApplyFailed) {
				t.Fatalf("attempt after %d: %s, want the next event", tc.attempts, h.header.Get("X-Anneal-Event"))
			}
			failed := strings.Contains(logs.String(), "notify: delivery failed")
			if tc.failed == "" && failed {
				t.Errorf("delivery failed:\n%s", logs)
			}
			if tc.failed != "" && (!failed || !strings.Contains(logs.String(), tc.failed)) {
				t.Errorf("log without %q:\n%s", tc.failed, logs)
			}
		})
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	elsewhere := newServer(t)
	srv := newServer(t, func(w http.ResponseWriter) {
		w.Header().Set("Location", elsewhere.URL+"/stolen")
		w.WriteHeader(http.StatusTemporaryRedirect)
	}, status(200))
	rec, logs := start(t, hookFile(srv.URL+"/hook?a=1", "    kinds: [revision.applied, apply.failed]\n"), testEnv, nil)
	rec.Emit(t.Context(), events.Event{Kind: events.Applied, Revision: sha1, Message: "applied"},
		events.Event{Kind: events.ApplyFailed, Revision: sha1, Message: "failed"})
	verify(t, srv.next(t), events.Applied)
	verify(t, srv.next(t), events.ApplyFailed)
	select {
	case h := <-elsewhere.hits:
		t.Fatalf("the redirect was followed: %s %s", h.method, h.uri)
	default:
	}
	if !strings.Contains(logs.String(), "307 Temporary Redirect: a redirect is not followed") {
		t.Errorf("log:\n%s", logs)
	}
}

func TestQueueBound(t *testing.T) {
	release := make(chan struct{})
	srv := newServer(t, func(w http.ResponseWriter) {
		<-release // hold the first delivery while the queue fills
		w.WriteHeader(200)
	}, status(200))
	var n *Notifier
	rec, logs := start(t, hookFile(srv.URL+"/hook?a=1", "    kinds: [node.step]\n"), testEnv, func(nn *Notifier) { n = nn; n.queue = 3 })
	step := func(i int) events.Event {
		return events.Event{Seq: uint64(i), Kind: events.NodeStep, Node: fmt.Sprintf("n%d", i), Message: "step"}
	}
	rec.Emit(t.Context(), step(1))
	if p := payload(t, srv.next(t)); p.Node != "n1" {
		t.Fatalf("first delivery %s", p.Node)
	}
	// The first is in flight: queue nine more (directly, so that all are
	// queued before it ends) into a queue of three.
	for i := 2; i <= 10; i++ {
		n.dispatch(step(i))
	}
	close(release)
	for _, want := range []string{"n8", "n9", "n10"} {
		if p := payload(t, srv.next(t)); p.Node != want {
			t.Fatalf("delivered %s, want %s (the oldest are dropped)", p.Node, want)
		}
	}
	if !strings.Contains(logs.String(), `msg="notify: queue full: the oldest events were dropped" sink="webhook ops" dropped=6`) {
		t.Errorf("log:\n%s", logs)
	}
}

func TestSecretsNotLogged(t *testing.T) {
	// A webhook whose URL is a secret, at a server that hangs up: the
	// client's error (which quotes the URL) must not be logged as is.
	hangup := newServer(t, func(w http.ResponseWriter) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		conn.Close()
	})
	closed := hangup.URL + "/services/" + urlSecret
	failing := newServer(t, status(500))
	refusing := newServer(t, status(401))
	r := env(map[string]string{"HOOK_KEY": hookKey, "FORGE_TOKEN": forgeToken, "HOOK_URL": closed,
		"FAILING_URL": failing.URL + "/services/" + urlSecret})
	file := fmt.Sprintf(`webhooks:
  - name: closed
    url: {env: HOOK_URL}
    secret: {env: HOOK_KEY}
  - name: failing
    url: {env: FAILING_URL}
    secret: {env: HOOK_KEY}
commitStatus:
  provider: github
  url: %s
  repository: example/fleet
  token: {env: FORGE_TOKEN}
`, refusing.URL)
	rec, logs := start(t, file, r, nil)
	rec.Emit(t.Context(), events.Event{Kind: events.Applied, Revision: sha1, Message: "applied"})
	for range fastRetry.attempts {
		failing.next(t)
		hangup.next(t)
	}
	if h := refusing.next(t); h.header.Get("Authorization") != "Bearer "+forgeToken {
		t.Errorf("Authorization %q", h.header.Get("Authorization"))
	}
	// Each sink's failure is logged once its delivery ends; a second
	// event's delivery to the same server means the first has ended.
	rec.Emit(t.Context(), events.Event{Kind: events.ApplyFailed, Revision: sha1, Message: "failed"})
	failing.next(t)
	refusing.next(t)
	hangup.next(t)
	for _, want := range []string{`sink="webhook closed" event=revision.applied seq=1 attempts=4 err="gave up after 4 attempts: Post: EOF"`,
		`sink="webhook failing" event=revision.applied seq=1 attempts=4 err="gave up after 4 attempts: status 500`,
		`sink="commit status github" event=revision.applied seq=1 attempts=1 err="status 401 Unauthorized"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log without %s:\n%s", want, logs)
		}
	}
	// The cleanup checks that no secret is in the log, once the closed
	// port's delivery has been given up or cancelled.

	// A secret that cannot be read stops New, naming the reference only.
	c, err := Parse("notify.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(c, Options{Resolver: env(map[string]string{"HOOK_URL": "https://x.example/" + urlSecret + "#frag", "FAILING_URL": "ftp://" + urlSecret})})
	if err == nil {
		t.Fatal("New with secrets missing")
	}
	for _, want := range []string{"notify.yaml: notify webhook \"closed\" secret: secret env:HOOK_KEY: environment variable HOOK_KEY is not set",
		"notify.yaml: notify commit status token: secret env:FORGE_TOKEN", "notify.yaml:2: webhook \"closed\": url from env:HOOK_URL: a fragment",
		"notify.yaml:5: webhook \"failing\": url from env:FAILING_URL: scheme \"ftp\""} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q, want %q", err, want)
		}
	}
	if strings.Contains(err.Error(), urlSecret) {
		t.Errorf("error quotes a secret: %v", err)
	}
}

func TestCommitStatusGitHub(t *testing.T) {
	srv := newServer(t, status(201))
	rec, _ := start(t, fmt.Sprintf(`commitStatus:
  provider: github
  url: %s/api/v3/
  repository: example/fleet
  token: {env: FORGE_TOKEN}
  targetURL: https://anneal.example.net/
`, srv.URL), testEnv, nil)
	const sha2 = "fedcba9876543210fedcba9876543210fedcba98"
	long := strings.Repeat("é", 300)
	rec.Emit(t.Context(),
		events.Event{Kind: events.RevisionSeen, Revision: sha1, Message: "fetched"},
		events.Event{Kind: events.RevisionValidated, Revision: sha1, Message: "valid"}, // the same status: not sent again
		events.Event{Kind: events.ApprovalPending, Revision: sha1, Message: "3 rebuilds exceed maxRebuildPercent"},
		events.Event{Kind: events.NodeStep, Revision: sha1, Node: "e1n01", Message: "no status"},
		events.Event{Kind: events.Approved, Revision: sha1, Message: "approved"},
		events.Event{Kind: events.Applied, Revision: "dir:0123456789abcdef", Message: "not a commit"},
		events.Event{Kind: events.Applied, Revision: sha1[:12], Message: "not a full commit id"},
		events.Event{Kind: events.ApplyFailed, Revision: sha1, Error: long},
		events.Event{Kind: events.Applied, Revision: sha1, Message: "applied 3 DNS changes"},
		events.Event{Kind: events.RevisionRefused, Revision: sha2, Error: "unsigned commit"},
		events.Event{Kind: events.RolloutHalted, Revision: sha2, Error: "2 failures"},
	)
	for i, want := range []struct{ sha, state, desc string }{
		{sha1, "pending", "planning"},
		{sha1, "pending", "awaiting approval: 3 rebuilds exceed maxRebuildPercent"},
		{sha1, "pending", "approved, applying"},
		{sha1, "failure", "apply failed: " + strings.Repeat("é", 140-len("apply failed: ")-1) + "…"},
		{sha1, "success", "applied: applied 3 DNS changes"},
		{sha2, "error", "refused: unsigned commit"},
		{sha2, "failure", "rollout halted: 2 failures"},
	} {
		h := srv.next(t)
		if h.method != http.MethodPost || h.uri != "/api/v3/repos/example/fleet/statuses/"+want.sha {
			t.Errorf("status %d: %s %s", i, h.method, h.uri)
		}
		for k, v := range map[string]string{"Authorization": "Bearer " + forgeToken, "Accept": "application/vnd.github+json",
			"X-Github-Api-Version": "2022-11-28", "Content-Type": "application/json"} {
			if got := h.header.Get(k); got != v {
				t.Errorf("status %d: %s %q, want %q", i, k, got, v)
			}
		}
		dec := json.NewDecoder(bytes.NewReader(h.body))
		dec.DisallowUnknownFields()
		var body struct {
			State       string  `json:"state"`
			TargetURL   *string `json:"target_url"`
			Description *string `json:"description"`
			Context     *string `json:"context"`
		}
		if err := dec.Decode(&body); err != nil {
			t.Fatalf("status %d: %s: %v", i, h.body, err)
		}
		if body.TargetURL == nil || body.Description == nil || body.Context == nil {
			t.Fatalf("status %d: fields missing: %s", i, h.body)
		}
		if body.State != want.state || *body.Description != want.desc || *body.Context != "anneal/east" || *body.TargetURL != "https://anneal.example.net/" {
			t.Errorf("status %d: %s, want %+v", i, h.body, want)
		}
		if n := utf8.RuneCountInString(*body.Description); n > 140 {
			t.Errorf("status %d: description of %d characters", i, n)
		}
	}
	select {
	case h := <-srv.hits:
		t.Errorf("one more status: %s", h.body)
	default:
	}
}

func TestCommitStatusGitLab(t *testing.T) {
	srv := newServer(t, status(201))
	rec, _ := start(t, fmt.Sprintf(`commitStatus:
  provider: gitlab
  url: %s
  project: infra/sites/east
  token: {env: FORGE_TOKEN}
  context: deploy/east
`, srv.URL), testEnv, nil)
	rec.Emit(t.Context(),
		events.Event{Kind: events.RevisionSeen, Revision: sha1, Message: "fetched"},
		events.Event{Kind: events.PlanComputed, Revision: sha1, Message: "3 changes"}, // pending again: GitLab refuses it, not sent
		events.Event{Kind: events.ApprovalPending, Revision: sha1, Message: "guarded"},
		events.Event{Kind: events.Approved, Revision: sha1, Message: "approved"},
		events.Event{Kind: events.ApplyFailed, Revision: sha1, Error: "dns: refused"},
		events.Event{Kind: events.RevisionRefused, Revision: strings.Repeat("ab", 32), Error: "invalid"},
	)
	for i, want := range []struct{ sha, state, desc string }{
		{sha1, "pending", "planning"},
		{sha1, "running", "approved, applying"},
		{sha1, "failed", "apply failed: dns: refused"},
		{strings.Repeat("ab", 32), "failed", "refused: invalid"},
	} {
		h := srv.next(t)
		if h.method != http.MethodPost || h.uri != "/api/v4/projects/infra%2Fsites%2Feast/statuses/"+want.sha {
			t.Errorf("status %d: %s %s", i, h.method, h.uri)
		}
		if got := h.header.Get("PRIVATE-TOKEN"); got != forgeToken {
			t.Errorf("status %d: PRIVATE-TOKEN %q", i, got)
		}
		if got := h.header.Get("Content-Type"); got != "application/x-www-form-urlencoded" {
			t.Errorf("status %d: Content-Type %q", i, got)
		}
		req, _ := http.NewRequest(http.MethodPost, "/", bytes.NewReader(h.body))
		req.Header.Set("Content-Type", h.header.Get("Content-Type"))
		if err := req.ParseForm(); err != nil {
			t.Fatal(err)
		}
		for k := range req.PostForm {
			if k != "state" && k != "name" && k != "description" && k != "target_url" {
				t.Errorf("status %d: unknown parameter %q", i, k)
			}
		}
		switch st := req.PostForm.Get("state"); st {
		case "pending", "running", "success", "failed", "canceled":
		default:
			t.Errorf("status %d: state %q", i, st)
		}
		if f := req.PostForm; f.Get("state") != want.state || f.Get("name") != "deploy/east" || f.Get("description") != want.desc || f.Has("target_url") {
			t.Errorf("status %d: %v, want %+v", i, f, want)
		}
	}
}

func TestCatchUpAfterFallingBehind(t *testing.T) {
	srv := newServer(t)
	c, err := Parse("notify.yaml", []byte(hookFile(srv.URL+"/hook?a=1", "    kinds: [revision.applied, apply.failed]\n")))
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(c, Options{Resolver: testEnv})
	if err != nil {
		t.Fatal(err)
	}
	rec := events.NewRecorder(&events.Memory{}, nil)
	rec.Emit(t.Context(), events.Event{Kind: events.Applied, Revision: sha1, Message: "a"},
		events.Event{Kind: events.NodeStep, Message: "not wanted"},
		events.Event{Kind: events.ApplyFailed, Revision: sha1, Message: "b"})
	stored, err := rec.Events(t.Context(), events.Filter{})
	if err != nil || len(stored) != 3 {
		t.Fatalf("stored %v, %v", stored, err)
	}
	// A subscription that streamed the first event, then was dropped (the
	// reader fell behind): the second comes from the store, the third
	// from a new subscription.
	dropped := make(chan events.Event, 1)
	dropped <- stored[0]
	close(dropped)
	ctx, cancel := context.WithCancel(t.Context())
	defer func() { cancel(); n.Wait() }()
	n.startSinks(ctx)
	n.wg.Go(func() { n.follow(ctx, rec, events.Filter{Kinds: n.kinds}, dropped) })
	if p := payload(t, srv.next(t)); p.Message != "a" || p.Seq != 1 {
		t.Fatalf("first %+v", p)
	}
	if p := payload(t, srv.next(t)); p.Message != "b" || p.Seq != 3 {
		t.Fatalf("caught up %+v", p)
	}
	rec.Emit(t.Context(), events.Event{Kind: events.Applied, Revision: sha1, Message: "c"})
	if p := payload(t, srv.next(t)); p.Message != "c" || p.Seq != 4 {
		t.Fatalf("live %+v", p)
	}
	select {
	case h := <-srv.hits:
		t.Errorf("one more delivery: %s", h.body)
	default:
	}
}

// TestRunStops: Run delivers until its context ends, then returns once
// every goroutine stopped, a delivery in flight included.
func TestRunStops(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	srv := newServer(t, func(w http.ResponseWriter) { <-hold })
	c, err := Parse("notify.yaml", []byte(hookFile(srv.URL+"/hook?a=1", "")))
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(c, Options{Resolver: testEnv})
	if err != nil {
		t.Fatal(err)
	}
	rec := events.NewRecorder(nil, nil) // no store: events are streamed only
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- n.Run(ctx, rec) }()
	// Run subscribes in its goroutine: emit until a delivery arrives.
	var h hit
	for got := false; !got; {
		rec.Emit(t.Context(), events.Event{Kind: events.Applied, Revision: sha1, Message: "applied"})
		select {
		case h = <-srv.hits:
			got = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	verify(t, h, events.Applied)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return")
	}
	if err := n.Start(t.Context(), rec); err == nil {
		t.Error("started twice")
	}
}
