package reconcile

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/reconcile/dns"
	"github.com/anneal-dev/anneal/reconcile/dns/dnstest"
	"github.com/anneal-dev/anneal/reconcile/events"
	"github.com/anneal-dev/anneal/reconcile/node"
	"github.com/anneal-dev/anneal/reconcile/node/nodetest"
	"github.com/anneal-dev/anneal/schema"
)

// revSource serves the revision cur, each revision from its directory.
type revSource struct {
	mu   sync.Mutex
	cur  string
	dirs map[string]string
}

func (s *revSource) set(rev string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = rev
}

func (s *revSource) Latest(context.Context) (Revision, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Revision{ID: s.cur, Summary: "commit " + s.cur}, nil
}

func (s *revSource) FS(_ context.Context, rev string) (fs.FS, error) {
	d, ok := s.dirs[rev]
	if !ok {
		return nil, errors.New("no such revision")
	}
	return os.DirFS(d), nil
}
func (s *revSource) Descends(string, string) (bool, error) { return true, nil }

// ownState is memState keeping the ownership inventory.
type ownState struct {
	memState
	mu    sync.Mutex
	owned map[string]map[dns.RRsetKey]bool
}

func (o *ownState) OwnedRRsets(_ context.Context, target, zone string) (map[dns.RRsetKey]bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.owned[target+"/"+zone]), nil
}

func (o *ownState) RecordOwned(_ context.Context, target, zone string, add, remove []dns.RRsetKey) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.owned == nil {
		o.owned = map[string]map[dns.RRsetKey]bool{}
	}
	k := target + "/" + zone
	if o.owned[k] == nil {
		o.owned[k] = map[dns.RRsetKey]bool{}
	}
	for _, a := range add {
		o.owned[k][a] = true
	}
	for _, d := range remove {
		delete(o.owned[k], d)
	}
	return nil
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// zoneTargets returns a Targets func whose targets keep their zones
// across passes.
func zoneTargets() func(*schema.Site) (map[string]dns.Target, error) {
	var mu sync.Mutex
	kept := map[string]*dnstest.Memory{}
	return func(s *schema.Site) (map[string]dns.Target, error) {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]dns.Target{}
		for _, tg := range s.DNS.Targets {
			if kept[tg.Name] == nil {
				kept[tg.Name] = &dnstest.Memory{TargetName: tg.Name}
			}
			out[tg.Name] = kept[tg.Name]
		}
		return out, nil
	}
}

func kindsOf(evs []events.Event) []events.Kind {
	var out []events.Kind
	for _, e := range evs {
		out = append(out, e.Kind)
	}
	return out
}

func allEvents(t *testing.T, m *events.Memory) []events.Event {
	t.Helper()
	evs, err := m.Events(context.Background(), events.Filter{Limit: events.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// invalidSite is a copy of the example site that does not validate.
func invalidSite(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("../examples/site-repo")); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "site.yaml")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, bytes.Replace(b, []byte("canaries: 1"), []byte("canaries: many"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestPassEvents: a valid revision's passes state it seen, validated,
// planned, written and applied, once each; an invalid newer one is
// refused once over three passes, and neither the events nor the log
// repeat it.
func TestPassEvents(t *testing.T) {
	ctx := context.Background()
	mem := &events.Memory{}
	logs := &syncBuffer{}
	src := &revSource{cur: "good", dirs: map[string]string{"good": "../examples/site-repo", "bad": invalidSite(t)}}
	r := &Reconciler{Source: src, State: &ownState{}, Mode: ModeConverge, Interval: time.Hour, Targets: zoneTargets(),
		Log:    slog.New(slog.NewTextHandler(logs, nil)),
		Events: events.NewRecorder(mem, slog.New(slog.NewTextHandler(logs, nil)))}
	r.ReconcileOnce(ctx)
	r.ReconcileOnce(ctx)
	if st := r.Status(); st.LastError != "" || st.AppliedRevision != "good" {
		t.Fatalf("status %+v", st)
	}
	evs := allEvents(t, mem)
	ks := slices.Compact(kindsOf(evs)) // one dns.written per zone
	if want := []events.Kind{events.RevisionSeen, events.RevisionValidated, events.PlanComputed, events.DNSWritten, events.Applied}; !slices.Equal(ks, want) {
		t.Fatalf("events of two passes of a valid revision: %v, want %v", kindsOf(evs), want)
	}
	if evs[0].Summary != "commit good" {
		t.Errorf("seen: %+v", evs[0])
	}
	var written, plan, applied events.Event
	zones := 0
	for _, e := range evs {
		switch e.Kind {
		case events.DNSWritten:
			zones++
			written = e
		case events.PlanComputed:
			plan = e
		case events.Applied:
			applied = e
		}
	}
	if zones == 0 || written.Counts["created"] == 0 || written.Revision != "good" {
		t.Errorf("dns.written: %d zones, last %+v", zones, written)
	}
	if plan.Counts["creates"] == 0 || plan.Plan == "" || applied.Counts["dns"] != plan.Counts["creates"] || applied.Plan != plan.Plan {
		t.Errorf("plan %+v, applied %+v", plan, applied)
	}

	src.set("bad")
	for range 3 {
		r.ReconcileOnce(ctx)
	}
	if st := r.Status(); st.LastErrorClass != FailInvalid {
		t.Fatalf("status %+v, want an invalid revision", st)
	}
	evs = allEvents(t, mem)[len(evs):]
	if want := []events.Kind{events.RevisionSeen, events.RevisionRefused}; !slices.Equal(kindsOf(evs), want) {
		t.Fatalf("events of three passes of an invalid revision: %v, want %v", kindsOf(evs), want)
	}
	if e := evs[1]; e.Revision != "bad" || e.Class != FailInvalid || e.Error == "" || !strings.Contains(e.Message, "does not validate") {
		t.Errorf("refused: %+v", e)
	}
	out := logs.String()
	if n := strings.Count(out, "revision refused"); n != 1 {
		t.Errorf("the refusal is logged %d times, want once:\n%s", n, out)
	}
	if strings.Contains(out, "reconcile failed") {
		t.Errorf("a refused revision's passes log a failure too:\n%s", out)
	}
	for k, want := range map[events.Kind]int{events.RevisionSeen: 2, events.RevisionValidated: 1, events.PlanComputed: 1, events.Applied: 1} {
		if n := strings.Count(out, "event="+string(k)+" "); n != want {
			t.Errorf("%s logged %d times, want %d", k, n, want)
		}
	}

	// Back to a good revision, then the same refused one: refused again.
	n := len(allEvents(t, mem))
	src.set("good")
	r.ReconcileOnce(ctx)
	src.set("bad")
	r.ReconcileOnce(ctx)
	if got := kindsOf(allEvents(t, mem)[n:]); !slices.Equal(got, []events.Kind{events.RevisionSeen, events.RevisionSeen, events.RevisionRefused}) {
		t.Errorf("good then bad again: %v", got)
	}
}

// TestSuspendEvents: suspend and resume are events with their actor, once
// per change.
func TestSuspendEvents(t *testing.T) {
	mem := &events.Memory{}
	r := &Reconciler{Source: dirSource{fail: true}, State: &memState{}, Mode: ModeConverge, Events: events.NewRecorder(mem, nil)}
	ctx := WithActor(context.Background(), "api")
	for _, v := range []bool{true, true, false} {
		if err := r.SetSuspended(ctx, v); err != nil {
			t.Fatal(err)
		}
	}
	evs := allEvents(t, mem)
	if !slices.Equal(kindsOf(evs), []events.Kind{events.Suspended, events.Resumed}) {
		t.Fatalf("events %v", kindsOf(evs))
	}
	for _, e := range evs {
		if e.Actor != "api" {
			t.Errorf("%s: actor %q", e.Kind, e.Actor)
		}
	}
	// A failing fetch: one apply.failed, without a revision, over passes.
	for range 3 {
		r.ReconcileOnce(context.Background())
	}
	evs = allEvents(t, mem)[2:]
	if len(evs) != 1 || evs[0].Kind != events.ApplyFailed || evs[0].Class != FailSource || evs[0].Revision != "" {
		t.Fatalf("three failed fetches: %+v", evs)
	}
}

// TestApprovalEvents: a plan that waits for approval is pending once over
// passes; its approval is an event with its actor.
func TestApprovalEvents(t *testing.T) {
	ctx := context.Background()
	site := exampleSite(t)
	recs := verifiedRecords(site)
	lost := recs["e1n01"]
	lost.BuildID, lost.Spec, lost.State, lost.Unobserved, lost.Power, lost.PowerAt = "", nil, node.Unknown, true, node.PowerOn, time.Now()
	mem := &events.Memory{}
	r := &Reconciler{Source: dirSource{dir: "../examples/site-repo"}, State: &memState{}, Mode: ModeConverge, Interval: time.Hour, Targets: zoneTargets(),
		Events: events.NewRecorder(mem, nil),
		Rebuild: &RebuildConfig{Nodes: &nodetest.Store{Recs: recs}, FirmwareEvery: -1,
			BMC: func(node.BMCAccess) (node.BMC, error) { return nil, errors.New("no BMC in this test") }}}
	r.ReconcileOnce(ctx)
	r.ReconcileOnce(ctx)
	p := r.Status().PendingApproval
	if p == nil {
		t.Fatalf("no plan awaits approval: %+v", r.Status())
	}
	var pending []events.Event
	for _, e := range allEvents(t, mem) {
		if e.Kind == events.ApprovalPending {
			pending = append(pending, e)
		}
	}
	if len(pending) != 1 || pending[0].Revision != "r1" || pending[0].Plan != p.PlanDigest || !strings.Contains(pending[0].Message, "unobserved") && !strings.Contains(pending[0].Message, "e1n01") {
		t.Fatalf("approval.pending events over two passes: %+v", pending)
	}
	n := len(allEvents(t, mem))
	if _, err := r.Approve(WithActor(ctx, "api"), "r1", p.PlanDigest); err != nil {
		t.Fatal(err)
	}
	evs := allEvents(t, mem)[n:]
	if len(evs) != 1 || evs[0].Kind != events.Approved || evs[0].Actor != "api" || evs[0].Plan != p.PlanDigest || evs[0].Revision != "r1" {
		t.Fatalf("after the approval: %+v", evs)
	}
}

// TestRolloutEvents: a rollout whose canary cannot be rebuilt states each
// node step, the failure with its error, and the halt once over passes.
func TestRolloutEvents(t *testing.T) {
	ctx := context.Background()
	site := exampleSite(t)
	recs := verifiedRecords(site)
	stale := recs["e1n01"]
	stale.BuildID, stale.Spec = "0000000000000000", nil
	mem := &events.Memory{}
	r := &Reconciler{Source: dirSource{dir: "../examples/site-repo"}, State: &ownState{}, Mode: ModeConverge, Interval: time.Hour, Targets: zoneTargets(),
		Events: events.NewRecorder(mem, nil),
		Rebuild: &RebuildConfig{Nodes: &nodetest.Store{Recs: recs}, FirmwareEvery: -1,
			BMC: func(node.BMCAccess) (node.BMC, error) { return nil, errors.New("BMC unreachable") }}}
	for range 3 {
		r.ReconcileOnce(ctx)
	}
	var steps, halts, failed []events.Event
	for _, e := range allEvents(t, mem) {
		switch e.Kind {
		case events.NodeStep:
			steps = append(steps, e)
		case events.RolloutHalted:
			halts = append(halts, e)
		case events.ApplyFailed:
			failed = append(failed, e)
		}
	}
	if len(steps) == 0 || len(halts) != 1 {
		t.Fatalf("steps %+v, halts %+v (all: %v)", steps, halts, kindsOf(allEvents(t, mem)))
	}
	last := steps[len(steps)-1]
	if last.Node != "e1n01" || last.Step != "failed" || !strings.Contains(last.Error, "BMC unreachable") || last.Revision != "r1" {
		t.Errorf("the last step: %+v", last)
	}
	if h := halts[0]; h.Revision != "r1" || h.Error == "" || h.Counts["failed"] != 1 {
		t.Errorf("halted: %+v", h)
	}
	// Three passes: the rollout's failure is stated once; the passes
	// the halt then holds state nothing new.
	if len(failed) != 1 {
		t.Errorf("apply.failed over three passes: %+v", failed)
	}
	// A retry is a new attempt: the same failure and halt are stated
	// again.
	if err := r.Retry(ctx, "e1n01"); err != nil {
		t.Fatal(err)
	}
	n := len(allEvents(t, mem))
	r.ReconcileOnce(ctx)
	again := map[events.Kind]int{}
	for _, e := range allEvents(t, mem)[n:] {
		again[e.Kind]++
	}
	if again[events.RolloutHalted] != 1 || again[events.ApplyFailed] != 1 {
		t.Errorf("after a retry that fails again: %v", again)
	}
}
