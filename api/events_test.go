package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/events"
)

// hookedEvents is a real recorder whose store query runs beforeQuery
// first (an event emitted between a stream's subscription and its
// backlog query).
type hookedEvents struct {
	*events.Recorder
	beforeQuery func()
}

func (h *hookedEvents) Events(ctx context.Context, f events.Filter) ([]events.Event, error) {
	if h.beforeQuery != nil {
		h.beforeQuery()
	}
	return h.Recorder.Events(ctx, f)
}

func eventServer(t *testing.T, src Events) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(New(Config{Reconciler: &fakeReconciler{}, Events: src}))
	t.Cleanup(srv.Close)
	return srv
}

func getJSON(t *testing.T, u string, into any) int {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp.StatusCode
}

func TestEventsQuery(t *testing.T) {
	ctx := context.Background()
	rec := events.NewRecorder(&events.Memory{}, nil)
	old := time.Now().Add(-2 * time.Hour).UTC()
	rec.Emit(ctx,
		events.Event{Time: old, Kind: events.RevisionSeen, Revision: "abc123", Message: "revision fetched"},
		events.Event{Kind: events.NodeStep, Revision: "abc123", Node: "e1n01", Step: "power-cycle", Message: "power cycled"},
		events.Event{Kind: events.NodeStep, Revision: "abc123", Node: "e1n02", Step: "verified", Message: "verified"},
		events.Event{Kind: events.Applied, Revision: "abc123", Message: "revision applied", Counts: map[string]int{"dns": 3}},
		events.Event{Kind: events.RevisionSeen, Revision: "def456", Message: "revision fetched"},
	)
	srv := eventServer(t, rec)
	for _, tc := range []struct {
		query string
		want  []uint64
	}{
		{"", []uint64{1, 2, 3, 4, 5}},
		{"node=e1n01", []uint64{2}},
		{"kind=revision.seen,revision.applied", []uint64{1, 4, 5}},
		{"kind=revision.seen&kind=node.step", []uint64{1, 2, 3, 5}},
		{"revision=abc", []uint64{1, 2, 3, 4}},
		{"since=1h", []uint64{2, 3, 4, 5}},
		{"since=" + url.QueryEscape(old.Add(-time.Minute).Format(time.RFC3339)), []uint64{1, 2, 3, 4, 5}},
		{"after=3", []uint64{4, 5}},
		{"limit=2", []uint64{4, 5}},
		{"node=e1n09", nil},
	} {
		var got []events.Event
		if code := getJSON(t, srv.URL+"/api/v1/events?"+tc.query, &got); code != http.StatusOK {
			t.Fatalf("%s: %d", tc.query, code)
		}
		var seqs []uint64
		for _, e := range got {
			seqs = append(seqs, e.Seq)
		}
		if !slices.Equal(seqs, tc.want) {
			t.Errorf("?%s: seqs %v, want %v", tc.query, seqs, tc.want)
		}
	}
	for _, tc := range []struct{ query, want string }{
		{"kind=revision.sen", "unknown event kind \"revision.sen\"; the kinds are: revision.seen, "},
		{"since=yesterday", "since \"yesterday\": want an RFC 3339 time"},
		{"since=-1h", "positive duration"},
		{"limit=0", "limit \"0\": want a number from 1 to"},
		{"limit=100000", "limit \"100000\""},
		{"after=x", "after \"x\""},
		{"nodes=e1n01", "unknown parameter \"nodes\""},
		{"node=a&node=b", "parameter node given 2 times"},
		{"revision=" + url.QueryEscape("abc;rm"), "revision \"abc;rm\""},
		{"follow=yes", "follow \"yes\""},
	} {
		var body map[string]string
		if code := getJSON(t, srv.URL+"/api/v1/events?"+tc.query, &body); code != http.StatusBadRequest || !strings.Contains(body["error"], tc.want) {
			t.Errorf("?%s: %d %q, want 400 with %q", tc.query, code, body["error"], tc.want)
		}
	}
	// No history configured: 501.
	var body map[string]string
	if code := getJSON(t, eventServer(t, nil).URL+"/api/v1/events", &body); code != http.StatusNotImplemented {
		t.Errorf("without events: %d %v", code, body)
	}
}

// sse reads server-sent events.
type sse struct {
	r *bufio.Reader
}

type sseEvent struct {
	id, kind string
	ev       events.Event
}

// next returns the next event (comments skipped).
func (s *sse) next(t *testing.T) sseEvent {
	t.Helper()
	var out sseEvent
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if out.kind != "" {
				return out
			}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			out.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			out.kind = line[7:]
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(line[6:]), &out.ev); err != nil {
				t.Fatalf("data %q: %v", line, err)
			}
		default:
			t.Fatalf("unexpected line %q", line)
		}
	}
}

func follow(t *testing.T, ctx context.Context, u string, hdr map[string]string) (*sse, *http.Response) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &sse{r: bufio.NewReader(resp.Body)}, resp
}

// TestEventsStream: a stream sends the backlog, then live events, without
// a gap or a duplicate (an event emitted between the subscription and the
// backlog query comes once), and a reconnect with Last-Event-ID resumes
// after it.
func TestEventsStream(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := events.NewRecorder(&events.Memory{}, nil)
	step := func(n int) events.Event {
		return events.Event{Kind: events.NodeStep, Node: "e1n01", Step: fmt.Sprint("s", n), Message: "m"}
	}
	rec.Emit(ctx, step(1), events.Event{Kind: events.Resumed, Message: "other node"}, step(2))
	src := &hookedEvents{Recorder: rec}
	src.beforeQuery = func() { src.beforeQuery = nil; rec.Emit(ctx, step(3)) }
	srv := eventServer(t, src)

	s, resp := follow(t, ctx, srv.URL+"/api/v1/events?node=e1n01", map[string]string{"Accept": "text/event-stream"})
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"s1", "s2", "s3"} {
		if e := s.next(t); e.ev.Step != want || e.kind != string(events.NodeStep) || e.id != strconv.FormatUint(e.ev.Seq, 10) {
			t.Fatalf("backlog: %+v, want step %s", e, want)
		}
	}
	rec.Emit(ctx, events.Event{Kind: events.Resumed, Message: "not this node"}, step(4))
	if e := s.next(t); e.ev.Step != "s4" {
		t.Fatalf("live: %+v, want s4 (s3 once)", e)
	}
	// A reconnect after s2 gets s3, s4, then live ones.
	s2, _ := follow(t, ctx, srv.URL+"/api/v1/events?follow=1&node=e1n01", map[string]string{"Last-Event-ID": "3"})
	for _, want := range []string{"s3", "s4"} {
		if e := s2.next(t); e.ev.Step != want {
			t.Fatalf("after Last-Event-ID: %+v, want %s", e, want)
		}
	}
	rec.Emit(ctx, step(5))
	for _, st := range []*sse{s, s2} {
		if e := st.next(t); e.ev.Step != "s5" {
			t.Fatalf("live: %+v, want s5", e)
		}
	}
}

// TestEventsStreamBounded: past the recorder's subscribers, a stream is
// refused with 503.
func TestEventsStreamBounded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := events.NewRecorder(&events.Memory{}, nil)
	for range events.MaxSubscribers {
		if _, err := rec.Subscribe(ctx, events.Filter{}); err != nil {
			t.Fatal(err)
		}
	}
	srv := eventServer(t, rec)
	var body map[string]string
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/events?follow=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body["error"], "too many") || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("%d %v", resp.StatusCode, body)
	}
}

// TestHistoryAPI: /api/v1/history folds the stored revision events.
func TestHistoryAPI(t *testing.T) {
	ctx := context.Background()
	rec := events.NewRecorder(&events.Memory{}, nil)
	rec.Emit(ctx,
		events.Event{Kind: events.RevisionSeen, Revision: "aaa", Summary: "first", Message: "m"},
		events.Event{Kind: events.Applied, Revision: "aaa", Counts: map[string]int{"dns": 2}, Message: "m"},
		events.Event{Kind: events.RevisionSeen, Revision: "bbb", Message: "m"},
		events.Event{Kind: events.RevisionRefused, Revision: "bbb", Error: "does not validate", Message: "m"},
	)
	srv := eventServer(t, rec)
	var got []events.RevisionRecord
	if code := getJSON(t, srv.URL+"/api/v1/history", &got); code != http.StatusOK {
		t.Fatal(code)
	}
	if len(got) != 2 || got[0].Revision != "bbb" || got[0].Outcome != events.OutcomeRefused || got[1].Outcome != events.OutcomeApplied ||
		got[1].Counts["dns"] != 2 || got[1].Summary != "first" {
		t.Fatalf("history %+v", got)
	}
	if code := getJSON(t, srv.URL+"/api/v1/history?limit=1", &got); code != http.StatusOK || len(got) != 1 {
		t.Fatalf("limit=1: %d %+v", code, got)
	}
	var body map[string]string
	if code := getJSON(t, srv.URL+"/api/v1/history?limit=x", &body); code != http.StatusBadRequest {
		t.Fatalf("limit=x: %d", code)
	}
}

// droppingEvents subscribes through a real recorder but hands the stream
// a channel the test closes: a subscriber dropped for falling behind.
type droppingEvents struct {
	*events.Recorder
	ch chan events.Event
}

func (d *droppingEvents) Subscribe(context.Context, events.Filter) (<-chan events.Event, error) {
	return d.ch, nil
}

// TestEventsStreamHeartbeatAndDrop: an idle stream sends heartbeat
// comments; a dropped subscription ends the stream with a comment saying
// to reconnect, and a reconnect with Last-Event-ID resumes after it.
func TestEventsStreamHeartbeatAndDrop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := events.NewRecorder(&events.Memory{}, nil)
	rec.Emit(ctx, events.Event{Kind: events.Suspended, Message: "one"})
	src := &droppingEvents{Recorder: rec, ch: make(chan events.Event, 1)}
	e := newEventsAPI(src, nil, nil)
	e.heartbeat = time.Millisecond
	mux := http.NewServeMux()
	e.register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close) // after the streams' bodies are closed (cleanups run last first)

	s, _ := follow(t, ctx, srv.URL+"/api/v1/events?follow=1", nil)
	if ev := s.next(t); ev.ev.Message != "one" {
		t.Fatalf("backlog: %+v", ev)
	}
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("no heartbeat: %v", err)
		}
		if line == ": heartbeat\n" {
			break
		}
	}
	close(src.ch)
	var rest strings.Builder
	for {
		line, err := s.r.ReadString('\n')
		rest.WriteString(line)
		if err != nil {
			break // the stream ended
		}
	}
	if !strings.Contains(rest.String(), ": dropped: the reader fell behind; reconnect with Last-Event-ID") {
		t.Fatalf("after the drop: %q", rest.String())
	}
	rec.Emit(ctx, events.Event{Kind: events.Resumed, Message: "two"})
	src.ch = make(chan events.Event, 1)
	s2, _ := follow(t, ctx, srv.URL+"/api/v1/events", map[string]string{"Accept": "text/event-stream", "Last-Event-ID": "1"})
	if ev := s2.next(t); ev.ev.Message != "two" || ev.id != "2" {
		t.Fatalf("after Last-Event-ID 1: %+v", ev)
	}
}
