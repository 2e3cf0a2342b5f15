package events

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestFilterMatch(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	e := Event{Seq: 7, Time: t0, Kind: Applied, Revision: "0123456789abcdef", Node: "e1n01"}
	for _, tc := range []struct {
		name string
		f    Filter
		want bool
	}{
		{"zero", Filter{}, true},
		{"revision prefix", Filter{Revision: "0123"}, true},
		{"whole revision", Filter{Revision: "0123456789abcdef"}, true},
		{"other revision", Filter{Revision: "0124"}, false},
		{"longer than revision", Filter{Revision: "0123456789abcdef0"}, false},
		{"node", Filter{Node: "e1n01"}, true},
		{"other node", Filter{Node: "e1n02"}, false},
		{"kinds", Filter{Kinds: []Kind{RevisionSeen, Applied}}, true},
		{"other kinds", Filter{Kinds: []Kind{RevisionSeen}}, false},
		{"since before", Filter{Since: t0.Add(-time.Second)}, true},
		{"since at", Filter{Since: t0}, true},
		{"since after", Filter{Since: t0.Add(time.Second)}, false},
		{"after lower seq", Filter{After: 6}, true},
		{"after same seq", Filter{After: 7}, false},
	} {
		if got := tc.f.Match(e); got != tc.want {
			t.Errorf("%s: Match = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMemoryRetentionAndSelect(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	m := &Memory{Retention: Retention{MaxEvents: 5, MaxAge: time.Hour}, now: func() time.Time { return now }}
	ctx := context.Background()
	var in []Event
	for i := range 8 {
		in = append(in, Event{Time: now.Add(time.Duration(i-8) * time.Minute), Kind: NodeStep, Node: []string{"a", "b"}[i%2]})
	}
	in[2].Time = now.Add(-2 * time.Hour) // past MaxAge, and dropped by MaxEvents first
	out, err := m.AppendEvents(ctx, in)
	if err != nil || len(out) != 8 || out[0].Seq != 1 || out[7].Seq != 8 {
		t.Fatalf("append: %v %+v", err, out)
	}
	all, _ := m.Events(ctx, Filter{})
	if len(all) != 5 || all[0].Seq != 4 || all[4].Seq != 8 {
		t.Fatalf("retention by count: %+v", all)
	}
	// An old event goes by age (the oldest goes by count).
	m.evs[1].Time = now.Add(-2 * time.Hour)
	if _, err := m.AppendEvents(ctx, []Event{{Time: now, Kind: Applied}}); err != nil {
		t.Fatal(err)
	}
	all, _ = m.Events(ctx, Filter{})
	if len(all) != 4 || all[0].Seq != 6 || all[3].Seq != 9 {
		t.Fatalf("retention by age: %+v", all)
	}
	b, _ := m.Events(ctx, Filter{Node: "b", Limit: 1})
	if len(b) != 1 || b[0].Seq != 8 {
		t.Fatalf("newest of node b: %+v", b)
	}
}

func TestRecorder(t *testing.T) {
	var logs bytes.Buffer
	store := &Memory{}
	r := NewRecorder(store, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := r.Subscribe(ctx, Filter{Node: "e1n01", After: 99})
	if err != nil {
		t.Fatal(err)
	}
	r.Emit(ctx, Event{Kind: NodeStep, Node: "e1n02", Step: "verified", Message: "node verified"},
		Event{Kind: NodeStep, Node: "e1n01", Step: "power-cycle", Message: "node power-cycled"},
		Event{Kind: ApplyFailed, Revision: "abc", Error: "boom", Message: "apply failed"})
	got := <-ch
	if got.Seq != 2 || got.Node != "e1n01" || got.Time.IsZero() {
		t.Fatalf("streamed %+v", got)
	}
	select {
	case e := <-ch:
		t.Fatalf("streamed an event the filter excludes: %+v", e)
	default:
	}
	if n := strings.Count(logs.String(), "\n"); n != 3 {
		t.Fatalf("%d log lines for 3 events:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), `level=WARN msg="apply failed" event=apply.failed revision=abc err=boom`) {
		t.Fatalf("failure not logged at WARN:\n%s", logs.String())
	}
	evs, _ := r.Events(ctx, Filter{Kinds: []Kind{ApplyFailed}})
	if len(evs) != 1 || evs[0].Seq != 3 {
		t.Fatalf("stored: %+v", evs)
	}
	cancel()
	if _, ok := <-ch; ok {
		t.Fatal("channel open after its context ended")
	}
}

func TestSlowSubscriberDropped(t *testing.T) {
	r := NewRecorder(nil, nil)
	ctx := context.Background()
	ch, err := r.Subscribe(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for range SubscriberBuffer + 1 {
		r.Emit(ctx, Event{Kind: NodeStep})
	}
	n := 0
	for range ch {
		n++
	}
	if n != SubscriberBuffer {
		t.Fatalf("read %d events before the close, want %d", n, SubscriberBuffer)
	}
	var nilRec *Recorder
	nilRec.Emit(ctx, Event{Kind: Applied}) // a nil recorder discards
}

func TestSubscriberBound(t *testing.T) {
	r := NewRecorder(nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range MaxSubscribers {
		if _, err := r.Subscribe(ctx, Filter{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Subscribe(ctx, Filter{}); err != ErrTooManySubscribers {
		t.Fatalf("subscriber %d: %v", MaxSubscribers+1, err)
	}
}

func TestEmitBoundsText(t *testing.T) {
	store := &Memory{}
	r := NewRecorder(store, nil)
	long := strings.Repeat("é", MaxText) // 2 bytes a rune
	r.Emit(context.Background(), Event{Kind: RevisionRefused, Summary: long, Message: "short", Error: long})
	evs, _ := store.Events(context.Background(), Filter{})
	e := evs[0]
	for name, v := range map[string]string{"summary": e.Summary, "error": e.Error} {
		if len(v) > MaxText || !strings.HasSuffix(v, " …") || !utf8.ValidString(v) {
			t.Errorf("%s: %d bytes, valid UTF-8 %v", name, len(v), utf8.ValidString(v))
		}
	}
	if e.Message != "short" {
		t.Errorf("a short message changed: %q", e.Message)
	}
}
