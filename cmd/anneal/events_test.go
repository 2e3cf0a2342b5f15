package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/api"
	"github.com/anneal-dev/anneal/providers/state/bolt"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/events"
)

// eventsServer serves a real API over rec's events.
func eventsServer(t *testing.T, rec *events.Recorder) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(api.New(api.Config{Reconciler: &reconcile.Reconciler{}, Events: rec}))
	t.Cleanup(srv.Close)
	return srv
}

func emitSample(rec *events.Recorder) {
	ctx := context.Background()
	rec.Emit(ctx,
		events.Event{Kind: events.RevisionSeen, Revision: "0123456789abcdef0123", Summary: "add e1n04", Message: "revision fetched"},
		events.Event{Kind: events.PlanComputed, Revision: "0123456789abcdef0123", Plan: "d1", Counts: map[string]int{"creates": 3}, Message: "plan computed"},
		events.Event{Kind: events.NodeStep, Revision: "0123456789abcdef0123", Node: "e1n01", Step: "power-cycle", Message: "power cycled through its BMC"},
		events.Event{Kind: events.Applied, Revision: "0123456789abcdef0123", Plan: "d1", Counts: map[string]int{"dns": 3, "rebuilds": 1}, Message: "revision applied"},
		events.Event{Kind: events.RevisionSeen, Revision: "fedcba9876543210", Message: "revision fetched"},
		events.Event{Kind: events.RevisionRefused, Revision: "fedcba9876543210", Class: "invalid-commit", Error: "site.yaml: canaries: not an int", Message: "revision refused: it does not validate"},
	)
}

func TestEventsCLI(t *testing.T) {
	rec := events.NewRecorder(&events.Memory{}, nil)
	emitSample(rec)
	srv := eventsServer(t, rec)
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		want     []string // in stdout (or stderr for an error)
		wantNot  []string
		wantLine int // lines of stdout (0: not checked)
	}{
		{"all", nil, 0, []string{"revision.seen", "0123456789ab  -", `revision fetched "add e1n04"`, "node.step", "e1n01", "power-cycle: power cycled through its BMC",
			"revision.applied", "dns=3 rebuilds=1", "revision.refused", "error: site.yaml: canaries: not an int"}, nil, 6},
		{"node", []string{"--node", "e1n01"}, 0, []string{"power-cycle"}, []string{"revision.seen"}, 1},
		{"kinds", []string{"--kind", "revision.applied", "--kind", "revision.refused"}, 0, []string{"revision.applied", "revision.refused"}, []string{"revision.seen"}, 2},
		{"revision prefix", []string{"--revision", "fedc"}, 0, []string{"fedcba987654"}, []string{"0123456789ab"}, 2},
		{"limit", []string{"--limit", "1"}, 0, []string{"revision.refused"}, nil, 1},
		{"since", []string{"--since", "1h"}, 0, nil, nil, 6},
		{"bad kind", []string{"--kind", "applied"}, exitUsage, []string{`unknown event kind; the kinds are: revision.seen`}, nil, 0},
		{"bad since", []string{"--since", "yesterday"}, exitUsage, []string{"since \"yesterday\""}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := runCLI(t, append([]string{"events", "--server", srv.URL}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\n%s%s", code, tc.code, out, errs)
			}
			text := out + errs
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("output lacks %q:\n%s", w, text)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
			if n := strings.Count(out, "\n"); tc.wantLine > 0 && n != tc.wantLine {
				t.Errorf("%d lines, want %d:\n%s", n, tc.wantLine, out)
			}
		})
	}
	code, out, errs := runCLI(t, "events", "--server", srv.URL, "-o", "json", "--node", "e1n01")
	var evs []events.Event
	if err := json.Unmarshal([]byte(out), &evs); code != 0 || err != nil || len(evs) != 1 || evs[0].Step != "power-cycle" {
		t.Fatalf("-o json: exit %d, %v, %+v\n%s", code, err, evs, errs)
	}
}

func TestHistoryCLI(t *testing.T) {
	rec := events.NewRecorder(&events.Memory{}, nil)
	emitSample(rec)
	srv := eventsServer(t, rec)
	code, out, errs := runCLI(t, "history", "--server", srv.URL)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "REVISION") {
		t.Fatalf("history:\n%s", out)
	}
	for i, want := range [][]string{{"fedcba987654", "refused (site.yaml: canaries: not an int)"}, {"0123456789ab", "applied", "dns=3 rebuilds=1", "add e1n04"}} {
		for _, w := range want {
			if !strings.Contains(lines[i+1], w) {
				t.Errorf("line %d lacks %q: %s", i+1, w, lines[i+1])
			}
		}
	}
	code, out, _ = runCLI(t, "history", "--server", srv.URL, "-o", "json", "--limit", "1")
	var recs []events.RevisionRecord
	if err := json.Unmarshal([]byte(out), &recs); code != 0 || err != nil || len(recs) != 1 || recs[0].Outcome != events.OutcomeRefused {
		t.Fatalf("-o json: exit %d, %v, %+v", code, err, recs)
	}
	if code, _, errs := runCLI(t, "history", "--server", srv.URL, "--limit", "0"); code != exitUsage || !strings.Contains(errs, "--limit 0") {
		t.Fatalf("--limit 0: exit %d %s", code, errs)
	}
}

// lineWriter is a stdout that signals each write.
type lineWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.buf.Write(p)
	select {
	case w.wrote <- struct{}{}:
	default:
	}
	return n, err
}

func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// waitFor waits until w's output has s (a deadline only fails the test).
func (w *lineWriter) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for !strings.Contains(w.String(), s) {
		select {
		case <-w.wrote:
		case <-deadline:
			t.Fatalf("no %q in the output:\n%s", s, w.String())
		}
	}
}

// TestEventsFollow: --follow prints the backlog, then live events; a
// dropped connection is resumed from the last event, without a gap or a
// duplicate; the bolt store backs it.
func TestEventsFollow(t *testing.T) {
	st, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec := events.NewRecorder(st, nil)
	emitSample(rec)
	srv := eventsServer(t, rec)
	ctx, cancel := context.WithCancel(context.Background())
	w := &lineWriter{wrote: make(chan struct{}, 1)}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"events", "--server", srv.URL, "--follow", "--kind", "node.step"}, w, w)
	}()
	w.waitFor(t, "power-cycle")
	step := func(s string) events.Event {
		return events.Event{Kind: events.NodeStep, Node: "e1n02", Step: s, Message: "m"}
	}
	rec.Emit(ctx, step("live-1"))
	w.waitFor(t, "live-1")
	srv.CloseClientConnections() // the stream drops
	rec.Emit(ctx, step("while-away"))
	w.waitFor(t, "while-away")
	rec.Emit(ctx, step("live-2"))
	w.waitFor(t, "live-2")
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d:\n%s", code, w.String())
	}
	out := w.String()
	for _, s := range []string{"power-cycle", "live-1", "while-away", "live-2"} {
		if n := strings.Count(out, s); n != 1 {
			t.Errorf("%s shown %d times:\n%s", s, n, out)
		}
	}
	if strings.Contains(out, "revision.seen") {
		t.Errorf("--kind not applied:\n%s", out)
	}
}

// TestServeHelpRoutes: serve --help names every route of the API.
func TestServeHelpRoutes(t *testing.T) {
	code, out, errs := runCLI(t, "serve", "--help")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	help := strings.Join(strings.Fields(out), " ")
	for _, route := range []string{"/healthz", "/readyz", "/metrics", "/api/v1/status", "/api/v1/drift", "/api/v1/nodes",
		"/api/v1/events", "/api/v1/history", "/api/v1/reconcile", "/api/v1/suspend", "/api/v1/resume", "/api/v1/approve",
		"/api/v1/nodes/NODE/retry", "/api/v1/nodes/NODE/revoke-agent", "/api/v1/state/backup", "/api/v1/webhook"} {
		if !strings.Contains(help, route) {
			t.Errorf("serve --help does not name %s", route)
		}
	}
}
